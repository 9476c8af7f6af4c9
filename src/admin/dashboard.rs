//! The dashboard: one page at `/`, embedded in the binary (`src/admin/dashboard.html`, no
//! file or network fetched at run time), fed by `/events`, a stream of server-sent events
//! that pushes a snapshot of the cluster every second: the nodes with their status, role,
//! leader, resources and load (`cluster_map`); the catalog's functions and versions; the
//! rate and latency of the calls this node served; its recent error replies.
//!
//! Each stream keeps its own previous counts (rates are per stream; nothing is shared) and
//! ends when the node has stopped. A snapshot is bounded: the catalog part lists at most
//! [`MAX_CATALOG_ROWS`] function versions, the errors part at most 32.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::admin::status::Admin;
use crate::registry::stats::{BUCKET_BOUNDS_US, LatencySnapshot};

const PAGE: &str = include_str!("../admin/dashboard.html");

/// How often a snapshot is pushed.
const EVERY: Duration = Duration::from_secs(1);
/// Most function versions a snapshot lists (the catalog can be larger than a page).
const MAX_CATALOG_ROWS: usize = 500;

pub(crate) async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}

/// Calls of one function version so far, and when they were counted.
type Seen = BTreeMap<(String, String), (u64, tokio::time::Instant)>;

pub(crate) async fn events(State(admin): State<Admin>) -> Response {
    let stream =
        futures_util::stream::unfold((admin, Seen::new(), true), |(admin, seen, first)| {
            next(admin, seen, first)
        });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn next(
    admin: Admin,
    mut seen: Seen,
    first: bool,
) -> Option<(Result<Event, Infallible>, (Admin, Seen, bool))> {
    let mut stopped = admin.stopped.clone();
    if !first {
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => return None,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
    if *stopped.borrow() {
        return None;
    }
    let data = snapshot(&admin, &mut seen).to_string();
    let event = Event::default().event("snapshot").data(data);
    Some((Ok(event), (admin, seen, false)))
}

/// The upper bound of the bucket holding quantile `q` of `s`, in ms (0: no calls).
fn quantile_ms(s: &LatencySnapshot, q: f64) -> f64 {
    let want = (s.count as f64 * q).ceil() as u64;
    if want == 0 {
        return 0.0;
    }
    s.buckets
        .iter()
        .zip(BUCKET_BOUNDS_US)
        .find(|((_, n), _)| *n >= want)
        .map_or(
            BUCKET_BOUNDS_US[BUCKET_BOUNDS_US.len() - 1] as f64 / 1000.0,
            |(_, b)| b as f64 / 1000.0,
        )
}

fn snapshot(admin: &Admin, seen: &mut Seen) -> Value {
    let info = &admin.info;
    let now = info.env.clock.now();
    let mut calls = Vec::new();
    for f in admin.functions.current().functions() {
        let (client, peer) = (f.stats.client.snapshot(), f.stats.peer.snapshot());
        let count = client.count + peer.count;
        if count == 0 {
            continue;
        }
        let key = (f.spec.name.clone(), f.spec.version.to_string());
        let rate = match seen.insert(key, (count, now)) {
            Some((before, at)) => {
                let secs = now.saturating_duration_since(at).as_secs_f64();
                if secs > 0.0 {
                    count.saturating_sub(before) as f64 / secs
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        // Both callers' histograms together, for the quantile.
        let both = LatencySnapshot {
            buckets: client
                .buckets
                .iter()
                .zip(&peer.buckets)
                .map(|(a, b)| (a.0, a.1 + b.1))
                .collect(),
            count,
            sum_seconds: client.sum_seconds + peer.sum_seconds,
        };
        calls.push(json!({
            "name": f.spec.name,
            "version": f.spec.version.to_string(),
            "calls": count,
            "rate_per_s": rate,
            "mean_ms": both.sum_seconds * 1000.0 / count as f64,
            "p95_ms": quantile_ms(&both, 0.95),
            "failures": f.stats.failures.load(std::sync::atomic::Ordering::Relaxed),
        }));
    }
    let catalog = info.control.catalog.read(|state| {
        let catalog = &state.catalog;
        let mut rows: BTreeMap<(String, String), (Vec<String>, Vec<String>)> = BTreeMap::new();
        for (node, f) in catalog.functions() {
            let key = (f.name.clone(), f.version.to_string());
            if rows.len() >= MAX_CATALOG_ROWS && !rows.contains_key(&key) {
                continue;
            }
            let row = rows.entry(key).or_default();
            row.0 = f.resources.iter().cloned().collect();
            row.1.push(catalog.node_id_of(node));
        }
        rows.into_iter()
            .map(|((name, version), (resources, nodes))| {
                let builtin = crate::registry::is_reserved(&name);
                json!({"name": name, "version": version, "resources": resources, "nodes": nodes,
                       "builtin": builtin})
            })
            .collect::<Vec<_>>()
    });
    json!({
        "node_id": info.node_id,
        "generated_at": info.env.wall_seconds(),
        "cluster": info.cluster_map(),
        "catalog": catalog,
        "calls": calls,
        "queues": crate::queue::metrics::dashboard(&info.queues),
        "cache": info.cache.as_deref().map(crate::cache::metrics::dashboard),
        "errors": info.stats.errors.recent(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_bucket_bounds() {
        let s = LatencySnapshot {
            buckets: BUCKET_BOUNDS_US
                .iter()
                .enumerate()
                .map(|(i, b)| (*b as f64 / 1e6, if i < 2 { 5 } else { 10 }))
                .collect(),
            count: 10,
            sum_seconds: 0.0,
        };
        assert_eq!(quantile_ms(&s, 0.5), 0.05); // 5 of 10 at ≤ 50 µs
        assert_eq!(quantile_ms(&s, 0.95), 0.25);
        let empty = LatencySnapshot {
            buckets: vec![],
            count: 0,
            sum_seconds: 0.0,
        };
        assert_eq!(quantile_ms(&empty, 0.95), 0.0);
    }
}
