//! A started node, as its owner holds it: its addresses, its replica, registering at run
//! time, and stopping.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::watch;

use super::NodeError;
use crate::registry::Function;
use crate::view::NodeView;

/// A started node. Dropping it does not stop it; call [`RunningNode::shutdown`].
pub struct RunningNode {
    /// The node's parts: its replica, functions and counters.
    pub(super) view: Arc<NodeView>,
    /// What this node saw of the other build, when it speaks the next one.
    pub(super) upgrade: Option<Arc<crate::data::next::UpgradeStats>>,
    pub(super) local_addr: SocketAddr,
    pub(super) url: String,
    /// The admin HTTP server's URL, when it serves one.
    pub(super) monitoring_url: Option<String>,
    pub(super) node_id: String,
    /// Becomes true once this node and its functions are in the cluster catalog.
    pub(super) registered: watch::Receiver<bool>,
    pub(super) shutdown: Arc<watch::Sender<bool>>,
    pub(super) task: tokio::task::JoinHandle<()>,
}

/// Asks a node to drain and stop, from anywhere (a signal handler, a test).
#[derive(Clone)]
pub struct ShutdownHandle(pub(super) Arc<watch::Sender<bool>>);

impl ShutdownHandle {
    pub fn shutdown(&self) {
        let _ = self.0.send(true);
    }
}

impl RunningNode {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the DNS gateway listens (UDP, TCP), when it is served.
    pub fn dns_addrs(&self) -> Option<(SocketAddr, SocketAddr)> {
        self.view.dns.as_ref().and_then(|g| *g.addrs.lock())
    }

    /// `ws://host:port` of this node.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The admin HTTP server's URL (`http://host:port`), when `monitoring_enabled`.
    pub fn monitoring_url(&self) -> Option<&str> {
        self.monitoring_url.as_deref()
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// This node's id in the control plane (kept across restarts with SQLite).
    pub fn raft_id(&self) -> u64 {
        self.view.control.id.0
    }

    /// Peer connections this node has accepted since it started (see [`Stats`]).
    pub fn peer_links_accepted(&self) -> u64 {
        self.view.stats.peer_links_accepted.load(Ordering::Relaxed)
    }

    /// Peer connections open now, dialled or accepted: one per peer once they settle
    /// (two nodes that dial each other at once keep one of the two).
    /// What this node saw of the other build, when it speaks the next one
    /// ([`NodeBuilder::speak_next_protocol`]): heartbeats with and without the next build's
    /// field, `Gossip` answered, answered `Unsupported` by peers, served by peers.
    #[doc(hidden)]
    pub fn upgrade_stats(&self) -> [u64; 5] {
        self.upgrade.as_ref().map_or([0; 5], |u| u.read())
    }

    pub fn peer_connections(&self) -> usize {
        self.view.fabric.open_connections()
    }

    /// Live control-plane metrics: role, term, leader, membership, applied index.
    pub fn raft_metrics(&self) -> watch::Receiver<crate::control::raft::RaftMetrics> {
        self.view.control.raft.metrics()
    }

    /// This node's replica of the catalog.
    pub fn catalog(&self) -> crate::control::raft::CatalogStateMachine {
        self.view.control.catalog.clone()
    }

    /// Registers `f` on the running node and, once the node is in the cluster catalog,
    /// commits it there (so every node sees it). Calls on this node find it at once.
    pub async fn register(&self, f: Function) -> Result<(), NodeError> {
        let entries = self.view.functions.add_checked(vec![f])?;
        Ok(self.view.functions.publish(entries).await?)
    }

    /// Removes `name` (one `version`, or all) from the running node and from the catalog;
    /// returns how many versions were removed here.
    pub async fn unregister(
        &self,
        name: &str,
        version: Option<&semver::Version>,
    ) -> Result<usize, NodeError> {
        let which = vec![(name.to_owned(), version.cloned())];
        let removed = self.view.functions.remove(&which);
        self.view.functions.unpublish(which).await?;
        Ok(removed)
    }

    /// Waits until this node and its functions are in the cluster catalog (joining and
    /// registering are Raft commits that finish after `start` returns). Returns `false` if
    /// the node stopped first.
    pub async fn registered(&self) -> bool {
        let mut r = self.registered.clone();
        r.wait_for(|done| *done).await.is_ok()
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown.clone())
    }

    /// Stops accepting, lets in-flight requests finish (up to `drain_timeout_ms`), closes
    /// every connection, and returns when the node is gone.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        self.wait().await;
    }

    /// Waits until the node has stopped (after a shutdown asked for elsewhere).
    pub async fn wait(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "node task ended abnormally");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    /// Nothing keeps a node once its tasks are gone: the built-ins hold the node's view and
    /// the view holds them, a cycle the serving side breaks as it goes. (With the cycle the
    /// simulator kept every node it booted, about 2 MB a run.)
    #[test]
    fn a_stopped_node_is_freed_with_its_runtime() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let (view, freed_in_runtime) = rt.block_on(async {
            let node = crate::Node::builder(Settings {
                port: 0,
                ..Settings::default()
            })
            .start()
            .await
            .expect("the node starts");
            let view = Arc::downgrade(&node.view);
            node.shutdown().await;
            // In a runtime that goes on, too: the node's tasks end with it.
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
            while view.upgrade().is_some() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            let freed_in_runtime = view.upgrade().is_none();
            (view, freed_in_runtime)
        });
        drop(rt);
        assert!(
            view.upgrade().is_none(),
            "the node's view outlived its runtime"
        );
        assert!(
            freed_in_runtime,
            "a task kept the node's view 5 s after it stopped"
        );
    }
}
