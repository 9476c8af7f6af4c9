//! The node's admin routes: probes (`/livez`, `/readyz`), the original's health JSON
//! (`/health`, `/health/summary`, `/metrics/persistence`), `/status`, and Prometheus
//! `/metrics`. Served by `admin::server` on the monitoring port.
//!
//! Probes are open (a kubelet carries no token); on a node that requires tokens every other
//! route needs one (and `introspection_role`, when set), as `cluster_map` does.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::admin::window::{self, HourWindow, Totals};
use crate::auth::TokenVerifier;
use crate::config::{PersistenceConfig, PersistenceMode};
use crate::data::functions::Functions;
use crate::view::NodeView;

/// The systems the original's unified metrics report on, and the ones this node serves (a
/// node's `capabilities` in discovery).
pub(crate) const SYSTEMS: [&str; 5] = ["rpc", "pubsub", "queue", "cache", "federation"];

/// What the node has counted since it started, of what is reported per hour.
fn totals(info: &NodeView, functions: &Functions) -> Totals {
    let (mut calls, mut failures) = (0, 0);
    for f in functions.current().functions() {
        calls += f.stats.client.snapshot().count + f.stats.peer.snapshot().count;
        failures += f.stats.failures.load(Ordering::Relaxed);
    }
    Totals {
        calls,
        failures,
        published: info.pubsub.stats().published,
        queue_ops: info.queues.operations(),
        cache_ops: info.cache.as_ref().map_or(0, |c| c.snapshot().requests()),
    }
}

impl Admin {
    /// How long the admin server has run, by the node's clock.
    fn up(&self) -> Duration {
        self.info
            .env
            .clock
            .now()
            .saturating_duration_since(self.started)
    }

    /// [`Admin::up`] in milliseconds: the hour window's time.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.up().as_millis()).unwrap_or(u64::MAX)
    }

    /// What was counted in the last hour.
    fn last_hour(&self) -> Totals {
        let now = totals(&self.info, &self.functions);
        self.window.lock().last_hour(self.now_ms(), now)
    }
}

/// Samples the totals once a minute until the node stops, for the last hour's figures.
pub(crate) async fn sample_hourly(admin: Admin) {
    let mut stopped = admin.stopped.clone();
    let every = Duration::from_millis(window::SAMPLE_EVERY_MS);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        let now = totals(&admin.info, &admin.functions);
        let at = admin.now_ms();
        admin.window.lock().record(at, now);
    }
}

/// How long `/readyz` waits for the leader to confirm that this replica caught up.
const READY_CATCH_UP: Duration = Duration::from_secs(2);

/// What the routes share.
#[derive(Clone)]
pub(crate) struct Admin {
    pub(crate) info: Arc<NodeView>,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) tokens: Option<Arc<TokenVerifier>>,
    pub(crate) introspection_role: Option<String>,
    pub(crate) cors: bool,
    pub(crate) persistence: PersistenceConfig,
    registry: Arc<Registry>,
    /// The functions whose calls `/metrics/rpc` sums.
    pub(crate) functions: Arc<Functions>,
    /// Says true once the node has stopped: long-lived responses (`/events`) end then.
    pub(crate) stopped: watch::Receiver<bool>,
    /// When the admin server started (rates are averages since).
    started: tokio::time::Instant,
    /// Totals sampled each minute, for figures over the last hour ([`sample_hourly`]).
    window: Arc<parking_lot::Mutex<HourWindow>>,
}

impl Admin {
    #[allow(clippy::too_many_arguments)] // the node's parts the routes read
    pub(crate) fn new(
        info: Arc<NodeView>,
        metrics: Registry,
        shutdown: watch::Receiver<bool>,
        tokens: Option<Arc<TokenVerifier>>,
        introspection_role: Option<String>,
        cors: bool,
        persistence: PersistenceConfig,
        stopped: watch::Receiver<bool>,
    ) -> Admin {
        let functions = info.functions.clone();
        let started = info.env.clock.now();
        let window = HourWindow::new(0, totals(&info, &functions));
        Admin {
            window: Arc::new(parking_lot::Mutex::new(window)),
            info,
            shutdown,
            tokens,
            introspection_role,
            cors,
            persistence,
            registry: Arc::new(metrics),
            functions,
            stopped,
            started,
        }
    }
}

/// `{"status": "error", "message": …}` with `code`, as the original answers errors.
pub(crate) fn error(code: StatusCode, message: &str) -> Response {
    (
        code,
        axum::Json(json!({"status": "error", "message": message})),
    )
        .into_response()
}

/// Tokens (except for the probes), then the original's response headers.
pub(crate) async fn guard(State(admin): State<Admin>, req: Request, next: Next) -> Response {
    let probe = matches!(req.uri().path(), "/livez" | "/readyz");
    if let (Some(tokens), false) = (&admin.tokens, probe) {
        let authorization = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        let now = admin.info.env.clock.wall_ms() / 1000;
        let verified = crate::auth::upgrade::presented_token(authorization, req.uri().query())
            .and_then(|t| t.ok_or(crate::auth::AuthError::Missing))
            .and_then(|t| tokens.verify(&t, now));
        match verified {
            Err(e) => return error(StatusCode::UNAUTHORIZED, &e.to_string()),
            Ok(v) => {
                if let Some(role) = &admin.introspection_role
                    && !v.identity.roles.contains(role)
                {
                    let why = format!("client `{}` needs the `{role}` role", v.identity.sub);
                    return error(StatusCode::FORBIDDEN, &why);
                }
            }
        }
    }
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    headers.insert(
        "x-monitoring-system",
        HeaderValue::from_static("mpreg-node"),
    );
    if admin.cors {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Content-Type, Authorization"),
        );
    }
    resp
}

/// Every route, as `/endpoints` lists them.
const ENDPOINTS: [(&str, &str); 16] = [
    ("/", "the dashboard (a page fed by /events)"),
    (
        "/events",
        "server-sent events: a snapshot of the cluster every second",
    ),
    ("/livez", "liveness probe: 200 while the process serves"),
    (
        "/readyz",
        "readiness probe: 200 as a caught-up member, 503 otherwise and while draining",
    ),
    (
        "/health",
        "cluster health in the original's shape (federation_health)",
    ),
    (
        "/health/summary",
        "cluster health summary in the original's shape",
    ),
    ("/status", "this node, its Raft state and the cluster map"),
    ("/metrics", "Prometheus metrics (text format)"),
    (
        "/metrics/persistence",
        "where the node keeps its state (persistence_snapshots)",
    ),
    (
        "/metrics/rpc",
        "RPC system metrics in the original's shape (averages since start)",
    ),
    (
        "/metrics/transport",
        "the node's endpoint in the original's shape",
    ),
    (
        "/metrics/unified",
        "every system's metrics in the original's shape",
    ),
    (
        "/metrics/cache",
        "the cache: entries, bytes, hits, misses, evictions per level, requests by operation (the original's shape)",
    ),
    (
        "/metrics/queue",
        "the queues this node owns: sizes, totals and send-to-ack latency (the original's shape)",
    ),
    (
        "/dns/metrics",
        "the DNS gateway: ports, zones and counters (the original's shape)",
    ),
    ("/endpoints", "this list"),
];

/// `/dns/metrics` in the original's shape: `{"enabled": false}` when the gateway is off.
pub(crate) async fn dns_metrics(State(admin): State<Admin>) -> Response {
    let gateway = match &admin.info.dns {
        None => json!({"enabled": false}),
        Some(g) => {
            let (udp, tcp) = g
                .addrs
                .lock()
                .map_or((None, None), |(u, t)| (Some(u.port()), Some(t.port())));
            let zones: Vec<String> = g.zones.labels.iter().map(|z| z.join(".")).collect();
            json!({
                "enabled": true,
                "status": "running",
                "udp_port": udp,
                "tcp_port": tcp,
                "zones": zones,
                "metrics": g.stats.original_json(),
            })
        }
    };
    axum::Json(json!({
        "status": "ok",
        "dns_gateway": gateway,
        "timestamp": now_s(&admin),
    }))
    .into_response()
}

pub(crate) async fn endpoints(State(admin): State<Admin>) -> Response {
    let list: Vec<Value> = ENDPOINTS
        .iter()
        .map(|(path, description)| json!({"path": path, "method": "GET", "description": description}))
        .collect();
    axum::Json(json!({
        "status": "ok",
        "endpoints": list,
        "total_endpoints": list.len(),
        "timestamp": now_s(&admin),
    }))
    .into_response()
}

pub(crate) async fn readyz(State(admin): State<Admin>) -> Response {
    match readiness(&admin).await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

/// How many members are live, suspect and down, from `cluster_map`.
fn member_counts(map: &Value) -> (usize, usize, usize) {
    let nodes = map["nodes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let count = |status: &str| nodes.iter().filter(|n| n["status"] == status).count();
    (count("ok"), count("suspect"), count("down"))
}

/// The original's health vocabulary over this cluster's members: healthy when every member
/// is live, degraded while some are not, critical when most are not.
fn health_of(ok: usize, suspect: usize, down: usize) -> (&'static str, f64) {
    let total = ok + suspect + down;
    if total == 0 {
        return ("unavailable", 0.0);
    }
    let score = ok as f64 / total as f64;
    let status = if score >= 1.0 {
        "healthy"
    } else if score >= 0.5 {
        "degraded"
    } else {
        "critical"
    };
    (status, score)
}

fn now_s(admin: &Admin) -> f64 {
    admin.info.env.wall_seconds()
}

pub(crate) async fn health(State(admin): State<Admin>) -> Response {
    let map = admin.info.cluster_map();
    let (ok, suspect, down) = member_counts(&map);
    let (status, score) = health_of(ok, suspect, down);
    let now = now_s(&admin);
    axum::Json(json!({
        "status": "ok",
        "federation_health": {
            "overall_status": status,
            "health_score": score,
            "total_clusters": 1,
            "healthy_clusters": usize::from(status == "healthy"),
            "degraded_clusters": usize::from(status == "degraded"),
            "critical_clusters": usize::from(status == "critical"),
            "unavailable_clusters": usize::from(status == "unavailable"),
            "connection_health": {
                "total_connections": ok + suspect + down,
                "active_connections": ok,
                "success_rate_percent": score * 100.0,
            },
            "performance": {"cross_cluster_latency_p95_ms": 0.0, "federation_mode": "strict_isolation"},
            "last_updated": now,
            "members": {"live": ok, "suspect": suspect, "down": down},
        },
        "timestamp": now,
    }))
    .into_response()
}

pub(crate) async fn health_summary(State(admin): State<Admin>) -> Response {
    let map = admin.info.cluster_map();
    let (ok, suspect, down) = member_counts(&map);
    let (status, score) = health_of(ok, suspect, down);
    let now = now_s(&admin);
    let cluster = json!({
        "cluster_id": admin.info.cluster_id,
        "status": status,
        "health_score": score,
        "node_count": ok + suspect + down,
        "active_connections": admin.info.stats.active_clients.load(Ordering::Relaxed),
        "last_heartbeat": now,
    });
    axum::Json(json!({
        "status": "ok",
        "health_summary": {
            "overall": {"health_score": score, "status": status, "federation_mode": "strict_isolation"},
            "cluster_counts": {
                "total": 1,
                "healthy": usize::from(status == "healthy"),
                "degraded": usize::from(status == "degraded"),
                "critical": usize::from(status == "critical"),
                "unavailable": usize::from(status == "unavailable"),
            },
            "connections": {"total": ok + suspect + down, "active": ok, "success_rate_percent": score * 100.0},
            "cluster_details": {admin.info.cluster_id.clone(): cluster},
        },
        "timestamp": now,
    }))
    .into_response()
}

pub(crate) async fn status(State(admin): State<Admin>) -> Response {
    let m = admin.info.control.raft.metrics().borrow().clone();
    axum::Json(json!({
        "status": "ok",
        "node": {
            "node_id": admin.info.node_id,
            "name": admin.info.name,
            "cluster_id": admin.info.cluster_id,
            "url": admin.info.url,
            "draining": *admin.shutdown.borrow(),
        },
        "raft": {
            "id": admin.info.control.id,
            "state": format!("{:?}", m.state),
            "term": m.current_term,
            "leader": m.current_leader,
            "last_log_index": m.last_log_index,
            "last_applied_index": m.last_applied.map(|l| l.index),
            "snapshot_index": m.snapshot.map(|l| l.index),
        },
        "cluster": admin.info.cluster_map(),
        "timestamp": now_s(&admin),
    }))
    .into_response()
}

pub(crate) async fn persistence(State(admin): State<Admin>) -> Response {
    let p = &admin.persistence;
    let snapshots = match p.mode {
        PersistenceMode::Memory => json!({"enabled": false, "mode": "memory"}),
        PersistenceMode::Sqlite => {
            let (functions, queues, nodes, services) = admin.info.control.catalog.read(|s| {
                (
                    s.catalog.functions().count(),
                    s.catalog.queues().count(),
                    s.catalog.members().count(),
                    s.catalog.services().count(),
                )
            });
            // The topics with subscribers anywhere in the cluster, as this node knows them
            // (its subscriptions' patterns and its peers' advertised interest).
            let mut topics = admin.info.remote_interest.patterns();
            topics.extend(admin.info.pubsub.interest());
            json!({
                "enabled": true,
                "mode": "sqlite",
                "data_dir": p.data_dir.display().to_string(),
                "sqlite_path": p.sqlite_path().display().to_string(),
                "registry_open": true,
                "fabric": {
                    // Caches and cache profiles are absent: the node has no cache yet. The
                    // original's snapshot times and route keys have no counterpart here.
                    "catalog_entries": {"functions": functions, "topics": topics.len(), "queues": queues,
                                        "services": services, "nodes": nodes},
                },
            })
        }
    };
    axum::Json(
        json!({"status": "ok", "persistence_snapshots": snapshots, "timestamp": now_s(&admin)}),
    )
    .into_response()
}

/// Seconds the admin server has run (at least 1: rates are averages over it).
fn up_seconds(admin: &Admin) -> f64 {
    admin.up().as_secs_f64().max(1.0)
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// The original's `SystemMetrics` of this node's RPC, from every function's stats: the rate
/// and averages since the admin server started; the count and error rate over the last hour
/// (`hour`); p95/p99 are the bucket bounds that hold them.
fn rpc_system(admin: &Admin, hour: Totals) -> Value {
    let registry = admin.functions.current();
    let mut buckets = vec![0u64; crate::registry::stats::BUCKET_BOUNDS_US.len()];
    let (mut count, mut sum) = (0u64, 0.0f64);
    for f in registry.functions() {
        for h in [&f.stats.client, &f.stats.peer] {
            let s = h.snapshot();
            count += s.count;
            sum += s.sum_seconds;
            for (b, (_, n)) in buckets.iter_mut().zip(&s.buckets) {
                *b += n;
            }
        }
    }
    let quantile_ms = |q: f64| {
        let want = (count as f64 * q).ceil() as u64;
        crate::registry::stats::BUCKET_BOUNDS_US
            .iter()
            .zip(&buckets)
            .find(|(_, n)| **n >= want && want > 0)
            .map_or(0.0, |(bound, _)| *bound as f64 / 1000.0)
    };
    json!({
        "system_type": "rpc",
        "system_name": admin.info.name,
        "requests_per_second": count as f64 / up_seconds(admin),
        "average_latency_ms": if count == 0 { 0.0 } else { sum * 1000.0 / count as f64 },
        "p95_latency_ms": quantile_ms(0.95),
        "p99_latency_ms": quantile_ms(0.99),
        "error_rate_percent": percent(hour.failures, hour.calls),
        "active_connections": admin.info.stats.active_clients.load(Ordering::Relaxed),
        "total_operations_last_hour": hour.calls,
        "last_updated": now_s(admin),
    })
}

/// The original's `SystemMetrics` of this node's topic exchange. Its latencies are not
/// measured (a publish is acked before it is delivered), so they are absent; the error rate
/// is the share of notifications dropped for slow subscribers.
fn pubsub_system(admin: &Admin, hour: Totals) -> Value {
    let ps = admin.info.pubsub.stats();
    json!({
        "system_type": "pubsub",
        "system_name": admin.info.name,
        "requests_per_second": ps.published as f64 / up_seconds(admin),
        "error_rate_percent": percent(ps.dropped, ps.delivered + ps.dropped),
        "active_connections": ps.subscriptions,
        "total_operations_last_hour": hour.published,
        "last_updated": now_s(admin),
    })
}

/// What `/readyz` answers: ready, or why not (see `admin::ready`).
async fn readiness(admin: &Admin) -> Result<(), &'static str> {
    let control = &admin.info.control;
    let member = control
        .catalog
        .read(|s| s.catalog.member_by_id(control.id).is_some());
    let draining = *admin.shutdown.borrow();
    let caught_up = !draining && member && control.linearizable(READY_CATCH_UP).await.is_ok();
    let facts = crate::admin::ready::Facts {
        // Read again: a drain that began during the read index counts.
        draining: draining || *admin.shutdown.borrow(),
        member,
        caught_up,
    };
    crate::admin::ready::decide(facts)
}

/// The original's transport snapshot of this node's own endpoint: its health score
/// (`admin::health`), its client connections, and those refused or failed at the handshake.
async fn transport_snapshots(admin: &Admin, rpc: &Value, hour: Totals) -> Value {
    let clients = admin.info.stats.active_clients.load(Ordering::Relaxed);
    let (ok, suspect, down) = member_counts(&admin.info.cluster_map());
    let raft = admin.info.control.raft.metrics().borrow().clone();
    let applied = raft.last_applied.map_or(0, |l| l.index);
    let signals = crate::admin::health::Signals {
        ready: readiness(admin).await.is_ok(),
        peers: (ok + suspect + down).saturating_sub(1),
        peers_down: down,
        calls: hour.calls,
        failures: hour.failures,
        apply_lag: raft.last_log_index.unwrap_or(0).saturating_sub(applied),
    };
    let failed = admin.info.stats.handshakes_failed.load(Ordering::Relaxed);
    json!({admin.info.url.clone(): {
        "endpoint": admin.info.url,
        "overall_health_score": crate::admin::health::score(signals),
        "active_connections": clients,
        "total_connections": clients,
        "healthy_connections": clients,
        "failed_connections": failed,
        "average_response_time_ms": rpc["average_latency_ms"],
        "total_operations_last_hour": rpc["total_operations_last_hour"],
        "error_rate_percent": rpc["error_rate_percent"],
        "last_health_check": now_s(admin),
    }})
}

pub(crate) async fn metrics_rpc(State(admin): State<Admin>) -> Response {
    let hour = admin.last_hour();
    axum::Json(json!({"status": "ok", "system": "rpc", "metrics": rpc_system(&admin, hour), "timestamp": now_s(&admin)}))
        .into_response()
}

/// The queue system in the original's shape (`queue::metrics::original_json`).
fn queue_system(admin: &Admin, hour: Totals) -> Value {
    crate::queue::metrics::original_json(
        &admin.info.queues,
        up_seconds(admin),
        hour.queue_ops,
        &admin.info.name,
    )
}

pub(crate) async fn metrics_queue(State(admin): State<Admin>) -> Response {
    let hour = admin.last_hour();
    axum::Json(json!({"status": "ok", "system": "queue", "metrics": queue_system(&admin, hour), "timestamp": now_s(&admin)}))
        .into_response()
}

/// The cache in the original's shape (`cache::metrics::original_json`); null when it is off.
fn cache_system(admin: &Admin, hour: Totals) -> Value {
    admin.info.cache.as_ref().map_or(Value::Null, |c| {
        crate::cache::metrics::original_json(
            c,
            up_seconds(admin),
            hour.cache_ops,
            &admin.info.name,
            now_s(admin),
        )
    })
}

pub(crate) async fn metrics_cache(State(admin): State<Admin>) -> Response {
    let cache = cache_system(&admin, admin.last_hour());
    if cache.is_null() {
        return error(
            StatusCode::NOT_FOUND,
            "the cache is off on this node (enable_default_cache)",
        );
    }
    axum::Json(
        json!({"status": "ok", "system": "cache", "metrics": cache, "timestamp": now_s(&admin)}),
    )
    .into_response()
}

pub(crate) async fn metrics_transport(State(admin): State<Admin>) -> Response {
    let hour = admin.last_hour();
    let rpc = rpc_system(&admin, hour);
    axum::Json(json!({
        "status": "ok",
        "transport_health_snapshots": transport_snapshots(&admin, &rpc, hour).await,
        "timestamp": now_s(&admin),
    }))
    .into_response()
}

/// A system's status and score as the original computes them: 1 − 0.6·errors − 0.4·latency
/// over 5 s (a system whose latency is not measured counts none).
fn system_health(system: &Value) -> (&'static str, f64) {
    let errors = system["error_rate_percent"].as_f64().unwrap_or(0.0);
    let latency = system["average_latency_ms"].as_f64().unwrap_or(0.0);
    let score =
        (1.0 - 0.6 * (errors / 100.0).min(1.0) - 0.4 * (latency / 5000.0).min(1.0)).max(0.0);
    (status_of(score), score)
}

/// The original's status for a score.
fn status_of(score: f64) -> &'static str {
    if score >= 0.8 {
        "healthy"
    } else if score >= 0.6 {
        "degraded"
    } else {
        "critical"
    }
}

pub(crate) async fn metrics_unified(State(admin): State<Admin>) -> Response {
    let hour = admin.last_hour();
    let rpc = rpc_system(&admin, hour);
    let pubsub = pubsub_system(&admin, hour);
    let queue = queue_system(&admin, hour);
    let cache = cache_system(&admin, hour);
    let mut served: Vec<(&str, f64)> = [&rpc, &pubsub, &queue].map(system_health).to_vec();
    if !cache.is_null() {
        served.push(system_health(&cache));
    }
    // The overall score is the mean over the systems served, as the original's.
    let score = served.iter().map(|(_, s)| s).sum::<f64>() / served.len() as f64;
    let status = status_of(score);
    let count = |want: &str| served.iter().filter(|(s, _)| *s == want).count();
    let now = now_s(&admin);
    axum::Json(json!({
        "status": "ok",
        "unified_metrics": {
            "rpc": rpc,
            "pubsub": pubsub,
            "queue": queue,
            // Off (or, for federation, not built yet): null here and counted unavailable.
            "cache": cache, "federation": null,
            "transport_health_snapshots": transport_snapshots(&admin, &rpc, hour).await,
            "overall_health": {
                "health_score": score, "status": status,
                "systems_healthy": count("healthy"),
                "systems_degraded": count("degraded"),
                "systems_critical": count("critical"),
                "systems_unavailable": SYSTEMS.len() - served.len(),
            },
            // Where the original's `mpreg monitor status` looks for them.
            "overall_health_status": status,
            "overall_health_score": score,
            "performance_summary": {
                "total_requests_per_second": rpc["requests_per_second"].as_f64().unwrap_or(0.0)
                    + pubsub["requests_per_second"].as_f64().unwrap_or(0.0),
            },
            "collection_info": {"collection_timestamp": now},
        },
        "timestamp": now,
    }))
    .into_response()
}

pub(crate) async fn metrics(State(admin): State<Admin>) -> Response {
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut text, &admin.registry)
    {
        return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::health_of;

    #[test]
    fn health_follows_the_share_of_live_members() {
        assert_eq!(health_of(3, 0, 0), ("healthy", 1.0));
        assert_eq!(health_of(2, 0, 1).0, "degraded");
        assert_eq!(health_of(1, 1, 0).0, "degraded");
        assert_eq!(health_of(1, 0, 2).0, "critical");
        assert_eq!(health_of(0, 0, 0), ("unavailable", 0.0));
    }
}
