"""A work queue with nothing but the `websockets` package: create a queue on one node,
send to it through another, receive and acknowledge, as the original's
`MPREGClientAPI.call("queue_send", {...})` does (each queue built-in takes one object).

    python3 examples/queue_websockets.py OWNER_URL OTHER_URL [COUNT]

It creates queue `py-orders` on OWNER_URL (visibility 30 s, dead letters after 3
deliveries, dedup ids remembered 5 minutes), sends COUNT (default 3) orders through
OTHER_URL, the first one twice with the same deduplication id (the second answered as a
duplicate), then receives on OTHER_URL in long polls, acknowledges each message by its
receipt handle, and prints each payload as one JSON line; last, the queue's stats as a
JSON line. docs/PROTOCOL.md, "Queues", has every field.
"""

import asyncio
import itertools
import json
import sys

import websockets

_ids = itertools.count()


async def call(ws, fun, request):
    """Calls built-in `fun` with `request` (one object) and returns its result; a refused
    call raises with the node's code and reason."""
    u = f"py-{next(_ids)}"
    await ws.send(json.dumps({"role": "rpc", "u": u,
                              "cmds": [{"name": "c", "fun": fun, "args": [request]}]}))
    while True:
        reply = json.loads(await ws.recv())
        if reply.get("u") != u:
            continue
        if reply.get("error"):
            e = reply["error"]
            raise SystemExit(f"{fun}: error {e['code']} ({e['message']}): {e['details']}")
        return reply["r"]["c"]


async def main(owner_url, other_url, count):
    async with websockets.connect(owner_url) as owner, websockets.connect(other_url) as other:
        await call(owner, "queue_create", {
            "queue_name": "py-orders", "default_visibility_timeout_seconds": 30,
            "dead_letter_max_receives": 3, "deduplication_window_seconds": 300})
        for n in range(count):
            sent = await call(other, "queue_send", {
                "queue_name": "py-orders", "message_payload": {"order": n},
                "deduplication_id": f"order-{n}", "headers": {"source": "example"}})
            assert not sent["duplicate"], sent
        again = await call(other, "queue_send", {
            "queue_name": "py-orders", "message_payload": {"order": 0},
            "deduplication_id": "order-0"})
        assert again["duplicate"], again
        done = 0
        while done < count:
            got = await call(other, "queue_receive", {
                "queue_name": "py-orders", "max_messages": 10, "wait_seconds": 5})
            for m in got["messages"]:
                await call(other, "queue_ack", {
                    "queue_name": "py-orders", "receipt_handle": m["receipt_handle"]})
                print(json.dumps(m["message_payload"]))
                done += 1
        stats = await call(owner, "queue_stats", {"queue_name": "py-orders"})
        print(json.dumps({k: stats[k] for k in
                          ("depth", "in_flight", "total_messages_sent",
                           "total_messages_acknowledged", "duplicate_sends")}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 3))
