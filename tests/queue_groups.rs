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
    cluster(3).await
}

async fn cluster(n: usize) -> Vec<RunningNode> {
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
    for name in ["b", "c", "d", "e"].into_iter().take(n - 1) {
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

/// The queue's replica nodes, as the catalog of the node `c` is connected to says.
async fn replica_nodes(c: &Client, queue: &str) -> Vec<String> {
    let list = call(c, "queue_list", json!({})).await;
    list["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .find(|q| q["queue_name"] == queue)
        .expect("the queue")["replica_nodes"]
        .as_array()
        .expect("replica nodes")
        .iter()
        .map(|n| n.as_str().expect("a node id").to_owned())
        .collect()
}

/// The first replica initializes a group and campaigns first, so it usually leads. It is
/// the creating node when that node is first of no more groups than the others (a call it
/// takes then skips a hop), and otherwise the node first of the fewest, so leaders spread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_s_first_replica_is_its_creator_unless_that_unbalances_leaders() {
    let nodes = trio().await;
    all_members(&nodes).await;
    // Through the node of the highest Raft id: ties once went to the lowest, so this fails
    // on a placement that ignores its creator. One creator for all three, whose catalog has
    // applied each queue before it answers (the next placement counts it).
    let creator = nodes
        .iter()
        .max_by_key(|n| n.raft_id())
        .expect("three nodes");
    let x = Client::connect(creator.url()).await.unwrap();
    let mut firsts = Vec::new();
    for queue in ["q1", "q2", "q3"] {
        // Replicas 3 asked for: refused (not placed on fewer) until the creating node has
        // heard every member speak the replicas protocol.
        let req = json!([{"queue_name": queue, "replicas": 3}]);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let created = loop {
            match x.call("queue_create", req.clone()).await {
                Ok(v) => break v,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    assert!(e.to_string().contains("replicas_unsupported"), "{e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("queue_create {queue}: {e}"),
            }
        };
        assert_eq!(created["replicas"], 3, "{created}");
        firsts.push(replica_nodes(&x, queue).await[0].clone());
    }
    assert_eq!(firsts[0], creator.node_id(), "q1 is first on its creator");
    assert_ne!(
        firsts[1],
        creator.node_id(),
        "q2's creator is first of one group already, the others of none"
    );
    let distinct: std::collections::BTreeSet<_> = firsts.iter().collect();
    assert_eq!(
        distinct.len(),
        3,
        "one group first on each node: {firsts:?}"
    );
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_node_left_moves_to_a_live_node_and_keeps_the_queue() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut nodes = cluster(4).await;
    all_members(&nodes).await;
    let mut clients: Vec<Client> = futures_util::future::join_all(
        nodes
            .iter()
            .map(|n| async { Client::connect(n.url()).await.unwrap() }),
    )
    .await;
    call(
        &clients[0],
        "queue_create",
        json!({"queue_name": "moves", "replicas": 3}),
    )
    .await;
    for i in 0..30 {
        call(
            &clients[i % 4],
            "queue_send",
            json!({"queue_name": "moves", "message_payload": i}),
        )
        .await;
    }
    let placed = replica_nodes(&clients[0], "moves").await;
    assert_eq!(placed.len(), 3, "{placed:?}");
    let spare = nodes
        .iter()
        .find(|n| !placed.contains(&n.node_id().to_owned()))
        .expect("one node holds no replica")
        .node_id()
        .to_owned();
    // One replica's node leaves: its place goes to the spare node.
    let leaving = nodes
        .iter()
        .position(|n| n.node_id() == placed[1])
        .expect("a replica's node");
    drop(clients.remove(leaving));
    nodes.remove(leaving).shutdown().await;
    let moved = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let now = replica_nodes(&clients[0], "moves").await;
            if now.contains(&spare) && !now.contains(&placed[1]) {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the replica moved within 30 s");
    assert_eq!(moved.len(), 3, "{moved:?}");
    // The group took the spare in as a voter once it caught up: another original replica
    // may go now, and the two left (one of them the new one) still hold every message.
    let at_spare = nodes.iter().position(|n| n.node_id() == spare).unwrap();
    let mut want: Vec<u64> = nodes
        .iter()
        .filter(|n| moved.contains(&n.node_id().to_owned()))
        .map(|n| n.raft_id())
        .collect();
    want.sort();
    assert_eq!(want.len(), 3, "every replica node is running");
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let stats = call(
                &clients[at_spare],
                "queue_stats",
                json!({"queue_name": "moves"}),
            )
            .await;
            let ids = |k: &str| {
                let mut v: Vec<u64> = stats[k]
                    .as_array()
                    .expect("ids")
                    .iter()
                    .map(|i| i.as_u64().expect("an id"))
                    .collect();
                v.sort();
                v
            };
            if ids("voters") == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the group's membership followed within 30 s");
    let second = nodes
        .iter()
        .position(|n| n.node_id() == placed[0] || n.node_id() == placed[2])
        .expect("another original replica");
    drop(clients.remove(second));
    nodes.remove(second).shutdown().await;
    let mut got = std::collections::BTreeSet::new();
    while got.len() < 30 {
        let r = call(
            &clients[0],
            "queue_receive",
            json!({"queue_name": "moves", "max_messages": 10, "wait_seconds": 5}),
        )
        .await;
        let messages = r["messages"].as_array().expect("messages").clone();
        assert!(!messages.is_empty(), "nothing more after {}", got.len());
        for m in &messages {
            got.insert(m["message_payload"].as_u64().expect("a number"));
            call(
                &clients[0],
                "queue_ack",
                json!({"queue_name": "moves", "receipt_handle": m["receipt_handle"]}),
            )
            .await;
        }
    }
    assert_eq!(got, (0..30).collect());
    for n in nodes {
        n.shutdown().await;
    }
}

/// Rows of queue groups (every group but the catalog's, 0) in a node's log engine.
fn group_rows(db: &std::path::Path) -> i64 {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("the node's database opens read-only beside it");
    ["log_entries", "log_meta", "log_snapshots"]
        .iter()
        .map(|t| {
            c.query_row(
                &format!("SELECT COUNT(*) FROM {t} WHERE grp <> 0"),
                [],
                |r| r.get::<_, i64>(0),
            )
            .expect("counted")
        })
        .sum()
}

/// Waits up to 10 s until `db`'s queue-group rows satisfy `ok`; else fails saying `what`.
async fn rows_until(db: &std::path::Path, what: &str, ok: impl Fn(i64) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows = group_rows(db);
        if ok(rows) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{db:?} {what} ({rows} rows)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_replicated_queue_leaves_no_rows_in_the_log_engine() {
    let dirs: Vec<std::path::PathBuf> = (0..3)
        .map(|i| common::pki::temp_dir(&format!("group-rows-{i}")))
        .collect();
    let mut nodes: Vec<RunningNode> = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let settings = Settings {
            name: format!("n{i}"),
            peers: nodes
                .first()
                .map(|n| vec![n.url().to_owned()])
                .unwrap_or_default(),
            ..sqlite_settings(dir)
        };
        let n = start_node(settings, vec![]).await;
        assert!(n.registered().await);
        nodes.push(n);
    }
    all_members(&nodes).await;
    let dbs: Vec<std::path::PathBuf> = dirs
        .iter()
        .map(|d| sqlite_settings(d).persistence.sqlite_path())
        .collect();
    let c = Client::connect(nodes[0].url()).await.unwrap();
    let created = call(
        &c,
        "queue_create",
        json!({"queue_name": "gone", "replicas": 3}),
    )
    .await;
    assert_eq!(created["replicas"], 3, "{created}");
    for i in 0..20 {
        call(
            &c,
            "queue_send",
            json!({"queue_name": "gone", "message_payload": {"n": i}}),
        )
        .await;
    }
    // The sends are in every replica's log (a majority at once, the third soon after).
    for db in &dbs {
        rows_until(db, "holds no group rows", |n| n > 0).await;
    }
    let deleted = call(&c, "queue_delete", json!({"queue_name": "gone"})).await;
    assert_eq!(deleted["success"], true, "{deleted}");
    // Each node stops its replica when its catalog applies the delete, and erases its rows.
    for db in &dbs {
        rows_until(db, "still holds rows of the deleted queue's group", |n| {
            n == 0
        })
        .await;
    }
    // The catalog's own group is untouched, and the cluster still takes queues.
    let again = call(
        &c,
        "queue_create",
        json!({"queue_name": "next", "replicas": 3}),
    )
    .await;
    assert_eq!(again["replicas"], 3, "{again}");
    for n in nodes {
        n.shutdown().await;
    }
}
