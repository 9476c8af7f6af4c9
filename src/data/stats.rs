//! The node's live counters: client connections and their bytes, requests running, steps
//! forwarded and served, error replies by code. Written where things happen (each connection
//! writes only its own tally), read by built-ins, heartbeats and the admin surfaces.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;

/// Live counters, read by `cluster_map` and the admin surfaces.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Client connections open (upgraded, or between the upgrade check and the upgrade).
    pub(crate) active_clients: AtomicUsize,
    /// Client upgrades refused because `max_connections` were open.
    pub(crate) clients_refused_full: AtomicU64,
    /// Connections refused or failed at the TLS or WebSocket handshake (any path, any
    /// reason: a bad token, a full node, a timeout).
    pub(crate) handshakes_failed: AtomicU64,
    /// Per connection, its requests still running (those that did not finish on their
    /// first poll). One counter per connection keeps the request path free of a shared,
    /// contended cache line; readers sum them.
    connections: Mutex<std::collections::BTreeMap<u64, Arc<ConnTally>>>,
    /// What connections that have closed added to the tallies.
    closed: ConnTally,
    /// Worker connections open (those that registered functions).
    pub(crate) workers: AtomicUsize,
    /// Steps this node forwarded to peers, from sending to the answer (or the failure).
    pub(crate) forwarded: crate::registry::stats::Latency,
    pub(crate) forwards_failed: AtomicU64,
    next_connection: AtomicU64,
    /// Steps other nodes forwarded here, running now.
    pub(crate) steps_running: AtomicUsize,
    /// Moving average (1/8 weight per sample) of how long forwarded steps took here, µs.
    step_latency_us: AtomicU64,
    /// When the last forwarded step finished: an average older than [`LATENCY_MEMORY`] is
    /// not reported (routing would otherwise shun a node for one slow step long ago).
    last_step: Mutex<Option<tokio::time::Instant>>,
    /// Calls routed to a worker connection that ended unanswered (timed out, cancelled).
    pub(crate) worker_calls_abandoned: AtomicU64,
    /// Peer connections (Raft and forwarded steps) accepted since start: with one link per
    /// peer pair it stays near the number of peers; steady growth means connection churn.
    pub(crate) peer_links_accepted: AtomicU64,
    /// Error replies by code. Counted only when a reply is an error, so the request path
    /// of a successful call writes no shared counter.
    pub(crate) errors: ErrorCounts,
}

/// One client connection's counters. Each connection writes only its own (no shared,
/// contended cache line on the request path); readers sum them, and a closing
/// connection's are folded into [`Stats`]'s `closed`.
#[derive(Debug, Default)]
pub(crate) struct ConnTally {
    /// Its requests still running (those that did not finish on their first poll).
    pub(crate) inflight: AtomicUsize,
    /// Bytes of the frames it received and of the replies queued to it.
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    /// Steps per request it sent.
    pub(crate) dag_steps: crate::registry::stats::Sizes,
}

impl ConnTally {
    fn absorb(&self, other: &ConnTally) {
        let add = |a: &AtomicU64, b: &AtomicU64| {
            a.fetch_add(b.load(Ordering::Relaxed), Ordering::Relaxed);
        };
        add(&self.bytes_in, &other.bytes_in);
        add(&self.bytes_out, &other.bytes_out);
        self.dag_steps.absorb(&other.dag_steps);
    }
}

/// How many error replies of each code the node sent, and the last few of them (for the
/// dashboard). Written only when a reply is an error.
#[derive(Default)]
pub(crate) struct ErrorCounts {
    counts: [AtomicU64; crate::protocol::ErrorCode::ALL.len()],
    recent: Mutex<std::collections::VecDeque<RecentError>>,
    /// Stamps the recent ones (`None` in unit tests: stamped 0).
    clock: Option<Arc<dyn crate::env::Clock>>,
}

impl std::fmt::Debug for ErrorCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErrorCounts").finish_non_exhaustive()
    }
}

/// One error reply, as the dashboard lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct RecentError {
    pub(crate) at_ms: u64,
    pub(crate) code: i64,
    /// The request's `u`, cut to [`RECENT_TEXT_BYTES`].
    pub(crate) u: String,
    /// Its details, cut to [`RECENT_TEXT_BYTES`].
    pub(crate) message: String,
}

/// How many error replies the dashboard is shown, and how much of each.
const RECENT_ERRORS: usize = 32;
const RECENT_TEXT_BYTES: usize = 200;

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

impl ErrorCounts {
    fn stamped_by(clock: Arc<dyn crate::env::Clock>) -> ErrorCounts {
        ErrorCounts {
            clock: Some(clock),
            ..ErrorCounts::default()
        }
    }

    pub(crate) fn record(&self, code: i64, u: &Value, details: &Value) {
        if let Some(i) = crate::protocol::ErrorCode::ALL
            .iter()
            .position(|c| c.as_i64() == code)
        {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        let text = |v: &Value| match v {
            Value::String(s) => cut(s, RECENT_TEXT_BYTES),
            other => cut(&other.to_string(), RECENT_TEXT_BYTES),
        };
        let error = RecentError {
            at_ms: self.clock.as_ref().map_or(0, |c| c.wall_ms()),
            code,
            u: text(u),
            message: text(details),
        };
        let mut recent = self.recent.lock();
        if recent.len() == RECENT_ERRORS {
            recent.pop_front();
        }
        recent.push_back(error);
    }

    /// `(code, replies)` for every code.
    pub(crate) fn counts(&self) -> impl Iterator<Item = (i64, u64)> + '_ {
        crate::protocol::ErrorCode::ALL
            .iter()
            .zip(&self.counts)
            .map(|(c, n)| (c.as_i64(), n.load(Ordering::Relaxed)))
    }

    /// The last error replies, newest first.
    pub(crate) fn recent(&self) -> Vec<RecentError> {
        let recent = self.recent.lock();
        recent.iter().rev().cloned().collect()
    }
}

/// How long a node's step latency stays its "recent" latency without new steps.
const LATENCY_MEMORY: Duration = Duration::from_secs(10);

/// Whether a step that finished at `last` is recent at `now`.
fn recent(last: Option<tokio::time::Instant>, now: tokio::time::Instant) -> bool {
    last.is_some_and(|t| now.saturating_duration_since(t) <= LATENCY_MEMORY)
}

/// Counts a forwarded step as finished however its future ends (cancelled included).
struct StepDone<'a>(&'a Stats);

impl Drop for StepDone<'_> {
    fn drop(&mut self) {
        self.0.steps_running.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Stats {
    /// Counters whose error records are stamped by `clock`.
    pub(crate) fn new(clock: Arc<dyn crate::env::Clock>) -> Stats {
        Stats {
            errors: ErrorCounts::stamped_by(clock),
            ..Stats::default()
        }
    }

    /// Registers a connection's counters; they count until `forget_connection`.
    pub(crate) fn track_connection(&self) -> (u64, Arc<ConnTally>) {
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        let tally = Arc::new(ConnTally::default());
        self.connections.lock().insert(id, tally.clone());
        (id, tally)
    }

    pub(crate) fn forget_connection(&self, id: u64) {
        let mut open = self.connections.lock();
        if let Some(tally) = open.remove(&id) {
            // Under the lock, so a reader never sees a connection in both or neither.
            self.closed.absorb(&tally);
        }
    }

    /// Every client connection's counters summed, closed ones included.
    pub(crate) fn client_totals(&self) -> ConnTally {
        let total = ConnTally::default();
        let open = self.connections.lock();
        total.absorb(&self.closed);
        for tally in open.values() {
            total.absorb(tally);
        }
        total
    }

    /// Requests running on the node now.
    pub(crate) fn inflight(&self) -> usize {
        let requests: usize = self
            .connections
            .lock()
            .values()
            .map(|c| c.inflight.load(Ordering::Relaxed))
            .sum();
        requests + self.steps_running.load(Ordering::Relaxed)
    }

    /// What heartbeats report of this node.
    pub(crate) fn load(&self, now: tokio::time::Instant) -> crate::routing::liveness::Load {
        crate::routing::liveness::Load {
            inflight: self.inflight() as u64,
            step_latency_us: if self.latency_is_recent(now) {
                self.step_latency_us.load(Ordering::Relaxed)
            } else {
                0
            },
        }
    }

    fn latency_is_recent(&self, now: tokio::time::Instant) -> bool {
        recent(*self.last_step.lock(), now)
    }

    /// Runs a step another node forwarded here: counted as running until it ends (however
    /// its future ends, cancelled included) and timed into the step latency heartbeats
    /// report.
    pub(crate) async fn serve_step<T>(
        &self,
        clock: &dyn crate::env::Clock,
        step: impl std::future::Future<Output = T>,
    ) -> T {
        self.steps_running.fetch_add(1, Ordering::Relaxed);
        let _done = StepDone(self);
        let started = clock.now();
        let outcome = step.await;
        let now = clock.now();
        self.step_took(now.saturating_duration_since(started), now);
        outcome
    }

    /// Folds the duration of a forwarded step that finished at `now` into the moving
    /// average, which starts afresh after [`LATENCY_MEMORY`] without steps (racy updates
    /// may drop a sample; it is an estimate).
    fn step_took(&self, took: Duration, now: tokio::time::Instant) {
        let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let previous = self.last_step.lock().replace(now);
        let old = if recent(previous, now) {
            self.step_latency_us.load(Ordering::Relaxed)
        } else {
            0
        };
        let new = if old == 0 {
            sample.max(1)
        } else {
            (old - old / 8 + sample / 8).max(1)
        };
        self.step_latency_us.store(new, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::{LATENCY_MEMORY, Stats};

    #[test]
    fn step_latency_is_reported_while_recent_and_starts_afresh_after() {
        let stats = Stats::default();
        let t0 = Instant::now();
        assert_eq!(stats.load(t0).step_latency_us, 0, "no step yet");
        stats.step_took(Duration::from_millis(5), t0);
        assert_eq!(stats.load(t0).step_latency_us, 5_000);
        stats.step_took(Duration::from_millis(13), t0);
        assert_eq!(
            stats.load(t0).step_latency_us,
            6_000,
            "1/8 of the way to 13 ms"
        );
        let later = t0 + LATENCY_MEMORY + Duration::from_millis(1);
        assert_eq!(stats.load(later).step_latency_us, 0, "too old to count");
        stats.step_took(Duration::from_millis(1), later);
        assert_eq!(stats.load(later).step_latency_us, 1_000, "a fresh average");
    }
}
