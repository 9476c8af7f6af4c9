"""Drives the original Python client's discovery-policy, summary and resolver calls against an
mpreg node, as its users would, through `MPREGClientAPI`'s own wrappers (which parse every reply
with the original's dataclasses, filling defaults silently):

1. `summary_query` (one summary per function, `namespace` + `limit` paging with
   `next_page_token`), `summary_watch` topics, `resolver_cache_stats`, `resolver_resync`;
2. `namespace_status`, `namespace_policy_export`, `namespace_policy_validate` (the original's
   error messages), `namespace_policy_apply`; then, under the applied rule, `dns_register` into
   `shop.secret` and `shop`, `dns_list` hiding the secret service, `namespace_status` denying
   `shop.secret.x`, `summary_query` hiding `shop.secret.*` functions, `summary_watch` on
   `shop.secret` raising the original's `MPREGException`, then `discovery_access_audit` and
   `namespace_policy_audit`.

    python scripts/original_policy_client.py ws://127.0.0.1:PORT

The functions summarized under `shop.*` are registered by a second, raw WebSocket connection (a
worker, as in `original_discovery_client.py`), kept open while the script runs.

mpreg differs from the original on purpose here, and this script expects mpreg's behaviour:
the policy is cluster-wide (a catalog entry, so reads poll for its commit), items left out of
listings are audited as denials too, a `summary_watch` denial is error 1021 (the original: 403)
whose details contain `discovery_access_denied` (the message is 1021's, `Forbidden`), and summaries carry real `health_band` and
`latency_band_ms` values (the original's are constants).

Run it with the Python of the original MPREG's venv (`MPREG_ORIGINAL_PYTHON`).
"""

import asyncio
import json
import sys
import time

import websockets

from mpreg.client.client_api import MPREGClientAPI
from mpreg.core.discovery_resolver import CatalogEntryCounts
from mpreg.core.model import MPREGException
from mpreg.core.namespace_policy import NamespacePolicyRule

# Registrations and policy changes are control-plane (Raft) commits: polls wait this long.
COMMIT_WAIT_SECONDS = 5.0

# Functions the worker connection offers: summary namespaces `shop.cart` and `shop.secret`.
WORKER_FUNCTIONS = ["shop.cart.add", "shop.cart.remove", "shop.secret.audit"]

SECRET = {"name": "vault", "namespace": "shop.secret", "protocol": "tcp", "port": 7001}
PUBLIC = {"name": "web", "namespace": "shop", "protocol": "tcp", "port": 8080}

BAD_RULES = [
    {"namespace": " "},
    {"namespace": "a"},
    {"namespace": "a", "cutover_windows": [{"starts_at": 0}, {"starts_at": 5, "ends_at": 2}]},
]
BAD_RULE_ERRORS = (
    "rules[0].namespace is empty",
    "rules[2].namespace duplicate: a",
    "rules[2].cutover_windows[0].starts_at invalid",
    "rules[2].cutover_windows[1].ends_at before starts_at",
)
RULE = {"namespace": "shop.secret", "visibility": ["other-cluster"], "policy_version": "v1"}


def check(cond, what, seen=None):
    """Exits with `what` and what was seen unless `cond`; prints `ok: what` otherwise."""
    if not cond:
        sys.exit(f"FAILED: {what}" + ("" if seen is None else f"; got: {seen!r}"))
    print(f"ok: {what}")


async def poll(fetch, done, what):
    """Calls `fetch()` until `done(result)`, for up to COMMIT_WAIT_SECONDS."""
    deadline = time.monotonic() + COMMIT_WAIT_SECONDS
    while True:
        result = await fetch()
        if done(result):
            return result
        if time.monotonic() > deadline:
            sys.exit(f"FAILED: {what} within {COMMIT_WAIT_SECONDS}s; last: {result!r}")
        await asyncio.sleep(0.025)


def service_ids(response):
    return [item.service_id for item in response.items]


def check_summary(item, what):
    """A parsed ServiceSummary carries what the original's users read from it."""
    check(item.namespace and item.service_id and item.endpoint_count >= 1,
          f"{what}: namespace, service_id, endpoint_count", item)
    check(bool(item.health_band) and len(item.latency_band_ms) == 2
          and all(isinstance(v, int) and v >= 0 for v in item.latency_band_ms),
          f"{what}: health_band and a (low, high) latency band", item)
    check(item.ttl_seconds > 0 and item.generated_at > 0 and bool(item.regions)
          and bool(item.source_cluster), f"{what}: ttl, generated_at, regions, source_cluster",
          item)


async def pages(api, namespace):
    """Every page of summary_query(namespace=…, limit=1), following next_page_token."""
    seen, token = [], None
    for _ in range(20):
        request = {"namespace": namespace, "limit": 1}
        if token:
            request["page_token"] = token
        page = await api.summary_query(**request)
        check(len(page.items) <= 1, f"summary_query(namespace={namespace}, limit=1, "
              f"page_token={token}): at most one item", page.items)
        seen.extend(service_ids(page))
        token = page.next_page_token
        if token is None:
            return seen
    sys.exit(f"FAILED: summary_query(namespace={namespace}, limit=1) never ended: {seen}")


async def denied(call, what):
    """Awaits `call`, which must raise the original's MPREGException for a policy denial."""
    try:
        result = await call
    except MPREGException as exc:
        error = exc.rpc_error
        # Our errors keep one message per stable code (1021: "Forbidden"); the original's
        # words are in the details.
        check(error.code == 1021 and "discovery_access_denied" in (error.details or ""),
              f"{what}: MPREGException 1021 discovery_access_denied",
              (error.code, error.message, error.details))
        return error
    sys.exit(f"FAILED: {what}: no MPREGException; got: {result!r}")


async def summaries_and_resolver(api):
    everything = await api.summary_query()
    ids = service_ids(everything)
    check(len(ids) == len(set(ids)), "summary_query(): one summary per function", ids)
    check({"echo", "summary_query", *WORKER_FUNCTIONS} <= set(ids),
          "summary_query(): echo, the built-ins and the worker's functions", ids)
    for item in everything.items:
        check_summary(item, f"summary {item.service_id}")
    echo = next(item for item in everything.items if item.service_id == "echo")
    check(echo.namespace == "echo" and echo.endpoint_count == 1,
          "summary echo: its own namespace, one endpoint", echo)
    check(everything.next_page_token is None, "summary_query(): one page",
          everything.next_page_token)
    check(ids == sorted(ids, key=lambda s: (
        next(i.namespace for i in everything.items if i.service_id == s), s)),
        "summary_query(): sorted by (namespace, service_id)", ids)

    only = await api.summary_query(namespace="echo")
    check(service_ids(only) == ["echo"], "summary_query(namespace=echo): echo", only.items)
    shop = await api.summary_query(namespace="shop")
    check(service_ids(shop) == WORKER_FUNCTIONS,
          "summary_query(namespace=shop): the worker's three functions", service_ids(shop))
    check([i.namespace for i in shop.items] == ["shop.cart", "shop.cart", "shop.secret"],
          "summary namespaces: the function name minus its last segment", shop.items)
    paged = await pages(api, "shop")
    check(paged == WORKER_FUNCTIONS, "summary_query(namespace=shop, limit=1): three pages, "
          "the same items", paged)
    first = await api.summary_query(namespace="shop", limit=1)
    check(bool(first.next_page_token), "the first page has a next_page_token", first)
    by_id = await api.summary_query(service_id="echo")
    check(service_ids(by_id) == ["echo"], "summary_query(service_id=echo)", by_id.items)
    scoped = await api.summary_query(namespace="echo", scope="global")
    check([i.scope for i in scoped.items] == ["global"], "summary_query(scope=global): "
          "items carry the scope", scoped.items)

    watch = await api.summary_watch()
    check(watch.topic == "mpreg.discovery.summary" and watch.generated_at > 0
          and bool(watch.cluster_id), "summary_watch(): the base topic, cluster_id", watch)
    cluster_id = watch.cluster_id
    watch = await api.summary_watch(scope="global", namespace="shop")
    check((watch.topic, watch.scope, watch.namespace, watch.cluster_id)
          == ("mpreg.discovery.summary.global.shop", "global", "shop", cluster_id),
          "summary_watch(scope=global, namespace=shop): topic, scope, namespace", watch)

    stats = await api.resolver_cache_stats()
    check(stats.enabled is False and stats.generated_at > 0 and stats.namespaces == ()
          and isinstance(stats.entry_counts, CatalogEntryCounts) and stats.stats is None,
          "resolver_cache_stats(): resolver mode off", stats)
    resync = await api.resolver_resync()
    check((resync.enabled, resync.resynced, resync.error)
          == (False, False, "resolver_mode_disabled") and resync.generated_at > 0,
          "resolver_resync(): resolver_mode_disabled", resync)
    return cluster_id


async def policy(api, cluster_id):
    status = await api.namespace_status(namespace="shop.secret")
    check((status.namespace, status.allowed, status.reason, status.rule)
          == ("shop.secret", True, "policy_disabled", None),
          "namespace_status(shop.secret): allowed, policy_disabled", status)
    check(status.viewer_cluster_id == cluster_id and status.viewer_tenant_id is None
          and status.generated_at > 0, "namespace_status: the viewer is this cluster", status)
    export = await api.namespace_policy_export()
    check((export.enabled, export.default_allow, export.rule_count, export.rules)
          == (False, True, 0, ()) and export.generated_at > 0,
          "namespace_policy_export(): disabled, default allow, no rules", export)

    invalid = await api.namespace_policy_validate(rules=BAD_RULES, actor="script")
    check((invalid.valid, invalid.rule_count, invalid.errors) == (False, 3, BAD_RULE_ERRORS),
          "namespace_policy_validate(bad rules): the original's error messages", invalid)
    rejected = await api.namespace_policy_apply(rules=BAD_RULES[:1], enabled=True,
                                                actor="script")
    check((rejected.applied, rejected.valid, rejected.errors)
          == (False, False, BAD_RULE_ERRORS[:1]), "namespace_policy_apply(bad rules): not "
          "applied", rejected)
    valid = await api.namespace_policy_validate(rules=[RULE])
    check((valid.valid, valid.rule_count, valid.errors) == (True, 1, ()),
          "namespace_policy_validate(the rule): valid", valid)

    applied = await api.namespace_policy_apply(rules=[RULE], enabled=True, actor="script")
    check((applied.applied, applied.valid, applied.rule_count, applied.errors)
          == (True, True, 1, ()) and applied.generated_at > 0,
          "namespace_policy_apply(shop.secret visible to other-cluster): applied", applied)
    export = await poll(api.namespace_policy_export, lambda r: r.enabled,
                        "namespace_policy_export() shows the applied policy")
    want = NamespacePolicyRule.from_dict(RULE)
    check((export.enabled, export.default_allow, export.rule_count, export.rules)
          == (True, True, 1, (want,)), "namespace_policy_export(): the applied rule", export)

    reg = await api.dns_register(**SECRET, targets=["10.0.0.9"])
    check(bool(reg.registration_id) and reg.service.namespace == "shop.secret",
          "dns_register in shop.secret", reg)
    reg = await api.dns_register(**PUBLIC, targets=["10.0.0.7"])
    check(bool(reg.registration_id) and reg.service.namespace == "shop",
          "dns_register in shop", reg)

    async def listing():
        listed = await api.dns_list()
        audit = await api.discovery_access_audit()
        return listed, audit

    def secret_hidden(result):
        listed, audit = result
        return (sorted(i.get("name") for i in listed.items) == ["web"]
                and any(e.namespace == "shop.secret" and e.event == "dns_list"
                        for e in audit.entries))

    listed, _ = await poll(listing, secret_hidden,
                           "dns_list() shows web, hides vault (denial audited)")
    check([i.get("namespace") for i in listed.items] == ["shop"],
          "dns_list(): only the shop service", listed.items)
    secret = await api.dns_list(namespace="shop.secret")
    check(not secret.items, "dns_list(namespace=shop.secret): nothing", secret.items)
    described = await api.dns_describe(name="vault", namespace="shop.secret")
    check(not described.items, "dns_describe(vault, shop.secret): nothing", described.items)

    status = await api.namespace_status(namespace="shop.secret.x")
    check((status.namespace, status.allowed, status.reason)
          == ("shop.secret.x", False, "viewer_denied"),
          "namespace_status(shop.secret.x): denied, viewer_denied", status)
    check(status.rule == want and status.rule.policy_version == "v1",
          "namespace_status(shop.secret.x): the rule, policy_version v1", status.rule)
    status = await api.namespace_status(namespace="shop")
    check((status.allowed, status.reason, status.rule) == (True, "no_policy", None),
          "namespace_status(shop): allowed, no_policy", status)

    shop = await api.summary_query(namespace="shop")
    check(service_ids(shop) == ["shop.cart.add", "shop.cart.remove"],
          "summary_query(namespace=shop): shop.secret.audit hidden", service_ids(shop))
    hidden = await api.summary_query(namespace="shop.secret")
    check(not hidden.items, "summary_query(namespace=shop.secret): nothing", hidden.items)
    everything = await api.summary_query()
    check("shop.secret.audit" not in service_ids(everything) and "echo" in service_ids(everything),
          "summary_query(): shop.secret.audit hidden, echo kept", service_ids(everything))

    await denied(api.summary_watch(namespace="shop.secret"),
                 "summary_watch(namespace=shop.secret)")
    await denied(api.summary_watch(scope="global", namespace="shop.secret.x"),
                 "summary_watch(scope=global, namespace=shop.secret.x)")
    watch = await api.summary_watch(namespace="shop")
    check(watch.topic == "mpreg.discovery.summary.shop", "summary_watch(namespace=shop): "
          "still allowed", watch)

    audit = await api.discovery_access_audit()
    check(audit.generated_at > 0 and audit.entries, "discovery_access_audit(): entries",
          audit)
    for entry in audit.entries:
        check(entry.event and entry.timestamp > 0 and entry.viewer_cluster_id == cluster_id
              and entry.allowed is False and entry.reason == "viewer_denied"
              and (entry.namespace or "").startswith("shop.secret"),
              f"access audit entry {entry.event} {entry.namespace}: a parsed denial", entry)
    stamps = [e.timestamp for e in audit.entries]
    check(stamps == sorted(stamps), "access audit: oldest first", stamps)
    events = {(e.event, e.namespace) for e in audit.entries}
    for expected in [("namespace_status", "shop.secret.x"), ("summary_query", "shop.secret"),
                     ("summary_watch", "shop.secret"), ("summary_watch", "shop.secret.x"),
                     ("dns_list", "shop.secret")]:
        check(expected in events, f"access audit has {expected}", sorted(events))
    last = await api.discovery_access_audit(limit=2)
    check(last.entries == audit.entries[-2:], "discovery_access_audit(limit=2): the newest two",
          last.entries)

    log = await api.namespace_policy_audit()
    check(log.generated_at > 0 and len(log.entries) >= 4, "namespace_policy_audit(): entries",
          log)
    steps = [(e.event, e.actor, e.valid, e.rule_count, e.errors) for e in log.entries]
    check(steps[-4:] == [("validate", "script", False, 3, BAD_RULE_ERRORS),
                         ("apply", "script", False, 1, BAD_RULE_ERRORS[:1]),
                         ("validate", None, True, 1, ()),
                         ("apply", "script", True, 1, ())],
          "namespace_policy_audit(): validate, failed apply, validate, apply by script", steps)
    check(all(e.timestamp > 0 for e in log.entries), "policy audit: timestamps", log.entries)
    last = await api.namespace_policy_audit(limit=1)
    check(last.entries == log.entries[-1:], "namespace_policy_audit(limit=1): the apply",
          last.entries)


async def main(url):
    api = MPREGClientAPI(url, full_log=False)
    await api.connect()
    try:
        async with websockets.connect(url) as worker:
            await worker.send(json.dumps({"role": "register", "u": "policy-worker",
                                          "functions": [{"name": n} for n in WORKER_FUNCTIONS]}))
            await worker.recv()
            await poll(lambda: api.summary_query(namespace="shop"),
                       lambda r: service_ids(r) == WORKER_FUNCTIONS,
                       "summary_query(namespace=shop) shows the worker's functions")
            cluster_id = await summaries_and_resolver(api)
            await policy(api, cluster_id)
    finally:
        await api.disconnect()
    print("OK")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} ws://HOST:PORT")
    asyncio.run(main(sys.argv[1]))
