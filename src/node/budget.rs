//! Bytes client connections hold: the frames of their running requests and the replies
//! waiting to be written. Each connection has a budget of its own, and all of them share
//! the node's; a connection over either stops being read (TCP pushes back on its client)
//! until it has written enough, and one whose replies do not drain is disconnected
//! (`conn.rs`).
//!
//! Sharing is fair: while the node is over its budget, a connection still holding less
//! than its fair share (the node's budget divided among the connections) keeps reading,
//! so one heavy client cannot shut out the others. A connection may overshoot by the one
//! frame it reads when under budget (at most `max_message_bytes`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The node's share of client bytes, and counters of what the budgets did.
#[derive(Debug)]
pub(crate) struct ClientBudget {
    used: AtomicUsize,
    connections: AtomicUsize,
    /// The node's budget.
    limit: usize,
    /// Each connection's budget.
    per_connection: usize,
    /// Times a connection stopped being read for want of budget.
    pub(crate) paused: AtomicU64,
    /// Connections closed because their replies did not drain in time.
    pub(crate) stalled: AtomicU64,
}

/// Whether a connection holding `held` may read another frame. Pure.
pub(crate) fn may_read(
    held: usize,
    per_connection: usize,
    node_used: usize,
    node_limit: usize,
    connections: usize,
) -> bool {
    let fair_share = node_limit / connections.max(1);
    held < per_connection && (node_used < node_limit || held < fair_share)
}

impl ClientBudget {
    pub(crate) fn new(limit: usize, per_connection: usize) -> ClientBudget {
        ClientBudget {
            used: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            limit,
            per_connection,
            paused: AtomicU64::new(0),
            stalled: AtomicU64::new(0),
        }
    }

    /// Bytes all client connections hold now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// A new connection's share; it gives back what it holds when dropped.
    pub(crate) fn connection(&self) -> ConnBudget<'_> {
        self.connections.fetch_add(1, Ordering::Relaxed);
        ConnBudget {
            node: self,
            held: 0,
            paused: false,
        }
    }
}

/// One connection's bytes.
#[derive(Debug)]
pub(crate) struct ConnBudget<'a> {
    node: &'a ClientBudget,
    held: usize,
    /// Whether it is paused now (to count each pause once).
    paused: bool,
}

impl ConnBudget<'_> {
    pub(crate) fn charge(&mut self, bytes: usize) {
        self.held += bytes;
        self.node.used.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn release(&mut self, bytes: usize) {
        let bytes = bytes.min(self.held);
        self.held -= bytes;
        self.node.used.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Whether another frame may be read now; counts the pauses.
    pub(crate) fn may_read(&mut self) -> bool {
        let node = self.node;
        let ok = may_read(
            self.held,
            node.per_connection,
            node.used(),
            node.limit,
            node.connections.load(Ordering::Relaxed),
        );
        if !ok && !self.paused {
            node.paused.fetch_add(1, Ordering::Relaxed);
        }
        self.paused = !ok;
        ok
    }

    /// Whether the connection is over its own budget (not the node's): then only the
    /// connection itself can free room, by writing.
    pub(crate) fn over_own(&self) -> bool {
        self.held >= self.node.per_connection
    }
}

impl Drop for ConnBudget<'_> {
    fn drop(&mut self) {
        self.node.used.fetch_sub(self.held, Ordering::Relaxed);
        self.node.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_stops_at_either_budget_and_the_node_budget_is_shared_fairly() {
        const MB: usize = 1 << 20;
        // Under both budgets.
        assert!(may_read(0, 64 * MB, 0, 1024 * MB, 1));
        // At its own budget.
        assert!(!may_read(64 * MB, 64 * MB, 64 * MB, 1024 * MB, 1));
        // The node is full: a connection over its fair share waits, one under it reads.
        assert!(!may_read(60 * MB, 64 * MB, 1024 * MB, 1024 * MB, 32));
        assert!(may_read(10 * MB, 64 * MB, 1024 * MB, 1024 * MB, 32));
        assert!(!may_read(40 * MB, 64 * MB, 1024 * MB, 1024 * MB, 32));
    }

    #[test]
    fn a_connection_gives_back_what_it_held() {
        let node = ClientBudget::new(100, 10);
        let mut a = node.connection();
        a.charge(8);
        assert!(a.may_read());
        a.charge(4);
        assert!(!a.may_read() && a.over_own());
        assert_eq!(node.paused.load(Ordering::Relaxed), 1);
        a.release(6);
        assert!(a.may_read());
        let mut b = node.connection();
        b.charge(95);
        // The node is over: `a` holds 6, under its fair share of 50; `b` is over both.
        assert!(a.may_read() && !b.may_read());
        drop(b);
        assert_eq!(node.used(), 6);
        drop(a);
        assert_eq!(node.used(), 0);
    }
}
