"""Drives the original Python MPREG's DNS calls against an mpreg node's DNS built-ins and
gateway, as its users would: `MPREGClientAPI.dns_register / dns_list / dns_describe /
dns_unregister`, `MPREGDnsClient.resolve` (UDP and TCP), then the `mpreg client dns-*` CLI
verbs (dns-register, dns-list, dns-describe, dns-resolve, dns-node-encode, dns-node-decode,
dns-unregister), and checks the parsed objects and the CLI's printed replies.

    python scripts/original_dns_client.py ws://127.0.0.1:PORT DNS_PORT [DNS_HOST]

DNS_HOST defaults to the URL's host. The CLI is the `mpreg` entry point of the original's
venv, beside this python (`mpreg = "mpreg.cli:main"`); it prints replies with rich's
`console.print(dict)`, a Python literal read back here with `ast.literal_eval`.

SRV targets given as IPs are answered by mpreg as synthesized names
(`ip4-10-0-0-7.addr.mpreg.`, whose A record is the address) where the original's own gateway
puts the raw IP; function SRV targets are node names (`<label>.node.mpreg.`): this script
checks the port and that the target is a name that resolves to the registered address.

Run by `tests/dns.rs::the_original_clients_dns_calls_and_cli_work` (ignored by default: it
needs a Python with the original MPREG package installed, named by MPREG_ORIGINAL_PYTHON).
"""

import ast
import asyncio
import ipaddress
import os
import sys
import time
from urllib.parse import urlparse

from mpreg.client.client_api import MPREGClientAPI
from mpreg.client.dns_client import MPREGDnsClient
from mpreg.fabric.catalog import ServiceEndpoint

# Registrations are control-plane (Raft) commits: what polls for them waits this long.
COMMIT_WAIT_SECONDS = 5.0
CLI = os.path.join(os.path.dirname(sys.executable), "mpreg")

WEB = {"name": "web", "namespace": "shop", "protocol": "tcp", "port": 8080}
API = {"name": "api", "namespace": "shop", "protocol": "tcp", "port": 9090}


def check(cond, what, seen=None):
    """Exits with `what` and what was seen unless `cond`; prints `ok: what` otherwise."""
    if not cond:
        sys.exit(f"FAILED: {what}" + ("" if seen is None else f"; got: {seen!r}"))
    print(f"ok: {what}")


async def resolve(dns, qname, qtype, **options):
    """MPREGDnsClient.resolve, with a clear failure when the gateway does not answer."""
    try:
        return await dns.resolve(qname, qtype, **options)
    except (TimeoutError, asyncio.TimeoutError, OSError) as exc:
        sys.exit(f"FAILED: {qname} {qtype} {options or ''}: no answer from the DNS gateway "
                 f"({type(exc).__name__}: {exc})")


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


async def cli(*args, literal=True):
    """Runs `mpreg client <args>`; returns its stdout parsed as a Python literal (or text)."""
    proc = await asyncio.create_subprocess_exec(
        CLI, "client", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    out, err = out.decode(), err.decode()
    if proc.returncode != 0:
        sys.exit(f"FAILED: mpreg client {' '.join(args)} exited {proc.returncode}\n"
                 f"stdout: {out}\nstderr: {err[-3000:]}")
    if not literal:
        return out.strip()
    try:
        return ast.literal_eval(out.strip())
    except (ValueError, SyntaxError) as exc:
        sys.exit(f"FAILED: mpreg client {' '.join(args)} printed no literal ({exc}): {out!r}")


def names(items):
    return sorted(item.get("name") for item in items)


def srv_fields(rdata):
    priority, weight, port, target = rdata.split()
    return int(priority), int(weight), int(port), target.rstrip(".")


def is_ip(text):
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


async def addresses(dns, name):
    r = await resolve(dns, name, "A")
    return r.rcode, sorted(a.rdata for a in r.answers if a.rtype == "A")


async def check_srv_target(dns, target, address, what):
    """The SRV target is a name (not the raw IP the original's gateway would put there)
    whose A record is `address`."""
    check(not is_ip(target), f"{what}: SRV target {target} is a name, not an IP")
    got = await addresses(dns, target)
    check(got == ("NOERROR", [address]), f"{what}: {target} A -> {address}", got)


async def main(url, dns_port, dns_host):
    dns = MPREGDnsClient(host=dns_host, port=dns_port, timeout=3.0)
    api = MPREGClientAPI(url)
    await api.connect()
    try:
        # ---- the client API ----
        empty = await api.dns_list(namespace="shop")
        check(not empty.items, "dns_list starts empty", empty.items)
        reg = await api.dns_register(
            **WEB, targets=["10.0.0.7"], tags=["blue"], capabilities=["http"],
            metadata={"version": "1.2", "replicas": 3}, priority=10, weight=5)
        check(bool(reg.registration_id), "dns_register: a registration_id", reg)
        check(reg.registered_at > 0, "dns_register: registered_at", reg)
        s = reg.service
        check((s.name, s.namespace, s.protocol, s.port, s.targets, s.priority, s.weight)
              == ("web", "shop", "tcp", 8080, ("10.0.0.7",), 10, 5),
              "dns_register: service name/namespace/protocol/port/targets/priority/weight", s)
        check((s.tags, s.capabilities, s.metadata)
              == (frozenset({"blue"}), frozenset({"http"}), {"version": "1.2", "replicas": 3}),
              "dns_register: service tags/capabilities/metadata", s)

        listed = await poll(lambda: api.dns_list(namespace="shop"),
                            lambda r: names(r.items) == ["web"], "dns_list shows web")
        item = listed.items[0]
        # The original's resolver reads these items with ServiceEndpoint.from_dict.
        e = ServiceEndpoint.from_dict(item)
        check((e.name, e.namespace, e.protocol, e.port, e.targets, e.priority, e.weight)
              == ("web", "shop", "tcp", 8080, ("10.0.0.7",), 10, 5), "dns_list: the item", item)
        check((e.tags, e.capabilities, e.metadata)
              == (frozenset({"blue"}), frozenset({"http"}), {"version": "1.2", "replicas": 3}),
              "dns_list: tags/capabilities/metadata", item)
        check(bool(e.node_id) and bool(e.cluster_id), "dns_list: node_id and cluster_id", item)
        node_id, cluster_id = e.node_id, e.cluster_id
        by_tag = await api.dns_list(tags=["blue"])
        check(names(by_tag.items) == ["web"], "dns_list(tags=[blue]) finds web", by_tag.items)
        other = await api.dns_list(tags=["absent"])
        check(not other.items, "dns_list(tags=[absent]) finds none", other.items)
        described = await api.dns_describe(name="web", namespace="shop", port=8080)
        check(len(described.items) == 1 and described.items[0] == item,
              "dns_describe(web, shop, 8080) describes the listed item", described.items)
        other = await api.dns_describe(name="web", port=1)
        check(not other.items, "dns_describe on another port finds none", other.items)

        # ---- MPREGDnsClient against the gateway ----
        srv = await poll(lambda: resolve(dns, "_svc._tcp.web.shop.mpreg", "SRV"),
                         lambda r: r.rcode == "NOERROR" and r.answers,
                         "_svc._tcp.web.shop.mpreg SRV answered")
        check([(a.name, a.rtype) for a in srv.answers] == [("_svc._tcp.web.shop.mpreg", "SRV")],
              "_svc._tcp.web.shop.mpreg SRV: one SRV answer", srv)
        priority, weight, port, target = srv_fields(srv.answers[0].rdata)
        check((priority, weight, port) == (10, 5, 8080),
              f"SRV {srv.answers[0].rdata}: priority 10, weight 5, port 8080")
        await check_srv_target(dns, target, "10.0.0.7", "web SRV")
        over_tcp = await resolve(dns, "_svc._tcp.web.shop.mpreg", "SRV", use_tcp=True)
        check(over_tcp.answers == srv.answers, "the same SRV answer over TCP", over_tcp)
        got = await addresses(dns, "web.shop.mpreg")
        check(got == ("NOERROR", ["10.0.0.7"]), "web.shop.mpreg A -> 10.0.0.7", got)
        txt = await resolve(dns, "web.shop.mpreg", "TXT")
        entries = {a.rdata.strip('"') for a in txt.answers if a.rtype == "TXT"}
        want = {"namespace=shop", f"cluster_id={cluster_id}", f"node_id={node_id}",
                "tags=blue", "capabilities=http", "version=1.2", "replicas=3"}
        check(want <= entries, f"web.shop.mpreg TXT has {sorted(want)}", sorted(entries))
        nx = await resolve(dns, "nothing.shop.mpreg", "A")
        check(nx.rcode == "NXDOMAIN" and not nx.answers, "nothing.shop.mpreg: NXDOMAIN", nx)

        # A function without a namespace: node names, on the node's port.
        node_url = urlparse(url)
        fn = await resolve(dns, "_mpreg._tcp.echo.mpreg", "SRV")
        check(fn.rcode == "NOERROR" and len(fn.answers) == 1, "_mpreg._tcp.echo.mpreg SRV", fn)
        _, _, port, node_name = srv_fields(fn.answers[0].rdata)
        check(port == node_url.port and node_name.endswith(".node.mpreg"),
              f"echo SRV: the node's port {node_url.port} at a node name", fn.answers[0].rdata)
        await check_srv_target(dns, node_name, str(ipaddress.ip_address(node_url.hostname)),
                               "echo SRV")

        # ---- the CLI ----
        out = await cli("dns-register", "--url", url, "--name", "api", "--namespace", "shop",
                        "--port", "9090", "--target", "10.0.0.8", "--tag", "green",
                        "--metadata", "tier=gold", "--metadata", "replicas=2",
                        "--priority", "1", "--weight", "2")
        sv = out.get("service", {})
        check(bool(out.get("registration_id")), "CLI dns-register: a registration_id", out)
        check([sv.get(k) for k in ("name", "namespace", "protocol", "port", "targets", "tags",
                                   "metadata", "priority", "weight")]
              == ["api", "shop", "tcp", 9090, ["10.0.0.8"], ["green"],
                  {"tier": "gold", "replicas": 2}, 1, 2], "CLI dns-register: the service", out)
        await poll(lambda: api.dns_list(namespace="shop"),
                   lambda r: names(r.items) == ["api", "web"], "dns_list shows api and web")
        out = await cli("dns-list", "--url", url, "--namespace", "shop")
        check(names(out.get("items", [])) == ["api", "web"],
              "CLI dns-list --namespace shop: api and web", out)
        out = await cli("dns-list", "--url", url, "--tag", "green")
        check(names(out.get("items", [])) == ["api"], "CLI dns-list --tag green: api", out)
        out = await cli("dns-describe", "--url", url, "--name", "api", "--port", "9090")
        items = out.get("items", [])
        check(names(items) == ["api"] and items[0].get("node_id") == node_id
              and items[0].get("targets") == ["10.0.0.8"], "CLI dns-describe --name api", out)

        out = await cli("dns-resolve", "--host", dns_host, "--port", str(dns_port),
                        "--qname", "_svc._tcp.api.shop.mpreg", "--qtype", "SRV", "--json")
        answers = out.get("answers", [])
        check(out.get("rcode") == "NOERROR" and [a.get("rtype") for a in answers] == ["SRV"],
              "CLI dns-resolve _svc._tcp.api.shop.mpreg SRV: one SRV answer", out)
        priority, weight, port, target = srv_fields(answers[0]["rdata"])
        check((priority, weight, port) == (1, 2, 9090),
              f"CLI SRV {answers[0]['rdata']}: priority 1, weight 2, port 9090")
        await check_srv_target(dns, target, "10.0.0.8", "api SRV")
        out = await cli("dns-resolve", "--host", dns_host, "--port", str(dns_port),
                        "--qname", "api.shop.mpreg", "--qtype", "A", "--tcp", "--json")
        check(out.get("rcode") == "NOERROR"
              and [a.get("rdata") for a in out.get("answers", [])] == ["10.0.0.8"],
              "CLI dns-resolve --tcp api.shop.mpreg A -> 10.0.0.8", out)
        table = await cli("dns-resolve", "--host", dns_host, "--port", str(dns_port),
                          "--qname", "web.shop.mpreg", literal=False)
        check("10.0.0.7" in table and "NOERROR" in table,
              "CLI dns-resolve web.shop.mpreg (table): 10.0.0.7", table)

        label = await cli("dns-node-encode", url, literal=False)
        check(label.startswith("b32-") and len(label) <= 63,
              f"CLI dns-node-encode {url}: {label}", label)
        decoded = await cli("dns-node-decode", label, literal=False)
        check(decoded == url, f"CLI dns-node-decode {label}: {url}", decoded)
        # The node label in the echo SRV target decodes to the node's id the original's way.
        decoded = await cli("dns-node-decode", node_name.split(".")[0], literal=False)
        check(decoded == node_id, f"CLI dns-node-decode {node_name.split('.')[0]}: the node id",
              decoded)

        for svc in (WEB, API):
            out = await cli("dns-unregister", "--url", url, "--name", svc["name"],
                            "--namespace", svc["namespace"], "--protocol", svc["protocol"],
                            "--port", str(svc["port"]))
            check(out.get("removed") is True, f"CLI dns-unregister {svc['name']}: removed", out)
        again = await api.dns_unregister(**WEB)
        check(again.removed is False, "dns_unregister web again: not removed", again)
        await poll(lambda: api.dns_list(), lambda r: not r.items, "dns_list empty again")
        await poll(lambda: resolve(dns, "web.shop.mpreg", "A"),
                   lambda r: r.rcode == "NXDOMAIN", "web.shop.mpreg NXDOMAIN after unregister")
        print("ok: unregistered: dns_list empty, web.shop.mpreg NXDOMAIN")
    finally:
        await api.disconnect()
    print("OK")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(f"usage: {sys.argv[0]} ws://HOST:PORT DNS_PORT [DNS_HOST]")
    node_url = sys.argv[1]
    host = sys.argv[3] if len(sys.argv) == 4 else urlparse(node_url).hostname
    if not os.path.exists(CLI):
        sys.exit(f"FAILED: the original's CLI entry point {CLI} is missing "
                 "(run this with the venv's python where the original MPREG is installed)")
    asyncio.run(main(node_url, int(sys.argv[2]), host))
