//! The gateway's counters: queries by transport and rcode, truncations, rate limiting,
//! the answer cache and latency, as `/metrics` and `/dns/metrics` (the original's shape)
//! report them. Atomics, written by the socket tasks and read at scrape time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use serde_json::{Value, json};

use super::wire::{Fit, Transport};
use crate::metrics::{counter, gauge, histogram, int};
use crate::registry::stats::Latency;

/// The rcodes counted by name; others as `other`.
const RCODES: [&str; 7] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "other",
];

fn rcode_index(r: ResponseCode) -> usize {
    match r {
        ResponseCode::NoError => 0,
        ResponseCode::FormErr => 1,
        ResponseCode::ServFail => 2,
        ResponseCode::NXDomain => 3,
        ResponseCode::NotImp => 4,
        ResponseCode::Refused => 5,
        _ => 6,
    }
}

#[derive(Debug, Default)]
pub struct DnsStats {
    udp: AtomicU64,
    tcp: AtomicU64,
    rcodes: [[AtomicU64; RCODES.len()]; 2],
    truncated: AtomicU64,
    rrl_dropped: AtomicU64,
    rrl_slipped: AtomicU64,
    tcp_refused: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    errors: AtomicU64,
    /// TCP connections open now (the gateway's accept loop keeps it).
    pub(crate) tcp_open: std::sync::atomic::AtomicUsize,
    latency: Latency,
    max_latency_us: AtomicU64,
    last_query_ms: AtomicU64,
    last_error: parking_lot::Mutex<Option<String>>,
}

impl DnsStats {
    pub fn answered(
        &self,
        t: Transport,
        rcode: ResponseCode,
        fit: Fit,
        took: Duration,
        now_ms: u64,
    ) {
        let (count, i) = match t {
            Transport::Udp => (&self.udp, 0),
            Transport::Tcp => (&self.tcp, 1),
        };
        count.fetch_add(1, Ordering::Relaxed);
        self.rcodes[i][rcode_index(rcode)].fetch_add(1, Ordering::Relaxed);
        if fit == Fit::Truncated {
            self.truncated.fetch_add(1, Ordering::Relaxed);
        }
        self.latency.record(took);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.max_latency_us.fetch_max(us, Ordering::Relaxed);
        self.last_query_ms.store(now_ms, Ordering::Relaxed);
    }

    pub fn cache_hit(&self) {
        self.cache_hits.fetch_add(1, Ordering::Relaxed);
    }

    pub fn cache_miss(&self) {
        self.cache_misses.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dropped(&self) {
        self.rrl_dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub fn slipped(&self) {
        self.rrl_slipped.fetch_add(1, Ordering::Relaxed);
    }

    pub fn tcp_refused(&self) {
        self.tcp_refused.fetch_add(1, Ordering::Relaxed);
    }

    pub fn error(&self, e: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock() = Some(e.chars().take(200).collect());
    }

    fn total(&self) -> u64 {
        self.udp.load(Ordering::Relaxed) + self.tcp.load(Ordering::Relaxed)
    }

    fn by_rcode(&self, i: usize) -> u64 {
        self.rcodes[0][i].load(Ordering::Relaxed) + self.rcodes[1][i].load(Ordering::Relaxed)
    }

    /// The original's `metrics` object of `/dns/metrics`, with our counters beside.
    pub fn original_json(&self) -> Value {
        let total = self.total();
        let snap = self.latency.snapshot();
        let avg_ms = if snap.count == 0 {
            0.0
        } else {
            snap.sum_seconds * 1000.0 / snap.count as f64
        };
        let last = self.last_query_ms.load(Ordering::Relaxed);
        let errors: u64 = (0..RCODES.len())
            .filter(|i| *i != 0 && *i != 3)
            .map(|i| self.by_rcode(i))
            .sum();
        json!({
            "total_queries": total,
            "udp_queries": self.udp.load(Ordering::Relaxed),
            "tcp_queries": self.tcp.load(Ordering::Relaxed),
            "nxdomain_responses": self.by_rcode(3),
            "error_responses": errors,
            "last_query_at": (last > 0).then(|| last as f64 / 1000.0),
            "last_error": self.last_error.lock().clone(),
            "avg_latency_ms": avg_ms,
            "max_latency_ms": self.max_latency_us.load(Ordering::Relaxed) as f64 / 1000.0,
            "truncated_responses": self.truncated.load(Ordering::Relaxed),
            "rate_limited_dropped": self.rrl_dropped.load(Ordering::Relaxed),
            "rate_limited_slipped": self.rrl_slipped.load(Ordering::Relaxed),
            "cache_hits": self.cache_hits.load(Ordering::Relaxed),
            "cache_misses": self.cache_misses.load(Ordering::Relaxed),
            "tcp_connections_refused": self.tcp_refused.load(Ordering::Relaxed),
            "socket_errors": self.errors.load(Ordering::Relaxed),
        })
    }
}

/// Read at scrape time from the gateway's counters.
#[derive(Debug)]
pub(crate) struct DnsMetrics(pub(crate) Arc<DnsStats>);

impl Collector for DnsMetrics {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let e = &mut e;
        let s = &self.0;
        let mut queries = e.encode_descriptor(
            "mpreg_dns_queries",
            "DNS queries answered, by transport and response code",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (t, name) in [(0, "udp"), (1, "tcp")] {
            for (i, rcode) in RCODES.iter().enumerate() {
                let c = ConstCounter::new(s.rcodes[t][i].load(Ordering::Relaxed));
                let labels = [("protocol", name), ("rcode", *rcode)];
                c.encode(queries.encode_family(&labels)?)?;
            }
        }
        counter(
            e,
            "mpreg_dns_truncated",
            "UDP answers sent truncated (TC) because they did not fit",
            s.truncated.load(Ordering::Relaxed),
        )?;
        counter(
            e,
            "mpreg_dns_rate_limited_dropped",
            "UDP answers dropped by response rate limiting",
            s.rrl_dropped.load(Ordering::Relaxed),
        )?;
        counter(
            e,
            "mpreg_dns_rate_limited_slipped",
            "UDP answers sent truncated instead by response rate limiting",
            s.rrl_slipped.load(Ordering::Relaxed),
        )?;
        counter(
            e,
            "mpreg_dns_tcp_refused",
            "TCP connections closed at once (dns_tcp_max_connections reached)",
            s.tcp_refused.load(Ordering::Relaxed),
        )?;
        counter(
            e,
            "mpreg_dns_socket_errors",
            "Failed receives, sends and accepts on the gateway's sockets (the last one is in /dns/metrics)",
            s.errors.load(Ordering::Relaxed),
        )?;
        counter(
            e,
            "mpreg_dns_cache_hits",
            "Queries answered from the answer cache",
            s.cache_hits.load(Ordering::Relaxed),
        )?;
        counter(
            e,
            "mpreg_dns_cache_misses",
            "Queries answered from the catalog",
            s.cache_misses.load(Ordering::Relaxed),
        )?;
        gauge(
            e,
            "mpreg_dns_tcp_connections",
            "TCP connections open to the gateway",
            int(s.tcp_open.load(Ordering::Relaxed)),
        )?;
        histogram(
            e,
            "mpreg_dns_latency_seconds",
            "Time from a query's arrival to its answer",
            &s.latency.snapshot(),
        )
    }
}
