//! `docs/PROTOCOL.md` is executable.
//!
//! Every example in it (a fenced block tagged `json request` followed by one tagged
//! `json reply`) is sent byte for byte as a text frame to a real node over a raw WebSocket,
//! and the reply frame must equal the documented reply, where the string `"..."` stands for
//! any value. The other tests check the document's claims that are not request/reply pairs:
//! the error-code table, binary frames, the message size limit, concurrent requests on one
//! connection and draining.
// Tests are clients from outside the node: they may use real sockets directly.
#![allow(clippy::disallowed_types)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use mpreg::env::BoxStream;
use mpreg::{Env, ErrorCode, Function, Node, RunningNode, Settings};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

type Ws = WebSocketStream<BoxStream>;

/// A documented reply value that matches any value.
const PLACEHOLDER: &str = "...";
/// Fewest examples the document must hold.
const MIN_EXAMPLES: usize = 15;
/// `max_commands_per_request` of the documentation's node (the default is 1000).
const DOC_MAX_COMMANDS: usize = 10;
/// Longest a test waits for one frame, so that a missing reply fails instead of hanging.
const FRAME_WAIT: Duration = Duration::from_secs(15);
/// The node's default message size limit, which the document states.
const MAX_MESSAGE_BYTES: usize = 20 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// The document

fn doc_text() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/PROTOCOL.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A fenced code block: its info string, the line its opening fence is on, its text.
struct Block {
    info: String,
    line: usize,
    body: String,
}

fn fenced_blocks(doc: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in doc.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_owned(),
                    line: i + 1,
                    body: String::new(),
                });
            }
            (Some(_), Some(rest)) if rest.trim().is_empty() => blocks.extend(open.take()),
            (Some(block), _) => {
                if !block.body.is_empty() {
                    block.body.push('\n');
                }
                block.body.push_str(line);
            }
            (None, None) => {}
        }
    }
    if let Some(block) = open {
        panic!(
            "docs/PROTOCOL.md: code block opened at line {} is never closed",
            block.line
        );
    }
    blocks
}

/// One documented exchange.
struct Example {
    line: usize,
    request: String,
    reply: Value,
}

/// Every `json request` block with the `json reply` block that must follow it.
fn examples(doc: &str) -> Vec<Example> {
    let mut examples = Vec::new();
    let mut pending: Option<Block> = None;
    for block in fenced_blocks(doc) {
        match block.info.as_str() {
            "json request" => {
                if let Some(req) = pending.replace(block) {
                    panic!(
                        "docs/PROTOCOL.md: the request at line {} has no `json reply` block",
                        req.line
                    );
                }
            }
            "json reply" => {
                let Some(req) = pending.take() else {
                    panic!(
                        "docs/PROTOCOL.md: the reply at line {} follows no `json request` block",
                        block.line
                    );
                };
                let reply = serde_json::from_str(&block.body).unwrap_or_else(|e| {
                    panic!(
                        "docs/PROTOCOL.md: the reply at line {} is not JSON: {e}",
                        block.line
                    )
                });
                examples.push(Example {
                    line: req.line,
                    request: req.body,
                    reply,
                });
            }
            _ => {
                if let Some(req) = &pending {
                    panic!(
                        "docs/PROTOCOL.md: the request at line {} is followed by a `{}` block \
                         (line {}) instead of its `json reply`",
                        req.line, block.info, block.line
                    );
                }
            }
        }
    }
    if let Some(req) = pending {
        panic!(
            "docs/PROTOCOL.md: the request at line {} has no `json reply` block",
            req.line
        );
    }
    examples
}

/// Differences between a documented value and an actual one, by JSON path.
fn compare(documented: &Value, actual: &Value, path: &str, out: &mut Vec<String>) {
    if documented.as_str() == Some(PLACEHOLDER) {
        return;
    }
    match (documented, actual) {
        (Value::Object(d), Value::Object(a)) => {
            for (k, dv) in d {
                match a.get(k) {
                    Some(av) => compare(dv, av, &format!("{path}.{k}"), out),
                    None => out.push(format!("{path}.{k}: documented but absent")),
                }
            }
            for (k, av) in a.iter().filter(|(k, _)| !d.contains_key(*k)) {
                out.push(format!("{path}.{k}: not documented, got {av}"));
            }
        }
        (Value::Array(d), Value::Array(a)) if d.len() == a.len() => {
            for (i, (dv, av)) in d.iter().zip(a).enumerate() {
                compare(dv, av, &format!("{path}[{i}]"), out);
            }
        }
        _ if documented == actual => {}
        _ => out.push(format!("{path}: documented {documented}, got {actual}")),
    }
}

fn is_heading(line: &str) -> bool {
    line.starts_with('#')
}

/// The rows of the first table under the `Error codes` heading, as trimmed cells.
fn code_table(doc: &str) -> Vec<Vec<String>> {
    doc.lines()
        .skip_while(|l| !(is_heading(l) && l.trim_start_matches('#').trim() == "Error codes"))
        .skip(1)
        .take_while(|l| !is_heading(l))
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The nodes

/// The functions the document's examples call (listed in its "Examples" section).
fn doc_functions() -> Vec<Function> {
    let model = |version: &'static str, resources: &'static [&'static str]| {
        Function::new("model", move || async move { Ok::<_, String>(version) })
            .version(version)
            .resources(resources.iter().copied())
    };
    vec![
        Function::new(
            "add",
            |a: i64, b: i64| async move { Ok::<_, String>(a + b) },
        )
        .params(["a", "b"])
        .function_id("math.add")
        .resources(["cpu"]),
        Function::new(
            "mul",
            |a: i64, b: i64| async move { Ok::<_, String>(a * b) },
        )
        .params(["a", "b"]),
        Function::new("div", |a: i64, b: i64| async move {
            a.checked_div(b).ok_or("division by zero")
        })
        .params(["a", "b"]),
        Function::new("user", |id: i64| async move {
            Ok::<_, String>(json!({
                "id": id,
                "name": "Ada",
                "roles": ["admin", "ops"],
                "address": {"city": "London"},
            }))
        })
        .params(["id"]),
        model("1.0.0", &["cpu"]),
        model("1.5.0", &["cpu"]),
        model("2.0.0", &["gpu", "cuda"]),
        Function::new("sleep_ms", |ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, String>(ms)
        })
        .params(["ms"]),
    ]
}

fn doc_settings() -> Settings {
    Settings {
        port: 0,
        name: "doc-node".to_owned(),
        cluster_id: "doc-cluster".to_owned(),
        max_commands_per_request: DOC_MAX_COMMANDS,
        max_message_bytes: 1 << 20,
        ..Settings::default()
    }
}

async fn start(settings: Settings, functions: Vec<Function>) -> RunningNode {
    let mut builder = Node::builder(settings);
    for f in functions {
        builder.register(f).expect("function registers");
    }
    let node = builder.start().await.expect("node starts");
    // Examples that read the catalog (cluster_map, catalog_query) need the node in it.
    assert!(node.registered().await, "node registered in its catalog");
    node
}

/// A function that reports it has started, then waits until the test releases it.
struct Gate {
    started: Notify,
    release: Notify,
}

impl Gate {
    fn function(self: &Arc<Gate>) -> Function {
        let gate = self.clone();
        Function::new("hold", move || {
            let gate = gate.clone();
            async move {
                gate.started.notify_one();
                gate.release.notified().await;
                Ok::<_, String>("released")
            }
        })
    }
}

fn new_gate() -> Arc<Gate> {
    Arc::new(Gate {
        started: Notify::new(),
        release: Notify::new(),
    })
}

// ---------------------------------------------------------------------------------------------
// A raw WebSocket client

async fn connect(node: &RunningNode, path: &str) -> Ws {
    let addr = node.local_addr().to_string();
    let stream = Env::production()
        .net
        .connect(&addr)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    let url = format!("ws://{addr}{path}");
    let (ws, _) = tokio_tungstenite::client_async(url.as_str(), stream)
        .await
        .unwrap_or_else(|e| panic!("WebSocket handshake with {url} failed: {e}"));
    ws
}

/// The next data or close frame (pings and pongs are skipped).
async fn next_frame(ws: &mut Ws) -> Message {
    loop {
        let msg = tokio::time::timeout(FRAME_WAIT, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no frame within {FRAME_WAIT:?}"))
            .expect("connection ended without a close frame")
            .expect("reading a frame failed");
        if !matches!(msg, Message::Ping(_) | Message::Pong(_)) {
            return msg;
        }
    }
}

/// The next frame, which must be a text frame holding JSON.
async fn next_json(ws: &mut Ws) -> Value {
    match next_frame(ws).await {
        Message::Text(t) => serde_json::from_str(&t).expect("reply is JSON"),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

async fn rpc(ws: &mut Ws, request: Value) -> Value {
    ws.send(Message::text(request.to_string()))
        .await
        .expect("send");
    next_json(ws).await
}

fn reply_ok(u: &str, r: Value) -> Value {
    json!({
        "role": "rpc-response", "u": u, "r": r, "error": null,
        "intermediate_results": [], "execution_summary": null,
    })
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_request_gets_its_documented_reply() {
    let doc = doc_text();
    let examples = examples(&doc);
    assert!(
        examples.len() >= MIN_EXAMPLES,
        "docs/PROTOCOL.md has {} examples; at least {MIN_EXAMPLES} expected",
        examples.len()
    );
    let node = start(doc_settings(), doc_functions()).await;
    // One connection for all examples: errors must leave it usable.
    let mut ws = connect(&node, "/").await;
    let mut failures = Vec::new();
    for ex in &examples {
        ws.send(Message::text(ex.request.as_str()))
            .await
            .expect("send");
        let text = match next_frame(&mut ws).await {
            Message::Text(t) => t,
            other => {
                failures.push(format!(
                    "line {}: expected a text reply frame, got {other:?}",
                    ex.line
                ));
                continue;
            }
        };
        let actual: Value = serde_json::from_str(&text).expect("reply is JSON");
        let mut diffs = Vec::new();
        compare(&ex.reply, &actual, "$", &mut diffs);
        if !diffs.is_empty() {
            failures.push(format!(
                "example at line {}:\n  request: {}\n  reply:   {text}\n  {}",
                ex.line,
                ex.request,
                diffs.join("\n  ")
            ));
        }
    }
    drop(ws);
    node.shutdown().await;
    assert!(
        failures.is_empty(),
        "{} of {} documented examples differ from the node's replies:\n\n{}",
        failures.len(),
        examples.len(),
        failures.join("\n\n")
    );
}

#[test]
fn the_code_table_lists_every_error_code() {
    let rows = code_table(&doc_text());
    assert!(
        !rows.is_empty(),
        "no table under an `Error codes` heading in docs/PROTOCOL.md"
    );
    let mut listed = Vec::new();
    for row in rows.iter().skip(2) {
        let code: i64 = row[0]
            .trim_matches('`')
            .parse()
            .unwrap_or_else(|_| panic!("code table row {row:?}: first cell is not a code"));
        let known = ErrorCode::from_i64(code)
            .unwrap_or_else(|| panic!("code table lists {code}, which mpreg does not have"));
        assert_eq!(
            row.get(1).map(String::as_str),
            Some(format!("`{}`", known.title()).as_str()),
            "code table row for {code}: the message cell must be the code's message"
        );
        listed.push(known);
    }
    for code in ErrorCode::ALL {
        let n = listed.iter().filter(|&&c| c == code).count();
        assert_eq!(n, 1, "code {} is listed {n} times in the table", code);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_path_and_binary_frames_get_binary_replies() {
    let examples = examples(&doc_text());
    let first = examples.first().expect("an example");
    let node = start(doc_settings(), doc_functions()).await;
    let mut ws = connect(&node, "/any/path?x=1").await;
    ws.send(Message::binary(first.request.clone().into_bytes()))
        .await
        .expect("send");
    let Message::Binary(bytes) = next_frame(&mut ws).await else {
        panic!("a binary request must get a binary reply");
    };
    let actual: Value = serde_json::from_slice(&bytes).expect("reply is JSON");
    let mut diffs = Vec::new();
    compare(&first.reply, &actual, "$", &mut diffs);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    drop(ws);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_up_to_the_limit_pass_and_larger_ones_are_closed_with_1009() {
    let settings = Settings {
        port: 0,
        ..Settings::default()
    };
    assert_eq!(settings.max_message_bytes, MAX_MESSAGE_BYTES);
    let node = start(settings, Vec::new()).await;
    let mut ws = connect(&node, "/").await;

    // Exactly at the limit: unknown fields are ignored, so padding keeps the request valid.
    let head = r#"{"role":"rpc","u":"big","cmds":[{"name":"e","fun":"echo","args":[1]}],"pad":""#;
    let tail = r#""}"#;
    let mut big = String::with_capacity(MAX_MESSAGE_BYTES);
    big.push_str(head);
    big.extend(std::iter::repeat_n(
        'x',
        MAX_MESSAGE_BYTES - head.len() - tail.len(),
    ));
    big.push_str(tail);
    assert_eq!(big.len(), MAX_MESSAGE_BYTES);
    ws.send(Message::text(big)).await.expect("send");
    assert_eq!(next_json(&mut ws).await, reply_ok("big", json!({"e": 1})));

    // One byte more, in fragments, so that the node has read every byte when it refuses the
    // message (refusing earlier could reset the connection before the close frame arrives).
    const CHUNK: usize = 1024 * 1024;
    for i in 0..MAX_MESSAGE_BYTES / CHUNK {
        let opcode = OpCode::Data(if i == 0 { Data::Binary } else { Data::Continue });
        let frame = Frame::message(vec![b' '; CHUNK], opcode, false);
        ws.send(Message::Frame(frame)).await.expect("send");
    }
    let last = Frame::message(vec![b' '], OpCode::Data(Data::Continue), true);
    ws.send(Message::Frame(last)).await.expect("send");
    match next_frame(&mut ws).await {
        Message::Close(Some(close)) => assert_eq!(close.code, CloseCode::Size, "{close:?}"),
        other => panic!("expected a close frame with code 1009, got {other:?}"),
    }
    drop(ws);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_on_one_connection_run_concurrently_and_reply_as_they_finish() {
    let gate = new_gate();
    let node = start(
        Settings {
            port: 0,
            ..Settings::default()
        },
        vec![gate.function()],
    )
    .await;
    let mut ws = connect(&node, "/").await;
    let held = json!({"role": "rpc", "u": "held", "cmds": [{"name": "h", "fun": "hold"}]});
    ws.send(Message::text(held.to_string()))
        .await
        .expect("send");
    gate.started.notified().await;
    // `held` cannot finish before the release below, so this reply must come first.
    let quick =
        json!({"role": "rpc", "u": "quick", "cmds": [{"name": "e", "fun": "echo", "args": [1]}]});
    assert_eq!(
        rpc(&mut ws, quick).await,
        reply_ok("quick", json!({"e": 1}))
    );
    gate.release.notify_one();
    assert_eq!(
        next_json(&mut ws).await,
        reply_ok("held", json!({"h": "released"}))
    );
    drop(ws);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_finishes_running_requests_and_refuses_new_ones_with_1020() {
    let gate = new_gate();
    let node = start(
        Settings {
            port: 0,
            ..Settings::default()
        },
        vec![gate.function()],
    )
    .await;
    let mut ws = connect(&node, "/").await;
    let held = json!({"role": "rpc", "u": "held", "cmds": [{"name": "h", "fun": "hold"}]});
    ws.send(Message::text(held.to_string()))
        .await
        .expect("send");
    gate.started.notified().await;
    node.shutdown_handle().shutdown();

    let late =
        json!({"role": "rpc", "u": "late", "cmds": [{"name": "e", "fun": "echo", "args": [1]}]});
    assert_eq!(
        rpc(&mut ws, late).await,
        json!({
            "role": "rpc-response", "u": "late", "r": null,
            "error": {
                "code": 1020,
                "message": "Node shutting down",
                "details": "node is draining; retry on another node",
            },
            "intermediate_results": [], "execution_summary": null,
        })
    );
    gate.release.notify_one();
    assert_eq!(
        next_json(&mut ws).await,
        reply_ok("held", json!({"h": "released"}))
    );
    match next_frame(&mut ws).await {
        Message::Close(Some(close)) => assert_eq!(close.code, CloseCode::Away, "{close:?}"),
        other => panic!("expected a close frame with code 1001, got {other:?}"),
    }
    drop(ws);
    node.wait().await;
}
