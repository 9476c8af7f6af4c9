//! The cache end to end: the original's `CacheRequestMessage` over a raw socket (put, get
//! hit and miss, delete), each operation family answered, L2 surviving a restart and
//! promoted to L1, invalidation by pattern and by dependency, bad input refused with a
//! clear message, the role that guards it, and cacheable functions run once for a burst of
//! identical calls from several clients.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use mpreg::{Client, Function, Settings};
use serde_json::{Value, json};

/// A `cache-request` as the original's client writes it (`CacheRequestMessage.to_dict()`).
fn original(u: &str, operation: &str, identifier: &str, value: Option<Value>) -> String {
    let mut m = json!({
        "role": "cache-request", "u": u, "timestamp": 1_700_000_000.0, "version": "2.0",
        "operation": operation,
        "key": {"namespace": "shop", "identifier": identifier, "version": "v1.0.0", "tags": []},
        "options": {"include_metadata": true, "consistency_level": "eventual", "timeout_ms": 5000,
                    "cache_levels": ["L1", "L2", "L3", "L4"], "replication_factor": 2,
                    "prefer_local": true, "max_staleness_seconds": 300.0},
    });
    if let Some(v) = value {
        m["value"] = v;
        m["metadata"] = json!({"computation_cost_ms": 5.0, "dependencies": [],
                               "ttl_seconds": 60.0, "replication_policy": "geographic",
                               "geographic_hints": [], "quality_score": 1.0});
    }
    m.to_string()
}

#[tokio::test]
async fn the_originals_messages_get_the_right_status() {
    let node = start_node(test_settings(), vec![]).await;
    let mut ws = raw_connect(node.url()).await;
    let put = raw_roundtrip(&mut ws, &original("p1", "put", "k", Some(json!({"n": 1})))).await;
    assert_eq!(put["role"], "cache-response", "{put}");
    assert_eq!(put["u"], "p1");
    assert_eq!(put["status"], "hit", "{put}");
    assert_eq!(put["cache_level"], "L1");
    // L2 needs the sqlite mode; L3 and L4 are not served: the reply says which it skipped.
    assert_eq!(put["unserved_levels"], json!(["L2", "L3", "L4"]), "{put}");
    let hit = raw_roundtrip(&mut ws, &original("g1", "get", "k", None)).await;
    assert_eq!(hit["status"], "hit", "{hit}");
    assert_eq!(hit["cache_level"], "L1");
    assert_eq!(hit["entry"]["value"], json!({"n": 1}));
    assert_eq!(hit["entry"]["key"]["identifier"], "k");
    assert_eq!(hit["entry"]["ttl_seconds"], 60.0);
    assert_eq!(hit["entry"]["access_count"], 1);
    assert!(hit["operation_id"].is_string());
    // Without metadata: the key and value alone.
    let bare = json!({"role": "cache-request", "u": "g1b", "operation": "get",
        "key": {"namespace": "shop", "identifier": "k"},
        "options": {"cache_levels": ["L1"], "include_metadata": false}});
    let bare = raw_roundtrip(&mut ws, &bare.to_string()).await;
    assert_eq!(
        bare["entry"],
        json!({"key": {"namespace": "shop", "identifier": "k", "version": "v1.0.0", "tags": []},
               "value": {"n": 1}})
    );
    let miss = raw_roundtrip(&mut ws, &original("g2", "get", "absent", None)).await;
    assert_eq!(miss["status"], "miss", "{miss}");
    assert!(miss.get("entry").is_none());
    let del = raw_roundtrip(&mut ws, &original("d1", "delete", "k", None)).await;
    assert_eq!(del["status"], "hit", "{del}");
    let gone = raw_roundtrip(&mut ws, &original("g3", "get", "k", None)).await;
    assert_eq!(gone["status"], "miss", "{gone}");
    let again = raw_roundtrip(&mut ws, &original("d2", "delete", "k", None)).await;
    assert_eq!(again["status"], "miss", "{again}");
    // Missing `key` and `options` take defaults; an unknown operation is an error that
    // names it, and the connection stays up.
    let stats = raw_roundtrip(
        &mut ws,
        r#"{"role":"cache-request","u":"s1","operation":"stats"}"#,
    )
    .await;
    assert_eq!(stats["status"], "hit", "{stats}");
    assert_eq!(
        stats["entry"]["value"]["operations"]["put"]["hit"], 1,
        "{stats}"
    );
    let bad = raw_roundtrip(
        &mut ws,
        r#"{"role":"cache-request","u":"b1","operation":"frobnicate"}"#,
    )
    .await;
    assert_eq!(bad["status"], "error");
    assert_eq!(bad["u"], "b1");
    assert!(
        bad["error_message"]
            .as_str()
            .unwrap()
            .contains("frobnicate"),
        "{bad}"
    );
    let only_l3 = json!({"role": "cache-request", "u": "l3", "operation": "get",
        "key": {"namespace": "shop", "identifier": "k"}, "options": {"cache_levels": ["L3"]}});
    let r = raw_roundtrip(&mut ws, &only_l3.to_string()).await;
    assert_eq!(r["status"], "error");
    assert!(
        r["error_message"]
            .as_str()
            .unwrap()
            .contains("L3 (cluster)"),
        "{r}"
    );
}

/// Sends `frame` (a cache-request without `role`/`u`) and returns the response.
async fn ask(c: &Client, frame: Value) -> Value {
    c.cache()
        .request(frame.clone())
        .await
        .unwrap_or_else(|e| panic!("{frame}: {e}"))
        .raw
}

async fn refused(c: &Client, frame: Value) -> String {
    match c.cache().request(frame.clone()).await {
        Err(mpreg::client::ClientError::Cache(why)) => why,
        other => panic!("{frame} answered {other:?}"),
    }
}

#[tokio::test]
async fn atomic_structure_and_namespace_operations() {
    let node = start_node(test_settings(), vec![]).await;
    let c = Client::connect(node.url()).await.unwrap();
    let key = json!({"namespace": "stats", "identifier": "calls"});
    let incr = |by: i64| {
        json!({"operation": "atomic", "key": key,
            "atomic_operation": {"operation_type": "increment", "increment_by": by,
                                 "create_if_missing": true, "initial_value": 10}})
    };
    // A missing key starts from initial_value and the increment applies, as Redis INCR.
    assert_eq!(ask(&c, incr(5)).await["entry"]["value"], 15);
    assert_eq!(ask(&c, incr(-20)).await["entry"]["value"], -5);
    assert_eq!(c.cache().incr("stats:calls", 6).await.unwrap(), json!(1));
    let cas = |expected: Value, new: Value| {
        json!({"operation": "atomic", "key": key,
            "atomic_operation": {"operation_type": "compare_and_swap",
                                 "expected_value": expected, "new_value": new}})
    };
    let lost = ask(&c, cas(json!(99), json!(0))).await;
    assert_eq!(lost["status"], "conflict", "{lost}");
    assert_eq!(lost["entry"]["value"], 1, "a conflict shows the value now");
    assert_eq!(ask(&c, cas(json!(1), json!("one"))).await["status"], "hit");
    let why = refused(&c, incr(1)).await;
    assert!(why.contains("not a number"), "{why}");
    let set = |op: &str, values: Value| {
        json!({"operation": "structure", "key": {"namespace": "tags", "identifier": "t"},
            "structure_operation": {"structure_type": "set", "operation": op, "values": values}})
    };
    assert_eq!(
        ask(&c, set("add", json!(["b", "a", "b"]))).await["entry"]["value"],
        2
    );
    assert_eq!(
        ask(&c, set("members", json!([]))).await["entry"]["value"],
        json!(["a", "b"])
    );
    let zset = json!({"operation": "structure", "key": {"namespace": "z", "identifier": "z"},
        "structure_operation": {"structure_type": "sorted_set", "operation": "add"}});
    assert!(refused(&c, zset).await.contains("not served"));
    for i in 0..5 {
        c.cache()
            .put(&format!("orders:A-{i}"), json!(i), None)
            .await
            .unwrap();
    }
    let ns = |op: &str| {
        json!({"operation": "namespace",
            "namespace_operation": {"operation_type": op, "namespace": "orders", "max_entries": 3}})
    };
    let listed = ask(&c, ns("list_keys")).await;
    assert_eq!(
        listed["entry"]["value"]["keys"],
        json!([
            "orders:A-0:v1.0.0",
            "orders:A-1:v1.0.0",
            "orders:A-2:v1.0.0"
        ])
    );
    assert_eq!(listed["entry"]["value"]["truncated"], true);
    let figures = ask(&c, ns("statistics")).await;
    assert_eq!(figures["entry"]["value"]["L1"]["entries"], 5, "{figures}");
    assert_eq!(ask(&c, ns("clear")).await["entry"]["value"]["removed"], 5);
    assert!(c.cache().get("orders:A-1").await.unwrap().is_none());
    assert!(refused(&c, ns("backup")).await.contains("not served"));
}

#[tokio::test]
async fn invalidation_by_pattern_and_dependency() {
    let node = start_node(test_settings(), vec![]).await;
    let c = Client::connect(node.url()).await.unwrap();
    let cache = c.cache();
    for k in ["orders:A-1", "orders:A-2", "orders:B-1", "users:u1"] {
        cache.put(k, json!(k), None).await.unwrap();
    }
    // A summary that depends on users:u1, and a page that depends on the summary.
    let dep = |id: &str, on: &str| {
        json!({"operation": "put", "key": {"namespace": "views", "identifier": id},
               "value": 1, "metadata": {"dependencies": [on]}})
    };
    ask(&c, dep("summary", "users:u1:v1.0.0")).await;
    ask(&c, dep("page", "views:summary:v1.0.0")).await;
    assert_eq!(cache.invalidate("orders:A-*").await.unwrap(), 2);
    assert!(cache.get("orders:A-1").await.unwrap().is_none());
    assert!(cache.get("orders:B-1").await.unwrap().is_some());
    // Invalidating the user takes the summary and, through it, the page.
    assert_eq!(cache.invalidate("users:u1:*").await.unwrap(), 3);
    assert!(cache.get("views:summary").await.unwrap().is_none());
    assert!(cache.get("views:page").await.unwrap().is_none());
    // A bare name is a namespace.
    assert_eq!(cache.invalidate("orders").await.unwrap(), 1);
    for (pattern, why) in [
        ("", "empty pattern"),
        ("a[bc]", "`[`"),
        ("*a*b*c*d*e*f*g*h*i", "cache_max_pattern_wildcards"),
    ] {
        let got = refused(
            &c,
            json!({"operation": "invalidate", "invalidation_pattern": pattern}),
        )
        .await;
        assert!(got.contains(why), "{pattern}: {got}");
    }
}

#[tokio::test]
async fn bounds_refuse_with_a_clear_message_and_the_node_stays_up() {
    let node = start_node(
        Settings {
            cache_max_value_bytes: 1024,
            cache_max_key_bytes: 64,
            ..test_settings()
        },
        vec![],
    )
    .await;
    let c = Client::connect(node.url()).await.unwrap();
    let cache = c.cache();
    let big = cache.put("a:b", json!("x".repeat(2000)), None).await;
    assert!(
        matches!(&big, Err(mpreg::client::ClientError::Cache(w)) if w.contains("cache_max_value_bytes")),
        "{big:?}"
    );
    let long = cache
        .put(&format!("a:{}", "k".repeat(100)), json!(1), None)
        .await;
    assert!(
        matches!(&long, Err(mpreg::client::ClientError::Cache(w)) if w.contains("cache_max_key_bytes")),
        "{long:?}"
    );
    for (frame, why) in [
        (
            json!({"operation": "put", "key": {"namespace": "a", "identifier": "b"}}),
            "needs a `value`",
        ),
        (
            json!({"operation": "put", "key": {"namespace": "a", "identifier": "b"}, "value": 1,
                "metadata": {"ttl_seconds": -1}}),
            "ttl_seconds",
        ),
        (
            json!({"operation": "get", "key": {"namespace": "a:b", "identifier": "c"}}),
            "namespace",
        ),
        (
            json!({"operation": "get", "key": {"namespace": "a"}}),
            "identifier",
        ),
        (
            json!({"operation": "atomic", "key": {"namespace": "a", "identifier": "b"}}),
            "atomic_operation",
        ),
    ] {
        let got = refused(&c, frame.clone()).await;
        assert!(got.contains(why), "{frame}: {got}");
    }
    let mut ws = raw_connect(node.url()).await;
    let broken = raw_roundtrip(
        &mut ws,
        r#"{"role":"cache-request","u":"x1","operation":"get","key":7}"#,
    )
    .await;
    assert_eq!(broken["status"], "error");
    assert_eq!(broken["u"], "x1");
    cache
        .put("a:b", json!(1), None)
        .await
        .expect("the node still answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l2_survives_a_restart_and_a_hit_there_is_promoted_to_l1() {
    let dir = common::pki::temp_dir("cache-restart");
    let settings = || sqlite_settings(&dir);
    let node = start_node(settings(), vec![]).await;
    let c = Client::connect(node.url()).await.unwrap();
    let put = c
        .cache()
        .put(
            "orders:A-100",
            json!({"status": "ready"}),
            Some(Duration::from_secs(600)),
        )
        .await
        .unwrap();
    assert!(put.raw.get("unserved_levels").is_none(), "{}", put.raw);
    drop(c);
    node.shutdown().await;
    let node = start_node(settings(), vec![]).await;
    let c = Client::connect(node.url()).await.unwrap();
    let first = c.cache().get("orders:A-100").await.unwrap().expect("kept");
    assert_eq!(first.level.as_deref(), Some("L2"));
    assert_eq!(first.value(), Some(&json!({"status": "ready"})));
    let ttl = first.entry.as_ref().unwrap()["ttl_seconds"]
        .as_f64()
        .unwrap();
    assert!((599.0..=600.0).contains(&ttl), "{ttl}");
    let second = c.cache().get("orders:A-100").await.unwrap().expect("kept");
    assert_eq!(second.level.as_deref(), Some("L1"), "promoted");
    let stats = c.cache().stats().await.unwrap();
    assert_eq!(stats["L2"]["entries"], 1, "{stats}");
    assert_eq!(stats["L2"]["hits"], 1, "{stats}");
}

#[tokio::test]
async fn the_cache_role_guards_cache_requests() {
    let dir = common::pki::temp_dir("cache-role");
    let secret = common::pki::jwt_secret(&dir, "the jwt secret of these tests, 32+ bytes");
    let cluster = dir.join("cluster.secret");
    std::fs::write(&cluster, "the cluster secret of these tests").unwrap();
    let node = start_node(
        Settings {
            auth_required: true,
            jwt_secret_file: Some(secret.clone()),
            cluster_secret_file: Some(cluster),
            cache_role: Some("cache".into()),
            ..test_settings()
        },
        vec![],
    )
    .await;
    let connect = |roles: &[&str]| {
        let token = common::pki::token(&secret, "user", roles, 3600);
        let url = node.url().to_owned();
        async move {
            Client::connect_with_options(
                &mpreg::env::Env::production(),
                &url,
                &mpreg::client::ConnectOptions::new().token(token),
            )
            .await
            .unwrap()
        }
    };
    let without = connect(&[]).await;
    let why = without
        .cache()
        .put("a:b", json!(1), None)
        .await
        .unwrap_err();
    assert!(why.to_string().contains("`cache` role"), "{why}");
    let with = connect(&["cache"]).await;
    with.cache().put("a:b", json!(1), None).await.unwrap();
}

/// A cacheable function that counts its runs and holds each until `gate` opens.
fn slow_square(runs: Arc<AtomicUsize>, gate: tokio::sync::watch::Receiver<bool>) -> Function {
    Function::new("square", move |x: i64| {
        let (runs, mut gate) = (runs.clone(), gate.clone());
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            let _ = gate.wait_for(|open| *open).await;
            Ok::<_, String>(x * x)
        }
    })
    .params(["x"])
    .cache(Duration::from_secs(60))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cacheable_function_runs_once_for_a_burst_of_identical_calls() {
    let runs = Arc::new(AtomicUsize::new(0));
    let (open, gate) = tokio::sync::watch::channel(false);
    let node = start_node(test_settings(), vec![slow_square(runs.clone(), gate)]).await;
    let clients: Vec<Client> =
        futures_util::future::join_all((0..8).map(|_| Client::connect(node.url())))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    let calls: Vec<_> = clients
        .iter()
        .map(|c| {
            tokio::spawn({
                let c = c.clone();
                async move { c.call("square", json!([12])).await }
            })
        })
        .collect();
    // The first runs; the seven others wait for it (single flight): the cache's stats
    // say so. Then the run may finish.
    let watcher = &clients[0];
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let results = watcher.cache().stats().await.unwrap()["results"].clone();
            if results["running"] == 1 && results["waiting"] == 7 {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    let now = watcher.cache().stats().await.unwrap()["results"].clone();
    assert!(
        waited.is_ok(),
        "never one run and seven waiting: {now}, runs {runs:?}"
    );
    open.send_replace(true);
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), json!(144));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "one run for the burst");
    // Later calls, the same arguments in kwargs form included, are answered from the cache
    // and say so in the execution summary; other arguments run it again.
    let again = clients[3]
        .send(
            serde_json::from_value(json!({"role": "rpc", "u": "x", "cmds": [
                {"name": "sq", "fun": "square", "args": [], "kwargs": {"x": 12}, "locs": []},
                {"name": "other", "fun": "square", "args": [3], "kwargs": {}, "locs": []}],
                "include_execution_summary": true}))
            .unwrap(),
            None,
        )
        .await
        .unwrap();
    let r = again.r.unwrap();
    assert_eq!(r["sq"], 144);
    assert_eq!(r["other"], 9);
    let steps = &again.execution_summary.as_ref().unwrap().steps;
    let cached: Vec<(&str, bool)> = steps.iter().map(|s| (s.name.as_str(), s.cached)).collect();
    assert!(cached.contains(&("other", false)), "{cached:?}");
    assert!(cached.contains(&("sq", true)), "{cached:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 2, "kwargs or args: one call");
}

/// Errors are not kept: a failing cacheable call runs again next time.
#[tokio::test]
async fn errors_are_not_cached() {
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let flaky = Function::new("flaky", move |x: i64| {
        let n = counted.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                Err("first call fails".to_owned())
            } else {
                Ok(x)
            }
        }
    })
    .params(["x"])
    .cache(Duration::from_secs(60));
    let node = start_node(test_settings(), vec![flaky]).await;
    let c = Client::connect(node.url()).await.unwrap();
    assert!(c.call("flaky", json!([1])).await.is_err());
    assert_eq!(c.call("flaky", json!([1])).await.unwrap(), json!(1));
    assert_eq!(c.call("flaky", json!([1])).await.unwrap(), json!(1));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

/// The key vectors of docs/PROTOCOL.md ("Cache keys"): the canonical text and identifier
/// of each value, as computed here and, for those marked so, by Python's `json` module.
#[test]
fn the_documented_key_vectors_hold_here_and_in_python() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md")).unwrap();
    let block = doc
        .split("```json key-vectors\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("a key-vectors block");
    let vectors: Vec<Value> = serde_json::from_str(block).unwrap();
    assert!(vectors.len() >= 5);
    let mut python = Vec::new();
    for v in &vectors {
        let canonical = mpreg::cache::canonical_json(&v["value"]);
        assert_eq!(
            canonical,
            v["canonical"].as_str().unwrap(),
            "{v}: {canonical}"
        );
        assert_eq!(
            mpreg::cache::made_identifier(&v["value"]),
            v["identifier"],
            "{v}"
        );
        if v["python"] == true {
            python.push(v.clone());
        }
    }
    let script = r#"
import hashlib, json, sys
for v in json.load(sys.stdin):
    c = json.dumps(v["value"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert c == v["canonical"], (c, v["canonical"])
    h = hashlib.sha256(c.encode()).hexdigest()[:32]
    assert h == v["identifier"], (h, v["identifier"])
print(len(sys.argv))
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (CI installs it)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(Value::Array(python).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python disagrees: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A key made from data is its namespace, that identifier and the default version.
    let k = mpreg::cache::CacheKey::from_data("orders", &json!({"order_id": "A-100"}));
    assert_eq!(k.text(), "orders:f0ccb45f16b9728e24a4af60d02343a2:v1.0.0");
}
