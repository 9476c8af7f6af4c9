//! What a queue's figures are made of, wherever the queue runs (its owner, or the leader of
//! its group): counters since it started running there, and its counts now.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

/// One queue's counters since it started running on this node.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub duplicates: AtomicU64,
    pub received: AtomicU64,
    pub acked: AtomicU64,
    pub nacked: AtomicU64,
    pub redelivered: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub expired: AtomicU64,
    /// From a message's send to its ack (wall clock, ms resolution).
    pub send_to_ack: crate::registry::stats::Latency,
}

impl Counters {
    /// `queue_stats`' totals: `total_messages_*`, `duplicate_sends`, `average_send_to_ack_ms`,
    /// added to `stats` (an object).
    pub fn add_totals(&self, stats: &mut Value) {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let totals = json!({
            "total_messages_sent": n(&self.sent),
            "total_messages_received": n(&self.received),
            "total_messages_acknowledged": n(&self.acked),
            "total_messages_nacked": n(&self.nacked),
            "total_messages_redelivered": n(&self.redelivered),
            "total_messages_dead_lettered": n(&self.dead_lettered),
            "total_messages_expired": n(&self.expired),
            "duplicate_sends": n(&self.duplicates),
            "average_send_to_ack_ms": self.send_to_ack.snapshot().mean_ms().unwrap_or(0.0),
        });
        if let (Some(to), Value::Object(from)) = (stats.as_object_mut(), totals) {
            to.extend(from);
        }
    }
}

/// What `queue_stats` and the metrics read of a queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub depth: usize,
    pub in_flight: usize,
    pub dead_lettered: usize,
    pub oldest_age_ms: u64,
}
