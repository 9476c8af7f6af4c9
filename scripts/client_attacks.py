"""Behaves as a careless or hostile client would against one mpreg node, and reports the
node's memory (VmRSS and peak VmHWM from /proc) for each case.

Not part of the test suite (tests/client_budgets.rs asserts the same cases over real
sockets); this is the tool behind the figures in issue 13's closing note. Usage:

    mpreg-node --port 9301 --persistence-mode memory &
    python3 scripts/client_attacks.py --port 9301 --pid $! [case ...]

Cases: unread, zeros, chain, worker, hijack. Needs the `websockets` package.
"""

import argparse
import asyncio
import json
import time

import websockets


def mem(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) // 1024
    return out


def connect(port):
    return websockets.connect(f"ws://127.0.0.1:{port}", max_size=None, ping_interval=None)


async def settle(pid, label, seconds=5):
    await asyncio.sleep(seconds)
    print(f"  {label} +{seconds}s: {mem(pid)}")


async def unread(port, pid):
    """1 MiB echo requests, replies never read, for 20 s."""
    payload = "x" * (1 << 20)
    ws = await connect(port)
    sent = 0
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            frame = json.dumps({"role": "rpc", "u": f"e{sent}", "cmds": [
                {"name": "a", "fun": "echo", "args": [payload]}]})
            await asyncio.wait_for(ws.send(frame), timeout=2)
            sent += 1
    except Exception as e:  # the node stops reading, or disconnects us
        print(f"  stopped after {sent} requests: {type(e).__name__}")
    print(f"  unread: {sent} sent, {mem(pid)}")
    ws.transport.abort()
    await settle(pid, "unread")


async def zeros(port, pid):
    """One 18 MiB frame of 9.4M zeros to echo, then six at once."""
    zeros = ",".join(["0"] * 9_400_000)
    frame = '{"role":"rpc","u":"z","cmds":[{"name":"a","fun":"echo","args":[[%s]]}]}' % zeros

    async def one():
        async with connect(port) as ws:
            await ws.send(frame)
            reply = await ws.recv()
            return len(reply)

    print(f"  frame {len(frame) >> 20} MiB, reply {await one()} bytes, {mem(pid)}")
    sizes = await asyncio.gather(*[one() for _ in range(6)])
    print(f"  six at once: replies {sizes}, {mem(pid)}")
    await settle(pid, "zeros")


async def chain(port, pid):
    """A 1 KiB value along a 1,000-step chain, with return_intermediate_results."""
    cmds = [{"name": "s0", "fun": "echo", "args": ["v" * 1024]}]
    cmds += [{"name": f"s{i}", "fun": "echo", "args": [f"s{i-1}"]} for i in range(1, 1000)]
    frame = json.dumps({"role": "rpc", "u": "c", "cmds": cmds, "return_intermediate_results": True})
    async with connect(port) as ws:
        t = time.monotonic()
        await ws.send(frame)
        reply = json.loads(await ws.recv())
        took = time.monotonic() - t
    err = reply.get("error") or {}
    print(f"  request {len(frame) >> 10} KiB: code {err.get('code')} in {took:.2f} s, {mem(pid)}")


async def worker(port, pid):
    """Registers a function it never answers, then calls it 150,000 times on the same socket."""
    async with connect(port) as ws:
        await ws.send(json.dumps({"role": "register", "u": "reg", "functions": [
            {"name": "never", "version": "1.0.0"}]}))
        while True:
            m = json.loads(await ws.recv())
            if m.get("u") == "reg":
                print(f"  registered: {'error' not in m or m['error']}")
                break
        sent = 0
        try:
            for i in range(150_000):
                await asyncio.wait_for(ws.send(json.dumps({"role": "rpc", "u": f"n{i}", "cmds": [
                    {"name": "a", "fun": "never", "args": ["x" * 1000]}]})), timeout=2)
                sent += 1
        except Exception as e:
            print(f"  stopped after {sent}: {type(e).__name__}")
        print(f"  worker: {sent} calls sent, {mem(pid)}")
        ws.transport.abort()
    await settle(pid, "worker")


async def hijack(port, pid):
    """Registers `echo` at 9.9.9 and sees whether another client's echo reaches it."""
    async with connect(port) as w:
        await w.send(json.dumps({"role": "register", "u": "reg", "functions": [
            {"name": "echo", "version": "9.9.9"}]}))
        m = json.loads(await w.recv())
        print(f"  register echo 9.9.9: {m.get('error') or 'accepted'}")
        async with connect(port) as c:
            await c.send(json.dumps({"role": "rpc", "u": "h", "cmds": [
                {"name": "a", "fun": "echo", "args": ["secret"]}]}))
            try:
                got = json.loads(await asyncio.wait_for(w.recv(), timeout=2))
                print(f"  the hijacker received: {got}")
            except asyncio.TimeoutError:
                print("  the hijacker received nothing")
            print(f"  the caller got: {json.loads(await c.recv()).get('r')}")


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("cases", nargs="*", default=["unread", "zeros", "chain", "worker", "hijack"])
    a = p.parse_args()
    print(f"baseline: {mem(a.pid)}")
    for case in a.cases:
        print(f"== {case}")
        await globals()[case](a.port, a.pid)


asyncio.run(main())
