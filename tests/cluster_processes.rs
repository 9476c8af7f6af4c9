//! Real processes: three `mpreg-node`s form a cluster; the leader is killed with SIGKILL;
//! the survivors still commit catalog changes (a fourth node joins through them).
// This test drives real processes in real time, from outside any node.
#![allow(clippy::disallowed_methods)]

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

impl Proc {
    fn start(name: &str, peers: Option<&str>) -> Proc {
        let mut cmd = Command::new(NODE);
        cmd.args(["--port", "0", "--name", name]);
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
