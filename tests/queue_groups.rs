//! Replicated queues end to end (`replicas` 3, a Raft group per queue), through the
//! built-ins as any client calls them: placement on three nodes, calls from any node
//! reaching the group's leader, and the leader's node leaving with acknowledged sends, a
//! message in flight and a dedup id all kept by the two replicas left.

mod common;

use std::time::Duration;

use common::*;
use mpreg::{Client, RunningNode, Settings};
use serde_json::{Value, json};

async fn call(c: &Client, name: &str, req: Value) -> Value {
    c.call(name, json!([req]))
        .await
        .unwrap_or_else(|e| panic!("{name} {req}: {e}"))
}

async fn trio() -> Vec<RunningNode> {
    let a = start_node(
        Settings {
            name: "a".into(),
            ..test_settings()
        },
        vec![],
    )
    .await;
    assert!(a.registered().await);
    let mut nodes = vec![a];
    for name in ["b", "c"] {
        let n = start_node(
            Settings {
                name: name.into(),
                peers: vec![nodes[0].url().to_owned()],
                ..test_settings()
            },
            vec![],
        )
        .await;
        assert!(n.registered().await);
        nodes.push(n);
    }
    nodes
}

/// Waits until every node's catalog holds every member (placement reads it).
async fn all_members(nodes: &[RunningNode]) {
    for n in nodes {
        let mut m = n.raft_metrics();
        tokio::time::timeout(
            Duration::from_secs(20),
            m.wait_for(|m| m.membership_config.membership().nodes().count() == nodes.len()),
        )
        .await
        .expect("every member in time")
        .expect("metrics");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_queue_keeps_what_it_acknowledged_when_its_leader_leaves() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let nodes = trio().await;
    all_members(&nodes).await;
    let clients: Vec<Client> = futures_util::future::join_all(
        nodes
            .iter()
            .map(|n| async { Client::connect(n.url()).await.unwrap() }),
    )
    .await;
    let created = call(&clients[0], "queue_create", json!({"queue_name": "jobs"})).await;
    assert_eq!(created["replicas"], 3, "{created}");
    assert_eq!(created["replica_nodes"].as_array().map(Vec::len), Some(3));
    // Sends through every node: each reaches the group's leader.
    for i in 0..60 {
        let c = &clients[i % 3];
        let sent = call(
            c,
            "queue_send",
            json!({"queue_name": "jobs", "message_payload": {"n": i}, "deduplication_id": format!("d{i}")}),
        )
        .await;
        assert_eq!(sent["duplicate"], false, "{sent}");
    }
    // One in flight for 2 s, received through the second node.
    let got = call(
        &clients[1],
        "queue_receive",
        json!({"queue_name": "jobs", "visibility_timeout_seconds": 2}),
    )
    .await;
    let first = got["messages"][0].clone();
    assert_eq!(first["message_payload"]["n"], 0, "{got}");
    let stats = call(&clients[2], "queue_stats", json!({"queue_name": "jobs"})).await;
    assert_eq!(stats["depth"], 59, "{stats}");
    assert_eq!(stats["in_flight"], 1, "{stats}");
    let leader = stats["leader"].as_u64().expect("a leader");
    // The leader's node leaves; the two replicas left elect one and serve everything.
    let mut nodes = nodes;
    let mut clients = clients;
    let at = nodes
        .iter()
        .position(|n| n.raft_id() == leader)
        .expect("the leader is one of the nodes");
    let gone = nodes.remove(at);
    drop(clients.remove(at));
    gone.shutdown().await;
    // A send with a dedup id sent before the loss is still a duplicate.
    let again = call(
        &clients[0],
        "queue_send",
        json!({"queue_name": "jobs", "message_payload": {"n": 5}, "deduplication_id": "d5"}),
    )
    .await;
    assert_eq!(again["duplicate"], true, "{again}");
    let stats = call(&clients[1], "queue_stats", json!({"queue_name": "jobs"})).await;
    assert_ne!(stats["leader"].as_u64(), Some(leader), "{stats}");
    // Every acknowledged message comes out, the one in flight back after its timeout.
    let mut seen = std::collections::BTreeSet::new();
    let mut redelivered = false;
    while seen.len() < 60 {
        let got = call(
            &clients[seen.len() % 2],
            "queue_receive",
            json!({"queue_name": "jobs", "max_messages": 10, "wait_seconds": 5}),
        )
        .await;
        let messages = got["messages"].as_array().expect("messages").clone();
        assert!(
            !messages.is_empty(),
            "nothing more after {} messages",
            seen.len()
        );
        let receipts: Vec<Value> = messages
            .iter()
            .map(|m| {
                let n = m["message_payload"]["n"].as_u64().expect("n");
                if n == 0 {
                    redelivered = m["receive_count"] == 2;
                }
                assert!(seen.insert(n), "message {n} twice");
                m["receipt_handle"].clone()
            })
            .collect();
        let acked = call(
            &clients[0],
            "queue_ack",
            json!({"queue_name": "jobs", "receipt_handles": receipts}),
        )
        .await;
        assert_eq!(acked["success"], true, "{acked}");
    }
    assert!(
        redelivered,
        "the message in flight came back as its second delivery"
    );
    let stats = call(&clients[0], "queue_stats", json!({"queue_name": "jobs"})).await;
    assert_eq!(stats["depth"], 0, "{stats}");
    assert_eq!(stats["in_flight"], 0, "{stats}");
    for n in nodes {
        n.shutdown().await;
    }
}
