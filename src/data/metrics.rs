//! The data plane's figures for `/metrics`: client connections and their bytes, requests
//! and forwarded steps, the client byte budget, calls per function, error replies, and what
//! heartbeats say of each peer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::client_budget::ClientBudget;
use super::forward::Peers;
use super::functions::Functions;
use super::stats::Stats;
use crate::fabric::Fabric;
use crate::metrics::{counter, gauge, histogram, int, per_bucket};

/// Read at scrape time from the counters where they are kept.
pub(crate) struct DataMetrics {
    pub(crate) stats: Arc<Stats>,
    pub(crate) fabric: Fabric,
    pub(crate) clients: Arc<ClientBudget>,
    pub(crate) functions: Arc<Functions>,
    /// The other members (the catalog's word) and what heartbeats say of them.
    pub(crate) peers: Arc<Peers>,
}

impl std::fmt::Debug for DataMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataMetrics")
    }
}

impl Collector for DataMetrics {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        self.connections(&mut e)?;
        self.traffic(&mut e)?;
        self.budget(&mut e)?;
        self.calls(&mut e)?;
        self.peers(&mut e)
    }
}

impl DataMetrics {
    fn connections(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let stats = &self.stats;
        let load = |n: &std::sync::atomic::AtomicUsize| int(n.load(Ordering::Relaxed));
        let count = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
        gauge(
            e,
            "mpreg_client_connections",
            "Client connections open (workers included)",
            load(&stats.active_clients),
        )?;
        gauge(
            e,
            "mpreg_requests_in_flight",
            "Client requests running",
            int(stats.inflight()),
        )?;
        gauge(
            e,
            "mpreg_forwarded_steps_running",
            "Steps other nodes forwarded here, running",
            load(&stats.steps_running),
        )?;
        counter(
            e,
            "mpreg_client_connections_refused",
            "Client upgrades refused with 503 because max_connections were open",
            count(&stats.clients_refused_full),
        )?;
        counter(
            e,
            "mpreg_connection_handshakes_failed",
            "Connections (clients and peers) refused or failed at the TLS or WebSocket handshake",
            count(&stats.handshakes_failed),
        )?;
        counter(
            e,
            "mpreg_peer_connections_accepted",
            "Peer connections accepted since start",
            count(&stats.peer_links_accepted),
        )?;
        gauge(
            e,
            "mpreg_peer_connections",
            "Peer connections open (dialled or accepted)",
            int(self.fabric.open_connections()),
        )?;
        gauge(
            e,
            "mpreg_worker_connections",
            "Client connections that registered functions (workers)",
            load(&stats.workers),
        )?;
        counter(
            e,
            "mpreg_worker_calls_abandoned",
            "Calls to a worker that ended unanswered",
            count(&stats.worker_calls_abandoned),
        )
    }

    fn traffic(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let stats = &self.stats;
        let clients = stats.client_totals();
        counter(
            e,
            "mpreg_client_bytes_received",
            "Bytes of the frames clients sent",
            clients.bytes_in.load(Ordering::Relaxed),
        )?;
        counter(
            e,
            "mpreg_client_bytes_sent",
            "Bytes of the replies queued to clients",
            clients.bytes_out.load(Ordering::Relaxed),
        )?;
        histogram(
            e,
            "mpreg_request_steps",
            "Commands (DAG steps) per client request",
            &clients.dag_steps.snapshot(),
        )?;
        let traffic = self.fabric.traffic();
        counter(
            e,
            "mpreg_peer_bytes_received",
            "Bytes of the frames peers sent",
            traffic.bytes_in.load(Ordering::Relaxed),
        )?;
        counter(
            e,
            "mpreg_peer_bytes_sent",
            "Bytes of the frames written to peers",
            traffic.bytes_out.load(Ordering::Relaxed),
        )?;
        histogram(
            e,
            "mpreg_forwarded_step_duration_seconds",
            "Steps this node forwarded to another, from sending to the answer",
            &stats.forwarded.snapshot(),
        )?;
        counter(
            e,
            "mpreg_forwarded_step_failures",
            "Steps forwarded to another node that got no answer (not sent, lost, timed out)",
            stats.forwards_failed.load(Ordering::Relaxed),
        )
    }

    fn budget(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let budget = &self.clients;
        gauge(
            e,
            "mpreg_client_bytes_held",
            "Bytes client connections hold (budgeted)",
            int(budget.used()),
        )?;
        gauge(
            e,
            "mpreg_client_bytes_limit",
            "max_client_bytes",
            int(budget.limit()),
        )?;
        counter(
            e,
            "mpreg_client_connections_paused",
            "Times a client connection was paused by a byte budget",
            budget.paused.load(Ordering::Relaxed),
        )?;
        counter(
            e,
            "mpreg_client_connections_stalled",
            "Clients disconnected for not reading their replies",
            budget.stalled.load(Ordering::Relaxed),
        )
    }

    /// Per function version here: calls by caller, failures, latency; error replies by code.
    fn calls(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let registry = self.functions.current();
        let mut calls = e.encode_descriptor(
            "mpreg_call_duration_seconds",
            "Calls of functions served here and how long they took, by who asked (client: a \
             request to this node; peer: a step another node forwarded)",
            None,
            MetricType::Histogram,
        )?;
        for f in registry.functions() {
            for (caller, h) in [("client", &f.stats.client), ("peer", &f.stats.peer)] {
                let s = h.snapshot();
                if s.count == 0 {
                    continue;
                }
                let labels = [
                    ("function", f.spec.name.clone()),
                    ("version", f.spec.version.to_string()),
                    ("caller", caller.to_owned()),
                ];
                calls
                    .encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(
                        s.sum_seconds,
                        s.count,
                        &per_bucket(&s),
                        None,
                    )?;
            }
        }
        let mut failed = e.encode_descriptor(
            "mpreg_call_failures",
            "Calls of functions served here that returned an error",
            None,
            MetricType::Counter,
        )?;
        for f in registry.functions() {
            let n = f.stats.failures.load(Ordering::Relaxed);
            let labels = [
                ("function", f.spec.name.clone()),
                ("version", f.spec.version.to_string()),
            ];
            ConstCounter::new(n).encode(failed.encode_family(&labels)?)?;
        }
        // Cacheable functions only (`Function::cache`): calls answered from the cache, and
        // calls that ran the function.
        for (name, help, read) in [
            (
                "mpreg_function_cache_hits",
                "Calls of a cacheable function answered from its result cache",
                (|s| &s.cache_hits) as fn(&crate::registry::stats::CallStats) -> &AtomicU64,
            ),
            (
                "mpreg_function_cache_misses",
                "Calls of a cacheable function that ran it",
                |s| &s.cache_misses,
            ),
        ] {
            let mut family = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            for f in registry.functions().filter(|f| f.cache_ttl.is_some()) {
                let labels = [
                    ("function", f.spec.name.clone()),
                    ("version", f.spec.version.to_string()),
                ];
                let n = read(&f.stats).load(Ordering::Relaxed);
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut errors = e.encode_descriptor(
            "mpreg_request_errors",
            "Error replies sent to clients, by error code (docs/PROTOCOL.md)",
            None,
            MetricType::Counter,
        )?;
        for (code, n) in self.stats.errors.counts() {
            let labels = [("code", code.to_string())];
            ConstCounter::new(n).encode(errors.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// Per peer: liveness, the age of its last heartbeat and its round trip.
    fn peers(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let control = &self.peers.control;
        let now = self.peers.env.clock.now();
        let ids: Vec<crate::control::NodeId> = control.catalog.read(|s| {
            s.catalog
                .members()
                .map(|m| m.id)
                .filter(|id| *id != control.id)
                .collect()
        });
        let label = |id: &crate::control::NodeId| [("peer", id.to_string())];
        let d = self.peers.detector.lock();
        let mut up = e.encode_descriptor(
            "mpreg_peer_up",
            "1 when heartbeats say the peer is live",
            None,
            MetricType::Gauge,
        )?;
        for id in &ids {
            let live = matches!(d.status(*id, now), crate::routing::Liveness::Alive);
            ConstGauge::new(i64::from(live)).encode(up.encode_family(&label(id))?)?;
        }
        let mut age = e.encode_descriptor(
            "mpreg_peer_heartbeat_age_seconds",
            "Seconds since the peer's last heartbeat answer",
            None,
            MetricType::Gauge,
        )?;
        for id in &ids {
            if let Some(a) = d.age(*id, now) {
                ConstGauge::new(a.as_secs_f64()).encode(age.encode_family(&label(id))?)?;
            }
        }
        let mut rtt = e.encode_descriptor(
            "mpreg_peer_round_trip_seconds",
            "How long the peer's last answered heartbeat took, sent to answered",
            None,
            MetricType::Gauge,
        )?;
        for id in &ids {
            if let Some(t) = d.last_round_trip(*id) {
                ConstGauge::new(t.as_secs_f64()).encode(rtt.encode_family(&label(id))?)?;
            }
        }
        Ok(())
    }
}
