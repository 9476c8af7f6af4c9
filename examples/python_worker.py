#!/usr/bin/env python3
"""An mpreg worker in Python: registers functions over a client connection to any node and
serves the calls the cluster routes to it. Needs only the `websockets` package.

    pip install websockets
    python3 examples/python_worker.py --url ws://127.0.0.1:9000

Then, from any node of the cluster:

    mpreg client call word_count '["the cat and the hat"]' --url ws://127.0.0.1:9001

The protocol (docs/PROTOCOL.md, "Worker connections"): send one `register` message, then
answer each `call` with a `call-result` carrying the same `u`. A `cancel` means nobody waits
for that call any more. When this process exits, its functions leave the cluster.
"""

import argparse
import asyncio
import json
import sys

import websockets


async def word_count(text):
    counts = {}
    for word in text.split():
        counts[word] = counts.get(word, 0) + 1
    return counts


async def shout(text, times=1):
    await asyncio.sleep(0)  # a real worker would do I/O here
    return " ".join([text.upper()] * times)


# name -> (coroutine function, registration entry)
FUNCTIONS = {
    "word_count": (word_count, {"name": "word_count", "resources": ["python"], "idempotent": True}),
    "shout": (shout, {"name": "shout", "version": "1.1.0", "resources": ["python"]}),
}


async def serve(url, ready_file=None):
    async with websockets.connect(url, max_size=16 << 20) as ws:
        await ws.send(json.dumps({
            "role": "register",
            "u": "register-1",
            "functions": [entry for _, entry in FUNCTIONS.values()],
        }))
        reply = json.loads(await ws.recv())
        if reply.get("error"):
            sys.exit(f"registration refused: {reply['error']}")
        names = ", ".join(f["name"] for f in reply["r"]["registered"])
        print(f"serving {names} via {url}", flush=True)
        if ready_file:
            with open(ready_file, "w") as f:
                f.write("ready\n")

        running = {}  # call id -> task

        async def run(call):
            u = call["u"]
            fun, _ = FUNCTIONS.get(call["fun"], (None, None))
            try:
                if fun is None:
                    raise LookupError(f"no function {call['fun']}")
                value = await fun(*call.get("args", []), **call.get("kwargs", {}))
                answer = {"role": "call-result", "u": u, "r": value}
            except asyncio.CancelledError:
                return
            except Exception as e:  # the caller gets the message, the worker carries on
                answer = {"role": "call-result", "u": u, "error": {"message": f"{type(e).__name__}: {e}"}}
            finally:
                running.pop(u, None)
            await ws.send(json.dumps(answer))

        async for frame in ws:
            msg = json.loads(frame)
            role = msg.get("role")
            if role == "call":
                running[msg["u"]] = asyncio.create_task(run(msg))
            elif role == "cancel":
                task = running.pop(msg["u"], None)
                if task:
                    task.cancel()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="ws://127.0.0.1:9000", help="any node of the cluster")
    p.add_argument("--ready-file", help="written once the functions are registered")
    args = p.parse_args()
    try:
        asyncio.run(serve(args.url, args.ready_file))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
