//! The DNS gateway over real sockets: every name form, rcode and size rule through the
//! Rust resolver (`mpreg::dns::client`) and through `dig` (bind9-dnsutils, which `.ci/run`
//! installs), TCP with several queries per connection, malformed packets, and a flood
//! that response rate limiting holds down. Registrations go through the node's
//! `dns_register`, so they are real catalog commits.

// Tests are clients from outside the node: they may use real sockets directly.
#![allow(clippy::disallowed_types)]

mod common;

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use mpreg::dns::client::{Resolved, Via, resolve};
use mpreg::dns::wire::query;
use mpreg::env::Env;
use mpreg::{Client, Function, RunningNode, Settings};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn dns_settings() -> Settings {
    Settings {
        dns_port: Some(0),
        ..test_settings()
    }
}

async fn dns_node(settings: Settings) -> (RunningNode, SocketAddr) {
    let add = Function::new("math.add", |a: i64, b: i64| async move {
        Ok::<_, String>(a + b)
    })
    .params(["a", "b"]);
    let node = start_node(settings, vec![add]).await;
    assert!(
        node.registered().await,
        "the node and its functions are in the catalog"
    );
    let (udp, tcp) = node.dns_addrs().expect("the gateway listens");
    assert_eq!(udp.port(), tcp.port(), "UDP and TCP share the port number");
    (node, udp)
}

async fn ask(server: SocketAddr, name: &str, t: RecordType) -> Resolved {
    resolve(
        &Env::production(),
        server,
        name,
        t,
        Via::Udp,
        Duration::from_secs(3),
    )
    .await
    .unwrap_or_else(|e| panic!("{name} {t}: {e}"))
}

fn rdata(r: &Resolved) -> Vec<String> {
    let mut v: Vec<String> = r
        .message
        .answers
        .iter()
        .map(|a| a.data.to_string())
        .collect();
    v.sort();
    v
}

/// `dig +short`-style lines for a question, from the real `dig`.
async fn dig(server: SocketAddr, args: &[&str]) -> String {
    let port = server.port().to_string();
    let out = tokio::process::Command::new("dig")
        .args(["@127.0.0.1", "-p", &port, "+norec", "+time=2", "+tries=1"])
        .args(args)
        .output()
        .await
        .expect("dig runs (bind9-dnsutils is installed by .ci/run)");
    assert!(out.status.success(), "dig {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn register(client: &Client, req: Value) -> Value {
    client
        .call("dns_register", json!([req]))
        .await
        .unwrap_or_else(|e| panic!("dns_register {req}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_name_form_answers_from_the_catalog() {
    let (node, dns) = dns_node(dns_settings()).await;
    let client = Client::connect(node.url()).await.unwrap();
    let reply = register(
        &client,
        json!({"name": "web", "namespace": "shop", "protocol": "tcp", "port": 8080,
            "targets": ["10.0.0.7", "fd00::7", "db.example.com"], "tags": ["blue"],
            "metadata": {"env": "prod", "v": 2}, "priority": 10, "weight": 5}),
    )
    .await;
    assert_eq!(reply["registration_id"].as_str().unwrap().len(), 36);
    assert_eq!(
        reply["service"]["targets"],
        json!(["10.0.0.7", "db.example.com", "fd00::7"])
    );

    // _svc._tcp: SRV to names; the addresses of synthesized ones in the additional section.
    let srv = ask(dns, "_svc._tcp.web.shop.mpreg", RecordType::SRV).await;
    assert_eq!(srv.rcode(), ResponseCode::NoError);
    assert_eq!(
        rdata(&srv),
        vec![
            "10 5 8080 db.example.com.",
            "10 5 8080 ip4-10-0-0-7.addr.mpreg.",
            "10 5 8080 ip6-fd00-0000-0000-0000-0000-0000-0000-0007.addr.mpreg.",
        ]
    );
    assert!(srv.message.authoritative);
    let extra: Vec<String> = srv
        .message
        .additionals
        .iter()
        .map(|r| r.data.to_string())
        .collect();
    assert!(extra.contains(&"10.0.0.7".to_owned()) && extra.contains(&"fd00::7".to_owned()));
    // A synthesized target resolves too.
    let a = ask(dns, "ip4-10-0-0-7.addr.mpreg", RecordType::A).await;
    assert_eq!(rdata(&a), vec!["10.0.0.7"]);
    // `_udp` does not match a tcp service; `ws` would.
    let udp = ask(dns, "_svc._udp.web.shop.mpreg", RecordType::SRV).await;
    assert_eq!(udp.rcode(), ResponseCode::NXDomain);

    // The plain name: addresses and TXT, in any letter case.
    assert_eq!(
        rdata(&ask(dns, "WEB.Shop.mpreg", RecordType::A).await),
        vec!["10.0.0.7"]
    );
    assert_eq!(
        rdata(&ask(dns, "web.shop.mpreg", RecordType::AAAA).await),
        vec!["fd00::7"]
    );
    let txt = rdata(&ask(dns, "web.shop.mpreg", RecordType::TXT).await);
    for item in [
        "namespace=shop",
        "tags=blue",
        "env=prod",
        "v=2",
        "cluster_id=default-cluster",
    ] {
        assert!(txt.iter().any(|t| t.contains(item)), "{item} in {txt:?}");
    }
    // A known name without that type: NODATA, with the SOA for negative caching.
    let nodata = ask(dns, "web.shop.mpreg", RecordType::SRV).await;
    assert_eq!(nodata.rcode(), ResponseCode::NoError);
    assert!(nodata.message.answers.is_empty());
    assert_eq!(nodata.message.authorities[0].record_type(), RecordType::SOA);
    // An unknown name: NXDOMAIN with the SOA; outside the zone: REFUSED.
    let nx = ask(dns, "nothing.shop.mpreg", RecordType::A).await;
    assert_eq!(nx.rcode(), ResponseCode::NXDomain);
    assert_eq!(nx.message.authorities[0].record_type(), RecordType::SOA);
    assert_eq!(
        ask(dns, "example.com", RecordType::A).await.rcode(),
        ResponseCode::Refused
    );
    assert_eq!(rdata(&ask(dns, "mpreg", RecordType::SOA).await).len(), 1);

    // Functions: `<ns>.<fn>` read the original's way and as written, and `echo`.
    let port = node.local_addr().port();
    for name in ["_mpreg._tcp.add.math.mpreg", "_mpreg._tcp.math.add.mpreg"] {
        let f = ask(dns, name, RecordType::SRV).await;
        let srv = rdata(&f);
        assert_eq!(srv.len(), 1, "{name}: {srv:?}");
        assert!(srv[0].starts_with(&format!("0 0 {port} ")), "{srv:?}");
        assert!(srv[0].ends_with(".node.mpreg."), "{srv:?}");
        assert_eq!(f.message.additionals[0].data.to_string(), "127.0.0.1");
    }
    let echo = ask(dns, "_mpreg._tcp.echo.mpreg", RecordType::SRV).await;
    let target = rdata(&echo)[0].split(' ').nth(3).unwrap().to_owned();
    // The node's own name: its address and TXT.
    assert_eq!(
        rdata(&ask(dns, &target, RecordType::A).await),
        vec!["127.0.0.1"]
    );
    let node_txt = rdata(&ask(dns, &target, RecordType::TXT).await);
    assert!(
        node_txt.iter().any(|t| t.contains(node.node_id())),
        "{node_txt:?}"
    );
    let label = target.split('.').next().unwrap();
    assert_eq!(label, mpreg::dns::names::node_label(node.node_id()));

    // The same through dig.
    let short = dig(dns, &["+short", "_svc._tcp.web.shop.mpreg", "SRV"]).await;
    assert!(
        short.contains("10 5 8080 ip4-10-0-0-7.addr.mpreg."),
        "{short}"
    );
    let full = dig(dns, &["nothing.shop.mpreg", "A"]).await;
    assert!(
        full.contains("status: NXDOMAIN") && full.contains("SOA"),
        "{full}"
    );
    let refused = dig(dns, &["www.example.com", "A"]).await;
    assert!(refused.contains("status: REFUSED"), "{refused}");
    let f = dig(dns, &["+short", "_mpreg._tcp.math.add.mpreg", "SRV"]).await;
    assert!(f.contains(&format!(" {port} ")), "{f}");
    let any = dig(dns, &["+notcp", "web.shop.mpreg", "ANY"]).await;
    assert!(
        any.contains("HINFO") && any.contains("RFC8482"),
        "ANY over UDP: {any}"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_answers_are_truncated_over_udp_and_whole_over_tcp() {
    let (node, dns) = dns_node(dns_settings()).await;
    let client = Client::connect(node.url()).await.unwrap();
    let many: Vec<String> = (0..64).map(|i| format!("10.1.0.{i}")).collect();
    register(
        &client,
        json!({"name": "big", "namespace": "shop", "port": 80, "targets": many}),
    )
    .await;
    let few: Vec<String> = (0..12).map(|i| format!("10.2.0.{i}")).collect();
    register(
        &client,
        json!({"name": "mid", "namespace": "shop", "port": 80, "targets": few}),
    )
    .await;

    // 64 SRV records fit no UDP answer: TC, then the whole answer over TCP.
    let big = ask(dns, "_svc._tcp.big.shop.mpreg", RecordType::SRV).await;
    assert!(big.retried_over_tcp, "the UDP answer was truncated");
    assert_eq!(big.message.answers.len(), 64);
    assert!(!big.message.truncation);

    // 12 SRV records with their 12 addresses: over 512 bytes, within EDNS0's 1232.
    let udp = mpreg::env::Env::production()
        .net
        .bind_udp("127.0.0.1:0")
        .await
        .unwrap();
    let name = Name::from_str("_svc._tcp.mid.shop.mpreg.").unwrap();
    let mut buf = vec![0u8; 4096];
    for payload in [None, Some(1232), Some(4096)] {
        let q = query(77, &name, RecordType::SRV, payload);
        udp.send_to(&q, dns).await.unwrap();
        let (n, _) = udp.recv_from(&mut buf).await.unwrap();
        let m = Message::from_vec(&buf[..n]).unwrap();
        let limit = usize::from(payload.unwrap_or(512)).min(1232);
        assert!(n <= limit, "{n} bytes for {payload:?}");
        let addresses = m.additionals.len();
        match payload {
            // Without EDNS0 the addresses do not fit: left out (RFC 2181 §9), or TC.
            None => assert!(m.truncation || (m.answers.len() == 12 && addresses == 0)),
            Some(_) => {
                assert_eq!((m.answers.len(), addresses), (12, 12), "{m:?}");
                assert_eq!(m.edns.as_ref().map(|e| e.max_payload()), Some(1232));
            }
        }
    }
    // dig retries over TCP by itself.
    let via_dig = dig(dns, &["+short", "_svc._tcp.big.shop.mpreg", "SRV"]).await;
    assert_eq!(via_dig.lines().count(), 64, "{via_dig}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_answers_several_queries_per_connection_in_order() {
    let (node, dns) = dns_node(dns_settings()).await;
    let mut stream = tokio::net::TcpStream::connect(dns).await.unwrap();
    let names = ["_mpreg._tcp.echo.mpreg", "nothing.mpreg", "mpreg"];
    let mut frames = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let q = query(
            100 + i as u16,
            &Name::from_str(n).unwrap(),
            RecordType::SRV,
            None,
        );
        frames.extend_from_slice(&(q.len() as u16).to_be_bytes());
        frames.extend_from_slice(&q);
    }
    // All three in one write (pipelined), then the answers, in order.
    stream.write_all(&frames).await.unwrap();
    let mut rcodes = vec![];
    for i in 0..names.len() {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.unwrap();
        let mut body = vec![0u8; u16::from_be_bytes(len).into()];
        stream.read_exact(&mut body).await.unwrap();
        let m = Message::from_vec(&body).unwrap();
        assert_eq!(m.id, 100 + i as u16);
        rcodes.push(m.response_code);
    }
    assert_eq!(
        rcodes,
        vec![
            ResponseCode::NoError,
            ResponseCode::NXDomain,
            ResponseCode::NoError
        ]
    );
    // The connection stays open for more.
    let q = query(
        200,
        &Name::from_str("mpreg.").unwrap(),
        RecordType::SOA,
        None,
    );
    stream
        .write_all(&(q.len() as u16).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&q).await.unwrap();
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.unwrap();
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packets_get_formerr_and_responses_get_nothing() {
    let (node, dns) = dns_node(dns_settings()).await;
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // A packet that claims to be a response: never answered (no reflection loops).
    let mut response = query(1, &Name::from_str("mpreg.").unwrap(), RecordType::SOA, None);
    response[2] |= 0x80;
    udp.send_to(&response, dns).await.unwrap();
    // A header claiming one question, then garbage.
    let garbage = [
        0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0xff, 0x01,
    ];
    udp.send_to(&garbage, dns).await.unwrap();
    // Two questions in one query: FORMERR too.
    let mut two = Message::new(
        0x0202,
        hickory_proto::op::MessageType::Query,
        hickory_proto::op::OpCode::Query,
    );
    for n in ["a.mpreg.", "b.mpreg."] {
        two.add_query(hickory_proto::op::Query::query(
            Name::from_str(n).unwrap(),
            RecordType::A,
        ));
    }
    udp.send_to(&two.to_vec().unwrap(), dns).await.unwrap();
    let mut buf = [0u8; 1024];
    // Replies come in order; the first is the garbage's (the response got none).
    let (n, _) = udp.recv_from(&mut buf).await.unwrap();
    assert_eq!(&buf[..2], &[0xbe, 0xef]);
    assert_eq!(buf[3] & 0x0f, 1, "FORMERR");
    assert!(n >= 12);
    let (n, _) = udp.recv_from(&mut buf).await.unwrap();
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!((m.id, m.response_code), (0x0202, ResponseCode::FormErr));
    // The gateway is still up.
    assert_eq!(
        ask(dns, "mpreg", RecordType::SOA).await.rcode(),
        ResponseCode::NoError
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_source_is_rate_limited() {
    let settings = Settings {
        dns_rrl_responses_per_second: 20,
        dns_rrl_slip: 2,
        monitoring_enabled: true,
        ..dns_settings()
    };
    let (node, dns) = dns_node(settings).await;
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let name = Name::from_str("_mpreg._tcp.echo.mpreg.").unwrap();
    let flood = 400usize;
    let (mut sent_bytes, mut got_bytes) = (0, 0);
    let (mut whole, mut slipped) = (0usize, 0usize);
    let mut buf = [0u8; 2048];
    let started = tokio::time::Instant::now();
    for burst in 0..flood / 20 {
        for i in 0..20 {
            let q = query((burst * 20 + i) as u16, &name, RecordType::SRV, Some(1232));
            sent_bytes += q.len();
            udp.send_to(&q, dns).await.unwrap();
        }
        // A question of its own (its own count) closes each burst: once it is answered,
        // every reply to the burst has arrived, and the socket buffers never overflow.
        let mark = Name::from_str(&format!("ip4-10-9-0-{burst}.addr.mpreg.")).unwrap();
        udp.send_to(&query(60_000, &mark, RecordType::A, None), dns)
            .await
            .unwrap();
        loop {
            let (n, _) = tokio::time::timeout(Duration::from_secs(5), udp.recv_from(&mut buf))
                .await
                .expect("the burst's marker is answered")
                .unwrap();
            let m = Message::from_vec(&buf[..n]).unwrap();
            if m.id == 60_000 {
                break;
            }
            got_bytes += n;
            if m.truncation {
                slipped += 1;
            } else {
                whole += 1;
            }
        }
    }
    // Windows are a second long: at most 20 whole answers in each one the flood spanned.
    let windows = started.elapsed().as_secs() as usize + 1;
    assert!(
        whole >= 20 && whole <= 20 * windows,
        "whole: {whole} in {windows} s"
    );
    assert!(slipped > 0, "some answers slip as truncated");
    assert!(whole + slipped < flood, "most were dropped");
    // No amplification: a forged victim would receive fewer bytes than were sent.
    assert!(
        got_bytes < sent_bytes,
        "{got_bytes} bytes back for {sent_bytes} sent"
    );
    // The admin server counts them.
    let base = node.monitoring_url().expect("admin server").to_owned();
    let dns_json: Value = serde_json::from_str(&http_get(&base, "/dns/metrics").await).unwrap();
    let g = &dns_json["dns_gateway"];
    assert_eq!(g["enabled"], true);
    assert_eq!(g["udp_port"], dns.port());
    assert_eq!(g["zones"], json!(["mpreg"]));
    let dropped = g["metrics"]["rate_limited_dropped"].as_u64().unwrap();
    assert_eq!(dropped as usize, flood - whole - slipped, "{g}");
    assert_eq!(g["metrics"]["rate_limited_slipped"], slipped);
    let text = http_get(&base, "/metrics").await;
    let line = format!("mpreg_dns_rate_limited_dropped_total {dropped}");
    assert!(text.contains(&line), "{line} in /metrics");
    assert!(text.contains("mpreg_dns_queries_total{protocol=\"udp\",rcode=\"NOERROR\"}"));
    node.shutdown().await;
}

/// The body of `GET path` on the admin server at `base` (`http://host:port`).
async fn http_get(base: &str, path: &str) -> String {
    let addr = base.strip_prefix("http://").expect("http URL");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
    assert!(!head.to_ascii_lowercase().contains("chunked"), "{head}");
    body.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_are_checked_replaced_and_leave_with_their_node() {
    let (a, dns) = dns_node(dns_settings()).await;
    let b = start_node(
        Settings {
            name: "b".into(),
            peers: vec![a.url().to_owned()],
            ..test_settings()
        },
        vec![],
    )
    .await;
    assert!(b.registered().await);
    let on_a = Client::connect(a.url()).await.unwrap();
    let on_b = Client::connect(b.url()).await.unwrap();
    let count = |c: &Client| {
        let c = c.clone();
        async move {
            let l = c.call("dns_list", json!([{}])).await.unwrap();
            l["items"].as_array().unwrap().len()
        }
    };

    // Bad input: a clear error, and nothing changes.
    let base = json!({"name": "pay", "namespace": "shop", "port": 443, "targets": ["10.3.0.1"]});
    let bad = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let many: Vec<String> = (0..65).map(|i| format!("10.3.1.{i}")).collect();
    for (req, says) in [
        (bad("name", json!("")), "DNS label"),
        (bad("name", json!("no spaces")), "DNS label"),
        (bad("port", json!(0)), "1 to 65535"),
        (bad("port", json!(70000)), "1 to 65535"),
        (bad("targets", json!(many)), "at most 64 targets"),
        (bad("targets", json!([])), "at least one"),
        (bad("metadata", json!({"k": {"nested": 1}})), "metadata"),
    ] {
        let e = on_b.call("dns_register", json!([req])).await.unwrap_err();
        assert!(e.to_string().contains(says), "{req}: {e}");
    }
    assert_eq!(count(&on_a).await, 0);

    // Registered on b, it is answered by a's gateway; again under the same key replaces it.
    let first = register(&on_b, base.clone()).await;
    let second = register(&on_b, bad("targets", json!(["10.3.0.2"]))).await;
    assert_ne!(first["registration_id"], second["registration_id"]);
    let listed = wait_listed(&on_a, 1).await;
    assert_eq!(listed[0]["targets"], json!(["10.3.0.2"]));
    assert_eq!(listed[0]["node_id"], b.node_id());
    let a_rec = ask(dns, "pay.shop.mpreg", RecordType::A).await;
    assert_eq!(rdata(&a_rec), vec!["10.3.0.2"]);
    // Another port is another registration; describe lists the same as list.
    register(&on_b, bad("port", json!(8443))).await;
    let d = on_a
        .call("dns_describe", json!([{"port": 8443}]))
        .await
        .unwrap();
    assert_eq!(d["items"].as_array().unwrap().len(), 1);
    // The request as keywords, as the original's clients may send it.
    let d = on_a
        .call("dns_describe", json!([]))
        .kwarg("port", json!(8443))
        .kwarg("namespace", json!("shop"))
        .await
        .unwrap();
    assert_eq!(d["items"].as_array().unwrap().len(), 1);
    // The original routes dns_list through catalog_query's services: the same items.
    let all = on_a
        .call("catalog_query", json!([{"entry_type": "services"}]))
        .await
        .unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 2, "{all}");
    let one = on_a
        .call(
            "catalog_query",
            json!([{"entry_type": "services", "namespace": "shop", "service_port": 8443}]),
        )
        .await
        .unwrap();
    assert_eq!(one["items"], d["items"]);

    // Unregistered: gone; a second time: not removed.
    let key = json!({"name": "pay", "namespace": "shop", "protocol": "tcp", "port": 8443});
    let r = on_a
        .call("dns_unregister", json!([key.clone()]))
        .await
        .unwrap();
    assert_eq!(r["removed"], true);
    let r = on_a.call("dns_unregister", json!([key])).await.unwrap();
    assert_eq!(r["removed"], false);

    // b leaves the cluster: what it accepted goes with it.
    b.shutdown().await;
    wait_listed(&on_a, 0).await;
    let gone = ask(dns, "pay.shop.mpreg", RecordType::A).await;
    assert_eq!(gone.rcode(), ResponseCode::NXDomain);
    a.shutdown().await;
}

/// Polls `dns_list` until it has `n` items (registrations and departures are commits).
async fn wait_listed(client: &Client, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let l = client.call("dns_list", json!([{}])).await.unwrap();
        let items = l["items"].as_array().unwrap().clone();
        if items.len() == n {
            return items;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "dns_list never had {n}: {l}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The original's own Python clients on the DNS built-ins and gateway: `MPREGClientAPI`'s
/// `dns_register`/`dns_list`/`dns_describe`/`dns_unregister`, `MPREGDnsClient.resolve`
/// (UDP and TCP) and the `mpreg client dns-*` CLI verbs. Run on purpose with
/// `MPREG_ORIGINAL_PYTHON=/tmp/mpreg-original/venv/bin/python cargo test --test dns --
/// --ignored original` (a venv where the original MPREG package and its `mpreg` CLI are
/// installed: `../shared/tools/original-clients/setup.sh`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the original's Python client (MPREG_ORIGINAL_PYTHON)"]
async fn the_original_clients_dns_calls_and_cli_work() {
    let (node, dns) = dns_node(dns_settings()).await;
    let port = dns.port().to_string();
    let host = dns.ip().to_string();
    run_original_script("original_dns_client.py", &[node.url(), &port, &host], &[]).await;
    node.shutdown().await;
}

/// Polls `f` until it returns `Some`, for at most 5 s (commits reach each replica in turn).
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..200 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what} never happened");
}

/// A namespace policy applied on one node is a catalog entry: the other node enforces it on
/// its discovery calls and its DNS answers alike, and audits every denial; the policy calls
/// answer in the original's shapes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_policy_hides_namespaces_everywhere_and_audits_it() {
    let a = start_node(
        Settings {
            name: "a".into(),
            ..test_settings()
        },
        vec![Function::new("shop.secret.audit", || async {
            Ok::<_, String>(1)
        })],
    )
    .await;
    let (b, dns) = dns_node(Settings {
        name: "b".into(),
        peers: vec![a.url().to_owned()],
        ..dns_settings()
    })
    .await;
    let on_a = Client::connect(a.url()).await.unwrap();
    let on_b = Client::connect(b.url()).await.unwrap();
    let cluster = test_settings().cluster_id;
    register(
        &on_a,
        json!({"name": "web", "namespace": "shop", "port": 80, "targets": ["10.4.0.1"]}),
    )
    .await;
    register(
        &on_a,
        json!({"name": "vault", "namespace": "shop.secret", "port": 80, "targets": ["10.4.0.2"]}),
    )
    .await;
    let listed = |c: &Client, req: Value| {
        let c = c.clone();
        async move {
            let l = c.call("dns_list", json!([req])).await.unwrap();
            l["items"].as_array().unwrap().len()
        }
    };
    eventually("both services listed on b", || async {
        (listed(&on_b, json!({})).await == 2).then_some(())
    })
    .await;

    // Off by default, as in the original.
    let s = on_b
        .call("namespace_status", json!([{"namespace": "shop.secret"}]))
        .await
        .unwrap();
    assert_eq!(
        (&s["allowed"], &s["reason"]),
        (&json!(true), &json!("policy_disabled")),
        "{s}"
    );
    assert_eq!(s["viewer_cluster_id"], cluster);
    assert!(s["viewer_tenant_id"].is_null() && s.get("rule").is_none());
    let e = on_b
        .call("namespace_policy_export", json!([]))
        .await
        .unwrap();
    assert_eq!(e["rules"], json!([]));
    assert_eq!(
        (&e["enabled"], &e["default_allow"]),
        (&json!(false), &json!(true))
    );

    // Bad rules: named in the original's words, nothing applied.
    let bad = json!({"rules": [{"namespace": " "}, {"namespace": "x", "cutover_windows": [{"starts_at": 0}]}]});
    let v = on_a
        .call("namespace_policy_validate", json!([bad.clone()]))
        .await
        .unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(
        v["errors"],
        json!([
            "rules[0].namespace is empty",
            "rules[1].cutover_windows[0].starts_at invalid"
        ])
    );
    let r = on_a
        .call("namespace_policy_apply", json!([bad]))
        .await
        .unwrap();
    assert_eq!(
        (&r["applied"], &r["rule_count"]),
        (&json!(false), &json!(2)),
        "{r}"
    );

    // Applied on a: only another cluster may see shop.secret.
    let rules = json!([{"namespace": "shop.secret", "visibility": ["other-cluster"], "policy_version": "v1"}]);
    let r = on_a
        .call(
            "namespace_policy_apply",
            json!([{"rules": rules, "enabled": true, "actor": "tester"}]),
        )
        .await
        .unwrap();
    assert_eq!(
        (&r["applied"], &r["valid"]),
        (&json!(true), &json!(true)),
        "{r}"
    );
    eventually("b enforces the policy", || async {
        let e = on_b
            .call("namespace_policy_export", json!([]))
            .await
            .unwrap();
        (e["enabled"] == true).then_some(())
    })
    .await;

    // Everywhere on b: calls and DNS.
    assert_eq!(
        listed(&on_b, json!({})).await,
        1,
        "dns_list hides shop.secret"
    );
    assert_eq!(listed(&on_b, json!({"namespace": "shop.secret"})).await, 0);
    let d = on_b
        .call("dns_describe", json!([{"name": "vault"}]))
        .await
        .unwrap();
    assert_eq!(d["items"], json!([]));
    let hidden = ask(dns, "vault.shop.secret.mpreg", RecordType::A).await;
    assert_eq!(
        hidden.rcode(),
        ResponseCode::NXDomain,
        "as if it did not exist"
    );
    let seen = ask(dns, "web.shop.mpreg", RecordType::A).await;
    assert_eq!(rdata(&seen), vec!["10.4.0.1"]);
    let fun = ask(dns, "_mpreg._tcp.audit.shop.secret.mpreg", RecordType::SRV).await;
    assert_eq!(
        fun.rcode(),
        ResponseCode::NXDomain,
        "the function's name is its namespace"
    );
    let q = on_b
        .call("catalog_query", json!([{"entry_type": "services"}]))
        .await
        .unwrap();
    assert_eq!(q["items"].as_array().map(Vec::len), Some(1), "{q}");
    let q = on_b
        .call("catalog_query", json!([{"name": "shop.secret.audit"}]))
        .await
        .unwrap();
    assert_eq!(q["functions"], json!([]));
    let names = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["identity"]["name"].as_str().map(str::to_owned))
            .collect()
    };
    let d = on_b
        .call("rpc_describe", json!([{"mode": "catalog"}]))
        .await
        .unwrap();
    assert!(
        !names(&d).is_empty() && !names(&d).contains(&"shop.secret.audit".to_owned()),
        "{d}"
    );
    let d = on_b
        .call(
            "rpc_describe",
            json!([{"mode": "scatter", "namespace": "shop.secret"}]),
        )
        .await
        .unwrap();
    assert_eq!(d["items"], json!([]), "{d}");
    let l = on_b.call("rpc_list", json!([])).await.unwrap();
    assert!(!names(&l).contains(&"shop.secret.audit".to_owned()), "{l}");
    let r = on_b
        .call("rpc_report", json!([{"namespace": "shop"}]))
        .await
        .unwrap();
    assert!(
        !r["namespace_counts"].to_string().contains("shop.secret"),
        "{r}"
    );
    let m = on_b
        .call(
            "cluster_map_v2",
            json!([{"namespace_filter": "shop.secret"}]),
        )
        .await
        .unwrap();
    assert_eq!(m["nodes"], json!([]));
    let q = on_b
        .call("summary_query", json!([{"namespace": "shop.secret"}]))
        .await
        .unwrap();
    assert_eq!(q["items"], json!([]));
    for watch in ["summary_watch", "catalog_watch"] {
        let e = on_b
            .call(watch, json!([{"namespace": "shop.secret"}]))
            .await
            .unwrap_err();
        assert_eq!(
            e.code(),
            Some(mpreg::protocol::ErrorCode::Forbidden),
            "{watch}: {e}"
        );
        assert!(e.to_string().contains("discovery_access_denied"), "{e}");
    }
    let s = on_b
        .call("namespace_status", json!([{"namespace": "shop.secret.x"}]))
        .await
        .unwrap();
    assert_eq!(
        (&s["allowed"], &s["reason"]),
        (&json!(false), &json!("viewer_denied")),
        "{s}"
    );
    assert_eq!(s["rule"]["namespace"], "shop.secret");
    assert_eq!(s["rule"]["policy_version"], "v1");

    // Every denial is in b's access audit, the DNS ones too.
    let audit = on_b
        .call("discovery_access_audit", json!([]))
        .await
        .unwrap();
    let entries = audit["entries"].as_array().unwrap();
    let events: std::collections::BTreeSet<&str> =
        entries.iter().filter_map(|e| e["event"].as_str()).collect();
    for want in [
        "dns_list",
        "dns_describe",
        "dns_query",
        "catalog_query",
        "summary_query",
        "summary_watch",
        "catalog_watch",
        "namespace_status",
        "rpc_describe",
        "rpc_list",
        "rpc_report",
        "cluster_map_v2",
    ] {
        assert!(events.contains(want), "{want} not audited: {audit}");
    }
    for e in entries {
        assert_eq!(
            (&e["allowed"], &e["reason"]),
            (&json!(false), &json!("viewer_denied")),
            "{e}"
        );
        assert_eq!(e["viewer_cluster_id"], cluster);
        assert!(
            e["namespace"].as_str().unwrap().starts_with("shop.secret"),
            "{e}"
        );
    }
    let two = on_b
        .call("discovery_access_audit", json!([{"limit": 2}]))
        .await
        .unwrap();
    assert_eq!(two["entries"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        two["entries"][1],
        entries[entries.len() - 1],
        "the newest, oldest first"
    );

    // a's policy audit: the validation and both applications, in order.
    let p = on_a
        .call("namespace_policy_audit", json!([]))
        .await
        .unwrap();
    let kinds: Vec<(&str, bool)> = p["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["event"].as_str().unwrap(), e["valid"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [("validate", false), ("apply", false), ("apply", true)]
    );
    assert_eq!(p["entries"][2]["actor"], "tester");

    // Naming this cluster lets it see again.
    let rules = json!([{"namespace": "shop.secret", "visibility": [cluster.clone()]}]);
    on_b.call("namespace_policy_apply", json!([{"rules": rules}]))
        .await
        .unwrap();
    eventually("b sees shop.secret again", || async {
        (listed(&on_b, json!({})).await == 2).then_some(())
    })
    .await;
    let back = ask(dns, "vault.shop.secret.mpreg", RecordType::A).await;
    assert_eq!(rdata(&back), vec!["10.4.0.2"]);
    let s = on_b
        .call("namespace_status", json!([{"namespace": "shop.secret"}]))
        .await
        .unwrap();
    assert_eq!(s["reason"], "viewer_allowed");
    b.shutdown().await;
    a.shutdown().await;
}

/// A queue is found where the original's clients look: `_queue._tcp.<queue>.<zone>` (SRV
/// to its owner, whose name has its address) and `catalog_query {entry_type: "queues"}`
/// as the original's `QueueEndpoint`; a deleted queue is gone from both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_is_found_by_dns_and_catalog_query() {
    let (node, dns) = dns_node(dns_settings()).await;
    let client = Client::connect(node.url()).await.unwrap();
    let absent = ask(dns, "_queue._tcp.orders.mpreg", RecordType::SRV).await;
    assert!(rdata(&absent).is_empty(), "no queue yet");
    client
        .queue("orders")
        .create()
        .queue_type("priority")
        .max_size(500)
        .await
        .unwrap();
    let srv = rdata(&ask(dns, "_queue._tcp.orders.mpreg", RecordType::SRV).await);
    let port = node.local_addr().port();
    assert_eq!(srv.len(), 1, "{srv:?}");
    assert!(srv[0].starts_with(&format!("0 0 {port} ")), "{srv:?}");
    let target = srv[0].split(' ').nth(3).unwrap().to_owned();
    assert_eq!(
        rdata(&ask(dns, &target, RecordType::A).await),
        vec!["127.0.0.1"]
    );
    let found = client
        .call(
            "catalog_query",
            json!([{"entry_type": "queues", "queue_name": "orders"}]),
        )
        .await
        .unwrap();
    let items = found["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{found}");
    let q = &items[0];
    assert_eq!(q["queue_name"], "orders");
    assert_eq!(q["node_id"], node.node_id());
    assert_eq!(q["health"], "healthy");
    assert_eq!(
        q["metadata"],
        json!({"queue_type": "priority", "max_size": 500})
    );
    assert_eq!(
        q["delivery_guarantees"],
        json!(["fire_and_forget", "at_least_once", "broadcast", "quorum"])
    );
    assert!(q["advertised_at"].as_f64().unwrap() > 1.6e9, "{q}");
    client.queue("orders").delete().await.unwrap();
    let gone = ask(dns, "_queue._tcp.orders.mpreg", RecordType::SRV).await;
    assert!(rdata(&gone).is_empty(), "deleted: {:?}", rdata(&gone));
    let found = client
        .call("catalog_query", json!([{"entry_type": "queues"}]))
        .await
        .unwrap();
    assert_eq!(found["items"], json!([]), "{found}");
}
