//! The original's discovery calls beyond `rpc_list`, in its shapes (its `cluster_map.py`
//! and `rpc_discovery.py`): `cluster_map_v2`, `rpc_describe`, `rpc_describe_local`,
//! `rpc_report` and `catalog_watch`. Each takes its request as one object (`args[0]`), as
//! keywords, or both (keywords win), as the original does.
//!
//! Function descriptions come from the registry of the node that serves the function: a
//! Rust function's parameters from its signature, a worker's from its registration. The
//! catalog carries no parameters, so `rpc_describe` asks each node that serves a matching
//! function (`rpc_describe_local`, forwarded as a step), at most [`SCATTER_AT_ONCE`] at a
//! time, each within its timeout.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Digest;

use super::args::{
    MAX_PAGE, OUR_SCOPE, SCOPES, in_namespace, in_scope, namespace_of, paginate, request, scope,
    with_next,
};
use crate::protocol::json::Json;
use crate::registry::{CallArgs, CallError, Function, RegisteredFunction};
use crate::view::NodeView;

/// Nodes `rpc_describe` asks at once, and how long each may take by default.
const SCATTER_AT_ONCE: usize = 16;
const SCATTER_TIMEOUT: Duration = Duration::from_secs(5);
/// The topic the original publishes catalog changes on.
pub(crate) const DELTA_TOPIC: &str = "mpreg.discovery.delta";

/// This group's built-ins: the original's discovery calls (`cluster_map_v2`,
/// `rpc_describe`, `rpc_describe_local`, `rpc_report`, `catalog_watch`).
pub(crate) fn functions(view: &Arc<NodeView>) -> Vec<Function> {
    use super::{guarded, takes_request};
    let v = || view.clone();
    [
        (
            cluster_map_v2(v()),
            "The cluster's nodes as snapshots, paged",
        ),
        (
            rpc_describe(v()),
            "The cluster's functions with their parameters",
        ),
        (
            rpc_describe_local(v()),
            "This node's functions with their parameters",
        ),
        (
            rpc_report(v()),
            "Counts of the cluster's functions by namespace and cluster",
        ),
        (
            catalog_watch(v()),
            "The topic the catalog's changes are published on",
        ),
    ]
    .into_iter()
    .map(|(f, doc)| guarded(view, takes_request(f, doc)))
    .collect()
}

// ---- cluster_map_v2 ------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
struct ClusterMapRequest {
    scope: Option<String>,
    namespace_filter: Option<String>,
    #[serde(default)]
    capabilities: Vec<String>,
    #[serde(default)]
    resources: Vec<String>,
    cluster_id: Option<String>,
    limit: Option<usize>,
    page_token: Option<String>,
}

/// `{connection_type, protocol, host, port, endpoint}` of an advertised URL.
pub(crate) fn transport_endpoint(url: &str) -> Value {
    match crate::ids::NodeUrl::peer(url) {
        Ok(u) => json!({
            "connection_type": "internal",
            "protocol": u.scheme(),
            "host": u.host(),
            "port": u.port(),
            "endpoint": format!("{}://{}", u.scheme(), u.authority()),
        }),
        // Catalog entries are checked when registered; an unreadable one is shown as is.
        Err(_) => json!({
            "connection_type": "internal",
            "protocol": "ws",
            "host": url,
            "port": 0,
            "endpoint": url,
        }),
    }
}

/// `cluster_map_v2({scope?, namespace_filter?, capabilities?, resources?, cluster_id?,
/// limit?, page_token?})`: `{cluster_id, generated_at, nodes, next_page_token?}`, each node
/// a `ClusterNodeSnapshot` with our fields beside (status, raft role, leader, functions).
pub(crate) fn cluster_map_v2(info: Arc<NodeView>) -> Function {
    Function::raw("cluster_map_v2", move |call: CallArgs| {
        let info = info.clone();
        async move {
            let q: ClusterMapRequest = request("cluster_map_v2", &call)?;
            let wanted = scope(q.scope.as_deref())?;
            let policy = super::policy::policy_now(&info);
            if !super::policy::Gate::new(&info, "cluster_map_v2", &policy)
                .request(q.namespace_filter.as_deref())
            {
                return Ok(Json::from(json!({
                    "cluster_id": info.cluster_id,
                    "generated_at": info.env.wall_seconds(),
                    "nodes": [],
                })));
            }
            let map = info.cluster_map();
            let members = map["nodes"].as_array().map_or(0, Vec::len);
            let mut nodes: Vec<Value> = map["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|_| in_scope(wanted))
                .filter_map(|n| v2_node(n, members))
                .filter(|n| {
                    let has = |key: &str, want: &[String]| {
                        let set: BTreeSet<&str> = n[key]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .collect();
                        want.iter().all(|w| set.contains(w.as_str()))
                    };
                    has("capabilities", &q.capabilities) && has("resources", &q.resources)
                })
                .filter(|n| q.cluster_id.as_ref().is_none_or(|c| n["cluster_id"] == *c))
                .filter(|n| {
                    q.namespace_filter.as_deref().is_none_or(|p| {
                        let starts = |v: &Value| v.as_str().is_some_and(|s| s.starts_with(p));
                        starts(&n["node_id"])
                            || starts(&n["cluster_id"])
                            || n["resources"]
                                .as_array()
                                .is_some_and(|r| r.iter().any(starts))
                            || n["capabilities"]
                                .as_array()
                                .is_some_and(|r| r.iter().any(starts))
                    })
                })
                .collect();
            nodes.sort_by(|a, b| {
                (a["cluster_id"].as_str(), a["node_id"].as_str())
                    .cmp(&(b["cluster_id"].as_str(), b["node_id"].as_str()))
            });
            let (nodes, next) = paginate(nodes, q.page_token.as_deref(), q.limit);
            Ok(Json::from(with_next(
                json!({
                    "cluster_id": info.cluster_id,
                    "generated_at": info.env.wall_seconds(),
                    "nodes": nodes,
                }),
                next,
            )))
        }
    })
}

/// A `cluster_map` node as the original's `ClusterNodeSnapshot`, keeping ours beside.
fn v2_node(n: &Value, members: usize) -> Option<Value> {
    let mut node = n.as_object()?.clone();
    let mut resources: Vec<Value> = n["resources"].as_array().cloned().unwrap_or_default();
    resources.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
    let urls = n["advertised_urls"].as_array().cloned().unwrap_or_default();
    let load = &n["load"];
    node.remove("region"); // empty: the original omits it
    node.insert("resources".into(), Value::Array(resources));
    // What every node of this build serves (members run one build, or two during a rolling
    // upgrade, both serving these).
    node.insert("capabilities".into(), json!(crate::view::SERVED_SYSTEMS));
    node.insert("scope".into(), json!(OUR_SCOPE));
    node.insert(
        "transport_endpoints".into(),
        Value::Array(
            urls.iter()
                .filter_map(Value::as_str)
                .map(transport_endpoint)
                .collect(),
        ),
    );
    node.insert("advertised_urls".into(), Value::Array(urls));
    node.insert("advertised_at".into(), Value::Null);
    node.insert(
        "load".into(),
        json!({
            "active_clients": load["active_clients"],
            // As the original counts it: the nodes it knows, itself included.
            "peer_count": members,
            "status": load["status"],
            "status_timestamp": load["status_timestamp"],
            "messages_processed": load["messages_processed"],
            "rpc_responses_skipped": load["rpc_responses_skipped"],
            "server_messages": load["server_messages"],
            "other_messages": load["other_messages"],
            "load_score": load["load_score"],
            "inflight_requests": load["inflight_requests"],
            "recent_step_latency_ms": load["recent_step_latency_ms"],
        }),
    );
    // Counters known only for this node: left out for the others (the original's parser
    // defaults a missing key, and would choke on a null).
    if let Some(Value::Object(l)) = node.get_mut("load") {
        l.retain(|_, v| !v.is_null());
    }
    Some(Value::Object(node))
}

// ---- rpc_describe ----------------------------------------------------------------------

/// A bare string where a list is expected is a list of one, as the original takes it.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    })
}

#[derive(Debug, Default, Clone, Deserialize, serde::Serialize)]
struct DescribeRequest {
    mode: Option<String>,
    detail_level: Option<String>,
    namespace: Option<String>,
    scope: Option<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    capabilities: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    resources: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    tags: Vec<String>,
    cluster_id: Option<String>,
    node_id: Option<String>,
    function_name: Option<String>,
    function_id: Option<String>,
    version_constraint: Option<String>,
    query: Option<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    spec_digests: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    function_names: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    function_ids: Vec<String>,
    max_nodes: Option<usize>,
    timeout_seconds: Option<f64>,
    limit: Option<usize>,
    page_token: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Local,
    Catalog,
    /// Catalog entries, described in full by the nodes that serve them.
    Scatter,
}

impl DescribeRequest {
    fn mode(&self) -> Result<Mode, CallError> {
        let m = self
            .mode
            .as_deref()
            .unwrap_or("auto")
            .trim()
            .to_ascii_lowercase();
        match m.as_str() {
            "local" | "node" => Ok(Mode::Local),
            "catalog" => Ok(Mode::Catalog),
            "auto" | "scatter" if !self.full() => Ok(Mode::Catalog),
            "auto" | "scatter" => Ok(Mode::Scatter),
            other => Err(CallError::InvalidArguments(format!(
                "unsupported rpc_describe mode {other:?}: one of auto, local, node, catalog, scatter"
            ))),
        }
    }

    fn full(&self) -> bool {
        self.detail_level.as_deref().map(str::trim) != Some("summary")
    }

    fn constraint(&self) -> Result<Option<crate::registry::VersionConstraint>, CallError> {
        super::version_constraint(self.version_constraint.as_deref())
    }

    /// Whether an entry with these facts passes every filter but digests and `query`
    /// (which need its description).
    fn selects(
        &self,
        e: &Entry<'_>,
        constraint: Option<&crate::registry::VersionConstraint>,
    ) -> bool {
        let names: Vec<&String> = self
            .function_names
            .iter()
            .chain(self.function_name.as_ref())
            .collect();
        let ids: Vec<&String> = self
            .function_ids
            .iter()
            .chain(self.function_id.as_ref())
            .collect();
        // Several names or ids are alternatives; the version and resources are the
        // registry's own rule.
        let rule = crate::registry::Query {
            version: constraint,
            locs: &self.resources,
            ..crate::registry::Query::default()
        };
        let offer = crate::registry::Offer {
            name: e.name,
            function_id: e.function_id,
            version: e.version,
            resources: e.resources,
        };
        (names.is_empty() || names.iter().any(|n| *n == e.name))
            && (ids.is_empty() || ids.iter().any(|i| *i == e.function_id))
            && rule.accepts(offer)
            && self.tags.is_empty()
            && self.capabilities.is_empty()
            && in_namespace(namespace_of(e.name), self.namespace.as_deref())
            && self.node_id.as_ref().is_none_or(|n| *n == e.node_id)
            && self.cluster_id.as_ref().is_none_or(|c| c == e.cluster_id)
    }

    /// `query` (a case-insensitive substring of name, namespace, summary or id) and
    /// `spec_digests`, on a built item.
    fn keeps(&self, item: &Value) -> bool {
        let digest_ok = self.spec_digests.is_empty()
            || item["spec_digest"]
                .as_str()
                .is_some_and(|d| self.spec_digests.iter().any(|w| w == d));
        let query_ok = self.query.as_deref().is_none_or(|q| {
            let q = q.to_lowercase();
            [
                &item["identity"]["name"],
                &item["namespace"],
                &item["summary"]["summary"],
                &item["identity"]["function_id"],
            ]
            .iter()
            .any(|v| v.as_str().is_some_and(|s| s.to_lowercase().contains(&q)))
        });
        digest_ok && query_ok
    }
}

/// What a description is built from, local or from the catalog.
struct Entry<'a> {
    name: &'a str,
    function_id: &'a str,
    version: &'a semver::Version,
    resources: &'a BTreeSet<String>,
    node_id: &'a str,
    cluster_id: &'a str,
}

fn identity(e: &Entry<'_>) -> Value {
    json!({"name": e.name, "function_id": e.function_id, "version": e.version.to_string()})
}

fn type_spec(display: &str, optional: bool) -> Value {
    json!({"display": display, "args": [], "is_optional": optional})
}

/// The original's `RpcParamSpec`s of a function, with our JSON types beside.
fn parameters(f: &RegisteredFunction) -> Vec<Value> {
    if f.signature.variadic {
        return [("args", "var_positional"), ("kwargs", "var_keyword")]
            .iter()
            .map(|(name, kind)| {
                json!({
                    "name": name, "kind": kind, "type_spec": type_spec("Any", false),
                    "required": false, "default": {"has_default": false, "encoding": "none"},
                    "doc": "", "json_type": "any",
                })
            })
            .collect();
    }
    f.signature
        .params
        .iter()
        .map(|p| {
            let mut v = json!({
                "name": p.name,
                "kind": "positional_or_keyword",
                "type_spec": type_spec(&p.json_type, !p.required),
                "required": p.required,
                // An optional parameter defaults to null (the original's `None` default).
                "default": if p.required {
                    json!({"has_default": false, "encoding": "none"})
                } else {
                    json!({"has_default": true, "encoding": "json"})
                },
                "doc": "",
                "json_type": p.json_type,
            });
            if let (Some(r), Value::Object(m)) = (&p.rust_type, &mut v) {
                m.insert("rust_type".into(), json!(r));
            }
            v
        })
        .collect()
}

/// The original's digest: SHA-256 of the spec's JSON with sorted keys (serde_json's maps
/// are sorted), without the digest itself.
fn spec_digest(spec: &Value) -> String {
    let text = serde_json::to_string(spec).unwrap_or_default();
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An item described from the function itself (on the node that serves it).
fn described(e: &Entry<'_>, f: &RegisteredFunction, full: bool) -> Value {
    let ns = namespace_of(e.name);
    let summary_text = f.doc.clone().unwrap_or_else(|| e.name.replace('_', " "));
    let params = parameters(f);
    let required = params.iter().filter(|p| p["required"] == true).count();
    let mut spec = json!({
        "identity": identity(e),
        "namespace": ns,
        "doc": {"summary": summary_text, "description": "", "param_docs": [], "return_doc": ""},
        "parameters": params,
        "return_spec": {"type_spec": type_spec("Any", false), "doc": ""},
        "resources": e.resources,
        "tags": [],
        "scope": OUR_SCOPE,
        "capabilities": [],
        "examples": [],
        "spec_version": "1",
    });
    let digest = spec_digest(&spec);
    if let Value::Object(m) = &mut spec {
        m.insert("spec_digest".into(), json!(digest));
    }
    let mut item = catalog_item(e);
    if let Value::Object(m) = &mut item {
        m.insert(
            "summary".into(),
            json!({
                "identity": identity(e),
                "namespace": ns,
                "summary": summary_text,
                "parameter_count": spec["parameters"].as_array().map_or(0, Vec::len),
                "required_parameter_count": required,
                "return_type": type_spec("Any", false),
                "spec_version": "1",
                "spec_digest": digest,
            }),
        );
        if full {
            m.insert("spec".into(), spec);
        }
        m.insert("spec_digest".into(), json!(digest));
    }
    item
}

/// An item from the catalog alone: identity, where it runs, resources.
fn catalog_item(e: &Entry<'_>) -> Value {
    let mut item = json!({
        "identity": identity(e),
        "node_id": e.node_id,
        "cluster_id": e.cluster_id,
        "resources": e.resources,
        "tags": [],
        "scope": OUR_SCOPE,
    });
    let ns = namespace_of(e.name);
    if !ns.is_empty()
        && let Value::Object(m) = &mut item
    {
        m.insert("namespace".into(), json!(ns));
    }
    item
}

fn item_key(v: &Value) -> (String, String, String, String, String) {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (
        s(&v["identity"]["name"]),
        s(&v["identity"]["function_id"]),
        s(&v["identity"]["version"]),
        s(&v["cluster_id"]),
        s(&v["node_id"]),
    )
}

/// This node's functions that pass the request's filters, described from its registry.
fn describe_local(info: &NodeView, q: &DescribeRequest) -> Result<Vec<Value>, CallError> {
    let constraint = q.constraint()?;
    let wanted = scope(q.scope.as_deref())?;
    let registry = info.functions.current();
    let mut items: Vec<Value> = registry
        .functions()
        .filter(|_| in_scope(wanted))
        .filter_map(|f| {
            let e = Entry {
                name: &f.spec.name,
                function_id: &f.spec.function_id,
                version: &f.spec.version,
                resources: &f.spec.resources,
                node_id: &info.node_id,
                cluster_id: &info.cluster_id,
            };
            q.selects(&e, constraint.as_ref())
                .then(|| described(&e, f, q.full()))
        })
        .filter(|item| q.keeps(item))
        .collect();
    items.sort_by_key(item_key);
    Ok(items)
}

/// The catalog's entries that pass the filters, as items, and the remote nodes serving them.
fn describe_catalog(
    info: &NodeView,
    q: &DescribeRequest,
) -> Result<(Vec<Value>, BTreeMap<crate::control::NodeId, String>), CallError> {
    let constraint = q.constraint()?;
    let wanted = scope(q.scope.as_deref())?;
    Ok(info.control.catalog.read(|state| {
        let catalog = &state.catalog;
        let mut nodes = BTreeMap::new();
        let items = catalog
            .functions()
            .filter(|_| in_scope(wanted))
            .filter_map(|(node, f)| {
                let node_id = catalog.node_id_of(node);
                let e = Entry {
                    name: &f.name,
                    function_id: &f.function_id,
                    version: &f.version,
                    resources: &f.resources,
                    node_id: &node_id,
                    cluster_id: &info.cluster_id,
                };
                if !q.selects(&e, constraint.as_ref()) {
                    return None;
                }
                nodes.insert(node, node_id.clone());
                Some(catalog_item(&e))
            })
            .collect();
        (items, nodes)
    }))
}

/// Asks each node in `nodes` to describe its matching functions; their items, and an
/// error entry for each node that did not answer.
async fn scatter(
    info: &NodeView,
    q: &DescribeRequest,
    nodes: BTreeMap<crate::control::NodeId, String>,
) -> (Vec<Value>, Vec<Value>) {
    let peers = &info.peers;
    let wait = match q.timeout_seconds {
        Some(t) if t > 0.0 => Duration::from_secs_f64(t.min(60.0)),
        Some(_) => Duration::from_secs(60), // "no timeout": still bounded
        None => SCATTER_TIMEOUT,
    };
    let mut local = q.clone();
    local.mode = Some("local".into());
    local.limit = Some(MAX_PAGE);
    local.page_token = None;
    local.node_id = None;
    let args = json!([[local], {}]).to_string();
    let caller = info
        .introspection_role
        .as_ref()
        .map(|role| crate::auth::Identity {
            sub: format!("node:{}", info.node_id),
            roles: BTreeSet::from([role.clone()]),
        });
    let asks = nodes.into_iter().map(|(node, node_id)| {
        let step = crate::rpc::Step {
            fun: "rpc_describe_local".into(),
            function_id: None,
            version: semver::Version::new(1, 0, 0),
            locs: Vec::new(),
            args_json: args.clone(),
            timeout_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            caller: caller.clone(),
            trace_id: None,
        };
        let asked = crate::rpc::Cluster::forward(&**peers, node, step, wait);
        let clock = info.env.clock.clone();
        async move {
            let outcome = tokio::time::timeout_at(clock.now() + wait, asked).await;
            (node_id, outcome)
        }
    });
    let answers: Vec<_> = futures_util::stream::iter(asks)
        .buffered(SCATTER_AT_ONCE)
        .collect()
        .await;
    let (mut items, mut errors) = (Vec::new(), Vec::new());
    for (node_id, outcome) in answers {
        let error = match outcome {
            Err(_) => "timeout".to_owned(),
            Ok(Err(e)) => e.to_string(),
            Ok(Ok(crate::rpc::StepOutcome::Done(text))) => {
                match serde_json::from_str::<Value>(&text) {
                    Ok(v) if v["items"].is_array() => {
                        if let Value::Array(found) = v["items"].clone() {
                            items.extend(found);
                        }
                        continue;
                    }
                    _ => "unexpected_response_type".to_owned(),
                }
            }
            Ok(Ok(other)) => format!("{other:?}"),
        };
        errors.push(json!({"node_id": node_id, "cluster_id": info.cluster_id, "error": error}));
    }
    (items, errors)
}

/// `rpc_describe({mode?, detail_level?, filters…, limit?, page_token?})`: the original's
/// `RpcDescribeResponse` (`{generated_at, items, errors, next_page_token?}`).
pub(crate) fn rpc_describe(info: Arc<NodeView>) -> Function {
    Function::raw("rpc_describe", move |call: CallArgs| {
        let info = info.clone();
        async move {
            let q: DescribeRequest = request("rpc_describe", &call)?;
            let (items, errors) = match q.mode()? {
                Mode::Local => (describe_local(&info, &q)?, Vec::new()),
                Mode::Catalog => {
                    let (items, _) = describe_catalog(&info, &q)?;
                    (
                        items.into_iter().filter(|i| q.keeps(i)).collect(),
                        Vec::new(),
                    )
                }
                Mode::Scatter => {
                    let (catalog, mut nodes) = describe_catalog(&info, &q)?;
                    let here = nodes.remove(&info.control.id).is_some();
                    if let Some(max) = q.max_nodes {
                        nodes = nodes.into_iter().take(max).collect();
                    }
                    let (mut described, errors) = scatter(&info, &q, nodes).await;
                    if here {
                        described.extend(describe_local(&info, &q)?);
                    }
                    // A catalog entry stands for itself where its node said nothing of it.
                    let have: BTreeSet<_> = described.iter().map(item_key).collect();
                    described.extend(
                        catalog
                            .into_iter()
                            .filter(|i| !have.contains(&item_key(i)) && q.keeps(i)),
                    );
                    (described, errors)
                }
            };
            let mut items = gated("rpc_describe", &info, &q, items);
            items.sort_by_key(item_key);
            let (items, next) = paginate(items, q.page_token.as_deref(), q.limit);
            Ok(Json::from(with_next(
                json!({"generated_at": info.env.wall_seconds(), "items": items, "errors": errors}),
                next,
            )))
        }
    })
}

/// `items` without what the namespace policy hides from the caller: nothing for a
/// namespace filter it may not see, no function whose name it may not see (audited).
fn gated(
    event: &'static str,
    info: &NodeView,
    q: &DescribeRequest,
    items: Vec<Value>,
) -> Vec<Value> {
    let policy = super::policy::policy_now(info);
    let mut gate = super::policy::Gate::new(info, event, &policy);
    if !gate.request(q.namespace.as_deref()) {
        return Vec::new();
    }
    items
        .into_iter()
        .filter(|i| gate.item(i["identity"]["name"].as_str().unwrap_or_default()))
        .collect()
}

/// `rpc_describe_local(…)`: `rpc_describe` of this node's own functions (what the
/// scatter asks each node).
pub(crate) fn rpc_describe_local(info: Arc<NodeView>) -> Function {
    Function::raw("rpc_describe_local", move |call: CallArgs| {
        let info = info.clone();
        async move {
            let q: DescribeRequest = request("rpc_describe_local", &call)?;
            let items = gated("rpc_describe", &info, &q, describe_local(&info, &q)?);
            let (items, next) = paginate(items, q.page_token.as_deref(), q.limit);
            Ok(Json::from(with_next(
                json!({"generated_at": info.env.wall_seconds(), "items": items, "errors": []}),
                next,
            )))
        }
    })
}

// ---- rpc_report ------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
struct ReportRequest {
    namespace: Option<String>,
    scope: Option<String>,
}

/// `[{key, count}]` by count, then key; an empty key is left out, as the original does.
fn counts(tally: BTreeMap<String, usize>) -> Vec<Value> {
    let mut v: Vec<(String, usize)> = tally.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.into_iter()
        .map(|(key, count)| {
            if key.is_empty() {
                json!({"count": count})
            } else {
                json!({"key": key, "count": count})
            }
        })
        .collect()
}

/// `rpc_report({namespace?, scope?})`: `{generated_at, total_functions, namespace_counts,
/// cluster_counts, tag_counts}` over the catalog (one per function version per node).
pub(crate) fn rpc_report(info: Arc<NodeView>) -> Function {
    Function::raw("rpc_report", move |call: CallArgs| {
        let info = info.clone();
        async move {
            let q: ReportRequest = request("rpc_report", &call)?;
            let wanted = scope(q.scope.as_deref())?;
            let (total, namespaces) = info.control.catalog.read(|state| {
                let mut gate =
                    super::policy::Gate::new(&info, "rpc_report", state.catalog.policy());
                if !gate.request(q.namespace.as_deref()) {
                    return (0, BTreeMap::new());
                }
                let mut namespaces: BTreeMap<String, usize> = BTreeMap::new();
                let mut total = 0;
                for (_, f) in state.catalog.functions() {
                    let ns = namespace_of(&f.name);
                    if in_scope(wanted)
                        && in_namespace(ns, q.namespace.as_deref())
                        && gate.item(&f.name)
                    {
                        total += 1;
                        *namespaces.entry(ns.to_owned()).or_default() += 1;
                    }
                }
                (total, namespaces)
            });
            let clusters = if total > 0 {
                BTreeMap::from([(info.cluster_id.clone(), total)])
            } else {
                BTreeMap::new()
            };
            Ok(Json::from(json!({
                "generated_at": info.env.wall_seconds(),
                "total_functions": total,
                "namespace_counts": counts(namespaces),
                "cluster_counts": counts(clusters),
                "tag_counts": [],
            })))
        }
    })
}

// ---- catalog_watch ---------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
struct WatchRequest {
    namespace: Option<String>,
    scope: Option<String>,
    cluster_id: Option<String>,
}

/// `catalog_watch({namespace?, scope?, cluster_id?})`: the topic the catalog's changes are
/// published on (`{topic, generated_at, scope?, namespace?, cluster_id}`), as the original
/// answers; a client subscribes to it with `pubsub-subscribe`.
pub(crate) fn catalog_watch(info: Arc<NodeView>) -> Function {
    Function::raw("catalog_watch", move |call: CallArgs| {
        let info = info.clone();
        async move {
            let q: WatchRequest = request("catalog_watch", &call)?;
            let wanted = scope(q.scope.as_deref())?;
            super::policy::refuse_hidden(&info, "catalog_watch", q.namespace.as_deref())?;
            let topic = match q.namespace.as_deref().map(str::trim) {
                Some(ns) if !ns.is_empty() => format!("{DELTA_TOPIC}.{ns}"),
                _ => DELTA_TOPIC.to_owned(),
            };
            let mut v = json!({
                "topic": topic,
                "generated_at": info.env.wall_seconds(),
                "cluster_id": q.cluster_id.unwrap_or_else(|| info.cluster_id.clone()),
            });
            if let Value::Object(m) = &mut v {
                if let Some(s) = wanted {
                    m.insert("scope".into(), json!(SCOPES[s]));
                }
                if let Some(ns) = q.namespace {
                    m.insert("namespace".into(), json!(ns));
                }
            }
            Ok(Json::from(v))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_counts_sort_by_count_then_key_and_drop_empty_keys() {
        let tally = BTreeMap::from([("b".into(), 2), ("a".into(), 2), (String::new(), 5)]);
        assert_eq!(
            counts(tally),
            vec![
                json!({"count": 5}),
                json!({"key": "a", "count": 2}),
                json!({"key": "b", "count": 2})
            ]
        );
    }

    #[test]
    fn transport_endpoints_from_urls() {
        assert_eq!(
            transport_endpoint("wss://10.0.0.1:6666"),
            json!({"connection_type": "internal", "protocol": "wss", "host": "10.0.0.1",
                   "port": 6666, "endpoint": "wss://10.0.0.1:6666"})
        );
    }
}
