//! `mpreg bench --catalog`: catalog writes through Raft. Each of `--connections` writers
//! keeps one write in flight on its own peer connection to the node (which forwards to the
//! leader); a write counts when the leader reports it committed and applied. A writer
//! creates a queue owned by the target node, then deletes it, and so on with a new name:
//! every write changes the catalog, and the catalog stays far below its bound on queues.

use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;

use super::bench_round::{Load, RoundResult};
use crate::client::Client;
use crate::control::raft::PeerClient;
use crate::control::{CatalogCommand, QueueEntry, QueueSpec};
use crate::env::Env;
use crate::fabric::ClusterSecret;

const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The target node's Raft id, from its `cluster_map` entry (`name-<hex id>`).
async fn node_raft_id(
    env: &Env,
    url: &str,
    connect: &crate::client::ConnectOptions,
) -> Result<u64, String> {
    let client = Client::connect_with_options(env, url, connect)
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    let map = client
        .call("cluster_map", serde_json::json!([]))
        .await
        .map_err(|e| format!("cluster_map on {url}: {e}"))?;
    map["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["is_local"] == true))
        .and_then(|n| n["node_id"].as_str())
        .and_then(|id| id.rsplit('-').next())
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .ok_or_else(|| format!("{url} is not in a cluster catalog yet: {map}"))
}

/// Checks that the node's peer endpoint admits this tool (it proves `secret`), so that a
/// missing or wrong secret is one clear error instead of every write failing.
pub async fn probe(env: &Env, url: &str, secret: &ClusterSecret) -> Result<(), String> {
    let mut peer = PeerClient::to_addr(env.clone(), peer_addr(url), secret.clone());
    peer.ping(WRITE_TIMEOUT)
        .await
        .map_err(|e| format!("{url} refused the benchmark's peer connection: {e}"))
}

fn peer_addr(url: &str) -> String {
    crate::ids::NodeUrl::peer(url).map_or_else(|_| url.to_owned(), |u| u.authority())
}

/// One measured round of catalog writes against `url`. `round` keeps queue names unique
/// across rounds.
pub async fn run_round(
    env: &Env,
    url: &str,
    load: &Load,
    round: usize,
    secret: &ClusterSecret,
) -> Result<RoundResult, String> {
    let owner = node_raft_id(env, url, &load.connect).await?;
    let addr = peer_addr(url);
    let start = env.clock.now();
    let measure_from = start + load.warmup;
    let stop_at = measure_from + load.duration;
    let hist = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).map_err(|e| e.to_string())?,
    ));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..load.connections {
        let (env, addr, hist, errors) = (env.clone(), addr.clone(), hist.clone(), errors.clone());
        let secret = secret.clone();
        let prefix = format!("bench-{:x}-{round}-{writer}", env.rng.next_u64() >> 40);
        tasks.spawn(async move {
            let mut peer = PeerClient::to_addr(env.clone(), addr, secret.clone());
            let mut seq = 0u64;
            loop {
                let sent = env.clock.now();
                if sent >= stop_at {
                    return;
                }
                seq += 1;
                let name = format!("{prefix}-{}", seq.div_ceil(2));
                let cmd = if seq.is_multiple_of(2) {
                    CatalogCommand::DeleteQueue { name }
                } else {
                    CatalogCommand::CreateQueue(QueueEntry {
                        replicas: Vec::new(),
                        name,
                        owner: crate::ids::NodeId(owner),
                        incarnation: 1,
                        created_ms: 0,
                        spec: QueueSpec {
                            visibility_timeout_ms: 30_000,
                            max_receives: 0,
                            dedup_window_ms: 0,
                            ..QueueSpec::default()
                        },
                    })
                };
                let ok = matches!(
                    peer.write(cmd, WRITE_TIMEOUT).await,
                    Ok(Ok(ref resp)) if resp.data.is_ok()
                );
                let done = env.clock.now();
                if sent >= measure_from && done <= stop_at {
                    if ok {
                        let us = done.duration_since(sent).as_micros().max(1) as u64;
                        let _ = hist.lock().record(us);
                    } else {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                if !ok {
                    // A fresh connection for the next write (this one may be broken).
                    peer = PeerClient::to_addr(env.clone(), peer.addr().to_owned(), secret.clone());
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let h = hist.lock();
    Ok(RoundResult::new(
        &h,
        errors.load(std::sync::atomic::Ordering::Relaxed),
        load.duration,
    ))
}
