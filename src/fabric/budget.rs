//! The byte budget of one peer connection.
//!
//! Every frame this side has produced but not yet handed to the socket (its requests, its
//! replies to the peer) counts against the budget, with a per-frame overhead so that a
//! flood of tiny replies (3,000,000 `Pong`s) counts for what it costs in memory, not only
//! for its payload. Over the budget, the connection stops reading: nothing new is asked of
//! this node, so nothing new is queued. A peer that reads again drains the queue and is
//! read again; one that writes nothing off the queue for [`STALL_LIMIT`] while it is over
//! budget is disconnected, which frees everything at once.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Bytes counted per frame beyond its payload: the frame's allocation and its queue slot.
pub const FRAME_OVERHEAD_BYTES: usize = 64;

/// Unwritten bytes beyond which a connection stops reading. A frame larger than this (a
/// snapshot) is still sent: the budget only decides whether to read.
pub const UNWRITTEN_BYTES_MAX: usize = 16 << 20;

/// How long a connection over its budget may write nothing before it is closed.
pub const STALL_LIMIT: Duration = Duration::from_secs(10);

/// Requests of the peer's that one connection answers at once, forwarded steps aside
/// (which have a limit of their own and are refused beyond it): beyond it, the connection
/// stops reading until some finish.
pub const MAX_ANSWERING: usize = 1024;

/// Calls of this side's that may wait on one connection; beyond it a call fails at once
/// as not sent (a forwarded step then tries another node).
pub const MAX_PENDING_CALLS: usize = 16 * 1024;

/// What a connection does about reading, given its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    Read,
    /// Over budget (or answering as much as it may): wait for the queue to drain.
    Pause,
    /// Over budget with no progress for [`STALL_LIMIT`]: the peer does not read.
    Disconnect,
}

/// The decision, pure: `unwritten` bytes queued, `answering` requests in tasks, and how
/// long since a frame last left the queue.
pub fn reading(unwritten: usize, answering: usize, since_progress: Duration) -> Reading {
    let over = unwritten > UNWRITTEN_BYTES_MAX;
    if over && since_progress >= STALL_LIMIT {
        Reading::Disconnect
    } else if over || answering >= MAX_ANSWERING {
        Reading::Pause
    } else {
        Reading::Read
    }
}

/// Bytes every peer connection of a node read and wrote (frames' payloads), for `/metrics`,
/// and the admitted frames it read by kind (the original's `cluster_map` load counters).
#[derive(Debug, Default)]
pub struct Traffic {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Every frame read from admitted peers.
    pub frames_in: AtomicU64,
    /// Requests peers sent (heartbeats, Raft, forwarded steps, …; unknown kinds too).
    pub requests_in: AtomicU64,
    /// Answers to this node's requests (replies, `Unsupported`, `Busy`).
    pub replies_in: AtomicU64,
}

/// The unwritten bytes of one connection, and a count of frames written (progress).
#[derive(Debug, Default)]
pub struct Unwritten {
    bytes: AtomicUsize,
    written: AtomicU64,
}

impl Unwritten {
    fn cost(len: usize) -> usize {
        len.saturating_add(FRAME_OVERHEAD_BYTES)
    }

    /// A frame of `len` bytes joined the queue.
    pub fn queued(&self, len: usize) {
        self.bytes.fetch_add(Self::cost(len), Ordering::Relaxed);
    }

    /// A frame of `len` bytes left the queue for the socket (or was dropped with it).
    pub fn left(&self, len: usize, written: bool) {
        self.bytes.fetch_sub(Self::cost(len), Ordering::Relaxed);
        if written {
            self.written.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Frames written so far: a change means the peer is reading.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_pauses_over_budget_and_disconnects_a_peer_that_never_reads() {
        let max = UNWRITTEN_BYTES_MAX;
        let s = Duration::from_secs;
        // (unwritten, answering, since progress) -> decision
        let table = [
            (0, 0, s(0), Reading::Read),
            (max, 0, s(100), Reading::Read), // at the budget, not over it
            (max + 1, 0, s(0), Reading::Pause),
            (
                max + 1,
                0,
                STALL_LIMIT - Duration::from_millis(1),
                Reading::Pause,
            ),
            (max + 1, 0, STALL_LIMIT, Reading::Disconnect),
            (0, MAX_ANSWERING, s(100), Reading::Pause), // busy, not stalled
            (0, MAX_ANSWERING - 1, s(0), Reading::Read),
        ];
        for (i, (bytes, answering, since, want)) in table.into_iter().enumerate() {
            assert_eq!(reading(bytes, answering, since), want, "row {i}");
        }
    }

    #[test]
    fn tiny_frames_count_their_overhead() {
        let u = Unwritten::default();
        for _ in 0..1000 {
            u.queued(8);
        }
        assert_eq!(u.bytes(), 1000 * (8 + FRAME_OVERHEAD_BYTES));
        u.left(8, true);
        u.left(8, false);
        assert_eq!(u.written(), 1);
        assert_eq!(u.bytes(), 998 * (8 + FRAME_OVERHEAD_BYTES));
    }
}
