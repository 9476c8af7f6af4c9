//! The real binaries: `mpreg-node` prints its URL, serves the `mpreg` CLI, layers its
//! settings, and exits 0 on SIGTERM after draining.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::process::NodeProcess;
use serde_json::Value;

const NODE: &str = env!("CARGO_BIN_EXE_mpreg-node");
const CLI: &str = env!("CARGO_BIN_EXE_mpreg");

fn mpreg(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(CLI).args(args).output().expect("mpreg runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `cluster_map` until the node at `url` knows a leader (it registers itself in the
/// catalog just after it starts listening).
fn wait_for_leader(url: &str) {
    let mut polls = 0;
    while json_out(&["client", "call", "cluster_map", "--url", url])["leader"].is_null() {
        polls += 1;
        assert!(polls < 400, "no leader after 20 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// How many queues the catalog of the node at `url` lists (a linearizable read), and them.
fn queues_on(url: &str) -> (usize, Value) {
    let queues = json_out(&[
        "client",
        "call",
        "catalog_query",
        "{\"queues\": true, \"linearizable\": true}",
        "--url",
        url,
    ]);
    (queues["queues"].as_array().map_or(0, Vec::len), queues)
}

fn json_out(args: &[&str]) -> Value {
    let (code, out, err) = mpreg(args);
    assert_eq!(code, 0, "mpreg {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn node_serves_cli_calls_and_stops_cleanly_on_sigterm() {
    let mut node = NodeProcess::start(&[], &[]);
    assert!(node.url.starts_with("ws://127.0.0.1:"));
    let monitoring = node.monitoring_url();
    assert!(monitoring.starts_with("http://127.0.0.1:"), "{monitoring}");
    // `mpreg monitor` reads it: tables by default, JSON on request.
    let monitor = |args: &[&str]| {
        let mut all = vec!["monitor"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--url", &monitoring]);
        let (code, out, err) = mpreg(&all);
        assert_eq!(code, 0, "mpreg {all:?}: {err}");
        out
    };
    let health = monitor(&["health"]);
    assert!(
        health.contains("status") && health.contains("healthy"),
        "{health}"
    );
    let summary: Value = serde_json::from_str(&monitor(&["health", "--json"])).unwrap();
    assert_eq!(summary["health_summary"]["overall"]["status"], "healthy");
    assert!(monitor(&["metrics"]).contains("mpreg_raft_term"));
    let metrics: Value = serde_json::from_str(&monitor(&["metrics", "--json"])).unwrap();
    assert!(metrics["mpreg_client_connections"].is_number(), "{metrics}");
    assert!(monitor(&["status"]).contains("mpreg-node"));
    assert!(monitor(&["endpoints"]).contains("/readyz"));
    assert!(monitor(&["persistence"]).contains("memory"));
    let url = node.url.clone();
    assert_eq!(
        json_out(&["client", "call", "echo", "\"hi\"", "--url", &url]),
        "hi"
    );
    assert_eq!(
        json_out(&[
            "client",
            "call",
            "echos",
            "1",
            "plain",
            "{\"a\":[2]}",
            "--url",
            &url
        ]),
        serde_json::json!([1, "plain", {"a": [2]}])
    );
    let dir = std::env::temp_dir().join(format!("mpreg-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let steps = dir.join("steps.json");
    std::fs::write(
        &steps,
        r#"[{"name":"a","fun":"echo","args":[5]},{"name":"b","fun":"echos","args":["a","a"]}]"#,
    )
    .unwrap();
    assert_eq!(
        json_out(&[
            "client",
            "request",
            "--file",
            steps.to_str().unwrap(),
            "--url",
            &url
        ]),
        serde_json::json!({"b": [5, 5]})
    );
    let (code, _, err) = mpreg(&["client", "call", "missing_fn", "--url", &url]);
    assert_eq!(code, 1);
    assert!(err.contains("1001"), "{err}");
    let status = node.terminate();
    assert_eq!(status.code(), Some(0));
    let (code, _, err) = mpreg(&["client", "call", "echo", "1", "--url", &url]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot connect"), "{err}");
}

#[test]
fn settings_layer_file_then_env_then_flags() {
    let dir = std::env::temp_dir().join(format!("mpreg-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("node.toml");
    let mut f = std::fs::File::create(&file).unwrap();
    writeln!(f, "[mpreg]\nname = \"from-file\"\ncluster_id = \"file-cluster\"\nresources = [\"disk\"]\nmonitoring_enabled = false").unwrap();
    let node = NodeProcess::start(
        &["--config", file.to_str().unwrap(), "--name", "from-flag"],
        &[
            ("MPREG_NAME", "from-env"),
            ("MPREG_CLUSTER_ID", "env-cluster"),
        ],
    );
    let map = json_out(&["client", "call", "cluster_map", "--url", &node.url]);
    let me = &map["nodes"][0];
    assert_eq!(me["name"], "from-flag");
    assert_eq!(me["cluster_id"], "env-cluster");
    assert_eq!(me["resources"], serde_json::json!(["disk"]));
    assert_eq!(node.terminate().code(), Some(0));

    // `mpreg server start-config FILE` reads the same file.
    let mut child = Command::new(CLI)
        .args([
            "server",
            "start-config",
            file.to_str().unwrap(),
            "--port",
            "0",
            "--persistence-mode",
            "memory",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().strip_prefix("MPREG_URL=").unwrap().to_owned();
    let map = json_out(&["client", "call", "cluster_map", "--url", &url]);
    assert_eq!(map["nodes"][0]["name"], "from-file");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn bad_settings_are_one_line_and_exit_2() {
    let out = Command::new(NODE)
        .args(["--config", "/nonexistent/mpreg.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/mpreg.toml") && err.lines().count() == 1,
        "{err}"
    );
    let out = Command::new(NODE)
        .args(["--port", "0"])
        .env("MPREG_PORT", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MPREG_PORT"));
}

/// `mpreg bench --catalog` commits catalog writes through Raft and reports them: the
/// leader proposed at least as many commands as the bench counted, and what is left in the
/// catalog is the bench's (each writer creates a queue, deletes it, and so on: at most one
/// of each writer's stays).
#[test]
fn bench_catalog_commits_writes() {
    let mut node = NodeProcess::start(&[], &[]);
    let url = node.url.clone();
    let monitoring = node.monitoring_url();
    // The node registers itself in the catalog just after it starts listening.
    wait_for_leader(&url);
    let proposed = |text: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix("mpreg_raft_proposal_commands_sum "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    };
    let metrics = || {
        let (code, out, err) = mpreg(&["monitor", "metrics", "--url", &monitoring]);
        assert_eq!(code, 0, "mpreg monitor metrics: {err}");
        out
    };
    let before = proposed(&metrics());
    let out = json_out(&[
        "bench",
        "--catalog",
        "--url",
        &url,
        "--connections",
        "2",
        "--duration",
        "0.5",
        "--warmup",
        "0",
        "--rounds",
        "1",
        "--json",
    ]);
    let writes = out["catalog"]["rounds"][0]["calls"].as_u64().unwrap_or(0);
    assert!(writes > 0, "{out}");
    assert_eq!(out["catalog"]["errors"], 0, "{out}");
    let after = metrics();
    assert!(
        proposed(&after) - before >= writes,
        "{writes} writes counted, {} commands proposed: {after}",
        proposed(&after) - before
    );
    let (left, queues) = queues_on(&url);
    assert!(left <= 2, "{left} queues left by 2 writers: {queues}");
    for q in queues["queues"].as_array().into_iter().flatten() {
        let name = q["name"].as_str().unwrap_or_default();
        assert!(name.starts_with("bench-"), "{queues}");
    }
}

/// `mpreg bench --pubsub` runs its publisher and subscribers against a node, on one node
/// and with the publisher on a second, and every subscriber hears every message (paced:
/// unpaced, the publisher outruns what a peer's queue holds, and those are dropped by
/// design).
#[test]
fn bench_pubsub_delivers_to_every_subscriber() {
    let a = NodeProcess::start(&[], &[]);
    wait_for_leader(&a.url);
    let b = NodeProcess::start(&["--peers", &a.url], &[]);
    for publish_url in [&a.url, &b.url] {
        let out = json_out(&[
            "bench",
            "--pubsub",
            "--url",
            &a.url,
            "--publish-url",
            publish_url,
            "--subscribers",
            "2",
            "--duration",
            "0.5",
            "--warmup",
            "0.2",
            "--rounds",
            "1",
            "--rate",
            "2000",
            "--json",
        ]);
        let r = &out["mpreg_pubsub"]["rounds"][0];
        let published = r["published"].as_u64().unwrap_or(0);
        assert!(published > 0, "{out}");
        assert_eq!(r["all_drained"], true, "{out}");
        assert_eq!(r["lost"], 0, "{out}");
        for d in r["delivered_per_sec_per_subscriber"].as_array().unwrap() {
            assert_eq!(
                d, &r["published_per_sec"],
                "every subscriber heard every one: {out}"
            );
        }
    }
}

/// A node beyond loopback without a cluster secret would let anyone who reaches its port
/// join its cluster: it refuses to start, saying how to fix it (issue 12, point 2). Nothing
/// is bound: the check comes before the listener.
#[test]
fn a_node_beyond_loopback_without_a_secret_refuses_to_start() {
    let out = Command::new(NODE)
        .args([
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--persistence-mode",
            "memory",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cluster_secret_file") && err.contains("--insecure-peers"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // A secret too short to resist guessing is refused too.
    let dir = std::env::temp_dir().join(format!("mpreg-cli-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let short = dir.join("short.secret");
    std::fs::write(&short, "hunter2\n").unwrap();
    let out = Command::new(NODE)
        .args(["--port", "0", "--persistence-mode", "memory"])
        .arg("--cluster-secret-file")
        .arg(&short)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("fewer than 16"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The secret file works end to end: a node started with it serves a tool that proves
/// the same file (`mpreg bench --catalog`), and refuses one that proves none.
#[test]
fn the_secret_file_admits_its_holders_only() {
    let dir = std::env::temp_dir().join(format!("mpreg-cli-secret2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("cluster.secret");
    std::fs::write(&secret, "8f1c2a9b7e6d5c4b3a291807f6e5d4c3\n").unwrap();
    let secret = secret.to_str().unwrap().to_owned();
    let node = NodeProcess::start(&["--cluster-secret-file", &secret], &[]);
    let url = node.url.clone();
    wait_for_leader(&url);
    let bench = |extra: &[&str]| {
        let mut args = vec![
            "bench",
            "--catalog",
            "--url",
            &url,
            "--connections",
            "1",
            "--duration",
            "0.3",
            "--warmup",
            "0",
            "--rounds",
            "1",
            "--json",
        ];
        args.extend(extra);
        mpreg(&args)
    };
    let (code, out, err) = bench(&["--cluster-secret-file", &secret]);
    assert_eq!(code, 0, "{err}");
    let out: Value = serde_json::from_str(&out).unwrap();
    assert!(
        out["catalog"]["rounds"][0]["calls"].as_u64().unwrap_or(0) > 0,
        "{out}"
    );
    // Without the secret no write is made.
    let (code, out, _) = bench(&[]);
    assert_ne!(code, 0, "writes without the secret succeeded: {out}");
    let before = queues_on(&url).0;
    let (_, _, _) = bench(&[]);
    assert_eq!(queues_on(&url).0, before);
    assert!(node.terminate().success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A data directory written by a newer build is refused with one clear line, never
/// misread (issue 12, point 6).
#[test]
fn a_data_dir_of_a_newer_build_is_refused() {
    let dir = std::env::temp_dir().join(format!("mpreg-cli-newer-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    {
        let c = rusqlite::Connection::open(dir.join("mpreg.sqlite")).unwrap();
        c.execute_batch("PRAGMA user_version = 99").unwrap();
    }
    let out = Command::new(NODE)
        .args(["--port", "0", "--persistence-mode", "sqlite", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    // One line says why (after the warning that this node has no cluster secret).
    let why: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("mpreg-node:"))
        .collect();
    assert!(
        why.len() == 1 && why[0].contains("newer mpreg") && why[0].contains("data format 99"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The README's secure cluster, with the real binaries: a token minted by `mpreg token
/// issue`, a node that requires it over TLS, the CLI and the benchmark over `wss://`.
#[test]
fn a_secure_node_serves_the_cli_over_tls_with_a_token() {
    let ca = common::pki::Ca::new("cli-secure");
    let leaf = ca.leaf("node");
    let secret = common::pki::jwt_secret(&ca.dir, "the cli test's jwt secret, 32 bytes+");
    let cluster = ca.dir.join("cluster.secret");
    std::fs::write(&cluster, "the cli test's cluster secret!!").unwrap();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let (code, token, err) = mpreg(&[
        "token",
        "issue",
        "--secret-file",
        &path(&secret),
        "--sub",
        "service-a",
        "--role",
        "caller",
        "--ttl",
        "1h",
    ]);
    assert_eq!(code, 0, "{err}");
    let token = token.trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let node = NodeProcess::start(
        &[
            "--auth-required",
            "--jwt-secret-file",
            &path(&secret),
            "--allowed-clients",
            "service-a,service-b",
            "--tls-cert",
            &path(&leaf.cert),
            "--tls-key",
            &path(&leaf.key),
            "--cluster-secret-file",
            &path(&cluster),
        ],
        &[],
    );
    assert!(node.url.starts_with("wss://127.0.0.1:"), "{}", node.url);
    let url = node.url.clone();
    let ca_file = path(&ca.cert);
    let call = |extra: &[&str]| {
        let mut args = vec![
            "client", "call", "echos", "1", "2", "--url", &url, "--ca", &ca_file,
        ];
        args.extend_from_slice(extra);
        mpreg(&args)
    };
    let (code, out, err) = call(&["--token", &token]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        serde_json::json!([1, 2])
    );
    let (code, _, err) = call(&[]);
    assert_eq!(code, 1);
    assert!(err.contains("401") && err.contains("no token"), "{err}");
    // MPREG_TOKEN, as the CLI's other settings come from MPREG_* variables.
    let out = Command::new(CLI)
        .args([
            "client", "call", "echo", "\"env\"", "--url", &url, "--ca", &ca_file,
        ])
        .env("MPREG_TOKEN", &token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The benchmark over TLS, against the echo server over the same TLS.
    let (code, out, err) = mpreg(&[
        "bench",
        "--url",
        &url,
        "--ca",
        &ca_file,
        "--token",
        &token,
        "--raw-echo",
        "--echo-tls-cert",
        &path(&leaf.cert),
        "--echo-tls-key",
        &path(&leaf.key),
        "--connections",
        "1",
        "--inflight",
        "4",
        "--duration",
        "0.3",
        "--warmup",
        "0",
        "--rounds",
        "1",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert!(
        report["mpreg"]["calls_per_sec"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(
        report["raw_echo"]["calls_per_sec"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    let status = node.terminate();
    assert_eq!(status.code(), Some(0));
}

/// `--log-format json`: every line on stderr is one JSON object a collector can read.
#[test]
fn json_logs_are_one_object_per_line() {
    let mut child = Command::new(NODE)
        .args([
            "--port",
            "0",
            "--persistence-mode",
            "memory",
            "--no-monitoring",
        ])
        .args(["--log-format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mpreg-node starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("MPREG_URL="), "{line}");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines.len() >= 2,
        "the node logs its start and stop: {stderr}"
    );
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: `{l}`"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{l}");
    }
    assert!(
        lines.iter().any(|l| l.contains("node listening")),
        "{stderr}"
    );
}

/// `mpreg client subscribe` prints each matching message as a JSON line; `mpreg client
/// publish` publishes (and says the node accepted it); a refused publish fails clearly.
#[test]
fn client_subscribe_and_publish() {
    let node = NodeProcess::start(&["--no-monitoring"], &[]);
    let mut sub = Command::new(CLI)
        .args([
            "client",
            "subscribe",
            "orders.#",
            "--count",
            "2",
            "--url",
            &node.url,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mpreg runs");
    let mut said = String::new();
    BufReader::new(sub.stderr.take().unwrap())
        .read_line(&mut said)
        .unwrap();
    assert!(said.contains("subscribed to orders.#"), "{said}");
    for (topic, payload) in [
        ("users.1.login", "x"),
        ("orders.1.created", r#"{"id":1}"#),
        ("orders.2.created", "plain text"),
    ] {
        let (code, _, err) = mpreg(&["client", "publish", topic, payload, "--url", &node.url]);
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("accepted by the node"), "{err}");
    }
    let out = sub.wait_with_output().expect("subscriber exits after 2");
    assert!(out.status.success());
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(
        (&lines[0]["topic"], &lines[0]["payload"]),
        (
            &serde_json::json!("orders.1.created"),
            &serde_json::json!({"id": 1})
        )
    );
    assert_eq!(lines[1]["payload"], "plain text");
    let (code, _, err) = mpreg(&["client", "publish", "mpreg.x", "1", "--url", &node.url]);
    assert_eq!(code, 1);
    assert!(
        err.contains("refused") && err.contains("the node's"),
        "{err}"
    );
}

/// `mpreg queue …`: create, send (a dedup id twice), receive with receipts, ack, stats as a
/// table and as JSON, drain (each message a JSON line, progress on stderr), and a bad
/// queue name or receipt failing with the node's reason and exit code 1.
#[test]
fn queue_verbs_drive_a_queue() {
    let node = NodeProcess::start(&["--no-monitoring"], &[]);
    let url = node.url.as_str();
    wait_for_leader(url);
    let q = |args: &[&str]| {
        let mut all = vec!["queue"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--url", url]);
        mpreg(&all)
    };
    let (code, out, err) = q(&[
        "create",
        "orders",
        "--visibility-timeout",
        "30s",
        "--max-receives",
        "5",
        "--dedup-window",
        "5m",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("queue orders created"), "{out}");
    let (code, out, err) = q(&["send", "orders", r#"{"id": 1}"#, "--dedup-id", "order-1"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("sent ") && !out.contains("duplicate"),
        "{out}"
    );
    let (_, out, _) = q(&["send", "orders", r#"{"id": 1}"#, "--dedup-id", "order-1"]);
    assert!(out.contains("a duplicate"), "{out}");
    for n in 2..=4 {
        let (code, _, err) = q(&[
            "send",
            "orders",
            &format!(r#"{{"id": {n}}}"#),
            "--priority",
            "5",
        ]);
        assert_eq!(code, 0, "{err}");
    }
    // A table with the receipt in full, then an ack of it.
    let (code, out, err) = q(&["receive", "orders", "--max", "1", "--wait", "2s"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("message_id") && lines[1].contains(r#"{"id":1}"#),
        "{out}"
    );
    let receipt = lines[1]
        .split_whitespace()
        .nth(2)
        .expect("a receipt column");
    let (code, out, err) = q(&["ack", "orders", receipt]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("acknowledged"), "{out}");
    // Acked already: refused, with the reason, exit 1.
    let (code, _, err) = q(&["ack", "orders", receipt]);
    assert_eq!(code, 1);
    assert!(err.contains("stale_receipt"), "{err}");
    let stats = json_out(&["queue", "stats", "orders", "--json", "--url", url]);
    assert_eq!(
        (
            &stats["depth"],
            &stats["total_messages_acknowledged"],
            &stats["duplicate_sends"]
        ),
        (
            &serde_json::json!(3),
            &serde_json::json!(1),
            &serde_json::json!(1)
        ),
        "{stats}"
    );
    let (_, out, _) = q(&["stats", "orders"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("depth") && l.ends_with(" 3")),
        "{out}"
    );
    // Drain: the three left, each a JSON line; then the queue is empty.
    let (code, out, err) = q(&["drain", "orders", "--idle", "300ms"]);
    assert_eq!(code, 0, "{err}");
    let drained: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let mut ids: Vec<i64> = drained
        .iter()
        .map(|m| m["message_payload"]["id"].as_i64().expect("an id"))
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, [2, 3, 4], "{out}");
    assert!(err.contains("drained 3 from orders"), "{err}");
    let stats = json_out(&["queue", "stats", "orders", "--json", "--url", url]);
    assert_eq!(
        (&stats["depth"], &stats["in_flight"]),
        (&serde_json::json!(0), &serde_json::json!(0))
    );
    let list = json_out(&["queue", "list", "--json", "--url", url]);
    assert_eq!(list["queues"][0]["queue_name"], "orders", "{list}");
    let (code, _, err) = q(&["create", "bad name"]);
    assert_eq!(code, 1);
    assert!(err.contains("1007") && err.contains("queue_name"), "{err}");
    let (code, _, err) = q(&["create", "x", "--visibility-timeout", "soon"]);
    assert_eq!(code, 2, "clap refuses a bad duration: {err}");
    let (code, out, err) = q(&["delete", "orders"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("deleted queue orders"), "{out}");
}

/// `mpreg cache …` against a node started as the issue's user starts it: put with a TTL,
/// get (a hit with its level; a miss exits 1), incr, invalidate by pattern, delete, stats as
/// a table and as JSON; `monitor metrics --system cache` reads /metrics/cache.
#[test]
fn cache_verbs_drive_the_cache() {
    let mut node = NodeProcess::start(&["--cache-capacity-mb", "256"], &[]);
    let monitoring = node.monitoring_url();
    let url = node.url.as_str();
    let c = |args: &[&str]| {
        let mut all = vec!["cache"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--url", url]);
        mpreg(&all)
    };
    let (code, out, err) = c(&[
        "put",
        "orders:A-100",
        r#"{"status": "ready"}"#,
        "--ttl",
        "10m",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("stored orders:A-100 in L1"), "{out}");
    let (code, out, err) = c(&["get", "orders:A-100"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("L1") && out.contains(r#"{"status":"ready"}"#),
        "{out}"
    );
    assert!(out.contains("600"), "the TTL: {out}");
    let (code, _, err) = c(&["get", "orders:nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("miss"), "{err}");
    for expected in ["= 1", "= 4"] {
        let by = if expected == "= 1" { "1" } else { "3" };
        let (code, out, err) = c(&["incr", "stats:calls", "--by", by]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(&format!("stats:calls {expected}")), "{out}");
    }
    c(&["put", "orders:A-101", "plain text"]);
    let (code, out, _) = c(&["invalidate", "orders:*"]);
    assert_eq!(code, 0);
    assert!(out.contains("removed 2 entries"), "{out}");
    let (code, out, _) = c(&["delete", "stats:calls"]);
    assert_eq!(code, 0);
    let (_, again, _) = c(&["delete", "stats:calls"]);
    assert!(
        out.contains("removed 1") && again.contains("not there"),
        "{out} / {again}"
    );
    let (code, table, _) = c(&["stats"]);
    assert_eq!(code, 0);
    assert!(table.contains("level") && table.contains("L1"), "{table}");
    let stats = json_out(&["cache", "stats", "--json", "--url", url]);
    assert_eq!(
        stats["entry"]["value"]["L1"]["capacity_bytes"],
        256 << 20,
        "{stats}"
    );
    let (code, _, err) = c(&["invalidate", "a[b]"]);
    assert_eq!(code, 1);
    assert!(err.contains("`[`"), "{err}");
    let (code, out, err) = mpreg(&[
        "monitor",
        "metrics",
        "--system",
        "cache",
        "--url",
        &monitoring,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("levels.L1.capacity_bytes"), "{out}");
}
