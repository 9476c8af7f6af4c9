//! Queues as the catalog holds them: a queue's name, the node that owns its messages, and
//! the settings its owner's engine runs (`crate::queue` converts them). The catalog is the
//! placement: every node reads it to forward a queue call to the owner.

use serde::{Deserialize, Serialize};

use super::catalog::NodeId;

/// How a queue orders its ready messages (the original's `queue_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum QueueKind {
    #[default]
    Fifo,
    Priority,
    Delay,
}

impl QueueKind {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueKind::Fifo => "fifo",
            QueueKind::Priority => "priority",
            QueueKind::Delay => "delay",
        }
    }
}

/// A queue's settings, in ms and counts (the original's `QueueConfiguration`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSpec {
    pub queue_type: QueueKind,
    /// Most live messages (pending and in flight); a full queue refuses sends.
    pub max_size: u64,
    /// Most payload bytes of live messages.
    pub max_bytes: u64,
    pub visibility_timeout_ms: u64,
    /// Deliveries after which a message that comes back is dead-lettered (0: never).
    pub max_receives: u32,
    /// How long a deduplication id names its message (0: no deduplication).
    pub dedup_window_ms: u64,
    pub max_dedup_ids: u64,
    /// How long a pending message lives (0: until acknowledged).
    pub message_ttl_ms: u64,
}

impl Default for QueueSpec {
    /// The original's defaults where it has them (visibility 30 s, 3 receives, dedup over
    /// 5 minutes), bounded in count and bytes.
    fn default() -> Self {
        QueueSpec {
            queue_type: QueueKind::Fifo,
            max_size: 10_000,
            max_bytes: 64 << 20,
            visibility_timeout_ms: 30_000,
            max_receives: 3,
            dedup_window_ms: 300_000,
            max_dedup_ids: 100_000,
            message_ttl_ms: 0,
        }
    }
}

/// A queue, the node that created it, and where its messages live: on `owner` alone
/// (`replicas` empty, R = 1: the owner's store), or on each node of `replicas` (R = 3 or 5:
/// a Raft group of those nodes, `crate::queue::group`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    pub name: String,
    pub owner: NodeId,
    /// Chosen at creation: a queue deleted and created again under its name is another
    /// queue (its owner's stored messages and receipts name the incarnation).
    pub incarnation: u64,
    /// Wall time of the creation at the accepting node (ms since the epoch).
    pub created_ms: u64,
    pub spec: QueueSpec,
    /// The members of the queue's Raft group, in placement order (data format 7); empty
    /// for a queue kept by its owner alone.
    #[serde(default)]
    pub replicas: Vec<NodeId>,
}

impl QueueEntry {
    /// Whether the queue is a Raft group (R > 1) rather than its owner's store.
    pub fn replicated(&self) -> bool {
        !self.replicas.is_empty()
    }

    /// The queue's Raft group id in the node's log engine and on the peer plane: its
    /// incarnation, kept positive and clear of the catalog's group 0.
    pub fn group(&self) -> u64 {
        (self.incarnation & (i64::MAX as u64)).max(1)
    }
}

/// Checks a replicated queue's members: none (R = 1), or 3 or 5 distinct nodes.
pub fn check_replicas(replicas: &[NodeId]) -> Result<(), super::catalog::CatalogError> {
    let distinct: std::collections::BTreeSet<_> = replicas.iter().collect();
    if distinct.len() != replicas.len() {
        return Err(super::catalog::CatalogError::BadReplicas(format!(
            "{replicas:?} names a node twice"
        )));
    }
    match replicas.len() {
        0 | 3 | 5 => Ok(()),
        n => Err(super::catalog::CatalogError::BadReplicas(format!(
            "{n} given"
        ))),
    }
}

/// A queue entry as data formats 5 and 6 stored it, before replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntryV6 {
    pub name: String,
    pub owner: NodeId,
    pub incarnation: u64,
    pub created_ms: u64,
    pub spec: QueueSpec,
}

impl From<QueueEntryV6> for QueueEntry {
    fn from(q: QueueEntryV6) -> QueueEntry {
        QueueEntry {
            name: q.name,
            owner: q.owner,
            incarnation: q.incarnation,
            created_ms: q.created_ms,
            spec: q.spec,
            replicas: Vec::new(),
        }
    }
}

/// The most queues in the catalog: every member holds the catalog, and every queue is a
/// metrics label set. A constant, not a setting: every replica must refuse the same command.
pub const MAX_QUEUES: usize = 10_000;

/// A queue entry as data formats up to 4 stored it (only `mpreg bench --catalog` proposed
/// them; no node served them): read from older logs and snapshots, and converted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntryV4 {
    pub name: String,
    pub owner: NodeId,
    pub config: QueueConfigV4,
}

/// A queue's settings as formats up to 4 stored them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueConfigV4 {
    pub delivery: String,
    pub visibility_timeout_ms: u64,
    pub max_receives: u32,
    pub dedup_window_ms: u64,
}

impl From<QueueEntryV4> for QueueEntry {
    fn from(q: QueueEntryV4) -> QueueEntry {
        QueueEntry {
            name: q.name,
            owner: q.owner,
            incarnation: 0,
            created_ms: 0,
            replicas: Vec::new(),
            spec: QueueSpec {
                visibility_timeout_ms: q.config.visibility_timeout_ms,
                max_receives: q.config.max_receives,
                dedup_window_ms: q.config.dedup_window_ms,
                ..QueueSpec::default()
            },
        }
    }
}
