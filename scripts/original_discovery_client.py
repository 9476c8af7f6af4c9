"""Drives the original Python client's discovery calls against an mpreg node, as its users
would: `cluster_map_v2`, `rpc_describe`, `rpc_report`, `catalog_watch`, then its pub/sub
client on the topic `catalog_watch` names, while a second connection registers a function
(a worker), and checks the parsed objects (the original's parsers fill defaults silently).

    python scripts/original_discovery_client.py ws://127.0.0.1:PORT

Run by `tests/discovery.rs::the_original_clients_discovery_calls_parse` (ignored by default:
it needs a Python with the original MPREG
package installed, named by MPREG_ORIGINAL_PYTHON).
"""

import asyncio
import json
import sys

import websockets

from mpreg.client.client_api import MPREGClientAPI
from mpreg.client.pubsub_client import MPREGPubSubClient


def check(cond, what):
    if not cond:
        sys.exit(f"FAILED: {what}")
    print(f"ok: {what}")


async def main(url):
    api = MPREGClientAPI(url)
    await api.connect()
    try:
        m = await api.cluster_map_v2()
        check(len(m.nodes) == 1 and m.nodes[0].node_id, f"cluster_map_v2 nodes: {m.nodes}")
        check(m.nodes[0].transport_endpoints[0].port > 0, "transport endpoint port")
        d = await api.rpc_describe(function_name="echo")
        check(len(d.items) == 1, f"rpc_describe items: {d.items}")
        item = d.items[0]
        check(item.identity.name == "echo", "identity")
        check(item.spec is not None and item.spec.parameters[0].name == "arg", "spec parameters")
        check(item.spec_digest and len(item.spec_digest) == 64, "spec digest")
        r = await api.rpc_report()
        check(r.total_functions >= 11, f"rpc_report total {r.total_functions}")
        w = await api.catalog_watch()
        check(w.topic == "mpreg.discovery.delta", f"catalog_watch topic {w.topic}")

        heard = asyncio.get_running_loop().create_future()

        def on_delta(message):
            if not heard.done():
                heard.set_result(message)

        async with MPREGPubSubClient(base_client=api) as pubsub:
            sid = await pubsub.subscribe([w.topic], on_delta, get_backlog=False)
            check(bool(sid), "subscribed")
            async with websockets.connect(url) as worker:
                await worker.send(json.dumps(
                    {"role": "register", "u": "r1", "functions": [{"name": "svc.watched"}]}))
                await worker.recv()
                message = await asyncio.wait_for(heard, 10)
            payload = message.payload
            names = [f["identity"]["name"] for f in payload["delta"]["functions"]]
            check(names == ["svc.watched"], f"delta functions {names}")
            check(message.topic == w.topic, "notification topic")
    finally:
        await api.disconnect()
    print("OK")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
