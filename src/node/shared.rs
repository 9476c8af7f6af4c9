//! What every client connection of a running node shares.

use std::sync::Arc;

use crate::config::Settings;
use crate::rpc::ExecLimits;
use crate::view::NodeView;

/// What every connection of a running node shares: the node itself ([`NodeView`]) and what
/// only the client path needs.
pub(crate) struct Shared {
    /// The node's parts (what built-ins and the admin surfaces read too).
    pub(crate) view: Arc<NodeView>,
    pub(crate) settings: Settings,
    /// Where publishes go beyond this node.
    pub(crate) fanout: Arc<crate::pubsub::service::Fanout>,
    pub(crate) limits: ExecLimits,
    /// What serves the data plane: kept alive here, by the serving task, since the fabric
    /// holds it weakly (the node serves its peers until it stops, whoever holds the
    /// `RunningNode`).
    #[allow(dead_code)]
    pub(crate) data_plane: Arc<crate::data::plane::DataPlane>,
    /// Checks clients' tokens (`None`: the node does not require them).
    pub(crate) tokens: Option<Arc<crate::auth::TokenVerifier>>,
    /// The port's TLS (`None`: plain `ws://`).
    pub(crate) tls: Option<crate::tls::NodeTls>,
    /// Refused upgrades (bad tokens, failed TLS handshakes), logged at most once per
    /// interval.
    pub(crate) refusals: crate::fabric::handshake::RefusalLog,
}

/// The serving side is gone once the last task holding it ends (the node stopped, or its
/// runtime was dropped: a crash in the simulator): the node's functions go with it, which
/// breaks the cycle through its built-ins (`Functions::clear`).
impl Drop for Shared {
    fn drop(&mut self) {
        self.view.functions.clear();
    }
}
