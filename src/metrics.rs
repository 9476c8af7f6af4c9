//! Writing figures in Prometheus' text format: the helpers every room's collector uses.
//! Each room owns its collector (`data::metrics`, `pubsub::metrics`, `control::metrics`),
//! read from its own counters at scrape time; the node registers them all with the admin
//! server's registry.

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::registry::stats::LatencySnapshot;

pub(crate) fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

pub(crate) fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

/// `s`'s buckets as prometheus-client's encoder takes them: the count in each bucket alone
/// (it sums them itself, and adds `+Inf` from the total).
pub(crate) fn per_bucket(s: &LatencySnapshot) -> Vec<(f64, u64)> {
    let mut below = 0;
    s.buckets
        .iter()
        .map(|&(bound, cumulative)| {
            let n = cumulative - below;
            below = cumulative;
            (bound, n)
        })
        .collect()
}

pub(crate) fn histogram(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    s: &LatencySnapshot,
) -> std::fmt::Result {
    e.encode_descriptor(name, help, None, MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(s.sum_seconds, s.count, &per_bucket(s), None)
}

/// A count as a gauge's value (saturating: no count here comes near `i64::MAX`).
pub(crate) fn int(v: impl TryInto<i64>) -> i64 {
    v.try_into().unwrap_or(i64::MAX)
}
