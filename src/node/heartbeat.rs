//! The data plane's heartbeats: every 250 ms the node sends its load to every other member
//! of the catalog over the peer links and records each answer (with the peer's load) in the
//! failure detector, which `cluster_map` reports and routing (issue 4) reads.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::watch;

use super::Stats;
use super::control::Control;
use super::data_plane::DataClient;
use super::next::UpgradeStats;
use crate::control::NodeId;
use crate::env::Env;
use crate::routing::liveness::Detector;

const EVERY: Duration = Duration::from_millis(250);
/// A round waits for its slowest answer; with this deadline a dead peer cannot stretch the
/// rounds past 500 ms, so live peers are heard well within the 750 ms suspicion threshold.
const TIMEOUT: Duration = Duration::from_millis(250);
/// Consecutive unanswered heartbeats after which the link to that peer is dropped and
/// reopened: one lost in a partition never recovers (nothing arrives on it again), while a
/// single slow answer on a busy link must not cut the forwarded steps riding on it.
const MISSES_BEFORE_RESET: u32 = 4;

/// The detector, shared by the heartbeat loop and its readers.
pub(crate) type SharedDetector = Arc<Mutex<Detector>>;

pub(crate) fn lock(d: &SharedDetector) -> std::sync::MutexGuard<'_, Detector> {
    // Every update is whole; a poisoned detector is still consistent.
    d.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs until shutdown.
pub(crate) async fn run(
    env: Env,
    control: Arc<Control>,
    stats: Arc<Stats>,
    detector: SharedDetector,
    upgrade: Option<Arc<UpgradeStats>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut peers: BTreeMap<NodeId, DataClient> = BTreeMap::new();
    let mut misses: BTreeMap<NodeId, u32> = BTreeMap::new();
    loop {
        tokio::select! {
            biased;
            () = super::stopping(&mut shutdown) => return,
            () = tokio::time::sleep(EVERY) => {}
        }
        // The other members and where to reach them, from this node's replica.
        let members: BTreeMap<NodeId, String> = control.catalog.read(|s| {
            s.catalog
                .members()
                .filter(|m| m.id != control.id)
                .filter_map(|m| {
                    let url = m.advertised_urls.first()?;
                    Some((m.id, url.trim_start_matches("ws://").to_owned()))
                })
                .collect()
        });
        let now = env.clock.now();
        {
            let mut d = lock(&detector);
            for id in peers.keys().filter(|id| !members.contains_key(id)) {
                d.forget(*id);
            }
            for id in members.keys() {
                d.watch(*id, now);
            }
        }
        peers.retain(|id, p| members.get(id).is_some_and(|a| a == p.addr()));
        for (id, addr) in &members {
            peers.entry(*id).or_insert_with(|| {
                DataClient::new(control.network.fabric().link_to(*id, addr), upgrade.clone())
            });
        }
        let load = stats.load(env.clock.now());
        let answers = join_all(
            peers
                .iter()
                .map(|(id, peer)| async move { (*id, peer.heartbeat(load, TIMEOUT).await) }),
        )
        .await;
        let at = env.clock.now();
        misses.retain(|id, _| peers.contains_key(id));
        let mut silent = Vec::new();
        {
            let mut d = lock(&detector);
            for (id, answer) in answers {
                let missed = misses.entry(id).or_insert(0);
                match answer {
                    Ok(load) => {
                        *missed = 0;
                        d.heard(id, at, load);
                    }
                    Err(_) => {
                        *missed += 1;
                        if (*missed).is_multiple_of(MISSES_BEFORE_RESET) {
                            silent.push(id);
                        }
                    }
                }
            }
        }
        for id in silent {
            if let Some(peer) = peers.get(&id) {
                peer.reset();
            }
        }
    }
}
