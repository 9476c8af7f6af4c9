//! Real processes: three `mpreg-node`s form a cluster; the leader is killed with SIGKILL;
//! the survivors still commit catalog changes (a fourth node joins through them); the killed
//! leader restarts from its SQLite data dir and catches up.
// This test drives real processes in real time and picks free ports, from outside any node.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const NODE: &str = env!("CARGO_BIN_EXE_mpreg-node");
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
        let mut cmd = Command::new(NODE);
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
