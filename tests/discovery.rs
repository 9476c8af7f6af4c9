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
        assert_eq!(
            n["capabilities"],
            json!(["cache", "pubsub", "queue", "rpc"])
        );
        assert_eq!(n["scope"], "zone");
        let url = n["advertised_urls"][0].as_str().unwrap();
        assert_eq!(n["transport_endpoints"][0]["endpoint"], url);
        assert!(n["transport_endpoints"][0]["port"].as_u64().unwrap() > 0);
        assert!(n["load"]["load_score"].is_number(), "{n}");
        // The nodes it knows, itself included, as the original counts.
        assert_eq!(n["load"]["peer_count"], 2);
        // The message counters are the answering node's own (b's): a's heartbeats and
        // Raft traffic have reached it, and the kinds add up. Not given for a.
        let load = &n["load"];
        if n["is_local"] == true {
            let count = |k: &str| load[k].as_u64().unwrap_or_else(|| panic!("{k}: {n}"));
            assert!(count("server_messages") > 0, "{n}");
            assert!(count("rpc_responses_skipped") > 0, "{n}");
            assert_eq!(
                count("messages_processed"),
                count("server_messages") + count("rpc_responses_skipped") + count("other_messages")
            );
        } else {
            assert!(load.get("messages_processed").is_none(), "{n}");
        }
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

    // summary_query(): one summary per function, by namespace then name, paged.
    let cluster = test_settings().cluster_id;
    let all = original_call(&mut ws, "summary_query", None).await;
    let items = all["items"].as_array().unwrap();
    let ids: Vec<&str> = items
        .iter()
        .filter_map(|i| i["service_id"].as_str())
        .collect();
    assert!(
        ids.contains(&"svc.market.quote") && ids.contains(&"svc.thumbs.resize"),
        "{all}"
    );
    let mut sorted = items.clone();
    sorted.sort_by(|x, y| {
        (x["namespace"].as_str(), x["service_id"].as_str())
            .cmp(&(y["namespace"].as_str(), y["service_id"].as_str()))
    });
    assert_eq!(&sorted, items);
    let svc = original_call(
        &mut ws,
        "summary_query",
        Some(json!({"namespace": "svc", "scope": "cluster", "include_ingress": true, "limit": 1})),
    )
    .await;
    assert_eq!(svc["items"].as_array().map(Vec::len), Some(1), "{svc}");
    let quote = &svc["items"][0];
    assert_eq!(quote["service_id"], "svc.market.quote");
    assert_eq!(quote["namespace"], "svc.market");
    assert_eq!(quote["endpoint_count"], 1);
    assert_eq!(quote["health_band"], "healthy");
    assert_eq!(quote["scope"], "zone");
    assert_eq!(quote["source_cluster"], cluster);
    assert_eq!(quote["regions"], json!(["local"]));
    assert_eq!(svc["next_page_token"], "1:1");
    let mut ingress: Vec<&str> = svc["ingress"][&cluster]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u.as_str())
        .collect();
    ingress.sort_unstable();
    let mut urls = vec![a.url(), b.url()];
    urls.sort_unstable();
    assert_eq!(ingress, urls);
    let one = original_call(
        &mut ws,
        "summary_query",
        Some(json!({"service_id": "svc.thumbs.resize"})),
    )
    .await;
    assert_eq!(one["items"][0]["namespace"], "svc.thumbs", "{one}");
    assert!(one["items"][0].get("scope").is_none());
    let bad = common::raw_roundtrip(
        &mut ws,
        &original_request("u9", "summary_query", Some(json!({"scope": "planet"}))),
    )
    .await;
    assert!(!bad["error"].is_null(), "{bad}");

    // summary_watch(): the original's topic.
    let w = original_call(&mut ws, "summary_watch", None).await;
    assert_eq!(w["topic"], "mpreg.discovery.summary");
    assert_eq!(w["cluster_id"], cluster);
    let w = original_call(
        &mut ws,
        "summary_watch",
        Some(json!({"scope": "global", "namespace": "svc"})),
    )
    .await;
    assert_eq!(w["topic"], "mpreg.discovery.summary.global.svc");
    assert_eq!(
        (&w["scope"], &w["namespace"]),
        (&json!("global"), &json!("svc"))
    );

    // The resolver calls: no resolver mode; the replica's counts.
    let stats = original_call(&mut ws, "resolver_cache_stats", None).await;
    assert_eq!(stats["enabled"], false);
    assert_eq!(stats["entry_counts"]["nodes"], 2, "{stats}");
    // rpc_report's count: the two and every node's built-ins, all in the catalog.
    assert_eq!(stats["entry_counts"]["functions"], total, "{stats}");
    assert!(stats.get("stats").is_none());
    let resync = original_call(&mut ws, "resolver_resync", None).await;
    assert_eq!(
        (&resync["resynced"], &resync["error"]),
        (&json!(false), &json!("resolver_mode_disabled"))
    );
}

/// `catalog_watch` then the original's `pubsub-subscribe`: each catalog change arrives as a
/// `pubsub-notification` carrying a `DiscoveryDeltaMessage`, on the base topic and on each
/// namespace's topic, to the subscriptions whose patterns match, until unsubscribed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_watch_pushes_each_change_to_the_subscriptions_that_match() {
    let a = start_node(test_settings(), vec![]).await;
    wait_routable(&[&a], "echo", 1).await;
    let mut ws = common::raw_connect(a.url()).await;
    let topic = original_call(&mut ws, "catalog_watch", None).await["topic"].clone();
    assert_eq!(topic, "mpreg.discovery.delta");
    let subscribe = |u: &str, sid: &str, pattern: &str| {
        json!({"role": "pubsub-subscribe", "u": u, "subscription": {
            "subscription_id": sid, "patterns": [{"pattern": pattern, "exact_match": !pattern.contains('#')}],
            "subscriber": "pubsub_client_x", "created_at": 1.0, "get_backlog": false, "backlog_seconds": 300}})
        .to_string()
    };
    let ack = common::raw_roundtrip(&mut ws, &subscribe("q1", "s1", "mpreg.discovery.delta")).await;
    assert_eq!(
        ack,
        json!({"role": "pubsub-ack", "operation_id": "q1", "success": true, "error": null, "u": "ack_q1"})
    );
    let ack =
        common::raw_roundtrip(&mut ws, &subscribe("q2", "s2", "mpreg.discovery.delta.svc")).await;
    assert_eq!(ack["success"], true);
    // Another topic is a client topic (it hears publishes, not the catalog).
    let other = common::raw_roundtrip(&mut ws, &subscribe("q3", "s9", "weather.updates")).await;
    assert_eq!(other["success"], true, "{other}");

    // A worker elsewhere registers svc.one: both subscriptions hear of it.
    let mut worker = common::raw_connect(a.url()).await;
    let reg = |u: &str, name: &str| {
        json!({"role": "register", "u": u, "functions": [{"name": name}]}).to_string()
    };
    assert!(common::raw_roundtrip(&mut worker, &reg("r1", "svc.one")).await["error"].is_null());
    let n1 = common::next_json(&mut ws).await;
    assert_eq!(n1["role"], "pubsub-notification");
    assert_eq!(
        (&n1["subscription_id"], &n1["message"]["topic"]),
        (&json!("s1"), &json!("mpreg.discovery.delta"))
    );
    let payload = &n1["message"]["payload"];
    assert_eq!(
        payload["delta"]["functions"][0]["identity"]["name"],
        "svc.one"
    );
    assert_eq!(payload["delta"]["functions"][0]["node_id"], a.node_id());
    assert_eq!(payload["counts"]["functions_added"], 1);
    assert_eq!(payload["counts"]["functions_removed"], 0);
    assert_eq!(payload["namespaces"], json!(["svc"]));
    assert_eq!(payload["source_node"], a.node_id());
    assert_eq!(n1["message"]["headers"]["event"], "discovery.catalog_delta");
    let mid = n1["message"]["message_id"].as_str().unwrap();
    assert_eq!(n1["u"], format!("notification_{mid}_s1"));
    let n2 = common::next_json(&mut ws).await;
    assert_eq!(
        (&n2["subscription_id"], &n2["message"]["topic"]),
        (&json!("s2"), &json!("mpreg.discovery.delta.svc"))
    );
    assert_eq!(n2["message"]["payload"], *payload);

    // other.two is not in svc: only s1.
    assert!(common::raw_roundtrip(&mut worker, &reg("r2", "other.two")).await["error"].is_null());
    let n3 = common::next_json(&mut ws).await;
    assert_eq!(n3["subscription_id"], "s1");
    assert_eq!(n3["message"]["payload"]["namespaces"], json!(["other"]));

    // s1 leaves, s3 (every discovery topic) joins; the worker leaves: both functions go.
    let ack = common::raw_roundtrip(
        &mut ws,
        &json!({"role": "pubsub-unsubscribe", "u": "q4", "subscription_id": "s1"}).to_string(),
    )
    .await;
    assert_eq!(ack["success"], true, "{ack}");
    let ack = common::raw_roundtrip(
        &mut ws,
        &json!({"role": "pubsub-unsubscribe", "u": "q5", "subscription_id": "s1"}).to_string(),
    )
    .await;
    assert_eq!(ack["success"], false, "already gone: {ack}");
    let ack =
        common::raw_roundtrip(&mut ws, &subscribe("q6", "s3", "mpreg.discovery.delta.#")).await;
    assert_eq!(ack["success"], true);
    drop(worker);
    let mut heard = Vec::new();
    for _ in 0..4 {
        let n = common::next_json(&mut ws).await;
        assert_eq!(
            n["message"]["payload"]["counts"]["functions_removed"], 2,
            "{n}"
        );
        heard.push((
            n["subscription_id"].as_str().unwrap().to_owned(),
            n["message"]["topic"].as_str().unwrap().to_owned(),
        ));
    }
    let base = "mpreg.discovery.delta";
    assert_eq!(
        heard,
        [
            ("s3".to_owned(), base.to_owned()),
            ("s3".to_owned(), format!("{base}.other")),
            ("s2".to_owned(), format!("{base}.svc")),
            ("s3".to_owned(), format!("{base}.svc")),
        ],
        "s1 hears nothing after unsubscribing"
    );
}

/// The original's own Python client and pub/sub client on these calls: run on purpose with
/// `MPREG_ORIGINAL_PYTHON=/tmp/mpreg-original/venv/bin/python cargo test --test discovery --
/// --ignored original` (a venv where the original MPREG package is installed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the original's Python client (MPREG_ORIGINAL_PYTHON)"]
async fn the_original_clients_discovery_calls_parse() {
    let node = start_node(test_settings(), vec![]).await;
    wait_routable(&[&node], "echo", 1).await;
    common::run_original_script("original_discovery_client.py", &[node.url()], &[]).await;
    node.shutdown().await;
}

/// The original's own client on the summary, resolver and namespace policy calls (its
/// wrappers parse every reply with its own dataclasses): run on purpose with
/// `MPREG_ORIGINAL_PYTHON=/tmp/mpreg-original/venv/bin/python cargo test --test discovery --
/// --ignored original`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the original's Python client (MPREG_ORIGINAL_PYTHON)"]
async fn the_original_clients_policy_and_summary_calls_parse() {
    let node = start_node(test_settings(), vec![]).await;
    wait_routable(&[&node], "echo", 1).await;
    common::run_original_script("original_policy_client.py", &[node.url()], &[]).await;
    node.shutdown().await;
}
