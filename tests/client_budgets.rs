//! Issue 13 over real sockets: nothing a client sends can exhaust a node or take over
//! another client's calls. Memory figures are the node process's own (VmRSS and VmHWM from
//! /proc), so these tests run the `mpreg-node` binary; the others run a node in-process and
//! read its `cluster_map` (`client_budget`).
// Tests are clients from outside the node: they may use real sockets directly.
#![allow(clippy::disallowed_types)]

mod common;

use std::future::Future;
use std::time::Duration;

use common::process::NodeProcess;
use common::{code_of, next_json, raw_connect, raw_roundtrip, start_node, test_settings};
use futures_util::SinkExt;
use mpreg::{Client, Function};
use serde_json::{Value, json};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;

const MIB: u64 = 1 << 20;

/// The node's own `client_budget` figures, from `cluster_map`.
async fn budget(url: &str) -> Value {
    let client = Client::connect(url).await.expect("connect");
    let map = client.call("cluster_map", json!([])).await.expect("map");
    let me = map["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["is_local"] == true))
        .cloned()
        .expect("the local node");
    me["client_budget"].clone()
}

/// Polls `probe` until `ok` holds of what it returns, for at most `within`; returns the
/// last value.
async fn eventually<F, Fut>(within: Duration, probe: F, ok: impl Fn(u64) -> bool) -> u64
where
    F: Fn() -> Fut,
    Fut: Future<Output = u64>,
{
    let until = Instant::now() + within;
    loop {
        let v = probe().await;
        if ok(v) || Instant::now() > until {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `budget(url)[key]` until `ok` holds of it, for at most `within`.
async fn wait_budget(url: &str, key: &str, within: Duration, ok: impl Fn(u64) -> bool) -> u64 {
    let probe = || async { budget(url).await[key].as_u64().expect("a number") };
    eventually(within, probe, ok).await
}

/// Polls the node's RSS until it is below `limit`, for at most `within`.
async fn wait_rss_below(node: &NodeProcess, limit: u64, within: Duration) -> u64 {
    eventually(within, || async { node.memory().0 }, |rss| rss < limit).await
}

fn echo_frame(u: &str, arg: &str) -> String {
    json!({"role": "rpc", "u": u, "cmds": [{"name": "a", "fun": "echo", "args": [arg]}]})
        .to_string()
}

/// Point 1: a client that sends 1 MiB requests and reads no reply is paused at its budget,
/// disconnected once its replies have not drained for the stall timeout, and the node's
/// bytes and memory go back to where they were. Before: 2.4 GB and never given back.
#[tokio::test]
async fn a_client_that_never_reads_is_paused_then_disconnected_and_memory_returns() {
    let node = NodeProcess::start(
        &[
            "--log-level",
            "error",
            "--max-connection-bytes",
            "8388608",
            "--reply-stall-timeout-ms",
            "1500",
        ],
        &[],
    );
    let (baseline, _) = node.memory();
    let mut ws = raw_connect(&node.url).await;
    let payload = "x".repeat(MIB as usize);
    let mut sent = 0;
    // Until the node stops reading and every buffer between is full, or it hangs up.
    while sent < 1000 {
        match timeout(
            Duration::from_secs(1),
            ws.send(Message::text(echo_frame("e", &payload))),
        )
        .await
        {
            Ok(Ok(())) => sent += 1,
            _ => break,
        }
    }
    assert!(sent < 200, "the node kept reading: {sent} MiB sent");
    let held = budget(&node.url).await["bytes_held"].as_u64().unwrap();
    assert!(
        held <= 8 * MIB + 2 * MIB,
        "{held} bytes held for an 8 MiB budget"
    );
    let stalled = wait_budget(
        &node.url,
        "connections_stalled",
        Duration::from_secs(10),
        |n| n >= 1,
    )
    .await;
    assert_eq!(stalled, 1, "the client was not disconnected");
    let (_, peak) = node.memory();
    assert!(
        peak < baseline + 150 * MIB,
        "peak RSS {} MiB over a {} MiB baseline",
        peak / MIB,
        baseline / MIB
    );
    drop(ws);
    let held = wait_budget(&node.url, "bytes_held", Duration::from_secs(5), |b| b == 0).await;
    assert_eq!(held, 0);
    let rss = wait_rss_below(&node, baseline + 24 * MIB, Duration::from_secs(5)).await;
    assert!(
        rss < baseline + 24 * MIB,
        "RSS {} MiB did not return near its {} MiB baseline",
        rss / MIB,
        baseline / MIB
    );
}

/// Point 2: an 18 MiB frame of 9.4 million zeros costs the node at most 8× its size at
/// its peak (it was 47×: a value tree of 9.4 million elements).
#[tokio::test]
async fn parsing_costs_at_most_eight_times_the_frame() {
    let node = NodeProcess::start(&["--log-level", "error"], &[]);
    let (baseline, _) = node.memory();
    let zeros = vec!["0"; 9_400_000].join(",");
    let frame = format!(
        r#"{{"role":"rpc","u":"z","cmds":[{{"name":"a","fun":"echo","args":[[{zeros}]]}}]}}"#
    );
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_frame_size(None)
        .max_message_size(None);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(&node.url, Some(config), false)
        .await
        .expect("connect");
    ws.send(Message::text(frame.clone())).await.unwrap();
    let reply = match ws_next_text(&mut ws).await {
        Some(t) => t,
        None => panic!("no reply"),
    };
    assert!(reply.contains(r#""r":{"a":[0,0,0"#), "{}", &reply[..200]);
    let (_, peak) = node.memory();
    let cost = peak.saturating_sub(baseline);
    assert!(
        cost <= 8 * frame.len() as u64,
        "peak {} MiB above baseline for a {} MiB frame",
        cost / MIB,
        frame.len() as u64 / MIB
    );
}

async fn ws_next_text(ws: &mut common::Raw) -> Option<String> {
    use futures_util::StreamExt;
    while let Some(m) = ws.next().await {
        match m.ok()? {
            Message::Text(t) => return Some(t.to_string()),
            Message::Close(_) => return None,
            _ => {}
        }
    }
    None
}

/// Point 3: per-level results of a 1 KiB value along 1,000 steps would be ~500 MB; they are
/// refused with 1016 once the reply crosses the message limit, and never built whole (the
/// node's peak stays near the limit, where it was 1.3 GiB).
#[tokio::test]
async fn intermediate_results_are_refused_as_they_cross_the_limit() {
    let node = NodeProcess::start(&["--log-level", "error"], &[]);
    let (baseline, _) = node.memory();
    let mut cmds = vec![json!({"name": "s0", "fun": "echo", "args": ["v".repeat(1024)]})];
    cmds.extend(
        (1..1000).map(
            |i| json!({"name": format!("s{i}"), "fun": "echo", "args": [format!("s{}", i - 1)]}),
        ),
    );
    let req = json!({"role": "rpc", "u": "c", "cmds": cmds, "return_intermediate_results": true});
    let mut ws = raw_connect(&node.url).await;
    let reply = raw_roundtrip(&mut ws, &req.to_string()).await;
    assert_eq!(code_of(&reply), 1016, "{reply}");
    assert_eq!(reply["u"], "c");
    let (_, peak) = node.memory();
    assert!(
        peak < baseline + 100 * MIB,
        "peak {} MiB over a {} MiB baseline",
        peak / MIB,
        baseline / MIB
    );
    // A short chain's levels still come back whole.
    let short =
        json!({"role": "rpc", "u": "s", "cmds": &cmds[..3], "return_intermediate_results": true});
    let reply = raw_roundtrip(&mut ws, &short.to_string()).await;
    assert_eq!(
        reply["intermediate_results"].as_array().unwrap().len(),
        3,
        "{reply}"
    );
    assert_eq!(
        reply["intermediate_results"][2]["accumulated_results"]["s0"]
            .as_str()
            .unwrap()
            .len(),
        1024
    );
}

/// Point 4: a worker's connection stays within its in-flight limit (requests beyond it are
/// refused at once), its registrations are bounded, and a call to a function it never
/// answers times out at the request's deadline and is counted.
#[tokio::test]
async fn a_worker_connection_stays_within_its_bounds() {
    let settings = mpreg::Settings {
        max_inflight_per_connection: 8,
        request_timeout_ms: 600,
        ..test_settings()
    };
    let node = start_node(settings, vec![]).await;
    let mut w = raw_connect(node.url()).await;
    let reg = json!({"role": "register", "u": "reg", "functions": [{"name": "never"}]});
    let reply = raw_roundtrip(&mut w, &reg.to_string()).await;
    assert!(reply["error"].is_null(), "{reply}");
    for i in 0..20 {
        let call = json!({"role": "rpc", "u": format!("n{i}"), "cmds": [{"name": "a", "fun": "never", "args": [i]}]});
        w.send(Message::text(call.to_string())).await.unwrap();
    }
    // No counts that depend on how fast the node reads (a slow machine lets some of the 8
    // time out and free their place before all 20 are read): what must hold is that the
    // worker never has more than 8 calls open, that every request is answered (refused at
    // once, or timed out), and that every call it got was cancelled and counted.
    let (mut refused, mut timed_out, mut calls, mut cancels) = (0, 0, 0, 0);
    while refused + timed_out < 20 {
        let m = timeout(Duration::from_secs(10), next_json(&mut w))
            .await
            .expect("every request is answered");
        match (m["role"].as_str(), m["error"]["code"].as_i64()) {
            (Some("call"), _) => calls += 1,
            (Some("cancel"), _) => cancels += 1,
            (_, Some(1016)) => refused += 1,
            (_, Some(1004)) => timed_out += 1,
            other => panic!("unexpected {other:?}: {m}"),
        }
        assert!(
            calls - cancels <= 8,
            "{calls} calls, {cancels} cancelled: over the limit"
        );
    }
    assert!(refused >= 1, "20 at once on a limit of 8: some refused");
    assert_eq!(calls, timed_out, "each call the worker got timed out");
    let abandoned = wait_budget(
        node.url(),
        "worker_calls_abandoned",
        Duration::from_secs(10),
        |n| n >= timed_out,
    )
    .await;
    assert_eq!(abandoned, timed_out);
    let many: Vec<Value> = (0..300).map(|i| json!({"name": format!("f{i}")})).collect();
    let many = json!({"role": "register", "u": "many", "functions": many});
    assert_eq!(code_of(&reply_to(&mut w, &many).await), 1016);
    let long = json!({"role": "register", "u": "long", "functions": [{"name": "x".repeat(1000)}]});
    assert_eq!(code_of(&reply_to(&mut w, &long).await), 1016);
    node.shutdown().await;
}

/// Sends `req` and returns the reply with its `u`, skipping the node's calls and cancels.
async fn reply_to(ws: &mut common::Raw, req: &Value) -> Value {
    ws.send(Message::text(req.to_string())).await.unwrap();
    loop {
        let m = next_json(ws).await;
        if m["u"] == req["u"] {
            return m;
        }
    }
}

/// Point 5: no one can register a built-in's name (under any version) or a reserved one;
/// other clients' calls keep reaching the node's own functions.
#[tokio::test]
async fn built_in_and_reserved_names_cannot_be_registered() {
    let node = start_node(test_settings(), vec![]).await;
    let mut w = raw_connect(node.url()).await;
    for name in [
        "echo",
        "echos",
        "list_peers",
        "cluster_map",
        "catalog_query",
        "mpreg.stats",
        "_x",
    ] {
        let reg = json!({"role": "register", "u": name, "functions": [{"name": name, "version": "9.9.9"}]});
        let reply = raw_roundtrip(&mut w, &reg.to_string()).await;
        assert_eq!(code_of(&reply), 1006, "{name}: {reply}");
        assert!(
            reply["error"]["details"]
                .as_str()
                .unwrap()
                .contains("reserved"),
            "{reply}"
        );
    }
    let client = Client::connect(node.url()).await.unwrap();
    assert_eq!(
        client.call("echo", json!(["mine"])).await.unwrap(),
        json!("mine")
    );
    let f = Function::new("cluster_map", || async { Ok::<_, String>(0) });
    assert!(node.register(f).await.is_err());
    node.shutdown().await;
}

/// Point 6: every request is answered, and what the parser would mangle is refused.
#[tokio::test]
async fn every_request_is_answered_and_nothing_is_mangled() {
    let node = start_node(test_settings(), vec![]).await;
    let mut ws = raw_connect(node.url()).await;
    let big = r#"{"role":"rpc","u":"big","cmds":[{"name":"a","fun":"echo","args":[1180591620717411303424]}]}"#;
    let reply = raw_roundtrip(&mut ws, big).await;
    assert_eq!((code_of(&reply), reply["u"].as_str()), (1005, Some("big")));
    assert!(
        reply["error"]["details"]
            .as_str()
            .unwrap()
            .contains("cmds[0].args[0]"),
        "{reply}"
    );
    let dup = r#"{"role":"rpc","role":"rpc","u":"dup","cmds":[]}"#;
    let reply = raw_roundtrip(&mut ws, dup).await;
    assert_eq!((code_of(&reply), reply["u"].as_str()), (1006, Some("dup")));
    let dup_arg =
        r#"{"role":"rpc","u":"dk","cmds":[{"name":"a","fun":"echo","args":[{"k":1,"k":2}]}]}"#;
    assert_eq!(code_of(&raw_roundtrip(&mut ws, dup_arg).await), 1006);
    let deep = format!(
        r#"{{"role":"rpc","u":"deep","cmds":[{{"name":"a","fun":"echo","args":[{}]}}]}}"#,
        "[".repeat(100_000)
    );
    let reply = raw_roundtrip(&mut ws, &deep).await;
    assert_eq!((code_of(&reply), reply["u"].as_str()), (1005, Some("deep")));
    for (fun, args) in [
        ("cluster_map", json!([1])),
        ("list_peers", json!([1, 2])),
        ("catalog_query", json!([{}, {}])),
    ] {
        let req =
            json!({"role": "rpc", "u": fun, "cmds": [{"name": "a", "fun": fun, "args": args}]});
        let reply = raw_roundtrip(&mut ws, &req.to_string()).await;
        assert_eq!(code_of(&reply), 1007, "{fun}: {reply}");
    }
    // 2^63 and -2^63 are in range and come back exactly.
    let edge = r#"{"role":"rpc","u":"e","cmds":[{"name":"a","fun":"echos","args":[18446744073709551615,-9223372036854775808]}]}"#;
    let reply = raw_roundtrip(&mut ws, edge).await;
    assert_eq!(
        reply["r"]["a"],
        json!([18446744073709551615u64, -9223372036854775808i64])
    );
    node.shutdown().await;
}

/// Point 6: a `register` that cannot commit (this node never joins a cluster: its peer
/// does not exist) is answered 1017 by the request's deadline, not left waiting.
#[tokio::test]
async fn a_register_that_cannot_commit_answers_1017_by_its_deadline() {
    let settings = mpreg::Settings {
        peers: vec!["ws://127.0.0.1:1".to_owned()],
        request_timeout_ms: 1000,
        ..test_settings()
    };
    let node = start_node(settings, vec![]).await;
    let mut w = raw_connect(node.url()).await;
    let started = Instant::now();
    let reg = json!({"role": "register", "u": "r", "functions": [{"name": "f"}]});
    let reply = timeout(
        Duration::from_secs(10),
        raw_roundtrip(&mut w, &reg.to_string()),
    )
    .await
    .expect("answered");
    assert_eq!(code_of(&reply), 1017, "{reply}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    node.shutdown().await;
}

/// Point 2's other half: a function that takes a generic JSON value pays for its tree. While
/// a call holds a tree larger than the connection's budget, the node reads nothing more from
/// that connection, so the echo sent right after it is answered only once it is done
/// (without the tree counted, the echo would come back first).
#[tokio::test]
async fn a_generic_value_parameter_counts_against_the_budget() {
    let settings = mpreg::Settings {
        max_connection_bytes: 1 << 20,
        ..test_settings()
    };
    let hold = Function::new("hold_tree", |values: Value| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok::<_, String>(values.as_array().map_or(0, Vec::len))
    })
    .params(["values"]);
    let node = start_node(settings, vec![hold]).await;
    let mut ws = raw_connect(node.url()).await;
    // 100,000 small numbers: 200 KB of text, a ~3 MB tree.
    let tree = json!({"role": "rpc", "u": "tree", "cmds": [{"name": "a", "fun": "hold_tree", "args": [vec![1; 100_000]]}]});
    ws.send(Message::text(tree.to_string())).await.unwrap();
    ws.send(Message::text(echo_frame("after", "x")))
        .await
        .unwrap();
    let first = next_json(&mut ws).await;
    let second = next_json(&mut ws).await;
    assert_eq!(
        (first["u"].as_str(), second["u"].as_str()),
        (Some("tree"), Some("after"))
    );
    assert_eq!(first["r"]["a"], 100_000);
    let paused = budget(node.url()).await["connections_paused"]
        .as_u64()
        .unwrap();
    assert!(paused >= 1, "{paused}");
    node.shutdown().await;
}

/// Issue 23, point 6: 1017 within the deadline on a cluster that lost its majority (three
/// members, two of them killed), not only on a node that never joined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_on_a_cluster_that_lost_its_majority_answers_1017() {
    let a = start_node(
        mpreg::Settings {
            request_timeout_ms: 1500,
            ..test_settings()
        },
        vec![],
    )
    .await;
    let b = NodeProcess::start(&["--peers", a.url(), "--no-monitoring"], &[]);
    let c = NodeProcess::start(&["--peers", a.url(), "--no-monitoring"], &[]);
    eventually(
        Duration::from_secs(30),
        || async {
            let m = a.raft_metrics().borrow().clone();
            m.membership_config.membership().voter_ids().count() as u64
        },
        |voters| voters == 3,
    )
    .await;
    // A registration commits while the majority is there.
    let mut w = raw_connect(a.url()).await;
    let ok = json!({"role": "register", "u": "ok", "functions": [{"name": "before"}]});
    assert!(raw_roundtrip(&mut w, &ok.to_string()).await["error"].is_null());
    drop((b, c)); // SIGKILL: they leave nothing behind and tell no one
    let started = Instant::now();
    let reg = json!({"role": "register", "u": "r", "functions": [{"name": "after"}]});
    let reply = timeout(
        Duration::from_secs(20),
        raw_roundtrip(&mut w, &reg.to_string()),
    )
    .await
    .expect("answered");
    assert_eq!(code_of(&reply), 1017, "{reply}");
    assert!(
        reply["error"]["details"]
            .as_str()
            .unwrap()
            .contains("not in the cluster catalog"),
        "{reply}"
    );
    // By the request's deadline (1.5 s), give or take the machine's scheduling.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // The node still serves calls from its catalog.
    let client = Client::connect(a.url()).await.unwrap();
    assert_eq!(client.call("echo", json!([1])).await.unwrap(), json!(1));
}

/// Issue 23, point 6: the node-wide client budget over real sockets, with several
/// connections. The node holds 5 MiB for all clients (and so for any one). Connection B
/// sends a 3 MB request that runs until the test lets it go; then A sends another and,
/// right behind it, an echo. The node now holds more than its budget, and A more than its
/// fair share (a quarter of it, with C and the probe's connection), so the node stops
/// reading A: A's echo is answered only after its request (without the node-wide budget,
/// A at 3 MB is under its own 5 MiB and the echo would come back first). C, holding
/// nothing, is under its share and is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_budget_is_shared_fairly_over_real_connections() {
    use std::sync::Arc;
    use tokio::sync::Notify;
    let settings = mpreg::Settings {
        max_client_bytes: 5 << 20,
        max_connection_bytes: 5 << 20,
        ..test_settings()
    };
    // A `String` parameter: the request's frame is what it holds (no JSON tree besides).
    let hold = |name: &str, release: Arc<Notify>| {
        Function::new(name, move |text: String| {
            let release = release.clone();
            async move {
                release.notified().await;
                Ok::<_, String>(text.len())
            }
        })
        .params(["text"])
    };
    let (release_a, release_b) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let node = start_node(
        settings,
        vec![
            hold("hold_a", release_a.clone()),
            hold("hold_b", release_b.clone()),
        ],
    )
    .await;
    let (mut a, mut b, mut c) = (
        raw_connect(node.url()).await,
        raw_connect(node.url()).await,
        raw_connect(node.url()).await,
    );
    const BIG: usize = 3_000_000;
    let big = |u: &str, fun: &str| {
        json!({"role": "rpc", "u": u, "cmds": [{"name": "t", "fun": fun, "args": ["x".repeat(BIG)]}]})
            .to_string()
    };
    b.send(Message::text(big("b", "hold_b"))).await.unwrap();
    let held = wait_budget(node.url(), "bytes_held", Duration::from_secs(10), |n| {
        n >= BIG as u64
    })
    .await;
    assert!(held >= BIG as u64, "b's request is held: {held}");
    a.send(Message::text(big("a", "hold_a"))).await.unwrap();
    a.send(Message::text(echo_frame("a-echo", "x")))
        .await
        .unwrap();
    let held = wait_budget(node.url(), "bytes_held", Duration::from_secs(10), |n| {
        n >= 2 * BIG as u64
    })
    .await;
    assert!(held >= 5 << 20, "over the node's budget: {held}");
    // C is under its share: served while both are held.
    let reply = timeout(
        Duration::from_secs(10),
        raw_roundtrip(&mut c, &echo_frame("c", "y")),
    )
    .await
    .expect("c is served while the node is full");
    assert_eq!(reply["r"]["a"], "y", "{reply}");
    release_a.notify_one();
    let first = next_json(&mut a).await;
    let second = next_json(&mut a).await;
    assert_eq!(
        (first["u"].as_str(), second["u"].as_str()),
        (Some("a"), Some("a-echo")),
        "a was not read while over its share"
    );
    assert_eq!(first["r"]["t"], BIG);
    release_b.notify_one();
    assert_eq!(next_json(&mut b).await["r"]["t"], BIG);
    let paused = budget(node.url()).await["connections_paused"]
        .as_u64()
        .unwrap();
    assert!(paused >= 1, "{paused}");
    node.shutdown().await;
}
