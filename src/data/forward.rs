//! The rest of the cluster as this node's executor sees it: routing over the local catalog
//! replica and the failure detector, and forwarding steps over the shared peer links.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use crate::control::NodeId;
use crate::control::replica::Control;
use crate::data::client::DataClient;
use crate::env::Env;
use crate::fabric::heartbeat::SharedDetector;
use crate::registry::BoxFuture;
use crate::registry::Query;
use crate::routing::{self, Liveness, NoRoute, Route, View};
use crate::rpc::{Cluster, ForwardError, Step, StepOutcome};

pub(crate) struct Peers {
    pub(crate) control: Arc<Control>,
    pub(crate) fabric: crate::fabric::Fabric,
    pub(crate) detector: SharedDetector,
    pub(crate) env: Env,
    /// Steps this node has sent to each peer and not yet heard back about: fresher than
    /// the load the peer's last heartbeat reported, so a burst does not herd on one node.
    pub(crate) sent: Arc<Mutex<BTreeMap<NodeId, u64>>>,
    /// Where forwarded steps' latencies are recorded.
    pub(crate) stats: Arc<crate::data::stats::Stats>,
}

/// Counts one step as outstanding at `node` until dropped.
struct Outstanding {
    sent: Arc<Mutex<BTreeMap<NodeId, u64>>>,
    node: NodeId,
}

impl Outstanding {
    fn new(sent: Arc<Mutex<BTreeMap<NodeId, u64>>>, node: NodeId) -> Outstanding {
        *sent.lock().entry(node).or_insert(0) += 1;
        Outstanding { sent, node }
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        let mut sent = self.sent.lock();
        if let Some(n) = sent.get_mut(&self.node) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                sent.remove(&self.node);
            }
        }
    }
}

impl Cluster for Peers {
    fn route(&self, want: Query<'_>, exclude: &[NodeId]) -> Result<Route, NoRoute> {
        let (mut liveness, mut load, latency_us) = {
            let d = self.detector.lock();
            let (liveness, load) = d.snapshot(self.env.clock.now());
            (liveness, load, d.latencies())
        };
        for (node, n) in self.sent.lock().iter() {
            *load.entry(*node).or_insert(0) += n;
        }
        // Steps come here only when this node has no matching function, so it is out too.
        for node in exclude.iter().chain([&self.control.id]) {
            liveness.insert(*node, Liveness::Down);
        }
        self.control.catalog.read(|s| {
            let view = View {
                catalog: &s.catalog,
                local: NodeId(0), // no node: raft ids are nonzero
                liveness: &liveness,
                load: &load,
                latency_us: &latency_us,
            };
            routing::route(&view, want, &mut || self.env.rng.next_u64())
        })
    }

    fn node_name(&self, node: Option<NodeId>) -> String {
        let id = node.unwrap_or(self.control.id);
        self.control.catalog.read(|s| s.catalog.node_id_of(id))
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
                    "node {node} has no address in the catalog"
                )))
            });
        };
        let peer = DataClient::new(self.fabric.link_to(node.0, &addr));
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
