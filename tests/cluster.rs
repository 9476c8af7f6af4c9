//! Three nodes form one cluster through `peers`: the catalog (members and their functions)
//! is replicated by Raft, so `cluster_map` and `list_peers` on any node list all three.

mod common;

use std::time::Duration;

use common::*;
use mpreg::{Client, Function, Settings};
use serde_json::{Value, json};

/// A test node named `name` that joins through `peers` (none: it bootstraps).
fn named(name: &str, peers: Vec<String>) -> Settings {
    Settings {
        name: name.to_owned(),
        peers,
        ..test_settings()
    }
}

/// Polls `cluster_map` on `url` until it lists `n` nodes (the catalog converges
/// asynchronously: joins and registrations are Raft commits).
async fn wait_for_nodes(url: &str, n: usize) -> Value {
    let client = Client::connect(url).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let map = client.call("cluster_map", json!([])).await.unwrap();
        if map["nodes"].as_array().map_or(0, Vec::len) == n {
            return map;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "cluster did not reach {n} nodes: {map}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_one_catalog() {
    let settings = |name: &str, peers: Vec<String>, resources: &[&str]| Settings {
        resources: resources.iter().map(|r| r.to_string()).collect(),
        ..named(name, peers)
    };
    let a = start_node(settings("a", vec![], &["cpu"]), vec![]).await;
    let gpu_fn =
        Function::new("infer", |x: i64| async move { Ok::<_, String>(x * 2) }).params(["x"]);
    let b = start_node(
        settings("b", vec![a.url().to_owned()], &["gpu"]),
        vec![gpu_fn],
    )
    .await;
    let c = start_node(settings("c", vec![b.url().to_owned()], &["db"]), vec![]).await;

    for node in [&a, &b, &c] {
        let map = wait_for_nodes(node.url(), 3).await;
        let _ = map;
        // Heartbeats flow between the members: every other node has answered one.
        let client = Client::connect(node.url()).await.unwrap();
        let mut polls = 0;
        let map = loop {
            let map = client.call("cluster_map", json!([])).await.unwrap();
            let all_heard = map["nodes"].as_array().is_some_and(|ns| {
                ns.iter().all(|n| {
                    n["is_local"] == true || (n["status"] == "ok" && n["heartbeat_age_ms"].is_u64())
                })
            });
            if all_heard {
                break map;
            }
            polls += 1;
            assert!(polls < 200, "not every member answered heartbeats: {map}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };

        let nodes = map["nodes"].as_array().unwrap();
        let names: Vec<&str> = nodes.iter().filter_map(|n| n["name"].as_str()).collect();
        assert_eq!(names.len(), 3, "{map}");
        for want in ["a", "b", "c"] {
            assert!(names.contains(&want), "{want} missing from {map}");
        }
        let local: Vec<&Value> = nodes.iter().filter(|n| n["is_local"] == true).collect();
        assert_eq!(local.len(), 1);
        let b_entry = nodes.iter().find(|n| n["name"] == "b").unwrap();
        assert!(
            b_entry["functions"]
                .as_array()
                .unwrap()
                .contains(&json!("infer")),
            "{map}"
        );
        assert!(
            b_entry["resources"]
                .as_array()
                .unwrap()
                .contains(&json!("gpu")),
            "{map}"
        );
    }
    let query = |filter: Value| {
        let url = c.url().to_owned();
        async move {
            Client::connect(&url)
                .await
                .unwrap()
                .call("catalog_query", json!([filter]))
                .await
        }
    };
    let found = query(json!({"name": "infer"})).await.unwrap();
    let found = found["functions"].as_array().unwrap().clone();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["node_name"], "b");
    assert_eq!(found[0]["version"], "1.0.0");
    let gpu = query(json!({"name": "infer", "locs": ["gpu"]}))
        .await
        .unwrap();
    assert_eq!(gpu["functions"].as_array().map(Vec::len), Some(1));
    let newer = query(json!({"name": "infer", "version_constraint": ">=2"}))
        .await
        .unwrap();
    assert_eq!(newer["functions"].as_array().map(Vec::len), Some(0));
    let echoes = query(json!({"name": "echo"})).await.unwrap();
    assert_eq!(
        echoes["functions"].as_array().map(Vec::len),
        Some(3),
        "every node has echo"
    );
    let bad = query(json!({"nmae": "typo"})).await.unwrap_err();
    assert_eq!(
        bad.code(),
        Some(mpreg::ErrorCode::InvalidArguments),
        "{bad}"
    );
    let peers = Client::connect(a.url())
        .await
        .unwrap()
        .call("list_peers", json!([]))
        .await
        .unwrap();
    assert_eq!(peers.as_array().map(Vec::len), Some(2), "{peers}");
    for node in [c, b, a] {
        node.shutdown().await;
    }
}

/// Waits until `node`'s replica satisfies `ok` (Raft metrics), or fails after 20 s.
async fn wait_metrics(
    node: &mpreg::RunningNode,
    what: &str,
    ok: impl Fn(&mpreg::control::raft::RaftMetrics) -> bool,
) {
    let mut m = node.raft_metrics();
    let waited = tokio::time::timeout(Duration::from_secs(20), m.wait_for(|m| ok(m))).await;
    assert!(
        matches!(waited, Ok(Ok(_))),
        "{what}: {:?}",
        node.raft_metrics().borrow().membership_config
    );
}

fn role_counts(m: &mpreg::control::raft::RaftMetrics) -> (usize, usize) {
    let membership = m.membership_config.membership();
    (
        membership.voter_ids().count(),
        membership.learner_ids().count(),
    )
}

/// With `voters = 2`, the third and fourth nodes join as learners that still hold the whole
/// catalog; a voter that shuts down leaves the membership and the catalog, and a learner
/// takes its seat; a linearizable read on a learner sees a write committed just before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voters_learners_and_graceful_leave() {
    let settings = |name: &str, peers: Vec<String>| Settings {
        voters: 2,
        ..named(name, peers)
    };
    let a = start_node(settings("a", vec![]), vec![]).await;
    let b = start_node(settings("b", vec![a.url().to_owned()]), vec![]).await;
    let c = start_node(settings("c", vec![a.url().to_owned()]), vec![]).await;
    let d = start_node(settings("d", vec![b.url().to_owned()]), vec![]).await;
    for n in [&a, &b, &c, &d] {
        assert!(n.registered().await);
    }
    wait_metrics(&d, "two voters and two learners", |m| {
        role_counts(m) == (2, 2)
    })
    .await;
    let map = wait_for_nodes(d.url(), 4).await;
    assert_eq!(map["nodes"].as_array().map(Vec::len), Some(4));

    // A function registered on the leader's side is visible at once to a linearizable read
    // on a learner.
    let learner = [&c, &d]
        .into_iter()
        .find(|n| {
            let m = n.raft_metrics();
            let m = m.borrow();
            m.membership_config
                .membership()
                .learner_ids()
                .any(|l| l == n.raft_id())
        })
        .expect("a learner among c and d");
    let q = Client::connect(learner.url()).await.unwrap();
    let found = q
        .call(
            "catalog_query",
            json!([{"name": "echo", "linearizable": true, "queues": true}]),
        )
        .await
        .unwrap();
    assert_eq!(
        found["functions"].as_array().map(Vec::len),
        Some(4),
        "{found}"
    );
    assert_eq!(found["queues"], json!([]), "{found}");

    // The first node (a voter, and the first leader) leaves gracefully.
    let a_id = a.raft_id();
    a.shutdown().await;
    wait_metrics(&b, "a left; a learner promoted", |m| {
        let membership = m.membership_config.membership();
        membership.get_node(&a_id).is_none() && role_counts(m) == (2, 1)
    })
    .await;
    let map = wait_for_nodes(d.url(), 3).await;
    assert!(
        map["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["name"] != "a"),
        "{map}"
    );
    for node in [d, c, b] {
        node.shutdown().await;
    }
}

/// A function registered on a running node is callable there at once and, once committed,
/// in every node's catalog; unregistered, it leaves both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_registered_and_unregistered_at_run_time() {
    let a = start_node(named("a", vec![]), vec![]).await;
    let b = start_node(named("b", vec![a.url().to_owned()]), vec![]).await;
    assert!(b.registered().await);
    let triple = Function::new("triple", |x: i64| async move { Ok::<_, String>(x * 3) })
        .params(["x"])
        .version("2.1.0");
    b.register(triple).await.expect("registered");
    let on_b = Client::connect(b.url()).await.unwrap();
    assert_eq!(on_b.call("triple", json!([5])).await.unwrap(), json!(15));
    let on_a = Client::connect(a.url()).await.unwrap();
    let seen = on_a
        .call(
            "catalog_query",
            json!([{"name": "triple", "linearizable": true}]),
        )
        .await
        .unwrap();
    let found = seen["functions"].as_array().cloned().unwrap_or_default();
    assert_eq!(found.len(), 1, "{seen}");
    assert_eq!(found[0]["node_name"], "b");
    assert_eq!(found[0]["version"], "2.1.0");

    assert_eq!(b.unregister("triple", None).await.expect("unregistered"), 1);
    let gone = on_b.call("triple", json!([5])).await.unwrap_err();
    assert_eq!(
        gone.code(),
        Some(mpreg::ErrorCode::CommandNotFound),
        "{gone}"
    );
    let seen = on_a
        .call(
            "catalog_query",
            json!([{"name": "triple", "linearizable": true}]),
        )
        .await
        .unwrap();
    assert_eq!(seen["functions"], json!([]), "{seen}");
    // A duplicate registration is refused with the registry's error, nothing changes.
    let dup = Function::new("echo", |x: i64| async move { Ok::<_, String>(x) }).params(["x"]);
    assert!(b.register(dup).await.is_err());
    b.shutdown().await;
    a.shutdown().await;
}

/// Point 1 of the cluster RPC issue: one connection per peer pair. Catalog writes a
/// follower forwards to the leader and the read index a linearizable read asks it for
/// travel on the link the two nodes already share; they used to open a connection each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_writes_and_reads_share_the_peer_link() {
    let a = start_node(named("a", vec![]), vec![]).await;
    let b = start_node(named("b", vec![a.url().to_owned()]), vec![]).await;
    assert!(b.registered().await);
    assert_eq!(
        b.raft_metrics().borrow().current_leader,
        Some(a.raft_id()),
        "the first node leads"
    );
    let function =
        |name: &str| Function::new(name, |x: i64| async move { Ok::<_, String>(x) }).params(["x"]);
    // One forwarded write first: whatever links b opens to a exist after it.
    b.register(function("warm")).await.expect("registered");
    let before = a.peer_links_accepted();

    let on_b = Client::connect(b.url()).await.unwrap();
    for i in 0..10 {
        let name = format!("f{i}");
        b.register(function(&name)).await.expect("registered");
        let seen = on_b
            .call(
                "catalog_query",
                json!([{"name": name, "linearizable": true}]),
            )
            .await
            .unwrap();
        assert_eq!(
            seen["functions"].as_array().map(Vec::len),
            Some(1),
            "{seen}"
        );
        assert_eq!(b.unregister(&name, None).await.expect("unregistered"), 1);
        // Read your writes: once unregister returns, b's own catalog no longer lists it.
        let gone = on_b.call(&name, json!([1])).await.unwrap_err();
        assert_eq!(
            gone.code(),
            Some(mpreg::ErrorCode::CommandNotFound),
            "{gone}"
        );
    }
    // 30 forwarded calls; a link that broke and reconnected once is tolerated.
    let opened = a.peer_links_accepted() - before;
    assert!(
        opened <= 1,
        "{opened} peer connections opened for 30 forwarded calls"
    );
    b.shutdown().await;
    a.shutdown().await;
}

/// Point 1 of the cluster RPC issue, the other half: one connection per node *pair*, not
/// per pair and direction. Every pair talks both ways (heartbeats each way, Raft from the
/// leader, steps forwarded in both directions), and each node ends with one connection
/// per peer: the one it accepted serves its own calls too. Before, each node held four
/// (its two dialled links and the two its peers dialled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_pair_shares_one_connection() {
    let only = |name: &str| {
        let name = name.to_owned();
        Function::new(format!("on_{name}"), move |x: i64| {
            let name = name.clone();
            async move { Ok::<_, String>(json!([name, x])) }
        })
        .params(["x"])
    };
    let a = start_node(named("a", vec![]), vec![only("a")]).await;
    assert!(a.registered().await);
    let b = start_node(named("b", vec![a.url().to_owned()]), vec![only("b")]).await;
    let c = start_node(named("c", vec![a.url().to_owned()]), vec![only("c")]).await;
    assert!(b.registered().await && c.registered().await);
    wait_for_nodes(a.url(), 3).await;
    let nodes = [("a", &a), ("b", &b), ("c", &c)];
    // Every node calls every other node's function (routable from everywhere within 1 s).
    let call_everywhere = || async {
        for (from, node) in nodes {
            let client = Client::connect(node.url()).await.unwrap();
            for (to, _) in nodes.iter().filter(|(to, _)| *to != from) {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                let got = loop {
                    match client.call(format!("on_{to}"), json!([1])).await {
                        Ok(v) => break v,
                        Err(e) if tokio::time::Instant::now() < deadline => {
                            assert_eq!(e.code(), Some(mpreg::ErrorCode::CommandNotFound), "{e}");
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(e) => panic!("{from} could not call on_{to}: {e}"),
                    }
                };
                assert_eq!(got, json!([to, 1]), "{from} -> {to}");
            }
        }
    };
    call_everywhere().await;
    let counts = || nodes.map(|(name, n)| (name, n.peer_connections()));
    // Connections both nodes of a pair dialled at once settle to one (the spare closes
    // once neither side waits on it); the joins' own connections close after the join.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while counts().iter().any(|(_, n)| *n != 2) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not one connection per peer: {:?}",
            counts()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Settled: more traffic both ways opens nothing new.
    let accepted: Vec<u64> = nodes.iter().map(|(_, n)| n.peer_links_accepted()).collect();
    call_everywhere().await;
    assert_eq!(counts().map(|(_, n)| n), [2, 2, 2], "{:?}", counts());
    let after: Vec<u64> = nodes.iter().map(|(_, n)| n.peer_links_accepted()).collect();
    assert_eq!(accepted, after, "peer connections accepted after settling");
    c.shutdown().await;
    b.shutdown().await;
    a.shutdown().await;
}

/// A node configured for another cluster is refused at the hello of its join. It used to be
/// taken into the membership as a learner that nobody could replicate to (its own links
/// refuse this cluster), which held that configuration change open and blocked every later
/// join ("already undergoing a configuration change").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_cluster_cannot_join() {
    let settings = |name: &str, cluster: &str, peers: Vec<String>| Settings {
        cluster_id: cluster.to_owned(),
        ..named(name, peers)
    };
    let a = start_node(settings("a", "alpha", vec![]), vec![]).await;
    assert!(a.registered().await);
    let stray = start_node(settings("stray", "beta", vec![a.url().to_owned()]), vec![]).await;
    // Its join has reached `a` once the link is accepted (the join request follows the
    // hello at once).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while a.peer_links_accepted() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stray never dialled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let c = start_node(settings("c", "alpha", vec![a.url().to_owned()]), vec![]).await;
    let joined = tokio::time::timeout(Duration::from_secs(8), c.registered()).await;
    assert!(
        matches!(joined, Ok(true)),
        "a node of this cluster could not join: {:?}",
        a.raft_metrics().borrow().membership_config
    );
    let members: Vec<u64> = a
        .raft_metrics()
        .borrow()
        .membership_config
        .membership()
        .nodes()
        .map(|(id, _)| *id)
        .collect();
    assert!(!members.contains(&stray.raft_id()), "{members:?}");
    assert!(members.contains(&c.raft_id()), "{members:?}");
    stray.shutdown().await;
    c.shutdown().await;
    a.shutdown().await;
}

/// Catalog writes that reach the leader together share log entries (the proposer's
/// batches: openraft 0.9 would flush each on its own), and each writer still gets its own
/// command's answer: here half of them create a queue each (accepted) and half try to
/// redefine a queue that exists (refused), all at once, on a node that fsyncs its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_catalog_writes_share_entries_and_keep_their_own_answers() {
    use mpreg::control::raft::PeerClient;
    use mpreg::control::{CatalogCommand, CatalogError, NodeId, QueueEntry, QueueSpec};
    use mpreg::env::Env;
    use mpreg::fabric::ClusterSecret;

    let dir = std::env::temp_dir().join(format!("mpreg-batch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let secret = ClusterSecret::from_bytes(b"the batch test's cluster secret").unwrap();
    let a = mpreg::Node::builder(sqlite_settings(&dir))
        .cluster_secret(secret.clone())
        .start()
        .await
        .expect("node starts");
    assert!(a.registered().await, "the node joined its own cluster");
    let addr = a.url().trim_start_matches("ws://").to_owned();
    let queue = |name: &str, visibility_timeout_ms: u64| {
        CatalogCommand::CreateQueue(QueueEntry {
            name: name.to_owned(),
            owner: NodeId(a.raft_id()),
            incarnation: 1,
            created_ms: 0,
            replicas: Vec::new(),
            spec: QueueSpec {
                visibility_timeout_ms,
                ..QueueSpec::default()
            },
        })
    };
    let mut tool = PeerClient::to_addr(Env::production(), addr.clone(), secret.clone());
    let made = tool
        .write(queue("taken", 1_000), Duration::from_secs(10))
        .await;
    assert!(matches!(made, Ok(Ok(ref r)) if r.data.is_ok()), "{made:?}");
    let log_before = a.raft_metrics().borrow().last_log_index.unwrap_or(0);
    // Batches are the leader's own: one sent by a peer is refused, and nothing is written.
    let batch = CatalogCommand::Batch(vec![queue("smuggled", 1_000)]);
    match tool.write(batch, Duration::from_secs(10)).await {
        Ok(Ok(resp)) => assert_eq!(resp.data.into_result(), Err(CatalogError::NestedBatch)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        a.raft_metrics().borrow().last_log_index.unwrap_or(0),
        log_before
    );

    const WRITERS: u64 = 96;
    // Every writer connects first, then all write at once.
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(WRITERS as usize));
    let mut tasks = Vec::new();
    for i in 0..WRITERS {
        let cmd = if i.is_multiple_of(2) {
            queue(&format!("q{i}"), 1_000)
        } else {
            queue("taken", 2_000 + i)
        };
        let (addr, secret, start) = (addr.clone(), secret.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            let mut peer = PeerClient::to_addr(Env::production(), addr, secret);
            peer.ping(Duration::from_secs(10)).await.expect("connected");
            start.wait().await;
            let written = peer.write(cmd, Duration::from_secs(10)).await;
            (i, written)
        }));
    }
    for t in tasks {
        let (i, written) = t.await.unwrap();
        let answer = match written {
            Ok(Ok(resp)) => resp.data.into_result(),
            other => panic!("writer {i}: {other:?}"),
        };
        if i.is_multiple_of(2) {
            assert_eq!(answer, Ok(()), "writer {i} created its own queue");
        } else {
            assert_eq!(
                answer,
                Err(CatalogError::QueueExists("taken".to_owned())),
                "writer {i} redefined `taken`"
            );
        }
    }
    let entries = a.raft_metrics().borrow().last_log_index.unwrap_or(0) - log_before;
    assert!(
        entries < WRITERS,
        "{WRITERS} concurrent writes took {entries} log entries: none shared one"
    );
    a.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
