//! Heartbeats: every 250 ms a node sends its load to every other member over the peer
//! links and records each answer (with the peer's load) in the failure detector
//! (`liveness`), which `cluster_map` reports and routing reads. What a heartbeat says on
//! the wire is a plane's business ([`Beat`]: the data plane's, `data::plane`); who
//! the members are is the caller's ([`Members`]: the catalog's).

use crate::ids::NodeId;
use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use parking_lot::Mutex;
use tokio::sync::watch;

use super::endpoint::until_true;
use super::link::Link;
use super::links::Fabric;
use super::liveness::{Detector, Load};
use super::plane::BoxFuture;
use crate::env::Env;

const EVERY: Duration = Duration::from_millis(250);
/// A round waits for its slowest answer; with this deadline a dead peer cannot stretch the
/// rounds past 500 ms, so live peers are heard well within the 750 ms suspicion threshold.
const TIMEOUT: Duration = Duration::from_millis(250);
/// Consecutive unanswered heartbeats after which the link to that peer is dropped and
/// reopened: one lost in a partition never recovers (nothing arrives on it again), while a
/// single slow answer on a busy link must not cut the forwarded steps riding on it.
const MISSES_BEFORE_RESET: u32 = 4;

/// The detector, shared by the heartbeat loop and its readers.
pub type SharedDetector = Arc<Mutex<Detector>>;

/// One heartbeat on `link`: sends `load`, returns the peer's (patient: a missed deadline
/// leaves the link up).
pub trait Beat: Send + Sync + 'static {
    fn beat(&self, link: Link, load: Load, ttl: Duration) -> BoxFuture<io::Result<Load>>;
}

/// Who to send heartbeats to: the other members, by id, with their `host:port`.
pub type Members = Box<dyn Fn() -> BTreeMap<NodeId, String> + Send + Sync>;

/// This node's load now.
pub type LoadNow = Box<dyn Fn() -> Load + Send + Sync>;

/// What the heartbeat loop works with.
pub struct Heartbeats {
    pub env: Env,
    pub fabric: Fabric,
    pub members: Members,
    pub load: LoadNow,
    pub beat: Arc<dyn Beat>,
    pub detector: SharedDetector,
}

/// Runs until `shutdown` says true.
pub async fn run(h: Heartbeats, mut shutdown: watch::Receiver<bool>) {
    let mut peers: BTreeMap<NodeId, Link> = BTreeMap::new();
    let mut misses: BTreeMap<NodeId, u32> = BTreeMap::new();
    let stops = until_true(&mut shutdown);
    tokio::pin!(stops);
    loop {
        tokio::select! {
            biased;
            () = &mut stops => return,
            () = tokio::time::sleep(EVERY) => {}
        }
        let members = (h.members)();
        track(&h, &mut peers, &members);
        let load = (h.load)();
        let clock = h.env.clock.clone();
        let answers = join_all(peers.iter().map(|(id, link)| {
            let beat = h.beat.beat(link.clone(), load, TIMEOUT);
            let clock = clock.clone();
            async move {
                let sent = clock.now();
                let answer = beat.await;
                (*id, answer, clock.now().saturating_duration_since(sent))
            }
        }))
        .await;
        let at = h.env.clock.now();
        misses.retain(|id, _| peers.contains_key(id));
        let mut silent = Vec::new();
        {
            let mut d = h.detector.lock();
            for (id, answer, rtt) in answers {
                let missed = misses.entry(id).or_insert(0);
                match answer {
                    Ok(load) => {
                        *missed = 0;
                        d.heard(id, at, load);
                        d.round_trip(id, rtt);
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
            if let Some(link) = peers.get(&id) {
                link.reset();
            }
        }
    }
}

/// Keeps the detector and the links in step with the membership: members that left are
/// forgotten, new ones watched, a member at a new address gets a new link.
fn track(h: &Heartbeats, peers: &mut BTreeMap<NodeId, Link>, members: &BTreeMap<NodeId, String>) {
    let now = h.env.clock.now();
    {
        let mut d = h.detector.lock();
        for id in peers.keys().filter(|id| !members.contains_key(id)) {
            d.forget(*id);
        }
        for id in members.keys() {
            d.watch(*id, now);
        }
    }
    peers.retain(|id, link| members.get(id).is_some_and(|a| a == link.addr()));
    for (id, addr) in members {
        peers
            .entry(*id)
            .or_insert_with(|| h.fabric.link_to(id.0, addr));
    }
}
