//! The discovery calls in the shapes the original's client reads (`mpreg/core/cluster_map.py`:
//! `PeerSnapshot`, `CatalogQueryResponse`, `ClusterMapSnapshot`), sent as it sends them.

mod common;

use std::time::Duration;

use common::{start_node, test_settings, wait_routable};
use mpreg::{Client, Function, Settings};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_answers_in_the_originals_shapes() {
    let a = start_node(
        Settings {
            name: "a".into(),
            ..test_settings()
        },
        vec![Function::new("resize", || async { Ok::<_, String>(1) }).resources(["gpu"])],
    )
    .await;
    let b = start_node(
        Settings {
            name: "b".into(),
            peers: vec![a.url().to_owned()],
            ..test_settings()
        },
        vec![],
    )
    .await;
    wait_routable(&[&a, &b], "resize", 1).await;
    let client = Client::connect(b.url()).await.unwrap();
    // `catalog_query(CatalogQueryRequest(entry_type="functions", …))`, as a positional object.
    let found = client
        .call(
            "catalog_query",
            json!([{"entry_type": "functions", "function_name": "resize", "namespace": null, "scope": null}]),
        )
        .await
        .unwrap();
    assert_eq!(found["entry_type"], "functions");
    assert!(found["generated_at"].as_f64().unwrap() > 0.0);
    let items = found["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{found}");
    assert_eq!(items[0]["name"], "resize");
    assert_eq!(items[0]["identity"]["version"], "1.0.0");
    let nodes = client
        .call("catalog_query", json!([{"entry_type": "nodes"}]))
        .await
        .unwrap();
    assert_eq!(nodes["items"].as_array().map(Vec::len), Some(2), "{nodes}");
    let none = client
        .call("catalog_query", json!([{"entry_type": "services"}]))
        .await
        .unwrap();
    assert_eq!(none["items"], json!([]));
    // Ours still answers as before.
    let ours = client
        .call("catalog_query", json!([{"name": "resize"}]))
        .await
        .unwrap();
    assert_eq!(ours["functions"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        ours["items"], ours["functions"],
        "the original reads `items`"
    );
    assert_eq!(ours["entry_type"], "functions");
    // `list_peers()`: url, funs, locs and status of every other node, once heartbeats say it.
    let mut peers = json!([]);
    for _ in 0..200 {
        peers = client.call("list_peers", json!([])).await.unwrap();
        if peers[0]["status"] == "ok" && peers[0]["last_seen"].is_number() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let peer = &peers[0];
    assert_eq!(peer["url"], a.url(), "{peers}");
    assert_eq!(peer["status"], "ok", "{peers}");
    assert!(peer["funs"].as_array().unwrap().contains(&json!("resize")));
    assert!(peer["locs"].as_array().unwrap().contains(&json!("gpu")));
    assert!(peer["last_seen"].as_f64().is_some());
    // `rpc_list(RpcListRequest(function_name=…))`.
    let listed = client
        .call(
            "rpc_list",
            json!([{"function_name": "resize", "namespace": null}]),
        )
        .await
        .unwrap();
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{listed}");
    assert_eq!(
        items[0]["identity"],
        json!({"name": "resize", "function_id": "resize", "version": "1.0.0"})
    );
    assert_eq!(items[0]["resources"], json!(["gpu"]));
    assert!(items[0]["node_id"].as_str().unwrap().starts_with("a-"));
    let all = client.call("rpc_list", json!([])).await.unwrap();
    assert!(
        all["items"].as_array().unwrap().len() > 1,
        "built-ins are listed too"
    );
    // `cluster_map()`: the original reads each node's status from `load.status`.
    let map = client.call("cluster_map", json!([])).await.unwrap();
    for node in map["nodes"].as_array().unwrap() {
        assert_eq!(node["load"]["status"], node["status"], "{node}");
    }
    b.shutdown().await;
    a.shutdown().await;
}
