//! "In the last hour" over counters that only grow: their totals are sampled once a minute,
//! and a figure for the last hour is the total now less the total at the last sample taken
//! an hour or more ago (or, on a node younger than an hour, since it started). Pure: the
//! caller says what time it is and what the totals are.

use std::collections::VecDeque;

/// How far back "the last hour" reaches.
pub const SPAN_MS: u64 = 3_600_000;

/// How often the totals are sampled: the window's edge is this precise.
pub const SAMPLE_EVERY_MS: u64 = 60_000;

/// The counters the admin routes report per hour, as totals since the node started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Function calls served (from clients and peers), and those that failed.
    pub calls: u64,
    pub failures: u64,
    /// Messages published on this node.
    pub published: u64,
    /// Queue operations (sends, receives, acks, nacks) on the queues this node owns.
    pub queue_ops: u64,
    /// `cache-request`s answered.
    pub cache_ops: u64,
}

impl Totals {
    fn since(self, base: Totals) -> Totals {
        Totals {
            calls: self.calls.saturating_sub(base.calls),
            failures: self.failures.saturating_sub(base.failures),
            published: self.published.saturating_sub(base.published),
            queue_ops: self.queue_ops.saturating_sub(base.queue_ops),
            cache_ops: self.cache_ops.saturating_sub(base.cache_ops),
        }
    }
}

/// Samples of [`Totals`], oldest first: one at or before the window's start, and those
/// after it (at most an hour's worth plus one).
#[derive(Debug, Clone)]
pub struct HourWindow {
    samples: VecDeque<(u64, Totals)>,
}

impl HourWindow {
    /// A window starting at `now_ms` with `totals` (what was counted before it is not in any
    /// hour it reports).
    pub fn new(now_ms: u64, totals: Totals) -> HourWindow {
        HourWindow {
            samples: VecDeque::from([(now_ms, totals)]),
        }
    }

    /// Records the totals at `now_ms` (called every [`SAMPLE_EVERY_MS`]); forgets samples
    /// no later figure needs.
    pub fn record(&mut self, now_ms: u64, totals: Totals) {
        self.samples.push_back((now_ms, totals));
        let start = now_ms.saturating_sub(SPAN_MS);
        // Keep the latest sample at or before the window's start; drop the ones before it.
        while self.samples.get(1).is_some_and(|&(t, _)| t <= start) {
            self.samples.pop_front();
        }
    }

    /// What was counted in the hour before `now_ms`, given the totals now.
    pub fn last_hour(&self, now_ms: u64, totals: Totals) -> Totals {
        let start = now_ms.saturating_sub(SPAN_MS);
        let base = self
            .samples
            .iter()
            .take_while(|&&(t, _)| t <= start)
            .last()
            .or(self.samples.front())
            .map_or(Totals::default(), |&(_, b)| b);
        totals.since(base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calls(n: u64) -> Totals {
        Totals {
            calls: n,
            failures: n / 10,
            published: 2 * n,
            queue_ops: 3 * n,
            cache_ops: 4 * n,
        }
    }

    const MIN: u64 = SAMPLE_EVERY_MS;

    /// A node younger than an hour reports everything since it started; after that, what
    /// was counted more than an hour ago drops out, to within a sample.
    #[test]
    fn counts_leave_the_window_an_hour_after_they_happened() {
        let mut w = HourWindow::new(0, calls(0));
        // 100 calls in the first minute, then nothing for a while.
        w.record(MIN, calls(100));
        assert_eq!(w.last_hour(MIN, calls(100)).calls, 100);
        for m in 2..=60 {
            w.record(m * MIN, calls(100));
        }
        assert_eq!(w.last_hour(60 * MIN, calls(100)), calls(100));
        // 30 more at minute 61: the first 100 happened between minutes 0 and 1, and the
        // window [1, 61] starts after them.
        w.record(61 * MIN, calls(130));
        assert_eq!(w.last_hour(61 * MIN, calls(130)).calls, 30);
        assert_eq!(w.last_hour(61 * MIN, calls(130)).published, 60);
        // An hour after those 30, they are gone too.
        for m in 62..=121 {
            w.record(m * MIN, calls(130));
        }
        assert_eq!(w.last_hour(121 * MIN, calls(130)), Totals::default());
        // Between samples, the figure still counts what came since the last one.
        assert_eq!(w.last_hour(121 * MIN + 10, calls(135)).calls, 5);
    }

    #[test]
    fn the_window_holds_an_hour_of_samples_and_no_more() {
        let mut w = HourWindow::new(0, calls(0));
        for m in 1..=600 {
            w.record(m * MIN, calls(m));
        }
        let held = w.samples.len();
        assert!(held <= (SPAN_MS / MIN) as usize + 1, "{held}");
        assert_eq!(w.last_hour(600 * MIN, calls(600)).calls, 60);
    }
}
