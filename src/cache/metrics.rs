//! The cache's figures: per level its entries, bytes, bound, hits, misses, evictions and
//! expirations; per operation and status how many requests; in `/metrics` (labels `level`,
//! `operation`, `status`: a handful of values each), in the original's shape for
//! `/metrics/cache`, in a `stats` request's answer, and on the dashboard.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use serde_json::{Value, json};

use super::figures::LevelFigures;
use super::service::CacheService;
use crate::metrics::int;

/// The collector the node registers.
pub(crate) struct CacheMetrics(pub(crate) Arc<CacheService>);

impl std::fmt::Debug for CacheMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheMetrics")
    }
}

type Read = fn(&LevelFigures) -> u64;

const LEVEL_GAUGES: [(&str, &str, Read); 3] = [
    ("mpreg_cache_entries", "Entries held", |l| l.entries),
    ("mpreg_cache_bytes", "Bytes held, as weighed", |l| l.bytes),
    (
        "mpreg_cache_capacity_bytes",
        "Bytes the level may hold",
        |l| l.capacity_bytes,
    ),
];

const LEVEL_COUNTERS: [(&str, &str, Read); 4] = [
    ("mpreg_cache_hits", "Lookups that found a live entry", |l| {
        l.counts.hits
    }),
    ("mpreg_cache_misses", "Lookups that found none", |l| {
        l.counts.misses
    }),
    (
        "mpreg_cache_evictions",
        "Entries pushed out to stay within the level's bytes",
        |l| l.counts.evictions,
    ),
    (
        "mpreg_cache_expirations",
        "Entries removed when their time-to-live ran out",
        |l| l.counts.expirations,
    ),
];

impl Collector for CacheMetrics {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let e = &mut e;
        let s = self.0.snapshot();
        let levels: Vec<(&str, LevelFigures)> = std::iter::once(("L1", s.memory))
            .chain(s.disk.map(|d| ("L2", d)))
            .collect();
        for (name, help, read) in LEVEL_GAUGES {
            let mut family = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (level, f) in &levels {
                ConstGauge::new(int(read(f)))
                    .encode(family.encode_family(&[("level", *level)])?)?;
            }
        }
        for (name, help, read) in LEVEL_COUNTERS {
            let mut family = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (level, f) in &levels {
                ConstCounter::new(read(f)).encode(family.encode_family(&[("level", *level)])?)?;
            }
        }
        let mut family = e.encode_descriptor(
            "mpreg_cache_requests",
            "cache-request messages answered, by operation and status",
            None,
            MetricType::Counter,
        )?;
        for (op, status, n) in &s.operations {
            ConstCounter::new(*n)
                .encode(family.encode_family(&[("operation", *op), ("status", *status)])?)?;
        }
        Ok(())
    }
}

/// `/metrics/cache`'s `metrics` in the original's shape, with the levels' figures beside.
pub(crate) fn original_json(
    cache: &CacheService,
    uptime_s: f64,
    last_hour_ops: u64,
    name: &str,
    now_s: f64,
) -> Value {
    let s = cache.snapshot();
    let total = s.requests();
    json!({
        "system_type": "cache",
        "system_name": name,
        "requests_per_second": if uptime_s > 0.0 { total as f64 / uptime_s } else { 0.0 },
        "average_latency_ms": 0.0,
        "p95_latency_ms": 0.0,
        "p99_latency_ms": 0.0,
        "error_rate_percent": if total == 0 { 0.0 } else { s.errors() as f64 * 100.0 / total as f64 },
        "active_connections": 0,
        "total_operations_last_hour": last_hour_ops,
        "last_updated": now_s,
        "levels": s.to_json(),
    })
}

/// The dashboard's cache panel: one row per level.
pub fn dashboard(cache: &CacheService) -> Value {
    let s = cache.snapshot();
    let row = |name: &str, f: LevelFigures| {
        let mut v = f.to_json();
        v["level"] = json!(name);
        v
    };
    let mut rows = vec![row("L1", s.memory)];
    if let Some(d) = s.disk {
        rows.push(row("L2", d));
    }
    json!({"rows": rows, "requests": s.requests()})
}
