//! What each function's calls did: counts, failures and a latency histogram, kept beside
//! the function (atomics, no lookup on the call path) and read at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in microseconds: 50 µs to 10 s, about ×2.5 apart.
pub const BUCKET_BOUNDS_US: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000, 250_000, 1_000_000, 10_000_000,
];

/// A latency histogram over [`BUCKET_BOUNDS_US`] (and one bucket beyond the last).
#[derive(Debug, Default)]
pub struct Latency {
    buckets: [AtomicU64; BUCKET_BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

/// A histogram's counts at one moment: cumulative per bound, as Prometheus reads them.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySnapshot {
    /// `(upper bound in seconds, calls at or under it)`, cumulative.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl LatencySnapshot {
    /// The mean, in milliseconds (`None` before the first call).
    pub fn mean_ms(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_seconds * 1000.0 / self.count as f64)
    }
}

impl Latency {
    pub fn record(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let i = BUCKET_BOUNDS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(BUCKET_BOUNDS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LatencySnapshot {
        let mut total = 0;
        let mut buckets = Vec::with_capacity(BUCKET_BOUNDS_US.len());
        for (i, bound) in BUCKET_BOUNDS_US.iter().enumerate() {
            total += self.buckets[i].load(Ordering::Relaxed);
            buckets.push((*bound as f64 / 1e6, total));
        }
        total += self.buckets[BUCKET_BOUNDS_US.len()].load(Ordering::Relaxed);
        LatencySnapshot {
            buckets,
            count: total,
            sum_seconds: self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// Upper bounds of the size buckets (steps in a request, entries in an append batch).
pub const SIZE_BOUNDS: [u64; 10] = [1, 2, 4, 8, 16, 32, 64, 256, 1024, 4096];

/// A histogram of counts over [`SIZE_BOUNDS`] (and one bucket beyond the last).
#[derive(Debug, Default)]
pub struct Sizes {
    buckets: [AtomicU64; SIZE_BOUNDS.len() + 1],
    sum: AtomicU64,
}

impl Sizes {
    pub fn record(&self, n: u64) {
        let i = SIZE_BOUNDS
            .iter()
            .position(|&b| n <= b)
            .unwrap_or(SIZE_BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds `other`'s counts to these.
    pub fn absorb(&self, other: &Sizes) {
        for (a, b) in self.buckets.iter().zip(&other.buckets) {
            a.fetch_add(b.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.sum
            .fetch_add(other.sum.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Cumulative counts per bound, as Prometheus reads them (`sum_seconds` holds the sum).
    pub fn snapshot(&self) -> LatencySnapshot {
        let mut total = 0;
        let mut buckets = Vec::with_capacity(SIZE_BOUNDS.len());
        for (i, bound) in SIZE_BOUNDS.iter().enumerate() {
            total += self.buckets[i].load(Ordering::Relaxed);
            buckets.push((*bound as f64, total));
        }
        total += self.buckets[SIZE_BOUNDS.len()].load(Ordering::Relaxed);
        LatencySnapshot {
            buckets,
            count: total,
            sum_seconds: self.sum.load(Ordering::Relaxed) as f64,
        }
    }
}

/// Who asked for a call: a client of this node, or another node (a forwarded step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Client,
    Peer,
}

/// One function's calls, by who asked.
#[derive(Debug, Default)]
pub struct CallStats {
    pub client: Latency,
    pub peer: Latency,
    /// Calls that returned an error (any caller).
    pub failures: AtomicU64,
    /// Calls of a cacheable function answered from the cache (or by waiting for an
    /// identical call's run), and those that ran it.
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
}

impl CallStats {
    pub fn record(&self, caller: Caller, ok: bool, took: Duration) {
        match caller {
            Caller::Client => self.client.record(took),
            Caller::Peer => self.peer.record(took),
        }
        if !ok {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_land_in_the_first_bucket_that_holds_them_and_add_up() {
        let h = Latency::default();
        for us in [10, 50, 51, 999, 20_000_000] {
            h.record(Duration::from_micros(us));
        }
        let s = h.snapshot();
        assert_eq!(s.count, 5);
        assert_eq!(s.buckets[0], (50e-6, 2), "10 and 50 µs");
        assert_eq!(s.buckets[1].1, 3, "51 µs, cumulative");
        assert_eq!(s.buckets[4].1, 4, "999 µs under 1 ms");
        assert_eq!(
            s.buckets.last().unwrap().1,
            4,
            "20 s is beyond the last bound"
        );
        assert!(
            (s.sum_seconds - 20.001_11).abs() < 1e-6,
            "{}",
            s.sum_seconds
        );
    }
}
