//! Three nodes form one cluster through `peers`: the catalog (members and their functions)
//! is replicated by Raft, so `cluster_map` and `list_peers` on any node list all three.

mod common;

use std::time::Duration;

use common::*;
use mpreg::{Client, Function, Settings};
use serde_json::{Value, json};

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
        name: name.to_owned(),
        peers,
        resources: resources.iter().map(|r| r.to_string()).collect(),
        ..test_settings()
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
