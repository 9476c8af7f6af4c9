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

use super::counters::{Counters, Snapshot};
use super::groups::Replica;
use super::service::Queues;
use crate::metrics::{gauge, int, per_bucket};

/// The collector the node registers.
pub(crate) struct QueueMetrics(pub(crate) Arc<Queues>);

impl std::fmt::Debug for QueueMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueueMetrics")
    }
}

type Read = fn(&Counters, &Snapshot) -> u64;

/// One queue's figures here: a queue this node owns, or a replicated queue whose group it
/// leads now (its counters count what ran while it led).
struct Row {
    name: String,
    snapshot: Snapshot,
    counters: Arc<dyn AsRef<Counters> + Send + Sync>,
}

impl AsRef<Counters> for super::service::Owned {
    fn as_ref(&self) -> &Counters {
        &self.counters
    }
}

impl AsRef<Counters> for Replica {
    fn as_ref(&self) -> &Counters {
        &self.counters
    }
}

fn rows(queues: &Queues) -> Vec<Row> {
    let now = queues.wall_ms();
    let mut rows: Vec<Row> = queues
        .owned()
        .into_iter()
        .map(|q| Row {
            name: q.name.clone(),
            snapshot: q.snapshot(now),
            counters: q,
        })
        .collect();
    let me = queues.node();
    for r in queues.groups().all() {
        if r.is_leader(me) {
            rows.push(Row {
                name: r.entry.name.clone(),
                snapshot: r.snapshot(),
                counters: r,
            });
        }
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows
}

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
        |c, _| n(&c.sent),
    ),
    (
        "mpreg_queue_duplicates",
        "Sends answered with an earlier message (deduplication id in its window)",
        |c, _| n(&c.duplicates),
    ),
    ("mpreg_queue_received", "Deliveries made", |c, _| {
        n(&c.received)
    }),
    ("mpreg_queue_acked", "Deliveries acknowledged", |c, _| {
        n(&c.acked)
    }),
    ("mpreg_queue_nacked", "Deliveries given back", |c, _| {
        n(&c.nacked)
    }),
    (
        "mpreg_queue_redelivered",
        "Deliveries whose visibility timeout ran out",
        |c, _| n(&c.redelivered),
    ),
    (
        "mpreg_queue_dead_lettered_messages",
        "Messages moved to the dead-letter queue",
        |c, _| n(&c.dead_lettered),
    ),
    (
        "mpreg_queue_expired",
        "Pending messages whose TTL ran out",
        |c, _| n(&c.expired),
    ),
];

impl Collector for QueueMetrics {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let e = &mut e;
        let queues = rows(&self.0);
        gauge(
            e,
            "mpreg_queues_owned",
            "Queues this node owns and has loaded",
            int(self.0.owned().len()),
        )?;
        for (name, help, read) in GAUGES {
            let mut family = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for q in &queues {
                let g = ConstGauge::new(int(read((*q.counters).as_ref(), &q.snapshot)));
                g.encode(family.encode_family(&[("queue", q.name.as_str())])?)?;
            }
        }
        let mut age = e.encode_descriptor(
            "mpreg_queue_oldest_message_age_seconds",
            "Age of the oldest live message",
            None,
            MetricType::Gauge,
        )?;
        for q in &queues {
            let g = ConstGauge::new(q.snapshot.oldest_age_ms as f64 / 1000.0);
            g.encode(age.encode_family(&[("queue", q.name.as_str())])?)?;
        }
        for (name, help, read) in COUNTERS {
            let mut family = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            for q in &queues {
                let c = ConstCounter::new(read((*q.counters).as_ref(), &q.snapshot));
                c.encode(family.encode_family(&[("queue", q.name.as_str())])?)?;
            }
        }
        let mut latency = e.encode_descriptor(
            "mpreg_queue_send_to_ack_seconds",
            "Time from a message's send to its acknowledgement",
            None,
            MetricType::Histogram,
        )?;
        for q in &queues {
            let snap = (*q.counters).as_ref().send_to_ack.snapshot();
            latency
                .encode_family(&[("queue", q.name.as_str())])?
                .encode_histogram::<NoLabelSet>(
                    snap.sum_seconds,
                    snap.count,
                    &per_bucket(&snap),
                    None,
                )?;
        }
        replica_health(e, &self.0)?;
        Ok(())
    }
}

/// Each replicated queue's replica on this node, by queue: whether it leads, the group's
/// voters and the placement's replicas (fewer voters than replicas: a repair is under way),
/// how far its log and state machine are, its term, and how long it has known no leader.
fn replica_health(e: &mut DescriptorEncoder, queues: &Queues) -> std::fmt::Result {
    let me = queues.node();
    let replicas = queues.groups().all();
    type ReadReplica = fn(&Replica, &openraft::RaftMetrics<u64, openraft::BasicNode>, u64) -> u64;
    const REPLICA_GAUGES: [(&str, &str, ReadReplica); 6] = [
        (
            "mpreg_queue_replica_leader",
            "1 where this node's replica leads its queue's group",
            |_, m, me| u64::from(m.current_leader == Some(me)),
        ),
        (
            "mpreg_queue_replica_voters",
            "Voters of the queue's group, as this replica knows them",
            |_, m, _| m.membership_config.membership().voter_ids().count() as u64,
        ),
        (
            "mpreg_queue_replica_placed",
            "Replicas the catalog places the queue on (its replicas setting once repaired)",
            |r, _, _| r.entry.replicas.len() as u64,
        ),
        (
            "mpreg_queue_replica_term",
            "The queue group's Raft term at this replica",
            |_, m, _| m.current_term,
        ),
        (
            "mpreg_queue_replica_last_log_index",
            "The last entry in this replica's log of the queue's group",
            |_, m, _| m.last_log_index.unwrap_or(0),
        ),
        (
            "mpreg_queue_replica_applied_index",
            "The last entry this replica applied",
            |_, m, _| m.last_applied.map_or(0, |l| l.index),
        ),
    ];
    let metrics: Vec<_> = replicas
        .iter()
        .map(|r| r.raft.metrics().borrow().clone())
        .collect();
    for (name, help, read) in REPLICA_GAUGES {
        let mut family = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (r, m) in replicas.iter().zip(&metrics) {
            let g = ConstGauge::new(int(read(r, m, me.0)));
            g.encode(family.encode_family(&[("queue", r.entry.name.as_str())])?)?;
        }
    }
    let mut family = e.encode_descriptor(
        "mpreg_queue_replica_leaderless_seconds",
        "How long this replica has known no live leader of its group (0: it knows one)",
        None,
        MetricType::Gauge,
    )?;
    for r in &replicas {
        let g = ConstGauge::new(r.leaderless_for(queues.now_instant()).as_secs_f64());
        g.encode(family.encode_family(&[("queue", r.entry.name.as_str())])?)?;
    }
    Ok(())
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
    let per: Vec<Value> = rows(queues)
        .iter()
        .map(|q| {
            let c: &Counters = (*q.counters).as_ref();
            let s = &q.snapshot;
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
    let placed: std::collections::BTreeMap<String, (usize, usize)> = queues
        .groups()
        .all()
        .iter()
        .map(|r| {
            (
                r.entry.name.clone(),
                (r.entry.replicas.len(), r.voters().len()),
            )
        })
        .collect();
    let owned = rows(queues);
    let rows: Vec<Value> = owned
        .iter()
        .take(DASHBOARD_ROWS)
        .map(|q| {
            let c: &Counters = (*q.counters).as_ref();
            let s = &q.snapshot;
            let (replicas, voters) = placed.get(&q.name).copied().unwrap_or((1, 1));
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
                "replicas": replicas,
                "voters": voters,
            })
        })
        .collect();
    json!({
        "durable": queues.durable(),
        "rows": rows,
        "more": owned.len().saturating_sub(DASHBOARD_ROWS),
    })
}
