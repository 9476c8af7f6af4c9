//! Rolling upgrades (issue 12, point 6): nodes of this build (N) and of the next (N+1, a
//! test-only switch: its heartbeats carry a field N does not know, and it sends a message
//! kind N does not know) run one cluster through catalog writes, forwarded steps and a
//! leader change, each build reading what the other writes.

mod common;

use std::time::Duration;

use common::*;
use mpreg::{Client, Function, Node, RunningNode, Settings};
use serde_json::json;

fn settings(name: &str, peers: Vec<String>) -> Settings {
    Settings {
        name: name.to_owned(),
        peers,
        voters: 3,
        ..test_settings()
    }
}

fn function(name: &str, k: i64) -> Function {
    Function::new(name, move |x: i64| async move { Ok::<_, String>(x * k) }).params(["x"])
}

async fn node(name: &str, peers: Vec<String>, next: bool, f: Function) -> RunningNode {
    let mut b = Node::builder(settings(name, peers)).function(f).unwrap();
    if next {
        b = b.speak_next_protocol();
    }
    b.start().await.expect("node starts")
}

async fn on(n: &RunningNode) -> Result<Client, mpreg::ClientError> {
    Client::connect(n.url()).await
}

async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_n_and_n_plus_1_run_one_cluster() {
    // a (N) bootstraps and leads; b and d speak N+1, c speaks N.
    let a = node("a", vec![], false, function("times_a", 2)).await;
    let peers = vec![a.url().to_owned()];
    let b = node("b", peers.clone(), true, function("times_b", 3)).await;
    let c = node("c", peers.clone(), false, function("times_c", 5)).await;
    let d = node("d", peers, true, function("times_d", 7)).await;
    for n in [&b, &c, &d] {
        assert!(n.registered().await, "a node of either build joins");
    }
    let all = [&a, &b, &c, &d];
    // Catalog writes from both builds (forwarded to the leader), routable everywhere.
    for f in ["times_a", "times_b", "times_c", "times_d"] {
        wait_routable(&all, f, 1).await;
    }
    // Forwarded steps across builds, both ways.
    let (via_a, via_b) = (on(&a).await.unwrap(), on(&b).await.unwrap());
    for (client, fun, k) in [
        (&via_a, "times_b", 3),
        (&via_a, "times_d", 7),
        (&via_b, "times_a", 2),
        (&via_b, "times_c", 5),
    ] {
        for x in 0..5 {
            assert_eq!(client.call(fun, json!([x])).await.unwrap(), json!(x * k));
        }
    }
    // Each build read the other: b heard N's heartbeats (no field) and N+1's (with it), and
    // its new message kind was answered `Unsupported` by N and served by N+1.
    until("b hears both builds", || {
        let [with, without, _, unsupported, served] = b.upgrade_stats();
        with > 0 && without > 0 && unsupported > 0 && served > 0
    })
    .await;
    assert_eq!(
        a.upgrade_stats(),
        [0; 5],
        "an N node counts nothing: it is N"
    );

    // A leader change: the N leader leaves; a voter of either build takes over, and the
    // mixed cluster still commits writes and runs steps.
    let old = a.raft_id();
    a.shutdown().await;
    until("a new leader", || {
        b.raft_metrics()
            .borrow()
            .current_leader
            .is_some_and(|l| l != old)
    })
    .await;
    c.register(function("after_change", 11))
        .await
        .expect("N's write commits under the new leader");
    d.register(function("after_change_d", 13))
        .await
        .expect("N+1's write commits under the new leader");
    wait_routable(&[&b, &c, &d], "after_change", 1).await;
    wait_routable(&[&b, &c, &d], "after_change_d", 1).await;
    let via_c = on(&c).await.unwrap();
    assert_eq!(
        via_c.call("after_change_d", json!([2])).await.unwrap(),
        json!(26)
    );
    assert_eq!(
        on(&d)
            .await
            .unwrap()
            .call("after_change", json!([2]))
            .await
            .unwrap(),
        json!(22)
    );
    for n in [b, c, d] {
        n.shutdown().await;
    }
}
