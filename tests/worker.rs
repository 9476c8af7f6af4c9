//! Worker connections: a process registers functions over its client connection, serves
//! the calls the cluster routes to it, and its functions leave when it disconnects.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use mpreg::{Client, ErrorCode, RunningNode, Settings};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

fn settings(name: &str, peers: Vec<String>) -> Settings {
    Settings {
        name: name.to_owned(),
        peers,
        resources: ["edge".to_owned()].into(),
        ..test_settings()
    }
}

/// How many catalog entries `fun` has, as `node` sees them.
async fn offers(node: &RunningNode, fun: &str) -> usize {
    let client = Client::connect(node.url()).await.unwrap();
    let found = client
        .call("catalog_query", json!([{"name": fun}]))
        .await
        .unwrap();
    found["functions"].as_array().map_or(0, Vec::len)
}

async fn wait_offers(node: &RunningNode, fun: &str, n: usize) {
    for _ in 0..400 {
        if offers(node, fun).await == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{fun} never had {n} catalog entries on {}", node.url());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_serves_calls_from_any_node_until_it_disconnects() {
    let a = start_node(settings("a", vec![]), vec![]).await;
    let b = start_node(settings("b", vec![a.url().to_owned()]), vec![]).await;
    assert!(b.registered().await);

    let mut worker = raw_connect(b.url()).await;
    let reply = raw_roundtrip(
        &mut worker,
        &json!({"role": "register", "u": "reg-1", "functions": [
            {"name": "resize", "resources": ["gpu"]},
            {"name": "thumb", "version": "2.1.0", "idempotent": true},
        ]})
        .to_string(),
    )
    .await;
    assert_eq!(reply["u"], "reg-1", "{reply}");
    assert_eq!(reply["error"], Value::Null, "{reply}");
    let listed = reply["r"]["registered"].as_array().unwrap();
    assert_eq!(listed[0]["name"], "resize");
    assert_eq!(
        listed[0]["resources"],
        json!(["edge", "gpu"]),
        "node resources added"
    );
    assert_eq!(listed[1]["version"], "2.1.0");
    assert_eq!(listed[1]["idempotent"], true);

    // A duplicate registration is refused and registers nothing.
    let dup = raw_roundtrip(
        &mut worker,
        &json!({"role": "register", "u": "reg-2", "functions": [{"name": "resize"}]}).to_string(),
    )
    .await;
    assert_eq!(code_of(&dup), 1006, "{dup}");

    wait_offers(&a, "resize", 1).await;

    // Serve calls: echo the first argument back, or fail on "boom"; the call for "hang"
    // is never answered.
    let (calls_tx, mut calls_rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let serving = tokio::spawn(async move {
        while let Some(Ok(frame)) = worker.next().await {
            let Message::Text(t) = frame else { continue };
            let call: Value = serde_json::from_str(t.as_str()).unwrap();
            let _ = calls_tx.send(call.clone());
            if call["role"] != "call" {
                continue;
            }
            let answer = match call["args"][0].as_str() {
                Some("boom") => {
                    json!({"role": "call-result", "u": call["u"], "error": {"message": "it broke"}})
                }
                Some("hang") => continue,
                Some("leave") => return, // drops the connection mid-call
                _ => {
                    json!({"role": "call-result", "u": call["u"], "r": {"got": call["args"][0], "fun": call["fun"]}})
                }
            };
            worker
                .send(Message::text(answer.to_string()))
                .await
                .unwrap();
        }
    });

    for node in [&a, &b] {
        let client = Client::connect(node.url()).await.unwrap();
        let r = client
            .call("resize", json!([640]))
            .locs(["gpu"])
            .await
            .unwrap();
        assert_eq!(
            r,
            json!({"got": 640, "fun": "resize"}),
            "via {}",
            node.url()
        );
        // Worker results flow into the next step like any other.
        let r = client
            .request(vec![
                mpreg::RpcCommand::new("t", "thumb").args(json!(["x"])),
                mpreg::RpcCommand::new("e", "echo").args(json!(["t.got"])),
            ])
            .await
            .unwrap();
        assert_eq!(Value::Object(r), json!({"e": "x"}));
    }
    let client = Client::connect(a.url()).await.unwrap();
    let err = client.call("resize", json!(["boom"])).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ExecutionFailed), "{err}");
    assert!(err.to_string().contains("it broke"), "{err}");

    // A call the worker never answers is cancelled at the deadline.
    let req = mpreg::protocol::RpcRequest::new(
        "h",
        vec![mpreg::RpcCommand::new("h", "resize").args(json!(["hang"]))],
    );
    let late = client
        .send(req, Some(Duration::from_millis(200)))
        .await
        .unwrap_err();
    assert_eq!(late.code(), Some(ErrorCode::TimeoutOrBadRole), "{late}");
    let mut cancelled = false;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(5), calls_rx.recv()).await {
        if m["role"] == "cancel" {
            cancelled = true;
            break;
        }
    }
    assert!(cancelled, "the worker is told the call was cancelled");

    // The worker drops the connection in the middle of a call: it may have run, 1018.
    let lost = client.call("resize", json!(["leave"])).await.unwrap_err();
    assert_eq!(lost.code(), Some(ErrorCode::StepLost), "{lost}");
    serving.await.unwrap();

    // Its functions leave the node and the catalog.
    wait_offers(&a, "resize", 0).await;
    wait_offers(&b, "thumb", 0).await;
    let gone = client.call("resize", json!([1])).await.unwrap_err();
    assert_eq!(gone.code(), Some(ErrorCode::CommandNotFound), "{gone}");

    b.shutdown().await;
    a.shutdown().await;
}

/// Registers `functions` over a new connection to `node` and serves it: every call is
/// answered with `{"by": name}`, except that a worker named "quitter" drops its connection
/// on its first call instead (mid-call, as a crashed worker process would).
async fn worker(
    node: &RunningNode,
    name: &'static str,
    functions: Value,
) -> tokio::task::JoinHandle<()> {
    let mut ws = raw_connect(node.url()).await;
    let reply = raw_roundtrip(
        &mut ws,
        &json!({"role": "register", "u": "reg", "functions": functions}).to_string(),
    )
    .await;
    assert_eq!(reply["error"], Value::Null, "{reply}");
    tokio::spawn(async move {
        while let Some(Ok(frame)) = ws.next().await {
            let Message::Text(t) = frame else { continue };
            let call: Value = serde_json::from_str(t.as_str()).unwrap();
            if call["role"] != "call" {
                continue;
            }
            if name == "quitter" {
                return;
            }
            let answer = json!({"role": "call-result", "u": call["u"], "r": {"by": name}});
            ws.send(Message::text(answer.to_string())).await.unwrap();
        }
    })
}

/// A worker that disconnects during a call: an idempotent function's call moves to another
/// node's worker (whether the worker was on the entry node or on the node a step was
/// forwarded to), a non-idempotent one fails with 1018 and never runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_call_lost_with_its_worker_moves_to_another_worker() {
    let a = start_node(settings("a", vec![]), vec![]).await;
    let b = start_node(settings("b", vec![a.url().to_owned()]), vec![]).await;
    let c = start_node(settings("c", vec![a.url().to_owned()]), vec![]).await;
    assert!(b.registered().await && c.registered().await);
    // Routing takes the highest version first: the quitter's 2.0.0 on a, then the steady
    // worker's 1.0.0 on c.
    let on_a = |version: &str| {
        json!([
            {"name": "thumb", "version": version, "idempotent": true},
            {"name": "stamp", "version": version},
        ])
    };
    let steady = worker(&c, "steady", on_a("1.0.0")).await;

    // Forwarded: b sends the step to a, whose worker quits; b retries it on c.
    let quitter = worker(&a, "quitter", on_a("2.0.0")).await;
    wait_offers(&b, "thumb", 2).await;
    let via_b = Client::connect(b.url()).await.unwrap();
    let r = via_b.call("thumb", json!(["x"])).await.unwrap();
    assert_eq!(r, json!({"by": "steady"}));
    quitter.await.unwrap();

    // On the entry node: a's own worker quits; a moves the call to c.
    let quitter = worker(&a, "quitter", on_a("2.0.0")).await;
    wait_offers(&b, "thumb", 2).await;
    let via_a = Client::connect(a.url()).await.unwrap();
    let r = via_a.call("thumb", json!(["x"])).await.unwrap();
    assert_eq!(r, json!({"by": "steady"}));
    quitter.await.unwrap();

    // Not idempotent: lost, and not run again elsewhere.
    let quitter = worker(&a, "quitter", on_a("2.0.0")).await;
    wait_offers(&b, "stamp", 2).await;
    let lost = via_a.call("stamp", json!(["x"])).await.unwrap_err();
    assert_eq!(lost.code(), Some(ErrorCode::StepLost), "{lost}");
    quitter.await.unwrap();

    steady.abort();
    for n in [c, b, a] {
        n.shutdown().await;
    }
}
