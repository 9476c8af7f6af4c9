"""Topic pub/sub with nothing but the `websockets` package: subscribe on one node, publish
on another, print what arrives.

    python3 examples/pubsub_websockets.py SUBSCRIBE_URL PUBLISH_URL [COUNT]

It subscribes to `orders.*.created` and `metrics.#` (the node acknowledges with a
`pubsub-ack`), then publishes COUNT (default 3) orders and one `users.1.login` (which it
does not hear), and prints each notification's topic and payload as one JSON line. The
messages are the original MPREG's (docs/PROTOCOL.md, "Topic pub/sub").
"""

import asyncio
import json
import sys

import websockets


async def request(ws, message):
    """Sends `message` and returns its pubsub-ack (notifications before it are returned too)."""
    await ws.send(json.dumps(message))
    seen = []
    while True:
        frame = json.loads(await ws.recv())
        if frame.get("role") == "pubsub-ack" and frame.get("operation_id") == message["u"]:
            if not frame["success"]:
                raise SystemExit(f"refused: {frame['error']}")
            return seen
        seen.append(frame)


async def main(sub_url, pub_url, count):
    async with websockets.connect(sub_url) as sub, websockets.connect(pub_url) as pub:
        await request(sub, {"role": "pubsub-subscribe", "u": "s1", "subscription": {
            "subscription_id": "orders-and-metrics",
            "patterns": [{"pattern": "orders.*.created", "exact_match": False},
                         {"pattern": "metrics.#", "exact_match": False}],
            "subscriber": "example", "created_at": 0, "get_backlog": False,
            "backlog_seconds": 0}})
        # A subscription on one node reaches publishes on another once its node has told
        # the others (within a fraction of a second): publish a probe until one arrives.
        for i in range(100):
            await request(pub, {"role": "pubsub-publish", "u": f"probe{i}", "message": {
                "topic": "metrics.probe", "payload": i, "timestamp": 0,
                "message_id": f"probe-{i}", "publisher": "example", "headers": {}}})
            try:
                await asyncio.wait_for(sub.recv(), 0.05)
                break
            except asyncio.TimeoutError:
                continue
        else:
            raise SystemExit("the subscription never reached the publishing node")
        topics = [f"orders.{n}.created" for n in range(count)] + ["users.1.login"]
        for n, topic in enumerate(topics):
            await request(pub, {"role": "pubsub-publish", "u": f"p{n}", "message": {
                "topic": topic, "payload": {"n": n}, "timestamp": 0,
                "message_id": f"m{n}", "publisher": "example", "headers": {}}})
        heard = 0
        while heard < count:
            frame = json.loads(await asyncio.wait_for(sub.recv(), 10))
            message = frame["message"]
            if message["topic"] == "metrics.probe":
                continue  # a later probe, sent before the orders
            print(json.dumps({"topic": message["topic"], "payload": message["payload"]}))
            heard += 1


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 3))
