"""Drives the original Python MPREGClusterClient against running mpreg nodes.

Not part of the test suite: the original client is not published on PyPI, so this needs a
checkout of the original project on PYTHONPATH (see docs/PROTOCOL.md, "The original
cluster client"). Start three `mpreg-demo-node`s (one with `gpu`, one with
`database,gpu`), then:

    python scripts/original_cluster_client.py SEED_URL[,SEED_URL...] PID_OF_A_GPU_NODE

It discovers the cluster through `cluster_map`, spreads `infer` calls over the nodes,
SIGKILLs the given node, and checks that every later call is answered by a survivor.
Exits non-zero when an answer is wrong or the failover does not happen.
"""

import asyncio
import os
import signal
import sys
import time

from mpreg.client.cluster_client import MPREGClusterClient

INPUT = {"values": [1, 2, 3]}


async def spread(client, calls):
    """Calls `infer` `calls` times; returns {node: answers} and the errors seen."""
    where, errors = {}, []
    for _ in range(calls):
        try:
            answer = await client.call("infer", INPUT)
        # The original client's request future is cancelled when its connection dies, and
        # CancelledError is not an Exception, so its own failover loop lets it through.
        except (Exception, asyncio.CancelledError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        if answer.get("score") != 2.0:
            sys.exit(f"wrong answer: {answer}")
        where[answer["node"]] = where.get(answer["node"], 0) + 1
    return where, errors


async def main():
    seeds = tuple(sys.argv[1].split(","))
    victim = int(sys.argv[2])
    client = MPREGClusterClient(seed_urls=seeds, full_log=False)
    await client.connect()
    snapshot = await client.cluster_map()
    for node in snapshot.nodes:
        print(f"node {node.node_id} {node.advertised_urls} load_score={node.load.load_score}")
    where, errors = await spread(client, 20)
    print(f"before the kill: answered by {where}, errors {errors}")
    if errors or len(where) < 2:
        sys.exit("expected answers from both gpu nodes and no errors")

    os.kill(victim, signal.SIGKILL)
    started = time.monotonic()
    where, errors = await spread(client, 40)
    took = time.monotonic() - started
    print(f"after the kill: answered by {where}, {len(errors)} errors in {took:.2f}s")
    for e in errors:
        print(f"  {e}")
    if len(where) != 1 or sum(where.values()) < 38:
        sys.exit("expected every call but the one on the broken connection to land on the survivor")

    await asyncio.sleep(2)  # past the failure detector's 1.5 s
    await client.refresh_cluster_map()
    print(f"endpoint scores after refresh: {client._endpoint_scores}")
    await client.disconnect()


asyncio.run(main())
