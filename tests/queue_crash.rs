//! A queue's owner killed with SIGKILL, again and again, while producers send and
//! consumers drain: every send the node answered is received, none is lost; the
//! duplicates (deliveries whose ack died with the node) are counted and reported.
// Real processes in real time, driven from outside any node (ports, wall-clock deadlines).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::pki::temp_dir;
use common::process::NodeProcess;
use mpreg::Client;
use parking_lot::Mutex;
use serde_json::json;

/// Acknowledged sends to reach (the 20k).
const SENDS: u64 = 20_000;
/// Owner kills while they are sent.
const KILLS: u64 = 4;
const PRODUCERS: u64 = 4;
const CONSUMERS: usize = 2;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A client of `url`, retried until `deadline` (the node may be down or starting).
async fn connect(url: &str, deadline: Instant) -> Option<Client> {
    while Instant::now() < deadline {
        if let Ok(c) = Client::connect(url).await {
            return Some(c);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

struct Shared {
    url: String,
    /// Payload numbers the node answered a send of.
    acked: Mutex<BTreeSet<u64>>,
    acked_count: AtomicU64,
    /// Deliveries by payload number (more than one: a duplicate).
    received: Mutex<BTreeMap<u64, u32>>,
    stop_producing: AtomicBool,
    stop_consuming: AtomicBool,
    deadline: Instant,
}

/// Sends numbers `p, p + PRODUCERS, …` until told to stop; a number is sent until the
/// node answers it, each time with the number as its dedup id (so a send whose answer was
/// lost with the node is not stored twice).
async fn produce(s: Arc<Shared>, p: u64) {
    let mut client = None;
    let mut n = p;
    while !s.stop_producing.load(Ordering::Relaxed) && Instant::now() < s.deadline {
        let Some(c) = client.take().or(connect(&s.url, s.deadline).await) else {
            return;
        };
        let sent = c
            .queue("crash")
            .send(json!({ "n": n }))
            .dedup_id(format!("n-{n}"))
            .await;
        match sent {
            Ok(_) => {
                s.acked.lock().insert(n);
                s.acked_count.fetch_add(1, Ordering::Relaxed);
                n += PRODUCERS;
                client = Some(c);
            }
            // Not answered (the node died, or is starting): send it again.
            Err(_) if c.is_closed() => {}
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                client = Some(c);
            }
        }
    }
}

/// Receives and acks until told to stop and the queue is empty.
async fn consume(s: Arc<Shared>) {
    let mut client = None;
    while Instant::now() < s.deadline {
        let Some(c) = client.take().or(connect(&s.url, s.deadline).await) else {
            return;
        };
        let q = c.queue("crash");
        match q.receive().max(10).wait(Duration::from_millis(500)).await {
            Ok(got) => {
                if got.is_empty() && s.stop_consuming.load(Ordering::Relaxed) {
                    return;
                }
                for d in got {
                    let n = d.payload["n"].as_u64().expect("a number");
                    *s.received.lock().entry(n).or_default() += 1;
                    // A lost ack redelivers: counted as a duplicate, never as a loss.
                    let _ = d.ack().await;
                }
                client = Some(c);
            }
            Err(_) if c.is_closed() => {}
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                client = Some(c);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_sends_survive_the_owner_killed_repeatedly() {
    let dir = temp_dir("queue-crash");
    let port = free_port();
    let mut node = NodeProcess::start_sqlite(port, &dir, &["--no-monitoring"]);
    let started = Instant::now();
    let s = Arc::new(Shared {
        url: node.url.clone(),
        acked: Mutex::default(),
        acked_count: AtomicU64::new(0),
        received: Mutex::default(),
        stop_producing: AtomicBool::new(false),
        stop_consuming: AtomicBool::new(false),
        deadline: started + Duration::from_secs(240),
    });
    // A short visibility timeout: deliveries in flight at a kill come back soon after.
    let admin = connect(&s.url, s.deadline).await.expect("the node answers");
    loop {
        let created = admin
            .queue("crash")
            .create()
            .visibility_timeout(Duration::from_secs(2))
            .max_receives(0)
            .dedup_window(Duration::from_secs(600))
            .max_size(100_000)
            .await;
        match created {
            Ok(_) => break,
            // The node elects itself and registers a moment after it listens.
            Err(e) => assert!(Instant::now() < s.deadline, "queue_create: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut tasks = Vec::new();
    for p in 0..PRODUCERS {
        tasks.push(tokio::spawn(produce(s.clone(), p)));
    }
    let mut consumers = Vec::new();
    for _ in 0..CONSUMERS {
        consumers.push(tokio::spawn(consume(s.clone())));
    }
    let mut every = tokio::time::interval(Duration::from_millis(10));
    for k in 1..=KILLS {
        let at = SENDS * k / (KILLS + 1);
        while s.acked_count.load(Ordering::Relaxed) < at {
            assert!(
                Instant::now() < s.deadline,
                "{at} sends not answered in time"
            );
            every.tick().await;
        }
        node.kill9();
        eprintln!(
            "killed the owner after {at} answered sends ({:?})",
            started.elapsed()
        );
        node = NodeProcess::start_sqlite(port, &dir, &["--no-monitoring"]);
    }
    while s.acked_count.load(Ordering::Relaxed) < SENDS {
        assert!(
            Instant::now() < s.deadline,
            "{SENDS} sends not answered in time"
        );
        every.tick().await;
    }
    s.stop_producing.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    s.stop_consuming.store(true, Ordering::Relaxed);
    for c in consumers {
        c.await.unwrap();
    }
    // In-flight deliveries whose acks died come back after their visibility timeout: the
    // consumers stop at the first empty receive, so drain what is left here.
    let client = connect(&s.url, s.deadline).await.expect("the node answers");
    let q = client.queue("crash");
    loop {
        let stats = q.stats().await.expect("stats");
        if stats.depth == 0 && stats.in_flight == 0 {
            break;
        }
        assert!(Instant::now() < s.deadline, "not drained: {stats:?}");
        for d in q
            .receive()
            .max(10)
            .wait(Duration::from_secs(1))
            .await
            .expect("receive")
        {
            let n = d.payload["n"].as_u64().expect("a number");
            *s.received.lock().entry(n).or_default() += 1;
            d.ack().await.expect("ack");
        }
    }
    let acked = s.acked.lock().clone();
    let received = s.received.lock().clone();
    let lost: Vec<u64> = acked
        .iter()
        .filter(|n| !received.contains_key(n))
        .copied()
        .collect();
    let duplicates: u32 = received.values().map(|c| c - 1).sum();
    let unanswered_but_stored = received.keys().filter(|n| !acked.contains(n)).count();
    eprintln!(
        "{} answered sends, {KILLS} SIGKILLs of the owner, {} received once or more, {duplicates} \
         duplicate deliveries, {unanswered_but_stored} stored though their answer was lost, \
         {:?} in all",
        acked.len(),
        received.len(),
        started.elapsed()
    );
    assert!(
        lost.is_empty(),
        "{} answered sends were lost: {:?}…",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    assert!(acked.len() as u64 >= SENDS);
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}
