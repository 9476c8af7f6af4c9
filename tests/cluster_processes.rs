//! Real processes: three `mpreg-node`s form a cluster; the leader is killed with SIGKILL;
//! the survivors still commit catalog changes (a fourth node joins through them); the killed
//! leader restarts from its SQLite data dir and catches up. And three `mpreg-demo-node`s
//! with different resources run one cross-node request; one is killed mid-step.
// This test drives real processes in real time and picks free ports, from outside any node.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const NODE: &str = env!("CARGO_BIN_EXE_mpreg-node");
const DEMO_NODE: &str = env!("CARGO_BIN_EXE_mpreg-demo-node");
const CLI: &str = env!("CARGO_BIN_EXE_mpreg");

/// A node process, killed when the test ends however it ends.
struct Proc {
    child: Child,
    url: String,
}

/// A port free right now (the OS picks it; the node binds it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Proc {
    fn start(name: &str, peers: Option<&str>) -> Proc {
        Proc::start_at(name, peers, 0, None)
    }

    /// On `port`, keeping state in `data_dir` (sqlite) or in memory (`None`).
    fn start_at(
        name: &str,
        peers: Option<&str>,
        port: u16,
        data_dir: Option<&std::path::Path>,
    ) -> Proc {
        Proc::spawn(Command::new(NODE), name, peers, port, data_dir)
    }

    /// An `mpreg-demo-node` offering `resources` (comma-separated), in memory.
    fn demo(name: &str, peers: Option<&str>, resources: &str) -> Proc {
        let mut cmd = Command::new(DEMO_NODE);
        cmd.args(["--resources", resources]);
        Proc::spawn(cmd, name, peers, 0, None)
    }

    fn spawn(
        mut cmd: Command,
        name: &str,
        peers: Option<&str>,
        port: u16,
        data_dir: Option<&std::path::Path>,
    ) -> Proc {
        cmd.args(["--port", &port.to_string(), "--name", name]);
        match data_dir {
            Some(d) => cmd
                .args(["--persistence-mode", "sqlite", "--data-dir"])
                .arg(d),
            None => cmd.args(["--persistence-mode", "memory"]),
        };
        if let Some(p) = peers {
            cmd.args(["--peers", p]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("MPREG_URL line");
        let url = line
            .trim()
            .strip_prefix("MPREG_URL=")
            .expect("MPREG_URL=")
            .to_owned();
        Proc { child, url }
    }

    fn kill9(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cluster_map(url: &str) -> Option<Value> {
    let out = Command::new(CLI)
        .args(["client", "call", "cluster_map", "--url", url])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn names(map: &Value) -> Vec<String> {
    let mut v: Vec<String> = map["nodes"]
        .as_array()
        .map(|ns| {
            ns.iter()
                .filter_map(|n| n["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Polls until `url`'s cluster map lists exactly `want` (membership converges through Raft).
fn wait_for(url: &str, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = cluster_map(url).map(|m| names(&m)).unwrap_or_default();
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url}: wanted {want:?}, have {got:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_cluster_survives_the_loss_of_its_leader() {
    let mut n1 = Proc::start("n1", None);
    let n2 = Proc::start("n2", Some(&n1.url));
    let n3 = Proc::start("n3", Some(&n1.url));
    for p in [&n1, &n2, &n3] {
        wait_for(&p.url, &["n1", "n2", "n3"]);
    }
    // n1 bootstrapped the cluster and leads it (terms only change on failure).
    n1.kill9();
    // A join is a catalog write: it needs a newly elected leader among n2 and n3.
    let n4 = Proc::start("n4", Some(&format!("{},{}", n2.url, n3.url)));
    for p in [&n2, &n3, &n4] {
        wait_for(&p.url, &["n1", "n2", "n3", "n4"]);
    }
}

/// A node killed and restarted in memory mode at its old address comes back with a new id.
/// Its predecessor's entry must turn `down` (the new process refuses links meant for the
/// old id instead of answering heartbeats, votes and appends in its name), lose its vote
/// to a live node (the leader's probes of it fail too), and be listed before the live
/// entry (the original cluster client keeps the last score it reads for a URL).
#[test]
fn a_node_restarted_at_its_address_does_not_answer_for_its_predecessor() {
    let start = |name: &str, peers: Option<&str>, port: u16| {
        let mut cmd = Command::new(NODE);
        cmd.args(["--replace-voter-after-ms", "1000"]);
        Proc::spawn(cmd, name, peers, port, None)
    };
    let n1 = start("n1", None, 0);
    let n2 = start("n2", Some(&n1.url), 0);
    let port = free_port();
    let mut n3 = start("n3", Some(&n1.url), port);
    wait_for(&n1.url, &["n1", "n2", "n3"]);
    n3.kill9();
    let n3_again = start("n3", Some(&n1.url), port);
    assert_eq!(n3_again.url, n3.url);
    let deadline = Instant::now() + Duration::from_secs(30);
    let entries = loop {
        let map = cluster_map(&n1.url).unwrap_or(Value::Null);
        let entries: Vec<[String; 3]> = map["nodes"]
            .as_array()
            .map(|ns| {
                ns.iter()
                    .filter(|n| n["name"] == "n3")
                    .map(|n| {
                        ["node_id", "status", "raft_role"]
                            .map(|k| n[k].as_str().unwrap_or("").to_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let settled: Vec<[&str; 2]> = entries
            .iter()
            .map(|[_, status, role]| [status.as_str(), role.as_str()])
            .collect();
        if settled == [["down", "learner"], ["ok", "voter"]] {
            break entries;
        }
        assert!(
            Instant::now() < deadline,
            "n1's map should list the old n3 down and demoted, then the new one ok and \
             voting: {entries:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_ne!(entries[0][0], entries[1][0], "two ids for one address");
    drop(n2);
}

/// The leader's name as `url`'s `cluster_map` marks it, once it marks one.
fn leader_name(url: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leader = cluster_map(url)
            .and_then(|m| m["leader"].as_str().map(str::to_owned))
            .and_then(|id| id.split('-').next().map(str::to_owned));
        if let Some(l) = leader {
            return l;
        }
        assert!(Instant::now() < deadline, "{url} names no leader");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Three nodes on SQLite data dirs; the leader (as `cluster_map` marks it) is killed with
/// SIGKILL; a new leader is elected and takes a catalog write (a fourth node joins); the
/// killed node restarts on its port and data dir, rejoins as itself and catches up.
#[test]
fn a_killed_leader_restarts_from_its_data_dir_and_catches_up() {
    let root = std::env::temp_dir().join(format!("mpreg-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let dir = |n: &str| root.join(n);
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut nodes: Vec<(String, Proc)> = Vec::new();
    let first = Proc::start_at("n1", None, ports[0], Some(&dir("n1")));
    let seed = first.url.clone();
    nodes.push(("n1".into(), first));
    for (i, name) in ["n2", "n3"].iter().enumerate() {
        let p = Proc::start_at(name, Some(&seed), ports[i + 1], Some(&dir(name)));
        nodes.push(((*name).into(), p));
    }
    for (_, p) in &nodes {
        wait_for(&p.url, &["n1", "n2", "n3"]);
    }
    let leader = leader_name(&nodes[2].1.url);
    let at = nodes
        .iter()
        .position(|(n, _)| *n == leader)
        .expect("leader is one of them");
    let (_, mut killed) = nodes.remove(at);
    killed.kill9();
    // Heartbeats stop: the survivors' cluster maps mark the killed node down (routing
    // stops sending it work within 2 s of its death; polled here with slack for CI).
    let survivor = nodes[0].1.url.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = cluster_map(&survivor).and_then(|m| {
            m["nodes"].as_array().and_then(|ns| {
                ns.iter()
                    .find(|n| n["name"] == leader.as_str())
                    .and_then(|n| n["status"].as_str().map(str::to_owned))
            })
        });
        if status.as_deref() == Some("down") {
            // The dead peer's unanswered heartbeats must not make the live one look dead.
            let other = &nodes[1].0;
            let map = cluster_map(&survivor).unwrap_or_default();
            let other_status = map["nodes"].as_array().and_then(|ns| {
                ns.iter()
                    .find(|n| n["name"] == other.as_str())
                    .map(|n| n["status"].clone())
            });
            assert_eq!(other_status, Some(serde_json::json!("ok")), "{map}");
            break;
        }
        assert!(Instant::now() < deadline, "{leader} is still {status:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A new leader among the survivors...
    let deadline = Instant::now() + Duration::from_secs(30);
    while leader_name(&survivor) == leader {
        assert!(
            Instant::now() < deadline,
            "no new leader after killing {leader}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // ...takes catalog writes: a fourth node joins through the survivors.
    let peers = format!("{},{}", nodes[0].1.url, nodes[1].1.url);
    let n4 = Proc::start("n4", Some(&peers));
    for url in [&nodes[0].1.url, &nodes[1].1.url, &n4.url] {
        wait_for(url, &["n1", "n2", "n3", "n4"]);
    }
    // Same port, same data dir: it rejoins as itself and the leader catches it up.
    let port = ports[["n1", "n2", "n3"]
        .iter()
        .position(|n| **n == leader)
        .unwrap_or(0)];
    let back = Proc::start_at(&leader, None, port, Some(&dir(&leader)));
    wait_for(&back.url, &["n1", "n2", "n3", "n4"]);
    drop((nodes, n4, back));
    let _ = std::fs::remove_dir_all(&root);
}

/// The status and in-flight requests `url`'s cluster map reports for node `name`.
fn peer_state(url: &str, name: &str) -> Option<(String, u64)> {
    let map = cluster_map(url)?;
    let node = map["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["name"] == name)?
        .clone();
    Some((
        node["status"].as_str()?.to_owned(),
        node["load"]["inflight_requests"].as_u64().unwrap_or(0),
    ))
}

/// Three demo nodes with different resources; one request needs all three (cpu → two gpu
/// inferences in parallel → database store and cpu aggregate). Then the node running a
/// non-idempotent step is killed: that request fails with 1018, the function's other
/// replica takes every later call, and the dead node is marked down.
#[test]
fn a_cross_node_request_runs_everywhere_and_a_killed_node_is_routed_around() {
    use mpreg::{Client, ErrorCode, RpcCommand};
    use serde_json::json;
    use std::future::IntoFuture;

    let cpu = Proc::demo("cpu", None, "cpu");
    let mut gpu1 = Proc::demo("gpu1", Some(&cpu.url), "gpu,a100");
    let gpu2 = Proc::demo("gpu2", Some(&cpu.url), "gpu,database");
    for p in [&cpu, &gpu1, &gpu2] {
        wait_for(&p.url, &["cpu", "gpu1", "gpu2"]);
    }
    // Multi-threaded: the spawned call must run while this thread polls with the CLI.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let client = rt.block_on(Client::connect(&cpu.url)).expect("connect");
    // Both gpu nodes' functions are in the entry node's catalog.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = rt
            .block_on(
                client
                    .call("catalog_query", json!([{"name": "infer"}]))
                    .into_future(),
            )
            .expect("catalog_query");
        if found["functions"].as_array().map(Vec::len) == Some(2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "infer is not on both gpu nodes: {found}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let r = rt
        .block_on(client.request(vec![
            RpcCommand::new("p", "preprocess").args(json!([[2.0, 4.0, 8.0]])),
            RpcCommand::new("a", "infer").args(json!(["p"])).locs(["a100"]),
            RpcCommand::new("b", "infer").args(json!(["p"])).locs(["database"]),
            RpcCommand::new("s", "store").args(json!(["a"])),
            RpcCommand::new("t", "aggregate").args(json!([["a", "b"]])),
        ]))
        .expect("cross-node request");
    let mean = (0.25 + 0.5 + 1.0) / 3.0;
    assert_eq!(
        r["s"]["node"], "gpu2",
        "store runs on the database node: {r:?}"
    );
    assert_eq!(r["s"]["record"]["node"], "gpu1", "{r:?}");
    assert_eq!(r["t"]["node"], "cpu", "{r:?}");
    assert_eq!(r["t"]["count"], 2);
    assert!(
        (r["t"]["total"].as_f64().unwrap_or(0.0) - 2.0 * mean).abs() < 1e-9,
        "{r:?}"
    );

    // A non-idempotent step running on gpu1 when it dies: the request fails with 1018.
    let training = {
        let client = client.clone();
        rt.spawn(async move { client.call("train", json!([20_000])).locs(["a100"]).await })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while peer_state(&cpu.url, "gpu1").is_none_or(|(_, inflight)| inflight == 0) {
        assert!(Instant::now() < deadline, "train never started on gpu1");
        std::thread::sleep(Duration::from_millis(20));
    }
    gpu1.kill9();
    let killed_at = Instant::now();
    let lost = rt
        .block_on(training)
        .expect("task")
        .expect_err("train was lost");
    assert_eq!(lost.code(), Some(ErrorCode::StepLost), "{lost}");

    // Every later call goes to the replica that is left.
    for x in 0..20 {
        let r = rt
            .block_on(client.call("infer", json!([{"values": [x]}])).into_future())
            .expect("infer fails over");
        assert_eq!(r["node"], "gpu2", "{r}");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while peer_state(&cpu.url, "gpu1").is_none_or(|(status, _)| status != "down") {
        assert!(Instant::now() < deadline, "gpu1 never marked down");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("gpu1 marked down {:?} after SIGKILL", killed_at.elapsed());
    // With no a100 left, a pinned call fails clearly instead of waiting.
    let err = rt
        .block_on(
            client
                .call("train", json!([1]))
                .locs(["a100"])
                .into_future(),
        )
        .expect_err("no a100 node is alive");
    assert_eq!(err.code(), Some(ErrorCode::ClusterUnavailable), "{err}");
}
