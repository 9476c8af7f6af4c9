//! Functions every node offers: `echo`, `echos`, `list_peers`, `cluster_map`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use crate::view::NodeView;
use serde_json::value::RawValue;

use crate::protocol::json::{self, Json, Kind};
use crate::registry::{CallArgs, CallError, Function};

/// This group's built-ins: `echo`, `echos`, and what the cluster looks like (`list_peers`,
/// `catalog_query`, `cluster_map`, `rpc_list`).
pub(crate) fn functions(view: &Arc<NodeView>) -> Vec<Function> {
    use super::{guarded, takes_nothing, takes_request};
    use crate::registry::signature::Param;
    let v = || view.clone();
    vec![
        echo()
            .declare_params(vec![Param::new("arg", "any")])
            .doc("Returns its one argument"),
        echos().doc("Returns its positional arguments as a list"),
        guarded(
            view,
            takes_nothing(list_peers(v()), "The other members of the cluster"),
        ),
        guarded(
            view,
            takes_request(
                catalog_query(v()),
                "The cluster's catalog entries that match",
            ),
        ),
        guarded(
            view,
            takes_nothing(
                cluster_map(v()),
                "The cluster's nodes, their status and load",
            ),
        ),
        guarded(
            view,
            takes_request(rpc_list(v()), "The cluster's functions"),
        ),
    ]
}

/// `echo(arg)`: returns its one argument (positional, or keyword `arg`).
/// A catalog function entry as replies show it: name, function_id, version, resources.
pub(crate) fn describe_entry(f: &crate::control::FunctionEntry) -> serde_json::Map<String, Value> {
    let mut d = serde_json::Map::new();
    d.insert("name".into(), json!(f.name));
    d.insert("function_id".into(), json!(f.function_id));
    d.insert("version".into(), json!(f.version.to_string()));
    d.insert("resources".into(), json!(f.resources));
    d
}

pub(crate) fn echo() -> Function {
    Function::raw("echo", |call: CallArgs| async move {
        // The argument's text goes back as it came: no tree, one copy.
        if let Ok(slots) = call.bind(&["arg"])
            && let Some(Some(arg)) = slots.first()
        {
            return Ok(Json::from_checked(arg));
        }
        let (positional, keywords) = call.count();
        Err(CallError::InvalidArguments(format!(
            "echo takes exactly one argument, got {}",
            positional + keywords
        )))
    })
}

/// Refuses any argument, for built-ins that take none. One empty object is accepted: the
/// original's clients send `list_peers({})`.
pub(super) fn no_arguments(name: &str, call: &CallArgs) -> Result<(), CallError> {
    let empty_options = |slots: Vec<Option<&RawValue>>| matches!(slots.first(), Some(Some(o)) if json::is_empty(o.get(), Kind::Object));
    let no_positional =
        call.args.is_empty_container() || call.bind(&["options"]).is_ok_and(empty_options);
    if no_positional && call.kwargs.is_empty_container() {
        Ok(())
    } else {
        Err(CallError::InvalidArguments(format!(
            "{name} takes no arguments"
        )))
    }
}

/// `echos(*args)`: returns its positional arguments as a list.
pub(crate) fn echos() -> Function {
    Function::raw("echos", |call: CallArgs| async move {
        if call.kwargs.is_empty_container() {
            Ok(call.args)
        } else {
            Err(CallError::InvalidArguments(
                "echos takes positional arguments only".to_owned(),
            ))
        }
    })
}

/// `list_peers()`: the other members of the cluster, from this node's catalog replica.
pub(crate) fn list_peers(info: Arc<NodeView>) -> Function {
    Function::raw("list_peers", move |call: CallArgs| {
        let info = info.clone();
        async move {
            no_arguments("list_peers", &call)?;
            let now = info.env.clock.now();
            let wall = info.env.wall_seconds();
            let views = crate::control::replica::members_view(&info.control).unwrap_or_default();
            let d = info.detector.lock();
            let peers: Vec<Value> = views
                .iter()
                .filter(|v| v.member.id != info.control.id)
                .map(|v| {
                    let mut p = describe(v);
                    // The original's `PeerSnapshot` fields, beside ours.
                    let status = liveness_word(d.status(v.member.id, now));
                    let last_seen = d.age(v.member.id, now).map(|a| wall - a.as_secs_f64());
                    p.insert("url".into(), json!(v.member.advertised_urls.first()));
                    p.insert("funs".into(), json!(v.functions));
                    p.insert("locs".into(), json!(v.resources));
                    p.insert("status".into(), json!(status));
                    p.insert("last_seen".into(), json!(last_seen));
                    p.insert("status_timestamp".into(), json!(wall));
                    p.insert("region".into(), json!(""));
                    Value::Object(p)
                })
                .collect();
            Ok(Json::from(Value::Array(peers)))
        }
    })
}

/// A member's liveness as `cluster_map` and `list_peers` say it.
fn liveness_word(l: crate::routing::Liveness) -> &'static str {
    match l {
        crate::routing::Liveness::Alive => "ok",
        crate::routing::Liveness::Suspect => "suspect",
        crate::routing::Liveness::Down => "down",
    }
}

/// The original's `catalog_query` request (`CatalogQueryRequest`): `entry_type` and its
/// filters; the fields of it this node does not act on (namespace, scope, tenants, …)
/// are accepted and ignored.
#[derive(Debug, Default, serde::Deserialize)]
struct OriginalQuery {
    entry_type: String,
    #[serde(flatten)]
    functions: FunctionFilter,
    queue_name: Option<String>,
    /// The service filters of `entry_type: "services"` (the original's field names).
    namespace: Option<String>,
    service_name: Option<String>,
    service_protocol: Option<String>,
    service_port: Option<i64>,
}

/// The function filters the original's discovery requests share (`catalog_query`'s and
/// `rpc_list`'s).
#[derive(Debug, Default, serde::Deserialize)]
struct FunctionFilter {
    function_name: Option<String>,
    function_id: Option<String>,
    version_constraint: Option<String>,
    #[serde(default)]
    resources: Vec<String>,
    node_id: Option<String>,
    limit: Option<usize>,
}

impl FunctionFilter {
    fn constraint(&self) -> Result<Option<crate::registry::VersionConstraint>, CallError> {
        super::version_constraint(self.version_constraint.as_deref())
    }

    fn limit(&self) -> usize {
        self.limit.unwrap_or(usize::MAX)
    }

    /// The catalog's function entries that pass every filter but `limit` (the caller may
    /// filter further before taking).
    fn select<'c>(
        &'c self,
        catalog: &'c crate::control::Catalog,
        constraint: Option<&'c crate::registry::VersionConstraint>,
    ) -> impl Iterator<Item = (crate::control::NodeId, &'c crate::control::FunctionEntry)> + 'c
    {
        let query = crate::registry::Query {
            name: self.function_name.as_deref(),
            function_id: self.function_id.as_deref(),
            version: constraint,
            locs: &self.resources,
        };
        catalog
            .functions()
            .filter(move |(_, f)| query.accepts(f.offer()))
            .filter(|(node, _)| {
                self.node_id
                    .as_ref()
                    .is_none_or(|n| *n == catalog.node_id_of(*node))
            })
    }
}

/// The original's answer: `{entry_type, generated_at, items, next_page_token}`.
fn original_query(info: &NodeView, q: OriginalQuery) -> Result<Value, CallError> {
    let constraint = q.functions.constraint()?;
    // The original's default query (`CatalogQueryRequest()`) names no type: functions.
    let kind = match q.entry_type.to_ascii_lowercase() {
        k if k.is_empty() => "functions".to_owned(),
        k => k,
    };
    let limit = q.functions.limit();
    let items: Vec<Value> = info.control.catalog.read(|state| {
        let catalog = &state.catalog;
        let node_id_of = |node: crate::control::NodeId| catalog.node_id_of(node);
        // The namespace policy: a filter the caller may not see answers nothing; items it
        // may not see are left out (functions and queues by name, services by namespace,
        // as the original checks them). Every denial is audited.
        let mut gate = super::policy::Gate::new(info, "catalog_query", catalog.policy());
        if !gate.request(q.namespace.as_deref()) {
            return Vec::new();
        }
        let ns_filter = q.namespace.as_deref().map(str::trim).filter(|n| !n.is_empty());
        let in_ns = |name: &str| super::args::in_namespace(name, ns_filter);
        match kind.as_str() {
            "functions" => q
                .functions
                .select(catalog, constraint.as_ref())
                .filter(|(_, f)| in_ns(&f.name) && gate.item(&f.name))
                .take(limit)
                .map(|(node, f)| {
                    let mut d = describe_entry(f);
                    d.insert("identity".into(), json!({
                        "name": f.name, "function_id": f.function_id, "version": f.version.to_string(),
                    }));
                    d.insert("node_id".into(), json!(node_id_of(node)));
                    d.insert("cluster_id".into(), json!(info.cluster_id));
                    Value::Object(d)
                })
                .collect(),
            "nodes" => catalog
                .members()
                .take(limit)
                .map(|m| json!({
                    "node_id": node_id_of(m.id),
                    "cluster_id": m.cluster_id,
                    "advertised_urls": m.advertised_urls,
                    "resources": m.resources,
                }))
                .collect(),
            "queues" => {
                let now = info.env.clock.now();
                let detector = info.detector.lock();
                catalog
                    .queues()
                    .filter(|x| q.queue_name.as_ref().is_none_or(|n| *n == x.name))
                    .filter(|x| in_ns(&x.name) && gate.item(&x.name))
                    .take(limit)
                    .map(|x| {
                        let health = queue_health(info, catalog, &detector, x.owner, now);
                        queue_endpoint(x, &node_id_of(x.owner), &info.cluster_id, health)
                    })
                    .collect()
            }
            // The DNS registrations, as `dns_list` gives them.
            "services" => {
                let filter = crate::dns::registry::ListRequest {
                    namespace: q.namespace.clone(),
                    name: q.service_name.clone(),
                    protocol: q.service_protocol.clone(),
                    port: q.service_port,
                    node_id: q.functions.node_id.clone(),
                    ..Default::default()
                };
                catalog
                    .services()
                    .filter_map(|svc| {
                        let node_id = node_id_of(svc.registered_by);
                        (filter.keeps(svc, &node_id) && gate.item(&svc.key.namespace))
                            .then(|| crate::dns::registry::endpoint_json(svc, &node_id))
                    })
                    .take(limit)
                    .collect()
            }
            // Kinds this build has no entries of yet (topics, caches, …).
            _ => Vec::new(),
        }
    });
    Ok(json!({
        "entry_type": kind,
        "generated_at": info.env.wall_seconds(),
        "items": items,
        "next_page_token": null,
    }))
}

/// A queue's owner as the original's endpoint health: this node, or a member heard from
/// lately, serves it (`healthy`); one gone quiet (`degraded`), held down or no longer a
/// member (`unavailable`: calls fail fast with 1017 until it is back).
fn queue_health(
    info: &NodeView,
    catalog: &crate::control::Catalog,
    detector: &crate::fabric::liveness::Detector,
    owner: crate::control::NodeId,
    now: tokio::time::Instant,
) -> &'static str {
    use crate::fabric::liveness::Liveness;
    if owner == info.control.id {
        return "healthy";
    }
    if !catalog.members().any(|m| m.id == owner) {
        return "unavailable";
    }
    match detector.status(owner, now) {
        Liveness::Alive => "healthy",
        Liveness::Suspect => "degraded",
        Liveness::Down => "unavailable",
    }
}

/// A catalog queue as the original's `QueueEndpoint`: where it lives, the guarantees it
/// delivers with, and its type and bound. Its entry never expires; `ttl_seconds` is how
/// long a copy of this answer may be trusted (the original's `fabric_catalog_ttl_seconds`).
fn queue_endpoint(
    q: &crate::control::QueueEntry,
    node_id: &str,
    cluster_id: &str,
    health: &str,
) -> Value {
    json!({
        "queue_name": q.name,
        "name": q.name,
        "cluster_id": cluster_id,
        "node_id": node_id,
        "delivery_guarantees": crate::queue::request::SERVED_GUARANTEES,
        "health": health,
        "current_subscribers": 0,
        "metadata": {"queue_type": q.spec.queue_type.as_str(), "max_size": q.spec.max_size},
        "scope": "zone",
        "tags": [],
        "advertised_at": q.created_ms as f64 / 1000.0,
        "ttl_seconds": 120.0,
    })
}

/// The original's `rpc_list` request (`RpcListRequest`); fields this node does not act on
/// (namespace, scope, tenants, tags, capabilities) are accepted and ignored.
#[derive(Debug, Default, serde::Deserialize)]
struct RpcListQuery {
    #[serde(flatten)]
    functions: FunctionFilter,
    /// A substring of the name.
    query: Option<String>,
}

/// `rpc_list({…})`: the cluster's functions as the original's `RpcListResponse`
/// (`{generated_at, items: [{identity, namespace, node_id, cluster_id, resources, tags,
/// scope, summary, spec_digest}], next_page_token}`).
pub(crate) fn rpc_list(info: Arc<NodeView>) -> Function {
    Function::raw("rpc_list", move |call: CallArgs| {
        let info = info.clone();
        async move {
            let bad = |e: String| CallError::InvalidArguments(format!("rpc_list: {e}"));
            let slots = call.bind(&["request"]).map_err(|e| bad(e.to_string()))?;
            let q: RpcListQuery = match (
                slots.first().copied().flatten(),
                call.kwargs.is_empty_container(),
            ) {
                (Some(r), true) => serde_json::from_str(r.get()),
                (None, false) => call.kwargs.decode(),
                (None, true) => Ok(RpcListQuery::default()),
                (Some(_), false) => {
                    return Err(bad(
                        "give the request as one object or as keywords, not both".into(),
                    ));
                }
            }
            .map_err(|e| bad(crate::protocol::plain_error(&e)))?;
            let constraint = q.functions.constraint()?;
            let items: Vec<Value> = info.control.catalog.read(|state| {
                let catalog = &state.catalog;
                let mut gate = super::policy::Gate::new(&info, "rpc_list", catalog.policy());
                q.functions
                    .select(catalog, constraint.as_ref())
                    .filter(|(_, f)| q.query.as_ref().is_none_or(|s| f.name.contains(s.as_str())))
                    .filter(|(_, f)| gate.item(&f.name))
                    .take(q.functions.limit())
                    .map(|(node, f)| {
                        json!({
                            "identity": {"name": f.name, "function_id": f.function_id, "version": f.version.to_string()},
                            "namespace": "",
                            "node_id": catalog.node_id_of(node),
                            "cluster_id": info.cluster_id,
                            "resources": f.resources,
                            "tags": [],
                            "scope": "cluster",
                            "summary": null,
                            "spec_digest": null,
                        })
                    })
                    .collect()
            });
            Ok(Json::from(json!({
                "generated_at": info.env.wall_seconds(),
                "items": items,
                "next_page_token": null,
            })))
        }
    })
}

/// What `catalog_query` filters on; every field is optional.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFilter {
    name: Option<String>,
    function_id: Option<String>,
    version_constraint: Option<String>,
    #[serde(default)]
    locs: Vec<String>,
    /// Wait until this replica has everything committed when the query arrived.
    #[serde(default)]
    linearizable: bool,
    /// Also list the cluster's queues (`{"queues": [{name, owner}]}`).
    #[serde(default)]
    queues: bool,
}

/// How long a linearizable `catalog_query` may wait for the leader and for this replica.
const LINEARIZABLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// `catalog_query({name?, function_id?, version_constraint?, locs?, linearizable?, queues?})`:
/// the functions of the whole cluster that match, from this node's catalog replica, as
/// `{"functions": [{node_id, node_name, name, function_id, version, resources}]}` (plus
/// `queues` when asked). With `linearizable`, the answer reflects every catalog change
/// committed before the query arrived (else error 1017).
pub(crate) fn catalog_query(info: Arc<NodeView>) -> Function {
    Function::raw("catalog_query", move |call: CallArgs| {
        let info = info.clone();
        async move {
            let bad = |e: String| CallError::InvalidArguments(format!("catalog_query: {e}"));
            // One positional filter object, or the filter's fields as keywords; not both.
            let positional = call.bind(&["filter"]).map_err(|e| bad(e.to_string()));
            // The original's clients send `{entry_type, …}`: answered in its shape.
            let original = match (&positional, call.kwargs.is_empty_container()) {
                (Ok(slots), true) => slots.first().copied().flatten().map(|f| f.get()),
                (_, false) if call.args.is_empty_container() => Some(call.kwargs.get()),
                _ => None,
            }
            .filter(|text| {
                serde_json::from_str::<
                        std::collections::BTreeMap<&str, &serde_json::value::RawValue>,
                    >(text)
                    .is_ok_and(|keys| keys.contains_key("entry_type"))
            })
            .map(serde_json::from_str::<OriginalQuery>)
            .transpose()
            .map_err(|e| bad(crate::protocol::plain_error(&e)))?;
            if let Some(q) = original {
                return original_query(&info, q).map(Json::from);
            }
            let filter: CatalogFilter = match (call.kwargs.is_empty_container(), positional) {
                (true, Ok(slots)) => match slots.first().copied().flatten() {
                    None => CatalogFilter::default(),
                    Some(f) => serde_json::from_str(f.get())
                        .map_err(|e| bad(crate::protocol::plain_error(&e)))?,
                },
                (false, _) if call.args.is_empty_container() => call
                    .kwargs
                    .decode()
                    .map_err(|e| bad(crate::protocol::plain_error(&e)))?,
                (false, _) => {
                    return Err(bad(
                        "give the filter as one object or as keywords, not both".into(),
                    ));
                }
                (true, Err(e)) => return Err(e),
            };
            let constraint = filter
                .version_constraint
                .as_deref()
                .map(crate::registry::VersionConstraint::parse)
                .transpose()
                .map_err(|e| CallError::InvalidArguments(e.to_string()))?;
            if filter.linearizable {
                info.control
                    .linearizable(LINEARIZABLE_TIMEOUT)
                    .await
                    .map_err(|e| CallError::Unavailable(e.to_string()))?;
            }
            // Built under the replica's lock: no copy of the whole catalog per query.
            let reply = info.control.catalog.read(|state| {
                let catalog = &state.catalog;
                let query = crate::registry::Query {
                    name: filter.name.as_deref(),
                    function_id: filter.function_id.as_deref(),
                    version: constraint.as_ref(),
                    locs: &filter.locs,
                };
                let mut gate = super::policy::Gate::new(&info, "catalog_query", catalog.policy());
                let found: Vec<Value> = catalog
                    .functions()
                    .filter(|(_, f)| query.accepts(f.offer()))
                    .filter(|(_, f)| gate.item(&f.name))
                    .map(|(node, f)| {
                        let node_name = catalog.member_by_id(node).map_or("", |m| m.name.as_str());
                        let mut d = describe_entry(f);
                        d.insert(
                            "node_id".into(),
                            json!(crate::ids::node_id(node_name, node)),
                        );
                        d.insert("node_name".into(), json!(node_name));
                        Value::Object(d)
                    })
                    .collect();
                // `items` and `entry_type` too: the original's clients read those (its
                // `catalog_query()` with no filter sends none of its fields).
                let mut reply = json!({
                    "functions": found,
                    "entry_type": "functions",
                    "items": found,
                    "generated_at": info.env.wall_seconds(),
                    "next_page_token": null,
                });
                if filter.queues {
                    let queues: Vec<Value> = catalog
                        .queues()
                        .map(|q| json!({ "name": q.name, "owner": q.owner.to_string() }))
                        .collect();
                    reply["queues"] = Value::Array(queues);
                }
                reply
            });
            Ok(Json::from(reply))
        }
    })
}

/// `cluster_map()`: the nodes of the cluster in the shape the original's
/// `MPREGClusterClient` reads (`cluster_id`, `generated_at`, `nodes[]`).
pub(crate) fn cluster_map(info: Arc<NodeView>) -> Function {
    Function::raw("cluster_map", move |call: CallArgs| {
        let info = info.clone();
        async move {
            no_arguments("cluster_map", &call)?;
            Ok(Json::from(info.cluster_map()))
        }
    })
}

/// What `list_peers` and `cluster_map` say of every member.
fn describe(v: &crate::control::replica::MemberView) -> serde_json::Map<String, Value> {
    let m = &v.member;
    let described = json!({
        "node_id": crate::ids::node_id(&m.name, m.id),
        "name": m.name,
        "cluster_id": m.cluster_id,
        "advertised_urls": m.advertised_urls,
        "resources": v.resources,
        "functions": v.functions,
    });
    match described {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

/// Orders `cluster_map`'s nodes down first, then suspect, then live (stable otherwise).
/// A node restarted in memory mode at its old address rejoins with a new id while its old
/// entry stays, down, under the same URL; the original `MPREGClusterClient` keeps the last
/// score it reads for a URL, so the live entry must come last or the client would rank a
/// working node as dead.
fn down_first(nodes: &mut [Value]) {
    nodes.sort_by_key(|n| match n["status"].as_str() {
        Some("down") => 0,
        Some("suspect") => 1,
        _ => 2,
    });
}

impl NodeView {
    /// From the catalog once this node is in it; until then, this node alone.
    pub(crate) fn cluster_map(&self) -> Value {
        let Some(members) = crate::control::replica::members_view(&self.control) else {
            return self.local_cluster_map();
        };
        let leader = self.control.raft.metrics().borrow().current_leader;
        let mut nodes: Vec<Value> = members
            .iter()
            .map(|v| {
                let local = v.member.id == self.control.id;
                // This node's load from its counters; the others' from their heartbeats.
                let (status, load, clients, heard) = if local {
                    let clients = self.stats.active_clients.load(Ordering::Relaxed);
                    ("ok", self.stats.load(self.env.clock.now()), clients, None)
                } else {
                    let d = self.detector.lock();
                    let now = self.env.clock.now();
                    let status = match d.status(v.member.id, now) {
                        crate::routing::Liveness::Alive => "ok",
                        crate::routing::Liveness::Suspect => "suspect",
                        crate::routing::Liveness::Down => "down",
                    };
                    let heard = d.age(v.member.id, now).map(|a| a.as_millis() as u64);
                    (status, d.load(v.member.id), 0, heard)
                };
                let mut node = describe(v);
                node.insert("region".into(), json!(""));
                node.insert("status".into(), json!(status));
                node.insert("heartbeat_age_ms".into(), json!(heard));
                node.insert("is_local".into(), json!(local));
                node.insert("is_leader".into(), json!(leader == Some(v.member.id.0)));
                node.insert(
                    "raft_role".into(),
                    json!(match v.member.role {
                        crate::control::Role::Voter => "voter",
                        crate::control::Role::Learner => "learner",
                    }),
                );
                let mut load = json!({
                    // As the original ranks nodes (its cluster client tries the lowest
                    // score first): a suspect node +500, a down one +1000.
                    "load_score": load.inflight as f64 + match status {
                        "suspect" => 500.0,
                        "down" => 1000.0,
                        _ => 0.0,
                    },
                    "active_clients": clients,
                    "inflight_requests": load.inflight,
                    // Where the original reads a node's status (`load.status`).
                    "status": status,
                    "status_timestamp": self.env.wall_seconds(),
                    "recent_step_latency_ms": load.step_latency_us as f64 / 1000.0,
                });
                if local {
                    // The original's message counters, this node's own (the others' are not
                    // in their heartbeats, so not given for them).
                    if let Value::Object(l) = &mut load {
                        l.extend(self.peer_message_counts());
                    }
                }
                node.insert("load".into(), load);
                if local {
                    node.insert("client_budget".into(), self.client_budget());
                }
                Value::Object(node)
            })
            .collect();
        down_first(&mut nodes);
        let leader_id = leader.and_then(|l| {
            members
                .iter()
                .find(|v| v.member.id.0 == l)
                .map(|v| crate::ids::node_id(&v.member.name, v.member.id))
        });
        json!({
            "cluster_id": self.cluster_id,
            "generated_at": self.env.wall_seconds(),
            "leader": leader_id,
            "nodes": nodes,
        })
    }

    /// What the client budgets hold and did (`data::client_budget`), for operators and tests.
    fn client_budget(&self) -> Value {
        json!({
            "bytes_held": self.clients.used(),
            "bytes_limit": self.clients.limit(),
            "connections_paused": self.clients.paused.load(Ordering::Relaxed),
            "connections_stalled": self.clients.stalled.load(Ordering::Relaxed),
            "worker_calls_abandoned": self.stats.worker_calls_abandoned.load(Ordering::Relaxed),
        })
    }

    /// Frames read from admitted peers, under the original's `load` names: all of them,
    /// the answers to this node's requests, the requests peers sent, and the rest
    /// (connection control: cancels, done, retire).
    fn peer_message_counts(&self) -> serde_json::Map<String, Value> {
        let t = self.fabric.traffic();
        let all = t.frames_in.load(Ordering::Relaxed);
        let replies = t.replies_in.load(Ordering::Relaxed);
        let requests = t.requests_in.load(Ordering::Relaxed);
        let mut m = serde_json::Map::new();
        m.insert("messages_processed".into(), json!(all));
        m.insert("rpc_responses_skipped".into(), json!(replies));
        m.insert("server_messages".into(), json!(requests));
        m.insert(
            "other_messages".into(),
            json!(all.saturating_sub(replies + requests)),
        );
        m
    }

    fn local_cluster_map(&self) -> Value {
        let inflight = self.stats.inflight();
        let clients = self.stats.active_clients.load(Ordering::Relaxed);
        let mut map = json!({
            "cluster_id": self.cluster_id,
            "generated_at": self.env.wall_seconds(),
            "nodes": [{
                "node_id": self.node_id,
                "name": self.name,
                "cluster_id": self.cluster_id,
                "region": "",
                "advertised_urls": [self.url],
                "resources": self.resources,
                "functions": self.function_names(),
                "status": "ok",
                "is_local": true,
                "client_budget": self.client_budget(),
                "load": {
                    "load_score": inflight as f64,
                    "active_clients": clients,
                    "inflight_requests": inflight,
                },
            }],
        });
        if let Value::Object(l) = &mut map["nodes"][0]["load"] {
            l.extend(self.peer_message_counts());
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn the_live_entry_for_a_url_comes_after_its_dead_predecessor() {
        let mut nodes = vec![
            json!({"node_id": "a-1", "advertised_urls": ["ws://h:1"], "status": "ok"}),
            json!({"node_id": "b-2", "advertised_urls": ["ws://h:2"], "status": "ok"}),
            json!({"node_id": "b-3", "advertised_urls": ["ws://h:2"], "status": "down"}),
            json!({"node_id": "c-4", "advertised_urls": ["ws://h:3"], "status": "suspect"}),
        ];
        super::down_first(&mut nodes);
        let order: Vec<&str> = nodes.iter().filter_map(|n| n["node_id"].as_str()).collect();
        assert_eq!(order, ["b-3", "c-4", "a-1", "b-2"]);
        // What the original client does with them: the last score per URL wins.
        let mut score = std::collections::BTreeMap::new();
        for n in &nodes {
            score.insert(n["advertised_urls"][0].as_str(), n["status"].as_str());
        }
        assert_eq!(score[&Some("ws://h:2")], Some("ok"));
    }
}
