//! What every `mpreg bench` load generator shares: the load of one round ([`Load`]), one
//! round's figures against one target ([`RoundResult`]), and the median over rounds.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The load of one round.
#[derive(Debug, Clone)]
pub struct Load {
    pub connections: usize,
    pub inflight: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub fun: String,
    pub payload: String,
    /// The token and TLS trust every connection presents.
    pub connect: crate::client::ConnectOptions,
}

/// One round against one target.
#[derive(Debug, Clone, Serialize)]
pub struct RoundResult {
    pub calls: u64,
    pub errors: u64,
    pub calls_per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl RoundResult {
    /// The round's figures from its latency histogram (µs) over `duration`.
    pub(crate) fn new(h: &Histogram<u64>, errors: u64, duration: Duration) -> RoundResult {
        RoundResult {
            calls: h.len(),
            errors,
            calls_per_sec: h.len() as f64 / duration.as_secs_f64(),
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// The median of `xs` (the upper one of an even count; 0 for none).
pub(super) fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(0.0)
}
