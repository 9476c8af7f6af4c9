//! The original's summary and resolver calls (its `discovery_summary.py` and
//! `discovery_resolver.py` shapes): `summary_query`, `summary_watch`,
//! `resolver_cache_stats` and `resolver_resync`.
//!
//! A summary is one per function name in the catalog (the original's `ServiceSummary`).
//! Where the original sends constants (`health_band` always `healthy`, `latency_band_ms`
//! always `[0, 0]`), these come from the failure detector and the serving nodes' step
//! latencies. The original's "resolver mode" (a second copy of the catalog fed by deltas)
//! has no counterpart here: every node answers discovery from its own Raft replica, which
//! is the catalog. So the resolver calls answer as the original does with that mode off,
//! with the replica's counts.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};

use super::args::{in_namespace, paginate, request, scope, with_next};
use crate::control::NodeId;
use crate::protocol::json::Json;
use crate::registry::{CallArgs, Function};
use crate::routing::Liveness;
use crate::view::NodeView;

/// The topic the original tells `summary_watch` callers to subscribe to.
const SUMMARY_TOPIC: &str = "mpreg.discovery.summary";
/// The original's `fabric_catalog_ttl_seconds`: how long a summary may be kept.
const SUMMARY_TTL_SECONDS: f64 = 120.0;
/// The region summaries name: nodes have no region setting (the original's default).
const REGION: &str = "local";

/// This group's built-ins.
pub(crate) fn functions(view: &Arc<NodeView>) -> Vec<Function> {
    use super::{guarded, takes_nothing, takes_request};
    let v = || view.clone();
    vec![
        guarded(
            view,
            takes_request(
                summary_query(v()),
                "One summary per function of the cluster: where, how many, how healthy",
            ),
        ),
        guarded(
            view,
            takes_request(
                summary_watch(v()),
                "The topic summaries of a scope and namespace are published on",
            ),
        ),
        guarded(
            view,
            takes_nothing(
                resolver_cache_stats(v()),
                "What this node's catalog replica holds (the original's resolver cache)",
            ),
        ),
        guarded(
            view,
            takes_nothing(
                resolver_resync(v()),
                "The original's resolver resync (no resolver mode here: answers say so)",
            ),
        ),
    ]
}

/// The original's `SummaryQueryRequest`; the viewer fields are read and not trusted.
#[derive(Debug, Default, Deserialize)]
struct SummaryQuery {
    scope: Option<String>,
    namespace: Option<String>,
    service_id: Option<String>,
    #[serde(default)]
    include_ingress: bool,
    ingress_limit: Option<usize>,
    limit: Option<usize>,
    page_token: Option<String>,
}

/// The namespace of a summary: the function name up to its last dot, or the whole name
/// when it has none (`echo` is its own namespace), as the original derives it.
fn summary_namespace(name: &str) -> &str {
    name.rsplit_once('.').map_or(name, |(ns, _)| ns)
}

/// What the summaries are made of: per function name, the nodes serving it (one per
/// function entry: a node serving two versions counts twice, as the original's endpoints).
struct Served {
    endpoints: usize,
    nodes: Vec<NodeId>,
}

/// `summary_query({scope?, namespace?, service_id?, include_ingress?, ingress_limit?,
/// limit?, page_token?})`: `{generated_at, items, ingress?, next_page_token?}`.
pub(crate) fn summary_query(info: Arc<NodeView>) -> Function {
    Function::raw("summary_query", move |call: CallArgs| {
        let info = info.clone();
        async move {
            let q: SummaryQuery = request("summary_query", &call)?;
            let wanted = scope(q.scope.as_deref())?;
            let scope_label = wanted.map(|i| super::args::SCOPES[i]);
            let ns_filter = q
                .namespace
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty());
            let id_filter = q
                .service_id
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty());
            let read = info.control.catalog.read(|state| {
                let catalog = &state.catalog;
                // The namespace policy: a filter the caller may not see answers nothing,
                // summaries of namespaces it may not see are left out (audited).
                let mut gate = super::policy::Gate::new(&info, "summary_query", catalog.policy());
                if !gate.request(ns_filter) {
                    return None;
                }
                let mut served: BTreeMap<String, Served> = BTreeMap::new();
                for (node, f) in catalog
                    .functions()
                    .filter(|(_, f)| gate.item(summary_namespace(&f.name)))
                {
                    let s = served.entry(f.name.clone()).or_insert(Served {
                        endpoints: 0,
                        nodes: Vec::new(),
                    });
                    s.endpoints += 1;
                    if !s.nodes.contains(&node) {
                        s.nodes.push(node);
                    }
                }
                let urls: Vec<String> = catalog
                    .members()
                    .filter_map(|m| m.advertised_urls.first().cloned())
                    .collect();
                Some((served, urls))
            });
            let Some((served, urls)) = read else {
                return Ok(Json::from(
                    json!({"generated_at": info.env.wall_seconds(), "items": []}),
                ));
            };
            let now = info.env.clock.now();
            let generated_at = info.env.wall_seconds();
            let health = |nodes: &[NodeId]| -> (&'static str, [u64; 2]) {
                let me = info.control.id;
                let d = info.detector.lock();
                let mut alive = 0;
                let mut latencies = Vec::new();
                for n in nodes {
                    let (up, us) = if *n == me {
                        (true, info.stats.load(now).step_latency_us)
                    } else {
                        let up = d.status(*n, now) != Liveness::Down;
                        (up, d.load(*n).step_latency_us)
                    };
                    if up {
                        alive += 1;
                        latencies.push(us as f64 / 1000.0);
                    }
                }
                let band = match alive {
                    0 => "unavailable",
                    a if a < nodes.len() => "degraded",
                    _ => "healthy",
                };
                // Whole milliseconds, as the original's parser reads them (`int()`): the
                // least rounded down, the most rounded up.
                let lo = latencies.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = latencies.iter().copied().fold(0.0, f64::max);
                let band_ms = if latencies.is_empty() {
                    [0, 0]
                } else {
                    [lo.floor() as u64, hi.ceil() as u64]
                };
                (band, band_ms)
            };
            let mut items: Vec<Value> = served
                .iter()
                .filter(|(name, _)| {
                    in_namespace(summary_namespace(name), ns_filter)
                        && id_filter.is_none_or(|id| id == name.as_str())
                })
                .map(|(name, s)| {
                    let (band, latency) = health(&s.nodes);
                    let mut item = json!({
                        "namespace": summary_namespace(name),
                        "service_id": name,
                        "regions": [REGION],
                        "endpoint_count": s.endpoints,
                        "health_band": band,
                        "latency_band_ms": latency,
                        "ttl_seconds": SUMMARY_TTL_SECONDS,
                        "generated_at": generated_at,
                        "source_cluster": info.cluster_id,
                    });
                    if let (Some(l), Value::Object(m)) = (scope_label, &mut item) {
                        m.insert("scope".into(), json!(l));
                    }
                    item
                })
                .collect();
            // The original's order: by namespace, then service id.
            items.sort_by(|a, b| {
                (a["namespace"].as_str(), a["service_id"].as_str())
                    .cmp(&(b["namespace"].as_str(), b["service_id"].as_str()))
            });
            let (page, next) = paginate(items, q.page_token.as_deref(), q.limit);
            let mut reply = json!({"generated_at": generated_at, "items": page});
            if q.include_ingress && !page.is_empty() {
                // Every summary here is this cluster's: its members' client URLs.
                let mut urls = urls;
                urls.sort();
                urls.dedup();
                if let Some(n) = q.ingress_limit {
                    urls.truncate(n);
                }
                if !urls.is_empty() {
                    reply["ingress"] = json!({ info.cluster_id.as_str(): urls });
                }
            }
            Ok(Json::from(with_next(reply, next)))
        }
    })
}

#[derive(Debug, Default, Deserialize)]
struct SummaryWatch {
    scope: Option<String>,
    namespace: Option<String>,
    cluster_id: Option<String>,
}

/// `summary_watch({scope?, namespace?, cluster_id?})`: `{topic, generated_at, scope?,
/// namespace?, cluster_id}`. The topic is the original's
/// (`mpreg.discovery.summary[.<scope>][.<namespace>]`); subscribing is the caller's.
/// Summaries are published there only where the original's summary export runs (off by
/// default there, absent here): the reply names the topic, a subscriber hears nothing yet.
pub(crate) fn summary_watch(info: Arc<NodeView>) -> Function {
    Function::raw("summary_watch", move |call: CallArgs| {
        let info = info.clone();
        async move {
            let q: SummaryWatch = request("summary_watch", &call)?;
            let wanted = scope(q.scope.as_deref())?;
            let scope_label = wanted.map(|i| super::args::SCOPES[i]);
            let ns = q
                .namespace
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty());
            super::policy::refuse_hidden(&info, "summary_watch", ns)?;
            let mut topic = SUMMARY_TOPIC.to_owned();
            for part in [scope_label, ns].into_iter().flatten() {
                topic.push('.');
                topic.push_str(part);
            }
            let mut reply = serde_json::Map::new();
            reply.insert("topic".into(), json!(topic));
            reply.insert("generated_at".into(), json!(info.env.wall_seconds()));
            if let Some(s) = scope_label {
                reply.insert("scope".into(), json!(s));
            }
            if let Some(n) = q.namespace.filter(|n| !n.is_empty()) {
                reply.insert("namespace".into(), json!(n));
            }
            reply.insert(
                "cluster_id".into(),
                json!(q.cluster_id.unwrap_or_else(|| info.cluster_id.clone())),
            );
            Ok(Json::from(Value::Object(reply)))
        }
    })
}

/// The replica's entries by the original's kinds (topics, caches and cache profiles are
/// not catalog entries here).
fn entry_counts(info: &NodeView) -> Value {
    info.control.catalog.read(|state| {
        let c = &state.catalog;
        json!({
            "functions": c.functions().count(),
            "topics": 0,
            "queues": c.queues().count(),
            "services": c.services().count(),
            "caches": 0,
            "cache_profiles": 0,
            "nodes": c.members().count(),
        })
    })
}

/// `resolver_cache_stats()`: `{enabled: false, generated_at, namespaces: [], entry_counts}`.
pub(crate) fn resolver_cache_stats(info: Arc<NodeView>) -> Function {
    Function::raw("resolver_cache_stats", move |call: CallArgs| {
        let info = info.clone();
        async move {
            super::introspection::no_arguments("resolver_cache_stats", &call)?;
            Ok(Json::from(json!({
                "enabled": false,
                "generated_at": info.env.wall_seconds(),
                "namespaces": [],
                "entry_counts": entry_counts(&info),
            })))
        }
    })
}

/// `resolver_resync()`: the original's answer with resolver mode off (a success reply that
/// says nothing was resynced, and why); the replica needs none, Raft keeps it in step.
pub(crate) fn resolver_resync(info: Arc<NodeView>) -> Function {
    Function::raw("resolver_resync", move |call: CallArgs| {
        let info = info.clone();
        async move {
            super::introspection::no_arguments("resolver_resync", &call)?;
            Ok(Json::from(json!({
                "enabled": false,
                "generated_at": info.env.wall_seconds(),
                "resynced": false,
                "error": "resolver_mode_disabled",
            })))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_as_the_original_derives_and_matches_them() {
        assert_eq!(summary_namespace("svc.market.quote"), "svc.market");
        assert_eq!(summary_namespace("echo"), "echo");
        assert!(in_namespace("svc.market", Some("svc")));
        assert!(in_namespace("svc", Some("svc")));
        assert!(!in_namespace("svcx", Some("svc")));
    }
}
