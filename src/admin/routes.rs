//! The admin server's routes: which handler answers each path, behind the guard that checks
//! tokens and CORS (`status::guard`).

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

use super::dashboard::{events, page};
use super::status::{
    Admin, dns_metrics, endpoints, error, guard, health, health_summary, metrics, metrics_cache,
    metrics_queue, metrics_rpc, metrics_transport, metrics_unified, persistence, readyz, status,
};

/// The admin router.
pub(crate) fn router(admin: Admin) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/events", get(events))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/health", get(health))
        .route("/health/summary", get(health_summary))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/metrics/persistence", get(persistence))
        .route("/endpoints", get(endpoints))
        .route("/dns/metrics", get(dns_metrics))
        .route("/metrics/rpc", get(metrics_rpc))
        .route("/metrics/queue", get(metrics_queue))
        .route("/metrics/cache", get(metrics_cache))
        .route("/metrics/transport", get(metrics_transport))
        .route("/metrics/unified", get(metrics_unified))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such endpoint (see docs/OPERATIONS.md)",
            )
        })
        .layer(axum::middleware::from_fn_with_state(admin.clone(), guard))
        .with_state(admin)
}
