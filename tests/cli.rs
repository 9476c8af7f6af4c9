//! The real binaries: `mpreg-node` prints its URL, serves the `mpreg` CLI, layers its
//! settings, and exits 0 on SIGTERM after draining.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

const NODE: &str = env!("CARGO_BIN_EXE_mpreg-node");
const CLI: &str = env!("CARGO_BIN_EXE_mpreg");

/// A node process that is killed if the test fails before it is stopped.
struct NodeProcess {
    child: Child,
    url: String,
}

impl NodeProcess {
    fn start(args: &[&str], envs: &[(&str, &str)]) -> NodeProcess {
        let mut cmd = Command::new(NODE);
        cmd.args(["--port", "0", "--persistence-mode", "memory"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("mpreg-node starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read MPREG_URL");
        let url = line
            .trim()
            .strip_prefix("MPREG_URL=")
            .unwrap_or_else(|| panic!("first line was `{line}`"))
            .to_owned();
        NodeProcess { child, url }
    }

    /// SIGTERM, then the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(killed.success());
        self.child.wait().expect("node exits")
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mpreg(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(CLI).args(args).output().expect("mpreg runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_out(args: &[&str]) -> Value {
    let (code, out, err) = mpreg(args);
    assert_eq!(code, 0, "mpreg {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn node_serves_cli_calls_and_stops_cleanly_on_sigterm() {
    let node = NodeProcess::start(&[], &[]);
    assert!(node.url.starts_with("ws://127.0.0.1:"));
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

/// `mpreg bench --catalog` commits catalog writes through Raft and reports them; the
/// queues it created are then in the catalog.
#[test]
fn bench_catalog_commits_writes() {
    let node = NodeProcess::start(&[], &[]);
    let url = node.url.clone();
    // The node registers itself in the catalog just after it starts listening.
    let mut polls = 0;
    while json_out(&["client", "call", "cluster_map", "--url", &url])["leader"].is_null() {
        polls += 1;
        assert!(polls < 400, "no leader after 20 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
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
    let queues = json_out(&[
        "client",
        "call",
        "catalog_query",
        "{\"queues\": true, \"linearizable\": true}",
        "--url",
        &url,
    ]);
    let created = queues["queues"].as_array().map_or(0, Vec::len) as u64;
    assert!(
        created >= writes,
        "{created} queues for {writes} writes: {queues}"
    );
}
