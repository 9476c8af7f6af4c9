//! What the built-ins and the admin surfaces read of a running node: its identity, and the
//! parts they report on (the catalog replica, the functions served, the counters, the
//! client budget, pub/sub). One struct, built once every part exists, shared by `Arc`;
//! the client path (`node`) holds it too, beside what only connections need.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::control::replica::Control;
use crate::data::client_budget::ClientBudget;
use crate::data::forward::Peers;
use crate::data::functions::Functions;
use crate::data::stats::Stats;
use crate::env::Env;
use crate::fabric::heartbeat::SharedDetector;
use crate::pubsub::exchange::Exchange;
use crate::pubsub::interest::RemoteInterest;

/// The systems this node serves, as `capabilities` and the status page name them.
pub(crate) const SERVED_SYSTEMS: [&str; 4] = ["cache", "pubsub", "queue", "rpc"];

pub(crate) struct NodeView {
    pub(crate) node_id: String,
    pub(crate) name: String,
    pub(crate) cluster_id: String,
    pub(crate) url: String,
    pub(crate) resources: BTreeSet<String>,
    pub(crate) env: Env,
    pub(crate) stats: Arc<Stats>,
    pub(crate) control: Arc<Control>,
    /// The node's peer links, which every plane shares (one connection per peer).
    pub(crate) fabric: crate::fabric::Fabric,
    /// What heartbeats say of the other members.
    pub(crate) detector: SharedDetector,
    /// The bytes client connections hold.
    pub(crate) clients: Arc<ClientBudget>,
    /// The functions served here, built-ins included.
    pub(crate) functions: Arc<Functions>,
    /// Where steps and `rpc_describe`'s questions to other nodes go.
    pub(crate) peers: Arc<Peers>,
    /// The role discovery calls need, which `rpc_describe`'s questions to other nodes
    /// carry (they come from a caller who held it here).
    pub(crate) introspection_role: Option<String>,
    /// This node's topic subscriptions.
    pub(crate) pubsub: Arc<Exchange>,
    /// What the other members' clients subscribe to.
    pub(crate) remote_interest: Arc<RemoteInterest>,
    /// The DNS gateway, when it is served.
    pub(crate) dns: Option<Arc<crate::dns::service::Gateway>>,
    /// The queues: this node's, and the way to everyone else's.
    pub(crate) queues: Arc<crate::queue::service::Queues>,
    /// The role the queue built-ins need (tokens required and `queue_role` set).
    pub(crate) queue_role: Option<String>,
    /// The cache, unless `enable_default_cache` is off.
    pub(crate) cache: Option<Arc<crate::cache::CacheService>>,
    /// The role `cache-request` messages need (tokens required and `cache_role` set).
    pub(crate) cache_role: Option<String>,
    /// Every discovery denial here (its calls and its DNS gateway), the newest 500.
    pub(crate) access_audit:
        Arc<crate::control::policy::AuditLog<crate::control::policy::AccessDenial>>,
    /// The namespace policy validations and applications asked of this node.
    pub(crate) policy_audit:
        Arc<crate::control::policy::AuditLog<crate::control::policy::PolicyChange>>,
}

impl NodeView {
    /// Names of every function served here, built-ins included, sorted.
    pub(crate) fn function_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .functions
            .current()
            .specs()
            .map(|s| s.name.clone())
            .collect();
        names.dedup(); // specs come sorted by name
        names
    }
}
