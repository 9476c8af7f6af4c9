//! The admin HTTP server over real sockets: probes, the original's health JSON, status,
//! Prometheus metrics (checked by promtool, which `scripts/test.sh` installs),
//! readiness while draining, and tokens on the admin routes.
#![allow(clippy::disallowed_types)] // tests reach the node from outside, over real sockets

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::pki::{jwt_secret, temp_dir, token};
use common::{start_node, test_settings};
use mpreg::{Client, Function, Settings};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn monitored() -> Settings {
    Settings {
        monitoring_enabled: true,
        ..test_settings()
    }
}

/// `GET path` on the admin server at `base` (`http://host:port`), with optional extra
/// header lines; returns (status, headers, body).
async fn get(base: &str, path: &str, headers: &str) -> (u16, String, String) {
    let addr = base.strip_prefix("http://").expect("http URL");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status");
    (status, head.to_owned(), dechunk(head, body))
}

/// The body of a `Transfer-Encoding: chunked` response, joined.
fn dechunk(head: &str, body: &str) -> String {
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_owned();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

async fn get_json(base: &str, path: &str) -> Value {
    let (status, _, body) = get(base, path, "").await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// Polls `/readyz` until it says `want` (a Raft bootstrap away at start).
async fn wait_ready(base: &str, want: u16) -> String {
    for _ in 0..200 {
        let (status, _, body) = get(base, "/readyz", "").await;
        if status == want {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("/readyz never answered {want}");
}

#[tokio::test]
async fn probes_health_status_and_metrics() {
    let node = start_node(monitored(), vec![]).await;
    let base = node.monitoring_url().expect("monitoring on").to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    let (status, head, body) = get(&base, "/livez", "").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert!(
        head.to_ascii_lowercase()
            .contains("access-control-allow-origin: *"),
        "{head}"
    );
    wait_ready(&base, 200).await;
    let client = Client::connect(node.url()).await.unwrap();
    client.call("echo", json!([1])).await.unwrap();
    assert_eq!(
        client
            .call("no_such_fn", json!([]))
            .await
            .err()
            .and_then(|e| e.code()),
        Some(mpreg::ErrorCode::CommandNotFound)
    );
    // The original CLI's `monitor status` reads these keys.
    let summary = get_json(&base, "/health/summary").await;
    assert_eq!(summary["health_summary"]["overall"]["status"], "healthy");
    assert_eq!(summary["health_summary"]["overall"]["health_score"], 1.0);
    assert_eq!(summary["health_summary"]["cluster_counts"]["total"], 1);
    let health = get_json(&base, "/health").await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["federation_health"]["overall_status"], "healthy");
    let persistence = get_json(&base, "/metrics/persistence").await;
    assert_eq!(
        persistence["persistence_snapshots"]["enabled"], false,
        "memory mode"
    );
    let status = get_json(&base, "/status").await;
    assert_eq!(status["node"]["node_id"], node.node_id());
    assert_eq!(status["raft"]["leader"], node.raft_id());
    assert_eq!(status["cluster"]["nodes"].as_array().map(Vec::len), Some(1));
    let (code, head, text) = get(&base, "/metrics", "").await;
    assert_eq!(code, 200);
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    for family in [
        "# TYPE mpreg_client_connections gauge",
        "# TYPE mpreg_raft_term gauge",
        "mpreg_raft_is_leader 1",
        "mpreg_catalog_members 1",
        "# TYPE mpreg_peer_connections_accepted_total counter",
    ] {
        assert!(text.contains(family), "`{family}` missing from:\n{text}");
    }
    assert!(text.contains("mpreg_client_connections 1"), "{text}");
    assert!(
        text.contains(r#"mpreg_request_errors_total{code="1001"} 1"#),
        "{text}"
    );
    let echo_count =
        r#"mpreg_call_duration_seconds_count{function="echo",version="1.0.0",caller="client"} 1"#;
    assert!(
        text.contains(echo_count),
        "the echo call is counted:\n{text}"
    );
    assert!(
        text.contains(r#"mpreg_call_failures_total{function="echo",version="1.0.0"} 0"#),
        "{text}"
    );
    assert!(metric(&text, "mpreg_client_bytes_received_total") > 0.0);
    assert!(metric(&text, "mpreg_client_bytes_sent_total") > 0.0);
    assert_eq!(
        metric(&text, "mpreg_request_steps_count"),
        2.0,
        "two requests"
    );
    // Buckets are cumulative, and `+Inf` is the count.
    assert_eq!(metric(&text, r#"mpreg_request_steps_bucket{le="1"}"#), 2.0);
    assert_eq!(
        metric(&text, r#"mpreg_request_steps_bucket{le="4096"}"#),
        2.0
    );
    assert_eq!(
        metric(&text, r#"mpreg_request_steps_bucket{le="+Inf"}"#),
        2.0
    );
    assert_eq!(
        metric(
            &text,
            r#"mpreg_call_duration_seconds_bucket{function="echo",version="1.0.0",caller="client",le="10"}"#
        ),
        1.0
    );
    assert!(metric(&text, "mpreg_raft_committed_index") >= 1.0, "{text}");
    assert!(metric(&text, "mpreg_raft_append_entries_count") >= 1.0);
    assert!(metric(&text, "mpreg_raft_proposal_commands_count") >= 1.0);
    assert_eq!(metric(&text, "mpreg_worker_connections"), 0.0);
    promtool_accepts(&text);
    // What the original's `mpreg monitor status` reads.
    let rpc = get_json(&base, "/metrics/rpc").await;
    assert_eq!(
        rpc["metrics"]["total_operations_last_hour"], 1,
        "the echo call: {rpc}"
    );
    assert_eq!(rpc["metrics"]["error_rate_percent"], 0.0);
    let transport = get_json(&base, "/metrics/transport").await;
    let endpoint = &transport["transport_health_snapshots"][node.url()];
    assert_eq!(endpoint["overall_health_score"], 1.0, "{transport}");
    let unified = get_json(&base, "/metrics/unified").await;
    assert_eq!(
        unified["unified_metrics"]["overall_health"]["status"],
        "healthy"
    );
    assert_eq!(
        unified["unified_metrics"]["overall_health_status"],
        "healthy"
    );
    let listed = get_json(&base, "/endpoints").await;
    assert_eq!(listed["total_endpoints"], 16);
    let (code, _, body) = get(&base, "/no/such", "").await;
    assert_eq!(code, 404);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["status"],
        "error"
    );
    node.shutdown().await;
}

/// The value of the sample `series` (name and labels exactly as written) in `text`.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample `{series}` in:\n{text}"))
}

/// A step forwarded between two nodes shows in the entry node's forwarded-step histogram
/// and peer traffic, and heartbeats give each peer a round-trip time.
#[tokio::test]
async fn forwarded_steps_peer_traffic_and_round_trips_are_measured() {
    let a = start_node(
        monitored(),
        vec![Function::new("far", || async { Ok::<_, String>("away") })],
    )
    .await;
    let b = start_node(
        Settings {
            peers: vec![a.url().to_owned()],
            ..monitored()
        },
        vec![],
    )
    .await;
    common::wait_routable(&[&b], "far", 1).await;
    let client = Client::connect(b.url()).await.unwrap();
    assert_eq!(client.call("far", json!([])).await.unwrap(), json!("away"));
    let base = b.monitoring_url().expect("monitoring on").to_owned();
    let peer = format!("{:016x}", a.raft_id());
    let mut polls = 0;
    let text = loop {
        let (_, _, text) = get(&base, "/metrics", "").await;
        // Heartbeats run every 250 ms: the first answered one gives the round trip.
        if text.contains(&format!(
            r#"mpreg_peer_round_trip_seconds{{peer="{peer}"}}"#
        )) {
            break text;
        }
        polls += 1;
        assert!(polls < 200, "no round trip to {peer}:\n{text}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(
        metric(&text, "mpreg_forwarded_step_duration_seconds_count"),
        1.0
    );
    assert_eq!(metric(&text, "mpreg_forwarded_step_failures_total"), 0.0);
    assert!(metric(&text, "mpreg_peer_bytes_sent_total") > 0.0);
    assert!(metric(&text, "mpreg_peer_bytes_received_total") > 0.0);
    assert_eq!(
        metric(&text, &format!(r#"mpreg_peer_up{{peer="{peer}"}}"#)),
        1.0
    );
    promtool_accepts(&text);
    // The node that ran it counts the call as a peer's.
    let (_, _, text) = get(a.monitoring_url().unwrap(), "/metrics", "").await;
    assert_eq!(
        metric(
            &text,
            r#"mpreg_call_duration_seconds_count{function="far",version="1.0.0",caller="peer"}"#
        ),
        1.0
    );
}

/// `promtool check metrics` on `text` (Debian's `prometheus` package; `scripts/test.sh` installs it).
fn promtool_accepts(text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (apt-get install prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn readyz_says_503_from_the_moment_the_node_drains() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let held = gate.clone();
    let slow = Function::new("slow", move || {
        let held = held.clone();
        async move {
            held.notified().await;
            Ok::<_, String>("done")
        }
    });
    let node = start_node(monitored(), vec![slow]).await;
    let base = node.monitoring_url().unwrap().to_owned();
    wait_ready(&base, 200).await;
    let client = Client::connect(node.url()).await.unwrap();
    let running = tokio::spawn(async move { client.call("slow", json!([])).await });
    // The call is running once the node counts it.
    let mut polls = 0;
    while !get(&base, "/metrics", "")
        .await
        .2
        .contains("mpreg_requests_in_flight 1")
    {
        polls += 1;
        assert!(polls < 200, "the slow call never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    node.shutdown_handle().shutdown();
    let why = wait_ready(&base, 503).await;
    assert!(why.starts_with("draining"), "{why}");
    assert_eq!(
        get(&base, "/livez", "").await.0,
        200,
        "alive while draining"
    );
    gate.notify_one();
    assert_eq!(running.await.unwrap().unwrap(), json!("done"));
    node.shutdown().await;
}

#[tokio::test]
async fn admin_routes_need_a_token_where_clients_do_and_probes_never() {
    let dir = temp_dir("monitoring-auth");
    let secret = jwt_secret(&dir, "the monitoring test's secret, 32 bytes");
    let cluster = dir.join("cluster.secret");
    std::fs::write(&cluster, "the monitoring test's cluster secret").unwrap();
    let node = start_node(
        Settings {
            auth_required: true,
            jwt_secret_file: Some(secret.clone()),
            cluster_secret_file: Some(cluster),
            introspection_role: Some("ops".into()),
            ..monitored()
        },
        vec![],
    )
    .await;
    let base = node.monitoring_url().unwrap().to_owned();
    assert_eq!(get(&base, "/livez", "").await.0, 200);
    wait_ready(&base, 200).await;
    let (code, _, body) = get(&base, "/metrics", "").await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("no token"), "{body}");
    let bearer = |t: String| format!("Authorization: Bearer {t}\r\n");
    let (code, _, body) = get(&base, "/metrics", &bearer(token(&secret, "dev", &[], 60))).await;
    assert_eq!(code, 403, "{body}");
    let ops = bearer(token(&secret, "prom", &["ops"], 60));
    let (code, _, body) = get(&base, "/metrics", &ops).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("mpreg_raft_term"));
    node.shutdown().await;
}

/// The first server-sent event of `/events` on `base`, parsed (`event: snapshot`).
async fn first_snapshot(base: &str) -> Value {
    let addr = base.strip_prefix("http://").expect("http URL");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET /events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0, "the stream ended before a snapshot");
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw);
        if let Some(at) = text.find("event: snapshot\ndata: ") {
            let rest = &text[at + "event: snapshot\ndata: ".len()..];
            if let Some(end) = rest.find('\n') {
                assert!(text.contains("text/event-stream"), "{text}");
                return serde_json::from_str(&rest[..end]).expect("a JSON snapshot");
            }
        }
    }
}

/// The dashboard page and the snapshot stream it reads: nodes, catalog, calls served
/// here with their rate and latency, and the recent error replies.
#[tokio::test]
async fn the_dashboard_page_and_its_event_stream() {
    let node = start_node(
        monitored(),
        vec![Function::new("work", |n: i64| async move {
            if n < 0 {
                Err("negative".to_owned())
            } else {
                Ok(n)
            }
        })],
    )
    .await;
    let base = node.monitoring_url().unwrap().to_owned();
    wait_ready(&base, 200).await;
    let (status, head, page) = get(&base, "/", "").await;
    assert_eq!(status, 200);
    assert!(head.contains("text/html"), "{head}");
    assert!(
        page.contains("new EventSource(\"events\""),
        "the page reads /events"
    );
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "nothing fetched from elsewhere"
    );
    let client = Client::connect(node.url()).await.unwrap();
    client.call("work", json!([1])).await.unwrap();
    assert!(client.call("work", json!([-1])).await.is_err());
    let snap = first_snapshot(&base).await;
    assert_eq!(snap["node_id"], node.node_id());
    assert_eq!(snap["cluster"]["nodes"][0]["status"], "ok");
    assert!(
        snap["catalog"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "work"
                && f["builtin"] == false
                && f["nodes"][0] == node.node_id()),
        "{snap}"
    );
    let work = snap["calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "work")
        .cloned()
        .expect("work's calls");
    assert_eq!((&work["calls"], &work["failures"]), (&json!(2), &json!(1)));
    assert!(work["p95_ms"].as_f64().unwrap() > 0.0);
    let error = &snap["errors"][0];
    assert_eq!(error["code"], 1003, "{snap}");
    assert!(error["message"].as_str().unwrap().contains("negative"));
    assert!(error["at_ms"].as_u64().unwrap() > 0);
}

/// Polls `path`'s JSON until `ok` holds of it, for at most 20 s; returns it.
async fn json_until(base: &str, path: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let v = get_json(base, path).await;
        if ok(&v) {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "{path}: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue 23, point 2: every figure the original's JSON carries is measured. Each is read,
/// the state under it changed, and the figure seen to move: the health score (errors, a
/// peer down), the last hour's operations, failed connections, the pub/sub system, the
/// systems unavailable, the catalog's topics and services.
#[tokio::test]
async fn reported_figures_move_with_what_they_measure() {
    let dir = common::pki::temp_dir("figures");
    let settings = Settings {
        persistence: mpreg::config::PersistenceConfig {
            mode: mpreg::config::PersistenceMode::Sqlite,
            data_dir: dir.clone(),
            ..Default::default()
        },
        ..monitored()
    };
    let fails = Function::new("fails", |ok: bool| async move {
        if ok {
            Ok(1)
        } else {
            Err("asked to fail".to_owned())
        }
    })
    .params(["ok"]);
    let a = start_node(settings, vec![fails]).await;
    // Processes, so that one can die without leaving the cluster (SIGKILL); three members,
    // so that the cluster keeps its quorum (and this node its readiness) when it does.
    let _b = common::process::NodeProcess::start(&["--peers", a.url(), "--no-monitoring"], &[]);
    let mut c = common::process::NodeProcess::start(&["--peers", a.url(), "--no-monitoring"], &[]);
    let base = a.monitoring_url().expect("monitoring on").to_owned();
    wait_ready(&base, 200).await;
    json_until(&base, "/status", |s| {
        let nodes = s["cluster"]["nodes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        nodes.len() == 3 && nodes.iter().all(|n| n["status"] == "ok")
    })
    .await;
    let endpoint = |t: &Value| t["transport_health_snapshots"][a.url()].clone();
    let score = |t: &Value| endpoint(t)["overall_health_score"].as_f64().unwrap();

    // Both members live, no calls: a perfect score; nothing counted yet.
    let t = json_until(&base, "/metrics/transport", |t| score(t) == 1.0).await;
    assert_eq!(endpoint(&t)["failed_connections"], 0, "{t}");
    let u = get_json(&base, "/metrics/unified").await["unified_metrics"].clone();
    assert_eq!(u["rpc"]["total_operations_last_hour"], 0, "{u}");
    assert_eq!(u["pubsub"]["total_operations_last_hour"], 0, "{u}");
    // Federation: not built yet.
    assert_eq!(u["overall_health"]["systems_unavailable"], 1, "{u}");
    assert_eq!(u["cache"]["total_operations_last_hour"], 0, "{u}");
    let p = get_json(&base, "/metrics/persistence").await;
    let entries = &p["persistence_snapshots"]["fabric"]["catalog_entries"];
    assert_eq!(entries["topics"], 0, "{p}");
    assert!(entries.get("caches").is_none(), "not measured: absent");

    // Calls, one failing: the hour's operations and error rate move, and so does the score.
    let client = Client::connect(a.url()).await.unwrap();
    client.call("fails", json!([true])).await.unwrap();
    assert!(client.call("fails", json!([false])).await.is_err());
    let rpc = get_json(&base, "/metrics/rpc").await["metrics"].clone();
    assert_eq!(rpc["total_operations_last_hour"], 2, "{rpc}");
    assert_eq!(rpc["error_rate_percent"], 50.0, "{rpc}");
    let t = get_json(&base, "/metrics/transport").await;
    assert!(
        (score(&t) - 0.8).abs() < 1e-9,
        "errors lower the score: {t}"
    );

    // A connection that fails its handshake is counted.
    let mut raw = tokio::net::TcpStream::connect(a.url().trim_start_matches("ws://"))
        .await
        .unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = raw.read_to_end(&mut sink).await;
    let t = json_until(&base, "/metrics/transport", |t| {
        endpoint(t)["failed_connections"] == 1
    })
    .await;
    assert_eq!(endpoint(&t)["active_connections"], 1, "{t}");

    // Pub/sub: a subscription is a topic; a publish is counted in the pub/sub system.
    let mut sub = client.subscribe(["orders.*"]).await.unwrap();
    client.publish("orders.1", json!("x")).await.unwrap();
    use futures_util::StreamExt;
    assert!(sub.next().await.is_some());
    let u = get_json(&base, "/metrics/unified").await["unified_metrics"].clone();
    assert_eq!(u["pubsub"]["total_operations_last_hour"], 1, "{u}");
    assert_eq!(u["pubsub"]["active_connections"], 1, "{u}");
    let p = get_json(&base, "/metrics/persistence").await;
    assert_eq!(
        p["persistence_snapshots"]["fabric"]["catalog_entries"]["topics"], 1,
        "{p}"
    );

    // A peer down lowers the score: 0.4 x 50% errors, 0.3 x 1 of 2 peers down (and at most
    // a trace of apply lag).
    c.child.kill().unwrap();
    let t = json_until(&base, "/metrics/transport", |t| score(t) < 0.79).await;
    assert!((score(&t) - 0.65).abs() < 0.01, "{t}");
    std::fs::remove_dir_all(dir).ok();
}

/// Issue 23, point 4: past `max_connections` client connections, an upgrade gets 503 with
/// the reason, counted; a connection that closes frees its place.
#[tokio::test]
async fn connections_past_max_connections_are_refused_with_503() {
    let node = start_node(
        Settings {
            max_connections: 2,
            ..monitored()
        },
        vec![],
    )
    .await;
    let base = node.monitoring_url().unwrap().to_owned();
    let first = Client::connect(node.url()).await.unwrap();
    let second = Client::connect(node.url()).await.unwrap();
    let refused = tokio_tungstenite::connect_async(node.url()).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503);
            let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default());
            assert!(body.contains("max_connections"), "{body}");
        }
        other => panic!("a third connection was not refused: {other:?}"),
    }
    let (_, _, text) = get(&base, "/metrics", "").await;
    assert_eq!(metric(&text, "mpreg_client_connections_refused_total"), 1.0);
    assert_eq!(metric(&text, "mpreg_client_connections"), 2.0);
    assert_eq!(
        metric(&text, "mpreg_connection_handshakes_failed_total"),
        1.0
    );
    // The two still work; once one closes, a new client gets its place.
    assert_eq!(second.call("echo", json!([2])).await.unwrap(), json!(2));
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, text) = get(&base, "/metrics", "").await;
        if metric(&text, "mpreg_client_connections") == 1.0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let third = Client::connect(node.url()).await.unwrap();
    assert_eq!(third.call("echo", json!([3])).await.unwrap(), json!(3));
}

/// Issue 26, point 7: a queue's figures in `/metrics` (per queue, promtool-clean) and in
/// `/metrics/queue` (the original's shape) move with what happens to its messages.
#[tokio::test]
async fn queue_figures_move_with_their_queue() {
    let node = start_node(monitored(), vec![]).await;
    assert!(node.registered().await);
    let base = node.monitoring_url().unwrap().to_owned();
    let c = Client::connect(node.url()).await.unwrap();
    let q = |v: Value| json!([v]);
    c.call("queue_create", q(json!({"queue_name": "m"})))
        .await
        .unwrap();
    for i in 0..3 {
        c.call(
            "queue_send",
            q(json!({"queue_name": "m", "message_payload": i})),
        )
        .await
        .unwrap();
    }
    let got = c
        .call(
            "queue_receive",
            q(json!({"queue_name": "m", "max_messages": 2})),
        )
        .await
        .unwrap();
    let receipt = got["messages"][0]["receipt_handle"].clone();
    c.call(
        "queue_ack",
        q(json!({"queue_name": "m", "receipt_handle": receipt})),
    )
    .await
    .unwrap();
    let (_, _, text) = get(&base, "/metrics", "").await;
    for line in [
        r#"mpreg_queue_depth{queue="m"} 1"#,
        r#"mpreg_queue_in_flight{queue="m"} 1"#,
        r#"mpreg_queue_sent_total{queue="m"} 3"#,
        r#"mpreg_queue_received_total{queue="m"} 2"#,
        r#"mpreg_queue_acked_total{queue="m"} 1"#,
        r#"mpreg_queue_send_to_ack_seconds_count{queue="m"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    promtool_accepts(&text);
    let (status, _, body) = get(&base, "/metrics/queue", "").await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["system"], "queue");
    let m = &v["metrics"];
    assert_eq!(m["system_type"], "queue");
    assert_eq!(m["queues"][0]["queue_name"], "m");
    assert_eq!(m["queues"][0]["current_queue_size"], 1);
    assert_eq!(m["queues"][0]["current_in_flight_count"], 1);
    assert_eq!(m["queues"][0]["messages_acknowledged"], 1);
    let (_, _, unified) = get(&base, "/metrics/unified", "").await;
    let u: Value = serde_json::from_str(&unified).unwrap();
    assert_eq!(u["unified_metrics"]["queue"]["system_type"], "queue");
}

#[tokio::test]
async fn cache_figures_move_with_the_cache() {
    let square = mpreg::Function::new("square", |x: i64| async move { Ok::<_, String>(x * x) })
        .params(["x"])
        .cache(std::time::Duration::from_secs(60));
    let node = start_node(monitored(), vec![square]).await;
    let base = node.monitoring_url().unwrap().to_owned();
    let c = Client::connect(node.url()).await.unwrap();
    c.cache().put("a:b", json!(1), None).await.unwrap();
    assert!(c.cache().get("a:b").await.unwrap().is_some());
    assert!(c.cache().get("a:zz").await.unwrap().is_none());
    for _ in 0..3 {
        assert_eq!(c.call("square", json!([4])).await.unwrap(), json!(16));
    }
    let (_, _, text) = get(&base, "/metrics", "").await;
    for line in [
        r#"mpreg_cache_entries{level="L1"} 2"#,
        r#"mpreg_cache_requests_total{operation="put",status="hit"} 1"#,
        r#"mpreg_cache_requests_total{operation="get",status="miss"} 1"#,
        r#"mpreg_function_cache_hits_total{function="square",version="1.0.0"} 2"#,
        r#"mpreg_function_cache_misses_total{function="square",version="1.0.0"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    // L1 counted the get's hit, the result cache's two hits, the miss and the first call's.
    assert_eq!(metric(&text, r#"mpreg_cache_hits_total{level="L1"}"#), 3.0);
    assert_eq!(
        metric(&text, r#"mpreg_cache_misses_total{level="L1"}"#),
        2.0
    );
    promtool_accepts(&text);
    let v = get_json(&base, "/metrics/cache").await;
    assert_eq!(v["system"], "cache");
    assert_eq!(v["metrics"]["system_type"], "cache");
    assert_eq!(v["metrics"]["levels"]["L1"]["entries"], 2);
    assert!(v["metrics"]["levels"]["L2"].is_null(), "memory mode: no L2");
    let u = get_json(&base, "/metrics/unified").await;
    assert_eq!(u["unified_metrics"]["cache"]["system_type"], "cache");
    assert_eq!(
        u["unified_metrics"]["overall_health"]["systems_unavailable"],
        1
    );
}
