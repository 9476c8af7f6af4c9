//! The client library against a real node: selection options, errors with codes, timeouts,
//! many calls in flight, concurrent requests on one connection, and draining on shutdown.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use mpreg::{Client, ClientError, ErrorCode, Function, RpcCommand, Settings};
use serde_json::json;
use tokio::sync::Notify;

fn versioned(version: &'static str, resources: &[&str]) -> Function {
    Function::new("model", move || async move { Ok::<_, String>(version) })
        .function_id("ml.model")
        .version(version)
        .resources(resources.iter().copied())
}

#[tokio::test]
async fn locs_function_id_and_version_choose_the_function() {
    let node = start_node(
        test_settings(),
        vec![
            versioned("1.0.0", &["cpu"]),
            versioned("1.4.2", &["cpu", "gpu"]),
            versioned("2.0.0", &["cpu"]),
        ],
    )
    .await;
    let c = Client::connect(node.url()).await.unwrap();
    assert_eq!(c.call("model", json!([])).await.unwrap(), "2.0.0");
    assert_eq!(
        c.call("model", json!([])).locs(["gpu"]).await.unwrap(),
        "1.4.2"
    );
    assert_eq!(
        c.call("model", json!([]))
            .version_constraint(">=1.0.0,<2.0.0")
            .await
            .unwrap(),
        "1.4.2"
    );
    assert_eq!(
        c.call("model", json!([]))
            .version_constraint("==1.0.0")
            .function_id("ml.model")
            .await
            .unwrap(),
        "1.0.0"
    );
    assert_eq!(
        c.call("model", json!([]))
            .version_constraint("1")
            .locs(["cpu"])
            .await
            .unwrap(),
        "1.4.2"
    );
    for miss in [
        c.call("model", json!([])).locs(["tpu"]).await,
        c.call("model", json!([])).function_id("other").await,
        c.call("model", json!([])).version_constraint(">=3").await,
        c.call("nope", json!([])).await,
    ] {
        assert_eq!(miss.unwrap_err().code(), Some(ErrorCode::CommandNotFound));
    }
    let bad = c
        .call("model", json!([]))
        .version_constraint(">=x")
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Some(ErrorCode::InvalidVersionConstraint));
    node.shutdown().await;
}

#[tokio::test]
async fn node_resources_extend_every_function() {
    let settings = Settings {
        resources: ["gpu".to_owned()].into(),
        ..test_settings()
    };
    let f = Function::new("infer", || async { Ok::<_, String>("done") }).resources(["ml"]);
    let node = start_node(settings, vec![f]).await;
    let c = Client::connect(node.url()).await.unwrap();
    assert_eq!(
        c.call("infer", json!([]))
            .locs(["gpu", "ml"])
            .await
            .unwrap(),
        "done"
    );
    node.shutdown().await;
}

#[tokio::test]
async fn errors_carry_codes_and_step_names() {
    let fail =
        Function::new("fail", |why: String| async move { Err::<(), _>(why) }).params(["why"]);
    let node = start_node(test_settings(), vec![fail]).await;
    let c = Client::connect(node.url()).await.unwrap();
    let err = c
        .request(vec![
            RpcCommand::new("a", "echo").args(json!(["x"])),
            RpcCommand::new("b", "fail").args(json!(["disk full"])),
        ])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ExecutionFailed));
    let text = err.to_string();
    assert!(text.contains("`b`") && text.contains("disk full"), "{text}");
    let cyc = c
        .request(vec![
            RpcCommand::new("a", "echo").args(json!(["b"])),
            RpcCommand::new("b", "echo").args(json!(["a"])),
        ])
        .await
        .unwrap_err();
    assert_eq!(cyc.code(), Some(ErrorCode::DependencyCycle));
    node.shutdown().await;
}

#[tokio::test]
async fn a_request_past_its_deadline_fails_with_1004() {
    let never = Arc::new(Notify::new());
    let n = never.clone();
    let hang = Function::new("hang", move || {
        let n = n.clone();
        async move {
            n.notified().await;
            Ok::<_, String>(())
        }
    });
    let node = start_node(test_settings(), vec![hang]).await;
    let c = Client::connect(node.url()).await.unwrap();
    let err = c
        .call("hang", json!([]))
        .timeout(Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TimeoutOrBadRole), "{err}");
    assert!(err.to_string().contains("timed out"));
    node.shutdown().await;
}

#[tokio::test]
async fn many_calls_in_flight_on_one_client() {
    let node = start_node(test_settings(), vec![]).await;
    let c = Client::connect(node.url()).await.unwrap();
    let calls = (0..2000).map(|i| {
        let c = c.clone();
        async move { (i, c.call("echo", json!([i])).await) }
    });
    for (i, r) in futures_util::future::join_all(calls).await {
        assert_eq!(r.unwrap(), json!(i));
    }
    node.shutdown().await;
}

/// `wait` only returns once `release` ran: with one connection, that needs the node to run
/// requests concurrently rather than one after the other.
#[tokio::test]
async fn requests_on_one_connection_run_concurrently() {
    let gate = Arc::new(Notify::new());
    let (g1, g2) = (gate.clone(), gate.clone());
    let wait = Function::new("wait", move || {
        let g = g1.clone();
        async move {
            g.notified().await;
            Ok::<_, String>("released")
        }
    });
    let release = Function::new("release", move || {
        let g = g2.clone();
        async move {
            g.notify_one();
            Ok::<_, String>("done")
        }
    });
    let node = start_node(test_settings(), vec![wait, release]).await;
    let c = Client::connect(node.url()).await.unwrap();
    let waiting = c.call("wait", json!([])).timeout(Duration::from_secs(20));
    let releasing = c.call("release", json!([]));
    let (a, b) = tokio::join!(waiting.into_future(), releasing.into_future());
    assert_eq!((a.unwrap(), b.unwrap()), (json!("released"), json!("done")));
    node.shutdown().await;
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests_and_refuses_new_ones() {
    let started = Arc::new(Notify::new());
    let gate = Arc::new(Notify::new());
    let (s, g) = (started.clone(), gate.clone());
    let slow = Function::new("slow", move || {
        let (s, g) = (s.clone(), g.clone());
        async move {
            s.notify_one();
            g.notified().await;
            Ok::<_, String>("finished")
        }
    });
    let node = start_node(test_settings(), vec![slow]).await;
    let c = Client::connect(node.url()).await.unwrap();
    let in_flight = tokio::spawn({
        let c = c.clone();
        async move { c.call("slow", json!([])).await }
    });
    started.notified().await;
    let stopper = node.shutdown_handle();
    let stopped = tokio::spawn(node.wait());
    stopper.shutdown();
    // A request arriving while draining is refused with its own code…
    let refused = c.call("echo", json!([1])).await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::ShuttingDown));
    // …while the one in flight completes normally.
    gate.notify_one();
    assert_eq!(in_flight.await.unwrap().unwrap(), json!("finished"));
    stopped.await.unwrap();
    assert!(matches!(
        c.call("echo", json!([1])).await,
        Err(ClientError::Closed)
    ));
}

#[tokio::test]
async fn connecting_to_nothing_is_a_clear_error() {
    let err = match Client::connect("ws://127.0.0.1:1").await {
        Err(e) => e,
        Ok(_) => panic!("connected to port 1"),
    };
    assert!(matches!(err, ClientError::Connect { .. }), "{err}");
    assert!(matches!(
        Client::connect("http://x:1").await,
        Err(ClientError::InvalidUrl { .. })
    ));
}
