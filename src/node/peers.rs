//! The rest of the cluster as this node's executor sees it: routing over the local catalog
//! replica and the failure detector, and forwarding steps over the shared peer links.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::control::Control;
use super::data_plane::DataClient;
use crate::control::NodeId;
use crate::env::Env;
use crate::fabric::heartbeat::{self, SharedDetector};
use crate::registry::BoxFuture;
use crate::routing::{self, Liveness, NoRoute, Route, View, Want};
use crate::rpc::{Cluster, ForwardError, Step, StepOutcome};

pub(crate) struct Peers {
    pub(crate) control: Arc<Control>,
    pub(crate) detector: SharedDetector,
    pub(crate) env: Env,
    /// Steps this node has sent to each peer and not yet heard back about: fresher than
    /// the load the peer's last heartbeat reported, so a burst does not herd on one node.
    pub(crate) sent: Arc<Mutex<BTreeMap<NodeId, u64>>>,
    /// Where forwarded steps' latencies are recorded.
    pub(crate) stats: Arc<super::Stats>,
}

fn lock_sent(
    sent: &Mutex<BTreeMap<NodeId, u64>>,
) -> std::sync::MutexGuard<'_, BTreeMap<NodeId, u64>> {
    // Counters only; a poisoned map is still usable.
    sent.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counts one step as outstanding at `node` until dropped.
struct Outstanding {
    sent: Arc<Mutex<BTreeMap<NodeId, u64>>>,
    node: NodeId,
}

impl Outstanding {
    fn new(sent: Arc<Mutex<BTreeMap<NodeId, u64>>>, node: NodeId) -> Outstanding {
        *lock_sent(&sent).entry(node).or_insert(0) += 1;
        Outstanding { sent, node }
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        let mut sent = lock_sent(&self.sent);
        if let Some(n) = sent.get_mut(&self.node) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                sent.remove(&self.node);
            }
        }
    }
}

impl Cluster for Peers {
    fn route(&self, want: Want<'_>, exclude: &[NodeId]) -> Result<Route, NoRoute> {
        let (mut liveness, mut load, latency_us) = {
            let d = heartbeat::lock(&self.detector);
            let (liveness, load) = d.snapshot(self.env.clock.now());
            (liveness, load, d.latencies())
        };
        for (node, n) in lock_sent(&self.sent).iter() {
            *load.entry(*node).or_insert(0) += n;
        }
        // Steps come here only when this node has no matching function, so it is out too.
        for node in exclude.iter().chain([&self.control.id]) {
            liveness.insert(*node, Liveness::Down);
        }
        self.control.catalog.read(|s| {
            let view = View {
                catalog: &s.catalog,
                local: 0, // no node: raft ids are nonzero
                liveness: &liveness,
                load: &load,
                latency_us: &latency_us,
            };
            routing::route(&view, want, &mut || self.env.rng.next_u64())
        })
    }

    fn node_name(&self, node: Option<NodeId>) -> String {
        let id = node.unwrap_or(self.control.id);
        self.control
            .catalog
            .read(|s| super::builtins::node_id_of(&s.catalog, id))
    }

    fn forward(
        &self,
        node: NodeId,
        step: Step,
        wait: Duration,
    ) -> BoxFuture<Result<StepOutcome, ForwardError>> {
        let Some(addr) = self.control.member_addr(node) else {
            return Box::pin(async move {
                Err(ForwardError::NotSent(format!(
                    "node {node:016x} has no address in the catalog"
                )))
            });
        };
        let peer = DataClient::new(self.control.network.fabric().link_to(node, &addr), None);
        let outstanding = Outstanding::new(self.sent.clone(), node);
        let (stats, clock) = (self.stats.clone(), self.env.clock.clone());
        Box::pin(async move {
            let sent = clock.now();
            let outcome = peer.step(step, wait).await;
            drop(outstanding);
            stats
                .forwarded
                .record(clock.now().saturating_duration_since(sent));
            if outcome.is_err() {
                stats
                    .forwards_failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            outcome
        })
    }
}
