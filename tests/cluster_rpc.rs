//! Cluster RPC in one process: three nodes with different resources and functions; one
//! request whose steps need different resources runs each step where it can, from any entry
//! node; deadlines reach forwarded steps; a client that goes away cancels them; a function
//! offered twice keeps working when one of its nodes leaves.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use mpreg::protocol::RpcRequest;
use mpreg::{Client, ErrorCode, Function, RpcCommand, Settings};
use serde_json::{Value, json};

fn settings(name: &str, peers: Vec<String>, resources: &[&str]) -> Settings {
    Settings {
        name: name.to_owned(),
        peers,
        resources: resources.iter().map(|r| r.to_string()).collect(),
        ..test_settings()
    }
}

/// Counts how often a function ran, and how many of its runs were dropped unfinished.
#[derive(Default)]
struct Counts {
    started: AtomicUsize,
    cancelled: AtomicUsize,
}

struct CancelGuard(Arc<Counts>, bool);

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.1 {
            self.0.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn slow(counts: Arc<Counts>) -> Function {
    Function::new("slow", move |ms: u64| {
        let counts = counts.clone();
        async move {
            counts.started.fetch_add(1, Ordering::SeqCst);
            let mut guard = CancelGuard(counts, false);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            guard.1 = true;
            Ok::<_, String>(ms)
        }
    })
    .params(["ms"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_runs_each_step_where_its_resources_are() {
    let stored = Arc::new(AtomicUsize::new(0));
    let slow_counts = Arc::new(Counts::default());
    let cpu = start_node(
        settings("cpu", vec![], &["cpu"]),
        vec![
            Function::new("preprocess", |x: i64| async move { Ok::<_, String>(x + 1) })
                .params(["x"]),
        ],
    )
    .await;
    let gpu = start_node(
        settings("gpu", vec![cpu.url().to_owned()], &["gpu"]),
        vec![
            Function::new("infer", |x: i64| async move {
                Ok::<_, String>(json!({"score": x * 10}))
            })
            .params(["x"])
            .idempotent(true),
            slow(slow_counts.clone()),
        ],
    )
    .await;
    let db = {
        let stored = stored.clone();
        start_node(
            settings("db", vec![cpu.url().to_owned()], &["database"]),
            vec![
                Function::new("store", move |v: Value| {
                    let stored = stored.clone();
                    async move {
                        stored.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, String>(json!({"stored": v}))
                    }
                })
                .params(["v"]),
            ],
        )
        .await
    };
    let nodes = [&cpu, &gpu, &db];
    for fun in ["preprocess", "infer", "store", "slow"] {
        wait_routable(&nodes, fun, 1).await;
    }

    // From every entry node: cpu → gpu → database, plus an independent cpu step.
    for entry in nodes {
        let client = Client::connect(entry.url()).await.unwrap();
        let r = client
            .request(vec![
                RpcCommand::new("p", "preprocess")
                    .args(json!([5]))
                    .locs(["cpu"]),
                RpcCommand::new("i", "infer")
                    .args(json!(["p"]))
                    .locs(["gpu"]),
                RpcCommand::new("s", "store")
                    .args(json!(["i.score"]))
                    .locs(["database"]),
                RpcCommand::new("q", "preprocess").args(json!([100])),
            ])
            .await
            .unwrap();
        assert_eq!(
            Value::Object(r),
            json!({"s": {"stored": 60}, "q": 101}),
            "entry {}",
            entry.url()
        );
        // A single forwarded call takes the short path.
        assert_eq!(
            client.call("infer", json!([4])).await.unwrap(),
            json!({"score": 40})
        );
    }
    assert_eq!(
        stored.load(Ordering::SeqCst),
        3,
        "store ran once per request"
    );

    // A function no node offers is 1001 everywhere, and is found the moment it appears.
    let client = Client::connect(db.url()).await.unwrap();
    let missing = client.call("late", json!([])).await.unwrap_err();
    assert_eq!(
        missing.code(),
        Some(ErrorCode::CommandNotFound),
        "{missing}"
    );
    let registering = tokio::time::Instant::now();
    cpu.register(Function::new("late", || async { Ok::<_, String>("here") }))
        .await
        .unwrap();
    wait_routable(&nodes, "late", 1).await;
    // Reported, not asserted (no timed tests): the issue asks for well under 1 s.
    eprintln!(
        "`late` routable from every node {:?} after register() was called",
        registering.elapsed()
    );
    assert_eq!(client.call("late", json!([])).await.unwrap(), json!("here"));

    // A remote error names the step and keeps its code.
    let bad = client.call("infer", json!(["nope"])).await.unwrap_err();
    assert_eq!(bad.code(), Some(ErrorCode::InvalidArguments), "{bad}");

    // The request's deadline reaches the forwarded step, which stops there.
    let req = RpcRequest::new("t", vec![RpcCommand::new("s", "slow").args(json!([5_000]))]);
    let late = client
        .send(req, Some(Duration::from_millis(300)))
        .await
        .unwrap_err();
    assert_eq!(late.code(), Some(ErrorCode::TimeoutOrBadRole), "{late}");
    wait_for(
        || slow_counts.cancelled.load(Ordering::SeqCst) == 1,
        "timed-out step stops",
    )
    .await;

    // A client that disconnects cancels the steps it started on other nodes.
    let leaving = Client::connect(cpu.url()).await.unwrap();
    let pending = tokio::spawn(async move {
        let _ = leaving.call("slow", json!([10_000])).await;
    });
    wait_for(
        || slow_counts.started.load(Ordering::SeqCst) == 2,
        "second slow call starts",
    )
    .await;
    pending.abort();
    wait_for(
        || slow_counts.cancelled.load(Ordering::SeqCst) == 2,
        "a disconnected client's forwarded step is cancelled",
    )
    .await;

    for n in [db, gpu, cpu] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_on_two_nodes_survives_one_leaving() {
    let runs = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let work = |k: usize| {
        let runs = runs.clone();
        Function::new("work", move |x: i64| {
            let runs = runs.clone();
            async move {
                runs[k].fetch_add(1, Ordering::SeqCst);
                Ok::<_, String>(x * 3)
            }
        })
        .params(["x"])
    };
    let entry = start_node(settings("entry", vec![], &[]), vec![]).await;
    let w1 = start_node(
        settings("w1", vec![entry.url().to_owned()], &[]),
        vec![work(0)],
    )
    .await;
    let w2 = start_node(
        settings("w2", vec![entry.url().to_owned()], &[]),
        vec![work(1)],
    )
    .await;
    wait_routable(&[&entry, &w1, &w2], "work", 2).await;
    let client = Client::connect(entry.url()).await.unwrap();
    for x in 0..40 {
        assert_eq!(client.call("work", json!([x])).await.unwrap(), json!(x * 3));
    }
    let (a, b) = (
        runs[0].load(Ordering::SeqCst),
        runs[1].load(Ordering::SeqCst),
    );
    assert_eq!(a + b, 40);
    assert!(a > 0 && b > 0, "both replicas take load: {a} / {b}");

    w1.shutdown().await;
    for x in 0..20 {
        assert_eq!(client.call("work", json!([x])).await.unwrap(), json!(x * 3));
    }
    assert_eq!(runs[1].load(Ordering::SeqCst), b + 20, "w2 took over");
    w2.shutdown().await;
    entry.shutdown().await;
}

async fn wait_for(done: impl Fn() -> bool, what: &str) {
    for _ in 0..400 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_client_learns_the_cluster_and_fails_over() {
    let double =
        || Function::new("double", |x: i64| async move { Ok::<_, String>(x * 2) }).params(["x"]);
    let a = start_node(settings("a", vec![], &[]), vec![double()]).await;
    let b = start_node(settings("b", vec![a.url().to_owned()], &[]), vec![double()]).await;
    let c = start_node(settings("c", vec![a.url().to_owned()], &[]), vec![double()]).await;
    wait_routable(&[&a, &b, &c], "double", 3).await;

    // One seed (and a dead one before it) is enough: the rest comes from cluster_map.
    let cluster = mpreg::ClusterClient::connect(&["ws://127.0.0.1:1", a.url()])
        .await
        .unwrap();
    assert_eq!(cluster.url().await.as_deref(), Some(a.url()));
    let known = cluster.known_urls().await;
    for n in [&a, &b, &c] {
        assert!(known.iter().any(|u| u == n.url()), "{known:?}");
    }
    assert_eq!(
        cluster.call("double", json!([21])).await.unwrap(),
        json!(42)
    );

    // The node it talks to leaves: the next calls go to another one.
    a.shutdown().await;
    for x in 0..10 {
        assert_eq!(
            cluster.call("double", json!([x])).await.unwrap(),
            json!(x * 2)
        );
    }
    let now = cluster.url().await.unwrap();
    assert!(now == b.url() || now == c.url(), "{now}");
    let r = cluster
        .request(vec![
            RpcCommand::new("x", "double").args(json!([1])),
            RpcCommand::new("y", "double").args(json!(["x"])),
        ])
        .await
        .unwrap();
    assert_eq!(Value::Object(r), json!({"y": 4}));
    b.shutdown().await;
    c.shutdown().await;
    // Nobody left: a clear connection error, not a hang.
    let err = cluster.call("double", json!([1])).await.unwrap_err();
    assert!(matches!(err, mpreg::ClientError::Connect { .. }), "{err:?}");
}

/// A node whose heartbeats go unanswered retires its connection to that peer, but the
/// peer's calls on it still get their answers: here `a` stalls (its only runtime thread
/// blocks, as in a long pause) while `b` runs a step `a` forwarded to it. `b` misses four
/// heartbeats and moves to a new connection; the step's answer still reaches `a` on the
/// old one. When a timeout broke the shared connection, `a`'s step was lost (1018).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_peer_still_gets_the_answers_to_its_steps() {
    // `a` runs on a runtime of its own with one thread, so that a blocking call stalls it.
    let a_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let stall = Function::new("stall", |ms: u64| async move {
        std::thread::sleep(Duration::from_millis(ms));
        Ok::<_, String>(ms)
    })
    .params(["ms"]);
    let a = a_runtime
        .spawn(start_node(settings("a", vec![], &[]), vec![stall]))
        .await
        .unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let slow = {
        let started = started.clone();
        Function::new("slow", move |x: i64| {
            started.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_secs(6)).await;
                Ok::<_, String>(x + 1)
            }
        })
        .params(["x"])
    };
    let b = start_node(settings("b", vec![a.url().to_owned()], &[]), vec![slow]).await;
    wait_routable(&[&a, &b], "slow", 1).await;
    let accepted = || a.peer_links_accepted() + b.peer_links_accepted();
    let before = accepted();

    let on_a = Client::connect(a.url()).await.unwrap();
    let stalling = Client::connect(a.url()).await.unwrap();
    let (answer, stalled) = tokio::join!(on_a.call("slow", json!([41])), async {
        // Once `b` runs the step, stall `a` for longer than four heartbeats.
        wait_for(|| started.load(Ordering::SeqCst) == 1, "b runs the step").await;
        stalling.call("stall", json!([4000])).await
    });
    assert_eq!(stalled.unwrap(), json!(4000));
    assert_eq!(answer.expect("the step b ran for a is answered"), json!(42));
    // `b` gave up on the connection while `a` stalled: a new one was opened since.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while accepted() == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no new peer connection: the heartbeats never gave up on the stalled node"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.shutdown().await;
    a_runtime
        .spawn(async move { a.shutdown().await })
        .await
        .unwrap();
    a_runtime.shutdown_background();
}
