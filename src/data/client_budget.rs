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
//!
//! A connection takes the node's bytes in chunks of [`CHUNK`], so that the request path
//! touches the node-wide counter (a cache line every core shares) only when a connection's
//! holdings move by a chunk, not twice per request; the node's count is high by less than
//! two chunks per connection.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The unit in which connections take and give back the node's bytes.
pub(crate) const CHUNK: usize = 256 * 1024;

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
            reserved: 0,
            paused: false,
        }
    }
}

/// One connection's bytes.
#[derive(Debug)]
pub(crate) struct ConnBudget<'a> {
    node: &'a ClientBudget,
    held: usize,
    /// What this connection took of the node's count: `held` rounded up to chunks, with
    /// up to one chunk spare.
    reserved: usize,
    /// Whether it is paused now (to count each pause once).
    paused: bool,
}

impl ConnBudget<'_> {
    pub(crate) fn charge(&mut self, bytes: usize) {
        self.held += bytes;
        if self.held > self.reserved {
            let more = (self.held - self.reserved).div_ceil(CHUNK) * CHUNK;
            self.reserved += more;
            self.node.used.fetch_add(more, Ordering::Relaxed);
        }
    }

    pub(crate) fn release(&mut self, bytes: usize) {
        self.held -= bytes.min(self.held);
        // Keep one chunk spare, so that a connection going up and down around a chunk
        // boundary does not touch the node's count on every request.
        let keep = self.held.div_ceil(CHUNK) * CHUNK + CHUNK;
        if self.reserved > keep {
            let back = self.reserved - keep;
            self.reserved = keep;
            self.node.used.fetch_sub(back, Ordering::Relaxed);
        }
    }

    /// Whether another frame may be read now, the connection holding `trees` bytes of
    /// decoded JSON trees besides (`registry::meter`); counts the pauses.
    pub(crate) fn may_read(&mut self, trees: usize) -> bool {
        let node = self.node;
        let connections = node.connections.load(Ordering::Relaxed);
        // Each connection keeps up to one spare chunk: not bytes anyone holds.
        let used = node
            .used()
            .saturating_sub(connections.saturating_mul(CHUNK));
        let held = self.held + trees;
        let ok = may_read(held, node.per_connection, used, node.limit, connections);
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
        self.node.used.fetch_sub(self.reserved, Ordering::Relaxed);
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
        let node = ClientBudget::new(100 * CHUNK, 10 * CHUNK);
        let mut a = node.connection();
        a.charge(8 * CHUNK - 1);
        assert_eq!(node.used(), 8 * CHUNK);
        assert!(a.may_read(0));
        // Trees its calls decoded count too.
        assert!(!a.may_read(3 * CHUNK));
        a.charge(4 * CHUNK);
        assert!(!a.may_read(0) && a.over_own());
        assert_eq!(node.paused.load(Ordering::Relaxed), 1);
        a.release(6 * CHUNK);
        assert!(a.may_read(0));
        // Small requests within the spare chunk do not move the node's count.
        let before = node.used();
        for _ in 0..100 {
            a.charge(1000);
            a.release(1000);
        }
        assert_eq!(node.used(), before);
        let mut b = node.connection();
        b.charge(95 * CHUNK);
        // The node is over: `a` holds 6 chunks, under its fair share of 50; `b` is over both.
        assert!(a.may_read(0) && !b.may_read(0));
        drop(b);
        assert!(node.used() <= 8 * CHUNK, "{}", node.used());
        drop(a);
        assert_eq!(node.used(), 0);
    }
}
