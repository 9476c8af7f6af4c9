//! A replicated queue across real processes: three `mpreg-node`s on SQLite data dirs, a
//! queue with three replicas, 20,000 acknowledged sends while the node leading its group is
//! SIGKILLed and restarted from its data dir (twice), then one node's data dir deleted and the node
//! replaced by an empty one (its replica moves to the new node); every acknowledged message
//! is then received.
// This test drives real processes in real time and picks free ports, from outside any node.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mpreg::Client;
use serde_json::{Value, json};

const NODE: &str = env!("CARGO_BIN_EXE_mpreg-node");
const SENDS: u64 = 20_000;
const PRODUCERS: u64 = 8;

struct Proc {
    child: Child,
    url: String,
}

impl Proc {
    fn start(name: &str, port: u16, dir: &Path, peers: Option<&str>) -> Proc {
        let mut cmd = Command::new(NODE);
        cmd.args(["--port", &port.to_string(), "--name", name])
            .args(["--persistence-mode", "sqlite", "--data-dir"])
            .arg(dir)
            // A replaced node's old identity leaves the catalog after 3 s (its queue
            // replicas move then).
            .args(["--replace-voter-after-ms", "3000", "--monitoring-port", "0"])
            .args(["--log-level", "info"]);
        if let Some(p) = peers {
            cmd.args(["--peers", p]);
        }
        // Each run's log, beside the data dirs (kept when the test fails).
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.with_extension("log"))
            .expect("a log file");
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(log)
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One call on any of `urls`, the first that answers (a node may be down for a while).
async fn call_any(urls: &[String], start: usize, name: &str, req: &Value) -> Option<Value> {
    for i in 0..urls.len() {
        let url = &urls[(start + i) % urls.len()];
        let Ok(Ok(c)) = tokio::time::timeout(Duration::from_secs(2), Client::connect(url)).await
        else {
            continue;
        };
        match tokio::time::timeout(Duration::from_secs(30), c.call(name, json!([req]))).await {
            Ok(Ok(v)) => return Some(v),
            Ok(Err(e)) => eprintln!("{name} on {url}: {e}"),
            Err(_) => eprintln!("{name} on {url}: no answer in 30 s"),
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_acknowledged_sends_survive_kills_and_a_replaced_disk() {
    let root: PathBuf = std::env::temp_dir().join(format!("mpreg-qproc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("a test dir");
    let started = Instant::now();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let names = ["q1", "q2", "q3"];
    let mut procs: Vec<Proc> = Vec::new();
    procs.push(Proc::start(names[0], ports[0], &root.join(names[0]), None));
    let seed = procs[0].url.clone();
    for i in 1..3 {
        procs.push(Proc::start(
            names[i],
            ports[i],
            &root.join(names[i]),
            Some(&seed),
        ));
    }
    let urls: Vec<String> = procs.iter().map(|p| p.url.clone()).collect();
    // Created with three replicas once all three nodes are in the catalog.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let made = call_any(
            &urls,
            0,
            "queue_create",
            &json!({"queue_name": "orders", "replicas": 3, "max_size": 50_000}),
        )
        .await;
        if made.as_ref().is_some_and(|v| v["replicas"] == 3) {
            break;
        }
        assert!(Instant::now() < deadline, "no replicated queue: {made:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Producers: each sends its share, retrying a send on the next node until one
    // acknowledges it; an acknowledged number is recorded.
    let acked = Arc::new(parking_lot::Mutex::new(BTreeSet::new()));
    let count = Arc::new(AtomicU64::new(0));
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let (urls, acked, count) = (urls.clone(), acked.clone(), count.clone());
        producers.push(tokio::spawn(async move {
            let mut clients: Vec<Option<Client>> = vec![None, None, None];
            let mut at = p as usize % 3;
            let mut n = p;
            while n < SENDS {
                let req = json!([{"queue_name": "orders", "message_payload": n}]);
                if clients[at].is_none() {
                    clients[at] =
                        tokio::time::timeout(Duration::from_secs(2), Client::connect(&urls[at]))
                            .await
                            .ok()
                            .and_then(Result::ok);
                }
                let sent = match &clients[at] {
                    Some(c) => {
                        tokio::time::timeout(Duration::from_secs(30), c.call("queue_send", req))
                            .await
                            .ok()
                            .and_then(Result::ok)
                    }
                    None => None,
                };
                match sent {
                    Some(v) if v["success"] == true => {
                        acked.lock().insert(n);
                        count.fetch_add(1, Ordering::Relaxed);
                        n += PRODUCERS;
                    }
                    _ => {
                        clients[at] = None;
                        at = (at + 1) % 3;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }));
    }
    // Chaos, by progress: each node killed and restarted from its data dir in turn, then
    // the third one's data dir deleted and the node replaced by an empty one.
    let wait_acked = |at: u64| {
        let count = count.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            while count.load(Ordering::Relaxed) < at {
                assert!(
                    Instant::now() < deadline,
                    "sends stalled at {} before {at}",
                    count.load(Ordering::Relaxed)
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // Each time the node leading the queue's group (the hardest to lose), then restarted.
    for at in [3_000u64, 8_000] {
        wait_acked(at).await;
        let stats = call_any(&urls, 0, "queue_stats", &json!({"queue_name": "orders"})).await;
        let leader = stats
            .as_ref()
            .and_then(|s| s["leader_node"].as_str())
            .unwrap_or_default()
            .to_owned();
        let i = names
            .iter()
            .position(|n| leader.starts_with(&format!("{n}-")))
            .unwrap_or_else(|| panic!("the leader {leader:?} is one of {names:?}: {stats:?}"));
        eprintln!(
            "{:?}: {at} acknowledged, killing {} (the group's leader)",
            started.elapsed(),
            names[i]
        );
        procs[i].kill9();
        // How long sends stalled: a figure to read, not a bound.
        let killed = Instant::now();
        wait_acked(at + 100).await;
        eprintln!(
            "{:?}: sends went on {:?} after killing the leader",
            started.elapsed(),
            killed.elapsed(),
        );
        wait_acked(at + 1_500).await;
        let peers = urls[(i + 1) % 3].clone();
        procs[i] = Proc::start(names[i], ports[i], &root.join(names[i]), Some(&peers));
    }
    wait_acked(13_000).await;
    eprintln!("{:?}: 13000 acknowledged, replacing q3", started.elapsed());
    procs[2].kill9();
    std::fs::remove_dir_all(root.join(names[2])).expect("the data dir goes");
    wait_acked(14_500).await;
    procs[2] = Proc::start(names[2], ports[2], &root.join(names[2]), Some(&urls[0]));
    for p in producers {
        p.await.expect("a producer");
    }
    let acked = acked.lock().clone();
    assert_eq!(acked.len() as u64, SENDS);
    // The replaced node's replica moves to the new node (its old identity left the
    // catalog): the queue's replica nodes are three live nodes again.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = call_any(&urls, 0, "queue_stats", &json!({"queue_name": "orders"})).await;
        let sorted = |v: &Value| {
            let mut ids: Vec<u64> = v
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default();
            ids.sort();
            ids
        };
        let full = stats.as_ref().is_some_and(|s| {
            sorted(&s["voters"]).len() == 3 && sorted(&s["replicas"]) == sorted(&s["voters"])
        });
        if full {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the group did not heal: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every acknowledged message comes out (a send retried after a lost answer may come
    // out twice: at least once).
    let mut got = BTreeSet::new();
    let mut empty = 0;
    let mut at = 0;
    let mut client = Client::connect(&urls[at])
        .await
        .expect("a node to receive from");
    while got.len() < acked.len() && empty < 3 {
        let r = client
            .call(
                "queue_receive",
                json!([{"queue_name": "orders", "max_messages": 10, "wait_seconds": 2}]),
            )
            .await;
        let messages = match r {
            Ok(r) => r["messages"].as_array().cloned().unwrap_or_default(),
            Err(e) => {
                // A node may still be settling: on to the next one.
                eprintln!("queue_receive on {}: {e}", urls[at]);
                at = (at + 1) % urls.len();
                client = Client::connect(&urls[at])
                    .await
                    .expect("a node to receive from");
                continue;
            }
        };
        if messages.is_empty() {
            empty += 1;
            continue;
        }
        let handles: Vec<Value> = messages
            .iter()
            .map(|m| {
                got.insert(m["message_payload"].as_u64().expect("a number"));
                m["receipt_handle"].clone()
            })
            .collect();
        let acked = client
            .call(
                "queue_ack",
                json!([{"queue_name": "orders", "receipt_handles": handles}]),
            )
            .await;
        if let Err(e) = acked {
            eprintln!("queue_ack on {}: {e}", urls[at]);
        }
    }
    let lost: Vec<&u64> = acked.difference(&got).take(10).collect();
    assert!(
        lost.is_empty(),
        "acknowledged and never received: {lost:?} ..."
    );
    drop(procs);
    let _ = std::fs::remove_dir_all(&root);
}
