//! Helpers shared by the integration tests: a real node on 127.0.0.1 and a raw WebSocket.
#![allow(dead_code)]
// Tests are clients from outside the node: they may use real sockets directly.
#![allow(clippy::disallowed_types)]

pub mod pki;
pub mod process;

use futures_util::{SinkExt, StreamExt};
use mpreg::{Client, Function, Node, RunningNode, Settings};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Raw = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Settings for a test node: loopback, any free port, quiet.
pub fn test_settings() -> Settings {
    Settings {
        port: 0,
        ..Settings::default()
    }
}

/// Test settings of a node keeping its state in `dir` (sqlite): the same directory again
/// restarts it as it was.
pub fn sqlite_settings(dir: &std::path::Path) -> Settings {
    Settings {
        persistence: mpreg::config::PersistenceConfig {
            mode: mpreg::config::PersistenceMode::Sqlite,
            data_dir: dir.to_owned(),
            ..Default::default()
        },
        ..test_settings()
    }
}

/// Starts a node with `functions` registered.
pub async fn start_node(settings: Settings, functions: Vec<Function>) -> RunningNode {
    let mut b = Node::builder(settings);
    for f in functions {
        b.register(f).expect("register");
    }
    b.start().await.expect("node starts")
}

pub async fn raw_connect(url: &str) -> Raw {
    tokio_tungstenite::connect_async(url)
        .await
        .expect("connect")
        .0
}

/// Sends `text` as a text frame and returns the next data frame as JSON.
pub async fn raw_roundtrip(ws: &mut Raw, text: &str) -> Value {
    ws.send(Message::text(text.to_owned())).await.expect("send");
    next_json(ws).await
}

pub async fn next_json(ws: &mut Raw) -> Value {
    loop {
        match ws.next().await.expect("connection open").expect("frame") {
            Message::Text(t) => return serde_json::from_str(&t).expect("reply is JSON"),
            Message::Binary(b) => return serde_json::from_slice(&b).expect("reply is JSON"),
            Message::Close(c) => panic!("connection closed: {c:?}"),
            _ => {}
        }
    }
}

/// The error code of a reply (panics if it is a success).
pub fn code_of(reply: &Value) -> i64 {
    reply["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("not an error reply: {reply}"))
}

/// Waits until every node's catalog lists `fun` (registrations are Raft commits).
pub async fn wait_routable(nodes: &[&RunningNode], fun: &str, offers: usize) {
    for node in nodes {
        let client = Client::connect(node.url()).await.unwrap();
        let mut polls = 0;
        loop {
            let found = client
                .call("catalog_query", serde_json::json!([{"name": fun}]))
                .await
                .unwrap();
            if found["functions"].as_array().map(Vec::len) == Some(offers) {
                break;
            }
            polls += 1;
            assert!(
                polls < 400,
                "{fun} not in {}'s catalog: {found}",
                node.url()
            );
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }
}

/// Runs `scripts/<script>` with the original MPREG's venv python (`MPREG_ORIGINAL_PYTHON`,
/// where the original MPREG package is installed) with `args` and `envs`, and asserts it
/// succeeded (exit 0 and `OK` printed).
pub async fn run_original_script(script: &str, args: &[&str], envs: &[(&str, &std::path::Path)]) {
    let python = std::env::var("MPREG_ORIGINAL_PYTHON")
        .expect("MPREG_ORIGINAL_PYTHON names the original's venv python");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(script);
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(path).args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("OK"),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the Python example `examples/<script>` with `args` and returns its stdout's JSON
/// lines, failing unless it exits 0. It needs python3 with the `websockets` package
/// (`scripts/test.sh` installs it); without it the test fails saying so.
pub async fn python_example(script: &str, args: &[&str]) -> Vec<Value> {
    let path = format!("{}/examples/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::process::Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .await
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'websockets'"),
        "this test needs python3 with the `websockets` package (scripts/test.sh installs it)"
    );
    assert!(out.status.success(), "{stderr}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}
