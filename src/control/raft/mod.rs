//! openraft wiring for the catalog: the type configuration, a runtime whose randomness is
//! seeded (so simulated elections replay exactly), storage, and the control plane's messages
//! on the peer fabric (`crate::fabric`).
//!
//! openraft types stay inside this module so that a later port to openraft 0.10 stays local.

mod applied_log;
mod format_v1;
mod format_v3;
mod format_v4;
mod format_v6;
mod membership;
mod network;
mod propose;
mod runtime;
mod service;
mod snapshot_buf;
mod snapshot_decode;
mod sqlite_store;
mod store;
mod store_stats;
mod stored_state;
mod supervisor;
mod vote_guard;

pub use applied_log::{Applied, AppliedLog, AppliedRecorder, AppliedRun};
pub(crate) use membership::read_index;
pub use membership::{MembershipPolicy, leave as leave_here};
pub use network::{JoinError, MembershipError, NetworkFactory, PeerClient, RaftReply, RaftRequest};
pub use propose::{Batching, Proposer};
pub use runtime::{SeededRuntime, seed_raft_rng, seed_raft_rng_from};
pub use service::{PeerService, answer};
pub use snapshot_buf::{SnapshotBuf, SnapshotState};
pub use sqlite_store::SqliteLogStore;
pub use store::{CatalogStateMachine, DEFAULT_MAX_SNAPSHOT_BYTES, Disk, LogStore};
pub use store_stats::StoreStats;
pub use stored_state::{StoredSnapshot, StoredState, snapshot_meta};
pub use supervisor::supervise;
pub(crate) use vote_guard::guarded_vote;

use super::catalog::CatalogCommand;
pub use super::catalog::CatalogResponse;

openraft::declare_raft_types!(
    /// mpreg's Raft: log entries are catalog commands; nodes are reached at `host:port`.
    pub TypeConfig:
        D = CatalogCommand,
        R = CatalogResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = SnapshotBuf,
        AsyncRuntime = SeededRuntime,
);

/// The Raft handle of one node.
pub type Raft = openraft::Raft<TypeConfig>;

/// What a replica reports about itself.
pub type RaftMetrics = openraft::RaftMetrics<u64, openraft::BasicNode>;
