//! What the Raft storage did, for `/metrics`: how long appends took to become durable,
//! how many entries each carried, the committed index and how many snapshots were built
//! and installed. Written by the stores, read at scrape time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::env::log_engine::EngineCounts;

use crate::registry::stats::{Latency, Sizes};

#[derive(Debug, Default)]
pub struct StoreStats {
    /// From handing a batch to the disk to its fsync returning (SQLite stores only: the
    /// in-memory store has nothing to sync).
    pub append_duration: Latency,
    /// Entries per append.
    pub append_entries: Sizes,
    /// Catalog commands per proposed entry (`Proposer`: concurrent writes share one).
    pub proposal_commands: Sizes,
    /// The log engine's counts (SQLite; the engine is shared by every group's log).
    pub log_engine: Option<Arc<EngineCounts>>,
    committed: AtomicU64,
    pub snapshots_built: AtomicU64,
    pub snapshots_installed: AtomicU64,
}

impl StoreStats {
    /// The stats of a log kept by the engine whose counts are `engine`.
    pub fn of_log_engine(engine: Arc<EngineCounts>) -> StoreStats {
        StoreStats {
            log_engine: Some(engine),
            ..StoreStats::default()
        }
    }

    pub fn committed(&self, index: Option<u64>) {
        self.committed.store(index.unwrap_or(0), Ordering::Relaxed);
    }

    /// The last committed index the store was told of (0: none).
    pub fn committed_index(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }
}
