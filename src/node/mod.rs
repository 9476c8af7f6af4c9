//! The node: where the planes and systems are put together ([`NodeBuilder::start`], in
//! `start.rs`), and the client connection path (`conn`, `admission`, `worker`), served until
//! shutdown and drained (`serve`).
//!
//! What lives elsewhere: the Raft replica in `control::replica`, the data plane between
//! nodes in `data`, pub/sub's fan-out in `pubsub::service`, the built-in functions in
//! `builtins`, the admin HTTP server in `admin`.

mod admission;
mod conn;
mod running;
mod serve;
mod shared;
mod start;
mod worker;

use crate::config::Settings;
use crate::env::Env;
use crate::registry::{Function, RegisterError, Registry};

pub use running::{RunningNode, ShutdownHandle};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("invalid settings: {0}")]
    Settings(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Register(#[from] RegisterError),
    #[error("cannot start the control plane: {0}")]
    Control(String),
    /// The cluster catalog refused a registration (the same on every replica).
    #[error("the cluster catalog refused it: {0}")]
    Refused(crate::control::CatalogError),
    #[error(transparent)]
    Secret(#[from] crate::fabric::SecretError),
    #[error("token settings: {0}")]
    Auth(#[from] crate::auth::AuthError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("dns settings: {0}")]
    Dns(#[from] crate::dns::answer::ZoneError),
    #[error(transparent)]
    Queues(#[from] crate::queue::store::StoreError),
    #[error("cannot open the cache: {0}")]
    Cache(#[from] crate::cache::service::OpenError),
}

impl From<crate::data::functions::PublishError> for NodeError {
    fn from(e: crate::data::functions::PublishError) -> NodeError {
        use crate::data::functions::PublishError;
        match e {
            PublishError::Register(e) => NodeError::Register(e),
            PublishError::Refused(why) => NodeError::Refused(why),
            PublishError::Unavailable(why) => NodeError::Control(why),
        }
    }
}

/// Entry point: `Node::builder(settings)`.
pub struct Node;

impl Node {
    pub fn builder(settings: Settings) -> NodeBuilder {
        NodeBuilder {
            settings,
            env: None,
            disk: None,
            secret: None,
            next_protocol: false,
            registry: Registry::default(),
            queue_disk: None,
        }
    }
}

/// Collects the environment and user functions, then [`NodeBuilder::start`]s the node.
pub struct NodeBuilder {
    settings: Settings,
    env: Option<Env>,
    disk: Option<crate::control::raft::LogStore>,
    /// Set by [`NodeBuilder::cluster_secret`]; else read from `cluster_secret_file`.
    secret: Option<crate::fabric::ClusterSecret>,
    /// Behave as the next build would on the peer links (tests of rolling upgrades).
    next_protocol: bool,
    registry: Registry,
    /// Set by [`NodeBuilder::queue_disk`]; else the persistence mode decides.
    queue_disk: Option<crate::queue::store::MemoryDisk>,
}

impl NodeBuilder {
    /// The environment to run in; production (`Env::production()`) by default.
    pub fn env(mut self, env: Env) -> NodeBuilder {
        self.env = Some(env);
        self
    }

    /// Registers a user function. The node's own `resources` are added to the function's.
    /// Keeps the Raft log on `disk` instead of what the settings say. The simulator uses
    /// this to crash a node and restart it on the same (in-memory) disk.
    pub fn memory_disk(mut self, disk: crate::control::raft::LogStore) -> NodeBuilder {
        self.disk = Some(disk);
        self
    }

    /// Keeps the queues' messages on `disk` (memory that outlives the node) instead of what
    /// the settings say: the simulator and tests restart a queue's owner on it.
    pub fn queue_disk(mut self, disk: crate::queue::store::MemoryDisk) -> NodeBuilder {
        self.queue_disk = Some(disk);
        self
    }

    /// The cluster secret peers prove to each other, instead of reading the settings'
    /// `cluster_secret_file` (embedded nodes, the simulator).
    pub fn cluster_secret(mut self, secret: crate::fabric::ClusterSecret) -> NodeBuilder {
        self.secret = Some(secret);
        self
    }

    /// Speaks to peers as the next build would (a field and a message kind this build does
    /// not know; `data::next`), so that one test binary can run a cluster of two
    /// builds.
    #[doc(hidden)]
    #[cfg(feature = "next-build")]
    pub fn speak_next_protocol(mut self) -> NodeBuilder {
        self.next_protocol = true;
        self
    }

    pub fn register(&mut self, f: Function) -> Result<&mut NodeBuilder, RegisterError> {
        let f = f.add_resources(self.settings.resources.iter().cloned());
        self.registry.register(f)?;
        Ok(self)
    }

    /// [`NodeBuilder::register`] for chaining.
    pub fn function(mut self, f: Function) -> Result<NodeBuilder, RegisterError> {
        self.register(f)?;
        Ok(self)
    }
}
