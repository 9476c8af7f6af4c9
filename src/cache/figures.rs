//! The cache's figures as values: requests counted by operation and status, each level's
//! entries, bytes and counts, and a snapshot of them all (a `stats` answer, `/metrics`,
//! `/metrics/cache`, the dashboard: `metrics.rs` reads them).

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use super::memory::LevelCounts;
use super::request::{Operation, Status};

const OPERATIONS: [(Operation, &str); 9] = [
    (Operation::Get, "get"),
    (Operation::Put, "put"),
    (Operation::Delete, "delete"),
    (Operation::Invalidate, "invalidate"),
    (Operation::Query, "query"),
    (Operation::Stats, "stats"),
    (Operation::Atomic, "atomic"),
    (Operation::Structure, "structure"),
    (Operation::Namespace, "namespace"),
];

const STATUSES: [(Status, &str); 6] = [
    (Status::Hit, "hit"),
    (Status::Miss, "miss"),
    (Status::Error, "error"),
    (Status::Partial, "partial"),
    (Status::Timeout, "timeout"),
    (Status::Conflict, "conflict"),
];

/// Requests by operation and status.
#[derive(Debug, Default)]
pub struct Counters {
    by: [[AtomicU64; 6]; 9],
}

impl Counters {
    pub fn record(&self, op: Operation, status: Status) {
        let o = OPERATIONS.iter().position(|(x, _)| *x == op).unwrap_or(0);
        let s = STATUSES.iter().position(|(x, _)| *x == status).unwrap_or(0);
        self.by[o][s].fetch_add(1, Ordering::Relaxed);
    }

    /// (operation, status, count) for every pair counted at least once.
    pub fn snapshot(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut out = Vec::new();
        for (o, (_, op)) in OPERATIONS.iter().enumerate() {
            for (s, (_, status)) in STATUSES.iter().enumerate() {
                let n = self.by[o][s].load(Ordering::Relaxed);
                if n > 0 {
                    out.push((*op, *status, n));
                }
            }
        }
        out
    }
}

/// One level's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LevelFigures {
    pub entries: u64,
    pub bytes: u64,
    pub capacity_bytes: u64,
    pub counts: LevelCounts,
}

impl LevelFigures {
    pub fn to_json(self) -> Value {
        let c = self.counts;
        let asked = c.hits + c.misses;
        json!({
            "entries": self.entries,
            "bytes": self.bytes,
            "capacity_bytes": self.capacity_bytes,
            "hits": c.hits,
            "misses": c.misses,
            "hit_rate": if asked == 0 { 0.0 } else { c.hits as f64 / asked as f64 },
            "evictions": c.evictions,
            "expirations": c.expirations,
        })
    }
}

/// The cache's figures at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub memory: LevelFigures,
    /// None when L2 is off (memory persistence mode).
    pub disk: Option<LevelFigures>,
    pub operations: Vec<(&'static str, &'static str, u64)>,
    /// Cacheable calls running, and identical calls waiting for them.
    pub results_running: u64,
    pub results_waiting: u64,
}

impl Snapshot {
    /// As a `stats` request answers it.
    pub fn to_json(&self) -> Value {
        let mut ops = serde_json::Map::new();
        for (op, status, n) in &self.operations {
            let e = ops.entry(*op).or_insert_with(|| json!({}));
            e[*status] = json!(n);
        }
        json!({
            "L1": self.memory.to_json(),
            "L2": self.disk.map(LevelFigures::to_json),
            "operations": ops,
            "results": {"running": self.results_running, "waiting": self.results_waiting},
        })
    }

    /// `cache-request`s answered since the node started.
    pub fn requests(&self) -> u64 {
        self.operations.iter().map(|(_, _, n)| n).sum()
    }

    /// Those answered with status `error`.
    pub fn errors(&self) -> u64 {
        self.operations
            .iter()
            .filter(|(_, s, _)| *s == "error")
            .map(|(_, _, n)| n)
            .sum()
    }
}
