//! Every kind of bad input gets a clear error (or a clean close for oversized frames), and
//! the node keeps serving other clients.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use futures_util::{SinkExt, StreamExt};
use mpreg::{Client, Function, Settings};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const OK_REQUEST: &str =
    r#"{"role":"rpc","u":"after","cmds":[{"name":"e","fun":"echo","args":["still here"]}]}"#;

/// Sends `bad` and expects error `code`; then the same connection and a fresh client
/// still get answers.
async fn rejects(bad: &str, code: i64) -> Value {
    let node = start_node(test_settings(), vec![]).await;
    let mut ws = raw_connect(node.url()).await;
    let reply = raw_roundtrip(&mut ws, bad).await;
    assert_eq!(code_of(&reply), code, "{reply}");
    assert!(
        reply["error"]["details"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{reply}"
    );
    let ok = raw_roundtrip(&mut ws, OK_REQUEST).await;
    assert_eq!(ok["r"]["e"], "still here");
    let client = Client::connect(node.url()).await.unwrap();
    assert_eq!(client.call("echo", json!([1])).await.unwrap(), json!(1));
    node.shutdown().await;
    reply
}

#[tokio::test]
async fn invalid_json() {
    // Broken after its `u`: the refusal still names the request.
    let reply = rejects(r#"{"role":"rpc","u":"x","cmds":[{"#, 1005).await;
    assert_eq!(reply["u"], "x");
    let reply = rejects(r#"{"role":"rpc","cmds":[{"#, 1005).await;
    assert_eq!(reply["u"], "unknown");
}

#[tokio::test]
async fn not_an_object() {
    rejects("[1,2,3]", 1005).await;
}

#[tokio::test]
async fn unknown_role() {
    let reply = rejects(r#"{"role":"cache-analytics","u":"c1","key":"k"}"#, 1004).await;
    assert_eq!(reply["u"], "c1");
    assert!(
        reply["error"]["details"]
            .as_str()
            .unwrap()
            .contains("cache-analytics")
    );
}

#[tokio::test]
async fn missing_role() {
    rejects(r#"{"u":"m","cmds":[]}"#, 1004).await;
}

#[tokio::test]
async fn missing_u() {
    rejects(
        r#"{"role":"rpc","cmds":[{"name":"e","fun":"echo","args":[1]}]}"#,
        1006,
    )
    .await;
}

#[tokio::test]
async fn missing_cmds() {
    let reply = rejects(r#"{"role":"rpc","u":"nc"}"#, 1006).await;
    assert_eq!(reply["u"], "nc");
}

#[tokio::test]
async fn wrong_types() {
    for bad in [
        r#"{"role":"rpc","u":7,"cmds":[]}"#,
        r#"{"role":"rpc","u":"w","cmds":{"name":"e"}}"#,
        r#"{"role":"rpc","u":"w","cmds":[{"name":"e","fun":"echo","locs":"gpu"}]}"#,
        r#"{"role":"rpc","u":"w","cmds":[{"name":"e","fun":"echo","args":{"a":1}}]}"#,
        r#"{"role":"rpc","u":"w","cmds":[{"name":5,"fun":"echo"}]}"#,
        r#"{"role":"rpc","u":"w","cmds":[{"name":"e","fun":"echo","locs":null}]}"#,
    ] {
        rejects(bad, 1006).await;
    }
}

#[tokio::test]
async fn argument_type_mismatch_names_command_and_parameter() {
    let add = Function::new(
        "add",
        |a: i64, b: i64| async move { Ok::<_, String>(a + b) },
    )
    .params(["a", "b"]);
    let node = start_node(test_settings(), vec![add]).await;
    let mut ws = raw_connect(node.url()).await;
    let reply = raw_roundtrip(
        &mut ws,
        r#"{"role":"rpc","u":"t","cmds":[{"name":"sum","fun":"add","args":[1,"two"]}]}"#,
    )
    .await;
    assert_eq!(code_of(&reply), 1007);
    let details = reply["error"]["details"].as_str().unwrap();
    assert!(
        details.contains("`sum`") && details.contains("`b`"),
        "{details}"
    );
    node.shutdown().await;
}

#[tokio::test]
async fn ten_thousand_commands_are_refused_before_running() {
    let cmds: Vec<Value> = (0..10_000)
        .map(|i| json!({"name": format!("c{i}"), "fun": "echo", "args": [i]}))
        .collect();
    let frame = json!({"role": "rpc", "u": "big", "cmds": cmds}).to_string();
    let reply = rejects(&frame, 1015).await;
    assert!(
        reply["error"]["details"]
            .as_str()
            .unwrap()
            .contains("10000")
    );
}

#[tokio::test]
async fn thousand_deep_nesting_is_refused() {
    let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
    let frame = format!(
        r#"{{"role":"rpc","u":"deep","cmds":[{{"name":"e","fun":"echo","args":[{deep}]}}]}}"#
    );
    let reply = rejects(&frame, 1005).await;
    assert!(reply["error"]["details"].as_str().unwrap().contains("127"));
}

#[tokio::test]
async fn oversized_frame_closes_that_connection_only() {
    let settings = Settings {
        max_message_bytes: 64 * 1024,
        ..test_settings()
    };
    let node = start_node(settings, vec![]).await;
    let bystander = Client::connect(node.url()).await.unwrap();
    let mut ws = raw_connect(node.url()).await;
    let payload = "x".repeat(100 * 1024);
    let frame = json!({"role": "rpc", "u": "huge", "cmds": [{"name": "e", "fun": "echo", "args": [payload]}]});
    ws.send(Message::text(frame.to_string())).await.unwrap();
    let close = loop {
        match ws.next().await {
            Some(Ok(Message::Close(c))) => break c,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let close = close.expect("close frame carries a code");
    assert_eq!(close.code, CloseCode::Size);
    assert!(close.reason.contains("limit"), "{}", close.reason);
    assert_eq!(
        bystander.call("echo", json!(["fine"])).await.unwrap(),
        json!("fine")
    );
    node.shutdown().await;
}

/// Counts how often the slow function was cancelled (dropped before finishing).
struct CancelProbe(Arc<AtomicUsize>, Arc<Notify>, bool);

impl Drop for CancelProbe {
    fn drop(&mut self) {
        if !self.2 {
            self.0.fetch_add(1, Ordering::SeqCst);
            self.1.notify_one();
        }
    }
}

#[tokio::test]
async fn disconnect_mid_request_cancels_its_steps() {
    let cancelled = Arc::new(AtomicUsize::new(0));
    let cancel_seen = Arc::new(Notify::new());
    let started = Arc::new(Notify::new());
    let never = Arc::new(Notify::new());
    let (c, n, s, nv) = (
        cancelled.clone(),
        cancel_seen.clone(),
        started.clone(),
        never.clone(),
    );
    let hang = Function::new("hang", move || {
        let (c, n, s, nv) = (c.clone(), n.clone(), s.clone(), nv.clone());
        async move {
            let mut probe = CancelProbe(c, n, false);
            s.notify_one();
            nv.notified().await;
            probe.2 = true;
            Ok::<_, String>(0)
        }
    });
    let node = start_node(test_settings(), vec![hang]).await;
    let mut ws = raw_connect(node.url()).await;
    ws.send(Message::text(r#"{"role":"rpc","u":"h","cmds":[{"name":"a","fun":"hang"},{"name":"b","fun":"echo","args":["a"]}]}"#)).await.unwrap();
    started.notified().await;
    drop(ws);
    cancel_seen.notified().await;
    assert_eq!(cancelled.load(Ordering::SeqCst), 1);
    let client = Client::connect(node.url()).await.unwrap();
    assert_eq!(
        client.call("echo", json!(["next"])).await.unwrap(),
        json!("next")
    );
    node.shutdown().await;
}

#[tokio::test]
async fn exponential_copies_are_stopped_by_the_budget() {
    let mut cmds = vec![json!({"name": "c0", "fun": "echo", "args": ["x".repeat(1000)]})];
    for k in 1..40 {
        let prev = format!("c{}", k - 1);
        cmds.push(json!({"name": format!("c{k}"), "fun": "echos", "args": [prev, prev]}));
    }
    let frame = json!({"role": "rpc", "u": "exp", "cmds": cmds}).to_string();
    let reply = rejects(&frame, 1016).await;
    assert!(
        reply["error"]["details"]
            .as_str()
            .unwrap()
            .contains("budget"),
        "{reply}"
    );
}

#[tokio::test]
async fn nesting_built_from_references_is_stopped() {
    // Each step wraps the previous one in 100 more levels: legal on the wire, too deep after
    // resolution.
    let mut cmds = vec![json!({"name": "c0", "fun": "echo", "args": [1]})];
    for k in 1..5 {
        let mut v = json!(format!("c{}", k - 1));
        for _ in 0..100 {
            v = json!([v]);
        }
        cmds.push(json!({"name": format!("c{k}"), "fun": "echo", "args": [v]}));
    }
    let frame = json!({"role": "rpc", "u": "nest", "cmds": cmds}).to_string();
    let reply = rejects(&frame, 1016).await;
    assert!(
        reply["error"]["details"].as_str().unwrap().contains("124"),
        "{reply}"
    );
}

#[tokio::test]
async fn a_reply_over_the_message_limit_becomes_an_error() {
    let settings = Settings {
        max_message_bytes: 64 * 1024,
        ..test_settings()
    };
    let node = start_node(settings, vec![]).await;
    let mut ws = raw_connect(node.url()).await;
    let big = "y".repeat(40 * 1024);
    let frame = json!({"role": "rpc", "u": "fat", "cmds": [
        {"name": "a", "fun": "echo", "args": [big]},
        {"name": "b", "fun": "echos", "args": ["a", "a"]}]});
    let reply = raw_roundtrip(&mut ws, &frame.to_string()).await;
    assert_eq!(code_of(&reply), 1016, "{reply}");
    assert_eq!(reply["u"], "fat");
    let ok = raw_roundtrip(&mut ws, OK_REQUEST).await;
    assert_eq!(ok["r"]["e"], "still here");
    node.shutdown().await;
}

#[tokio::test]
async fn a_client_close_is_answered_with_a_close() {
    let node = start_node(test_settings(), vec![]).await;
    let mut ws = raw_connect(node.url()).await;
    ws.close(None).await.unwrap();
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("no clean close handshake: {e}"),
        }
    }
    node.shutdown().await;
}

#[tokio::test]
async fn dropping_the_node_handle_does_not_stop_the_node() {
    let node = start_node(test_settings(), vec![]).await;
    let url = node.url().to_owned();
    drop(node);
    let client = Client::connect(&url).await.unwrap();
    assert_eq!(
        client.call("echo", json!(["alive"])).await.unwrap(),
        json!("alive")
    );
    assert_eq!(
        client.call("echo", json!(["echo"])).await.unwrap(),
        json!("echo")
    );
}

/// Numbers beyond what the node represents are refused alike (1005, naming where), whether
/// an integer beyond 64 bits or a float beyond f64, in arguments or kwargs, at any depth.
/// Before, `1e400` was echoed back verbatim (a Python client read infinity).
#[tokio::test]
async fn numbers_beyond_what_the_node_represents_are_refused_alike() {
    let node = start_node(test_settings(), vec![]).await;
    let mut ws = raw_connect(node.url()).await;
    let cases = [
        // (the command's argument part, the path the refusal names)
        (r#""args":[1e400]"#, "cmds[0].args[0]"),
        (r#""args":[1, -1e400]"#, "cmds[0].args[1]"),
        (r#""args":[[{"x":1E+2147483648}]]"#, "cmds[0].args[0][0].x"),
        (r#""args":[1180591620717411303424]"#, "cmds[0].args[0]"),
        (r#""args":[],"kwargs":{"a":1e400}"#, "cmds[0].kwargs.a"),
        (
            r#""args":[],"kwargs":{"a":{"b":[-1e400]}}"#,
            "cmds[0].kwargs.a.b[0]",
        ),
        (
            r#""args":[],"kwargs":{"a":1E+2147483648}"#,
            "cmds[0].kwargs.a",
        ),
        (
            r#""args":[],"kwargs":{"a":-18446744073709551616}"#,
            "cmds[0].kwargs.a",
        ),
    ];
    for (i, (part, path)) in cases.iter().enumerate() {
        let frame =
            format!(r#"{{"role":"rpc","u":"n{i}","cmds":[{{"name":"e","fun":"echo",{part}}}]}}"#);
        let reply = raw_roundtrip(&mut ws, &frame).await;
        assert_eq!(code_of(&reply), 1005, "{part}: {reply}");
        let u = format!("n{i}");
        assert_eq!(reply["u"].as_str(), Some(u.as_str()), "{reply}");
        let details = reply["error"]["details"].as_str().unwrap();
        assert!(
            details.contains(path) && details.contains("beyond what the node can represent"),
            "{part}: {details}"
        );
    }
    // What f64 holds is served as it was sent.
    let ok = r#"{"role":"rpc","u":"ok","cmds":[{"name":"e","fun":"echo","args":[1.7976931348623157e308]}]}"#;
    let reply = raw_roundtrip(&mut ws, ok).await;
    assert_eq!(reply["r"]["e"], json!(1.7976931348623157e308), "{reply}");
    node.shutdown().await;
}
