"""Drives the original's MPREGPubSubClient against an mpreg node: a subscriber on one
connection (`user.*.login` and `metrics.#`), a publisher on another, and checks what the
subscriber's callback receives and what `publish` returns; then a late subscriber with
the client's defaults, which hears the backlog before live messages.

    python scripts/original_pubsub_client.py ws://A [ws://C]

With a second node C: the extended client (MPREGPubSubExtendedClient) publishes on C and
the subscriber on A hears it, and a late subscriber on A gets C's backlog then live.

Run by `tests/pubsub.rs::the_original_pubsub_client_works` (ignored by default: it needs
a Python with the original MPREG
package installed, named by MPREG_ORIGINAL_PYTHON).
"""

import asyncio
import sys

from mpreg.client.client_api import MPREGClientAPI
from mpreg.client.pubsub_client import MPREGPubSubClient, MPREGPubSubExtendedClient


def check(cond, what):
    if not cond:
        sys.exit(f"FAILED: {what}")
    print(f"ok: {what}")


async def main(url):
    sub_api, pub_api = MPREGClientAPI(url), MPREGClientAPI(url)
    await sub_api.connect()
    await pub_api.connect()
    got = []
    done = asyncio.Event()

    def on_message(message):
        got.append((message.topic, message.payload))
        if len(got) == 2:
            done.set()

    try:
        async with MPREGPubSubClient(base_client=sub_api) as sub, \
                MPREGPubSubClient(base_client=pub_api) as pub:
            sid = await sub.subscribe(["user.*.login", "metrics.#"], on_message, get_backlog=False)
            check(bool(sid), "subscribed")
            check(await pub.publish("user.42.login", {"user": 42}), "publish user.42.login")
            check(await pub.publish("user.42.logout", {"user": 42}), "publish user.42.logout")
            check(await pub.publish("metrics", {"cpu": 0.5}), "publish metrics")
            await asyncio.wait_for(done.wait(), 10)
            check(got == [("user.42.login", {"user": 42}), ("metrics", {"cpu": 0.5})],
                  f"received {got}")
            check(await sub.unsubscribe(sid), "unsubscribed")
            # A late subscriber with the client's defaults (get_backlog=True, 300 s): the
            # kept messages first, in order, then live ones.
            late = []
            late_done = asyncio.Event()

            def on_late(message):
                late.append(message.topic)
                if message.topic == "user.7.login":
                    late_done.set()

            late_sid = await sub.subscribe(["user.*.login", "metrics.#"], on_late)
            check(bool(late_sid), "subscribed late, asking for the backlog")
            check(await pub.publish("user.7.login", {"user": 7}), "publish user.7.login")
            await asyncio.wait_for(late_done.wait(), 10)
            check(late == ["user.42.login", "metrics", "user.7.login"],
                  f"backlog then live: {late}")
    finally:
        await sub_api.disconnect()
        await pub_api.disconnect()



async def across(url_a, url_c):
    """MPREGPubSubClient on node A, the extended client publishing on node C."""
    sub_api = MPREGClientAPI(url_a)
    await sub_api.connect()
    got = []
    heard = asyncio.Event()

    def on_message(message):
        got.append(message.topic)
        heard.set()

    try:
        async with MPREGPubSubClient(base_client=sub_api) as sub, \
                MPREGPubSubExtendedClient(url=url_c) as pub:
            sid = await sub.subscribe(["orders.*.created", "metrics.#"], on_message,
                                      get_backlog=False)
            check(bool(sid), "subscribed on A")
            # A's interest reaches C within its summary interval: probe until heard.
            for _ in range(100):
                check(await pub.publish("metrics.probe", {}), "publish a probe on C")
                try:
                    await asyncio.wait_for(heard.wait(), 0.1)
                    break
                except asyncio.TimeoutError:
                    pass
            check("metrics.probe" in got, "A's subscription hears C")
            got.clear()
            for t in ["orders.1.created", "orders.1.b.created", "metrics.cpu", "orders.end.created"]:
                check(await pub.publish(t, {"t": t}), f"publish {t} on C")
            for _ in range(100):
                if got and got[-1] == "orders.end.created":
                    break
                await asyncio.sleep(0.05)
            check(got == ["orders.1.created", "metrics.cpu", "orders.end.created"],
                  f"A heard C's matching publishes in order: {got}")
            # A late subscriber on A with the defaults: C's kept messages, then live.
            late = []
            late_done = asyncio.Event()

            def on_late(message):
                late.append(message.topic)
                if message.topic == "orders.2.created":
                    late_done.set()

            await sub.subscribe(["orders.*.created"], on_late)
            check(await pub.publish("orders.2.created", {}), "publish orders.2.created on C")
            await asyncio.wait_for(late_done.wait(), 10)
            check(late == ["orders.1.created", "orders.end.created", "orders.2.created"],
                  f"the cluster's backlog, then live: {late}")
    finally:
        await sub_api.disconnect()


async def run(urls):
    await main(urls[0])
    if len(urls) > 1:
        await across(urls[0], urls[1])
    print("OK")


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1:]))
