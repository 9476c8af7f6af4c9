//! The queues' figures: per queue this node owns (and has loaded since it started), its
//! depth, in-flight and dead-lettered counts, oldest message age, what happened to its
//! messages, and send-to-ack latency; in `/metrics` (one label, `queue`: at most
//! `queue_max_queues` values) and in the original's shape for `/metrics/queue`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use serde_json::{Value, json};

use super::service::{Owned, Queues, Snapshot};
use crate::metrics::{gauge, int, per_bucket};

/// The collector the node registers.
pub(crate) struct QueueMetrics(pub(crate) Arc<Queues>);

impl std::fmt::Debug for QueueMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueueMetrics")
    }
}

type Read = fn(&Owned, &Snapshot) -> u64;

const GAUGES: [(&str, &str, Read); 3] = [
    (
        "mpreg_queue_depth",
        "Messages pending (ready, delayed or waiting for their group)",
        |_, s| s.depth as u64,
    ),
    (
        "mpreg_queue_in_flight",
        "Messages received and not yet acknowledged",
        |_, s| s.in_flight as u64,
    ),
    (
        "mpreg_queue_dead_lettered",
        "Messages in the dead-letter queue",
        |_, s| s.dead_lettered as u64,
    ),
];

fn n(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

const COUNTERS: [(&str, &str, Read); 8] = [
    (
        "mpreg_queue_sent",
        "Messages sent (stored; duplicates apart)",
        |q, _| n(&q.counters.sent),
    ),
    (
        "mpreg_queue_duplicates",
        "Sends answered with an earlier message (deduplication id in its window)",
        |q, _| n(&q.counters.duplicates),
    ),
    ("mpreg_queue_received", "Deliveries made", |q, _| {
        n(&q.counters.received)
    }),
    ("mpreg_queue_acked", "Deliveries acknowledged", |q, _| {
        n(&q.counters.acked)
    }),
    ("mpreg_queue_nacked", "Deliveries given back", |q, _| {
        n(&q.counters.nacked)
    }),
    (
        "mpreg_queue_redelivered",
        "Deliveries whose visibility timeout ran out",
        |q, _| n(&q.counters.redelivered),
    ),
    (
        "mpreg_queue_dead_lettered_messages",
        "Messages moved to the dead-letter queue",
        |q, _| n(&q.counters.dead_lettered),
    ),
    (
        "mpreg_queue_expired",
        "Pending messages whose TTL ran out",
        |q, _| n(&q.counters.expired),
    ),
];

impl Collector for QueueMetrics {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let e = &mut e;
        let now = self.0.wall_ms();
        let queues: Vec<(Arc<Owned>, Snapshot)> = self
            .0
            .owned()
            .into_iter()
            .map(|q| {
                let s = q.snapshot(now);
                (q, s)
            })
            .collect();
        gauge(
            e,
            "mpreg_queues_owned",
            "Queues this node owns and has loaded",
            int(queues.len()),
        )?;
        for (name, help, read) in GAUGES {
            let mut family = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (q, s) in &queues {
                let g = ConstGauge::new(int(read(q, s)));
                g.encode(family.encode_family(&[("queue", q.name.as_str())])?)?;
            }
        }
        let mut age = e.encode_descriptor(
            "mpreg_queue_oldest_message_age_seconds",
            "Age of the oldest live message",
            None,
            MetricType::Gauge,
        )?;
        for (q, s) in &queues {
            let g = ConstGauge::new(s.oldest_age_ms as f64 / 1000.0);
            g.encode(age.encode_family(&[("queue", q.name.as_str())])?)?;
        }
        for (name, help, read) in COUNTERS {
            let mut family = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (q, s) in &queues {
                let c = ConstCounter::new(read(q, s));
                c.encode(family.encode_family(&[("queue", q.name.as_str())])?)?;
            }
        }
        let mut latency = e.encode_descriptor(
            "mpreg_queue_send_to_ack_seconds",
            "Time from a message's send to its acknowledgement",
            None,
            MetricType::Histogram,
        )?;
        for (q, _) in &queues {
            let snap = q.counters.send_to_ack.snapshot();
            latency
                .encode_family(&[("queue", q.name.as_str())])?
                .encode_histogram::<NoLabelSet>(
                    snap.sum_seconds,
                    snap.count,
                    &per_bucket(&snap),
                    None,
                )?;
        }
        Ok(())
    }
}

/// `/metrics/queue`'s `metrics` in the original's shape (its `system_type`, rate and
/// latencies since the node started, operations over the last hour as the admin server
/// samples them), with each queue's figures beside.
pub(crate) fn original_json(
    queues: &Queues,
    uptime_s: f64,
    last_hour_ops: u64,
    name: &str,
) -> Value {
    let now = queues.wall_ms();
    let mut ops = 0u64;
    let mut sum_s = 0.0;
    let mut count = 0u64;
    let mut merged: Vec<(f64, u64)> = Vec::new();
    let per: Vec<Value> = queues
        .owned()
        .iter()
        .map(|q| {
            let c = &q.counters;
            let s = q.snapshot(now);
            ops += n(&c.sent) + n(&c.received) + n(&c.acked) + n(&c.nacked);
            let snap = c.send_to_ack.snapshot();
            sum_s += snap.sum_seconds;
            count += snap.count;
            if merged.is_empty() {
                merged = snap.buckets.clone();
            } else {
                for (m, b) in merged.iter_mut().zip(&snap.buckets) {
                    m.1 += b.1;
                }
            }
            json!({
                "queue_name": q.name,
                "current_queue_size": s.depth,
                "current_in_flight_count": s.in_flight,
                "dead_lettered": s.dead_lettered,
                "oldest_message_age_seconds": s.oldest_age_ms as f64 / 1000.0,
                "messages_sent": n(&c.sent),
                "messages_received": n(&c.received),
                "messages_acknowledged": n(&c.acked),
                "messages_failed": n(&c.nacked),
                "messages_expired": n(&c.expired),
                "messages_requeued": n(&c.redelivered),
                "messages_dead_lettered": n(&c.dead_lettered),
            })
        })
        .collect();
    let quantile = |q: f64| -> f64 {
        let want = (count as f64 * q).ceil() as u64;
        merged
            .iter()
            .find(|(_, c)| *c >= want && want > 0)
            .map_or(0.0, |(bound, _)| bound * 1000.0)
    };
    json!({
        "system_type": "queue",
        "system_name": name,
        "requests_per_second": if uptime_s > 0.0 { ops as f64 / uptime_s } else { 0.0 },
        "average_latency_ms": if count == 0 { 0.0 } else { sum_s * 1000.0 / count as f64 },
        "p95_latency_ms": quantile(0.95),
        "p99_latency_ms": quantile(0.99),
        "error_rate_percent": 0.0,
        "active_connections": queues.waiting(),
        "total_operations_last_hour": last_hour_ops,
        "last_updated": now as f64 / 1000.0,
        "durable": queues.durable(),
        "queues": per,
    })
}

/// Queues the dashboard lists (the first by name; the rest are counted).
const DASHBOARD_ROWS: usize = 100;

/// The dashboard's queue panel: this node's queues by name, each with its counts now and
/// its totals, and how many more there are beyond [`DASHBOARD_ROWS`].
pub fn dashboard(queues: &Queues) -> Value {
    let now = queues.wall_ms();
    let mut owned = queues.owned();
    owned.sort_by(|a, b| a.name.cmp(&b.name));
    let rows: Vec<Value> = owned
        .iter()
        .take(DASHBOARD_ROWS)
        .map(|q| {
            let c = &q.counters;
            let s = q.snapshot(now);
            let lat = c.send_to_ack.snapshot();
            json!({
                "name": q.name,
                "depth": s.depth,
                "in_flight": s.in_flight,
                "dead_lettered": s.dead_lettered,
                "oldest_age_s": s.oldest_age_ms as f64 / 1000.0,
                "sent": n(&c.sent),
                "acked": n(&c.acked),
                "redelivered": n(&c.redelivered),
                "send_to_ack_ms": lat.mean_ms(),
            })
        })
        .collect();
    json!({
        "durable": queues.durable(),
        "rows": rows,
        "more": owned.len().saturating_sub(DASHBOARD_ROWS),
    })
}
