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
    // b's own membership reaches its replica by the same log as a's functions, but not
    // necessarily before them: poll until both members are there.
    let mut polls = 0;
    let nodes = loop {
        let nodes = client
            .call("catalog_query", json!([{"entry_type": "nodes"}]))
            .await
            .unwrap();
        if nodes["items"].as_array().map(Vec::len) == Some(2) {
            break nodes;
        }
        polls += 1;
        assert!(polls < 200, "b's catalog never listed both nodes: {nodes}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(nodes["entry_type"], "nodes");
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

/// The request the original's `MPREGClientAPI` sends for a discovery call: one command,
/// `name == fun`, the request's fields as `args[0]` (none: `args: []`), every envelope
/// field present as pydantic writes it.
fn original_request(u: &str, fun: &str, payload: Option<serde_json::Value>) -> String {
    let args = payload.map_or(json!([]), |p| json!([p]));
    json!({"role":"rpc","cmds":[{"name":fun,"fun":fun,"args":args,"kwargs":{},"locs":[],
        "function_id":null,"version_constraint":null,"target_cluster":null,"routing_topic":null}],
        "u":u,"return_intermediate_results":false,"intermediate_result_callback_topic":null,
        "include_execution_summary":false,"debug_mode":false})
    .to_string()
}

/// What a discovery reply carries under `r.<fun>` (the client unwraps the one key).
async fn original_call(
    ws: &mut common::Raw,
    fun: &str,
    payload: Option<serde_json::Value>,
) -> serde_json::Value {
    let reply = common::raw_roundtrip(ws, &original_request("u1", fun, payload)).await;
    assert_eq!(reply["u"], "u1");
    assert!(reply["error"].is_null(), "{fun}: {reply}");
    reply["r"][fun].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_report_map_v2_and_watch_in_the_originals_shapes() {
    let a = start_node(
        Settings {
            name: "a".into(),
            ..test_settings()
        },
        vec![
            Function::new(
                "svc.market.quote",
                |symbol: String, depth: Option<u32>| async move {
                    Ok::<_, String>(format!("{symbol}:{depth:?}"))
                },
            )
            .params(["symbol", "depth"])
            .doc("A quote for a symbol")
            .resources(["market"]),
        ],
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
    // A worker on b declares its parameters when it registers.
    let mut worker = common::raw_connect(b.url()).await;
    let registered = common::raw_roundtrip(
        &mut worker,
        &json!({"role": "register", "u": "reg", "functions": [{
            "name": "svc.thumbs.resize", "doc": "Resizes an image",
            "params": [{"name": "image", "type": "string"}, {"name": "width", "type": "integer", "required": false}],
        }]})
        .to_string(),
    )
    .await;
    assert!(registered["error"].is_null(), "{registered}");
    let refused = common::raw_roundtrip(
        &mut worker,
        &json!({"role": "register", "u": "reg2", "functions": [{
            "name": "svc.bad", "params": [{"name": "x", "type": "int"}],
        }]})
        .to_string(),
    )
    .await;
    assert_eq!(common::code_of(&refused), 1016, "{refused}");
    wait_routable(&[&b], "svc.market.quote", 1).await;
    wait_routable(&[&b], "svc.thumbs.resize", 1).await;
    let mut ws = common::raw_connect(b.url()).await;

    // rpc_describe(): auto mode, full detail; a's function described by a.
    let d = original_call(
        &mut ws,
        "rpc_describe",
        Some(json!({"mode": "auto", "detail_level": "full", "namespace": "svc"})),
    )
    .await;
    assert!(d["generated_at"].as_f64().unwrap() > 0.0);
    assert_eq!(d["errors"], json!([]), "{d}");
    let items = d["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{d}");
    let quote = &items[0];
    assert_eq!(
        quote["identity"],
        json!({"name": "svc.market.quote", "function_id": "svc.market.quote", "version": "1.0.0"})
    );
    assert_eq!(quote["namespace"], "svc.market");
    assert_eq!(quote["node_id"], a.node_id());
    assert_eq!(quote["resources"], json!(["market"]));
    assert_eq!(quote["summary"]["summary"], "A quote for a symbol");
    assert_eq!(quote["summary"]["parameter_count"], 2);
    assert_eq!(quote["summary"]["required_parameter_count"], 1);
    let params = quote["spec"]["parameters"].as_array().unwrap();
    assert_eq!(params[0]["name"], "symbol");
    assert_eq!(params[0]["json_type"], "string");
    assert_eq!(params[0]["required"], true);
    assert_eq!(params[0]["kind"], "positional_or_keyword");
    assert_eq!(params[1]["name"], "depth");
    assert_eq!(params[1]["json_type"], "integer");
    assert_eq!(params[1]["rust_type"], "Option<u32>");
    assert_eq!(
        params[1]["default"],
        json!({"has_default": true, "encoding": "json"})
    );
    let digest = quote["spec_digest"].as_str().unwrap();
    assert_eq!(digest.len(), 64);
    assert_eq!(quote["spec"]["spec_digest"], digest);
    let resize = &items[1];
    assert_eq!(resize["identity"]["name"], "svc.thumbs.resize");
    assert_eq!(resize["node_id"], b.node_id());
    let wparams = resize["spec"]["parameters"].as_array().unwrap();
    assert_eq!(
        (
            &wparams[0]["name"],
            &wparams[0]["json_type"],
            &wparams[1]["required"]
        ),
        (&json!("image"), &json!("string"), &json!(false))
    );
    // Summary detail, from the catalog alone: no spec; filters by digest and query.
    let s = original_call(
        &mut ws,
        "rpc_describe",
        Some(json!({"mode": "catalog", "detail_level": "summary", "query": "QUOTE"})),
    )
    .await;
    assert_eq!(s["items"].as_array().map(Vec::len), Some(1), "{s}");
    assert!(s["items"][0].get("spec").is_none());
    let by_digest = original_call(
        &mut ws,
        "rpc_describe",
        Some(json!({"mode": "auto", "detail_level": "full", "spec_digests": [digest]})),
    )
    .await;
    assert_eq!(
        by_digest["items"].as_array().map(Vec::len),
        Some(1),
        "{by_digest}"
    );
    // A bad mode is refused with a clear message.
    let bad = common::raw_roundtrip(
        &mut ws,
        &original_request("u2", "rpc_describe", Some(json!({"mode": "sideways"}))),
    )
    .await;
    assert_eq!(common::code_of(&bad), 1007, "{bad}");
    assert!(bad["error"].to_string().contains("sideways"), "{bad}");

    // rpc_report(): counts by namespace (built-ins have none: no key) and cluster.
    let r = original_call(&mut ws, "rpc_report", None).await;
    let total = r["total_functions"].as_u64().unwrap();
    assert!(
        total >= 2 + 2 * 11,
        "two functions and every node's built-ins: {r}"
    );
    let ns = r["namespace_counts"].as_array().unwrap();
    assert!(ns[0].get("key").is_none(), "built-ins first, keyless: {r}");
    assert!(
        ns.contains(&json!({"key": "svc.market", "count": 1})),
        "{r}"
    );
    assert_eq!(
        r["cluster_counts"],
        json!([{"key": test_settings().cluster_id, "count": total}])
    );
    assert_eq!(r["tag_counts"], json!([]));

    // cluster_map_v2(): ClusterNodeSnapshot per node, paged.
    let m = original_call(&mut ws, "cluster_map_v2", None).await;
    let nodes = m["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{m}");
    assert!(m.get("next_page_token").is_none());
    for n in nodes {
        assert_eq!(n["capabilities"], json!(["rpc"]));
        assert_eq!(n["scope"], "zone");
        let url = n["advertised_urls"][0].as_str().unwrap();
        assert_eq!(n["transport_endpoints"][0]["endpoint"], url);
        assert!(n["transport_endpoints"][0]["port"].as_u64().unwrap() > 0);
        assert!(n["load"]["load_score"].is_number(), "{n}");
        assert_eq!(n["load"]["peer_count"], 1);
    }
    let paged = original_call(&mut ws, "cluster_map_v2", Some(json!({"limit": 1}))).await;
    assert_eq!(paged["nodes"].as_array().map(Vec::len), Some(1));
    assert_eq!(paged["next_page_token"], "1:1");
    let gpu = original_call(
        &mut ws,
        "cluster_map_v2",
        Some(json!({"resources": ["market"]})),
    )
    .await;
    assert_eq!(gpu["nodes"].as_array().map(Vec::len), Some(1), "{gpu}");
    assert_eq!(gpu["nodes"][0]["node_id"], a.node_id(), "a offers `market`");

    // catalog_watch(): the topic the deltas go to.
    let w = original_call(&mut ws, "catalog_watch", Some(json!({"namespace": "svc"}))).await;
    assert_eq!(w["topic"], "mpreg.discovery.delta.svc");
    assert_eq!(w["namespace"], "svc");
    assert_eq!(w["cluster_id"], test_settings().cluster_id);
}
