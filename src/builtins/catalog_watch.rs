//! `catalog_watch`'s push: a client subscribed (`pubsub-subscribe`) to the discovery topics
//! (`mpreg.discovery.delta`, `mpreg.discovery.delta.<namespace>`) gets a notification, in
//! the original's `DiscoveryDeltaMessage` shape, for each change to the catalog.
//!
//! Every replica applies every catalog change (Raft), so each node tells its own clients
//! from its own replica: nothing crosses the cluster for a watch. One task per watching
//! connection follows the replica's applied index, waits [`COALESCE`] after a change (a
//! burst of registrations is one delta), diffs the catalog against what it last told the
//! connection, and queues the notifications. The queue holds [`QUEUED`] messages; while it
//! is full the task waits, and the changes meanwhile fold into its next diff, so a client
//! that reads slowly gets fewer, larger deltas and the node holds at most a bounded number.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::builtins::discovery::DELTA_TOPIC;
use crate::control::{Catalog, FunctionEntry, Member, NodeId};
use crate::ids::node_id;
use crate::protocol::pubsub::TopicPattern;
use crate::view::NodeView;

/// How long after a change the delta is taken.
const COALESCE: Duration = Duration::from_millis(50);
/// Notifications queued for one connection.
const QUEUED: usize = 16;

type Subscriptions = Arc<Mutex<BTreeMap<String, Vec<TopicPattern>>>>;

/// A connection's discovery subscriptions and the notifications waiting for it.
pub(crate) struct CatalogWatch {
    subscriptions: Subscriptions,
    pub(crate) outbox: mpsc::Receiver<Message>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CatalogWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether `pattern` names only the catalog's topics.
pub(crate) fn is_discovery(pattern: &str) -> bool {
    pattern == DELTA_TOPIC
        || pattern
            .strip_prefix(DELTA_TOPIC)
            .is_some_and(|r| r.starts_with('.'))
}

impl CatalogWatch {
    /// Starts following the catalog for this connection, from its state now.
    pub(crate) fn start(info: Arc<NodeView>, binary: bool, max_message_bytes: usize) -> Self {
        let (tx, outbox) = mpsc::channel(QUEUED);
        let subscriptions = Subscriptions::default();
        let task = tokio::spawn(follow(
            info,
            subscriptions.clone(),
            tx,
            binary,
            max_message_bytes,
        ));
        CatalogWatch {
            subscriptions,
            outbox,
            task,
        }
    }

    pub(crate) fn held(&self) -> usize {
        self.subscriptions.lock().len()
    }

    pub(crate) fn subscribe(&self, id: String, patterns: Vec<TopicPattern>) {
        self.subscriptions.lock().insert(id, patterns);
    }

    /// Whether `id` was subscribed.
    pub(crate) fn unsubscribe(&self, id: &str) -> bool {
        self.subscriptions.lock().remove(id).is_some()
    }
}

/// What a delta compares: every function version by (node, name, version), every member.
#[derive(Default, PartialEq)]
struct Seen {
    functions: BTreeMap<(NodeId, String, semver::Version), FunctionEntry>,
    members: BTreeMap<NodeId, Member>,
}

fn seen(catalog: &Catalog) -> Seen {
    Seen {
        functions: catalog
            .functions()
            .map(|(n, f)| ((n, f.name.clone(), f.version.clone()), f.clone()))
            .collect(),
        members: catalog.members().map(|m| (m.id, m.clone())).collect(),
    }
}

async fn follow(
    info: Arc<NodeView>,
    subscriptions: Subscriptions,
    tx: mpsc::Sender<Message>,
    binary: bool,
    max_message_bytes: usize,
) {
    let mut metrics = info.control.raft.metrics();
    let applied = |m: &watch::Receiver<crate::control::raft::RaftMetrics>| {
        m.borrow().last_applied.map(|l| l.index)
    };
    let mut index = applied(&metrics);
    let mut before = info.control.catalog.read(|s| seen(&s.catalog));
    let mut sequence = 0u64;
    loop {
        // Raft's metrics change for many reasons; only a newly applied entry can change
        // the catalog.
        while applied(&metrics) == index {
            if metrics.changed().await.is_err() {
                return; // Raft stopped
            }
        }
        tokio::time::sleep(COALESCE).await;
        index = applied(&metrics);
        let (now, payload) = info.control.catalog.read(|s| {
            let now = seen(&s.catalog);
            let payload = delta(&info, &s.catalog, &before, &now, sequence);
            (now, payload)
        });
        before = now;
        let Some((payload, namespaces)) = payload else {
            continue;
        };
        sequence += 1;
        let wall = info.env.wall_seconds();
        let update = payload["delta"]["update_id"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        // The original publishes each delta on the base topic and once per namespace.
        let topics = std::iter::once((DELTA_TOPIC.to_owned(), update.clone())).chain(
            namespaces
                .iter()
                .enumerate()
                .map(|(i, ns)| (format!("{DELTA_TOPIC}.{ns}"), format!("{update}-{i}"))),
        );
        let mut out = Vec::new();
        {
            let subs = subscriptions.lock();
            for (topic, message_id) in topics {
                for (id, patterns) in subs.iter() {
                    if patterns.iter().any(|p| p.matches(&topic)) {
                        out.push(json!({
                            "role": "pubsub-notification",
                            "message": {
                                "topic": topic, "payload": payload, "timestamp": wall,
                                "message_id": message_id, "publisher": info.name,
                                "headers": {"event": "discovery.catalog_delta",
                                            "cluster_id": info.cluster_id},
                                "routing_path": null, "current_hop": null,
                            },
                            "subscription_id": id,
                            "u": format!("notification_{message_id}_{id}"),
                        }));
                    }
                }
            }
        }
        for n in out {
            let text = n.to_string();
            if text.len() > max_message_bytes {
                tracing::debug!(
                    bytes = text.len(),
                    "a catalog delta is larger than max_message_bytes; not sent"
                );
                continue;
            }
            let m = if binary {
                Message::binary(text.into_bytes())
            } else {
                Message::text(text)
            };
            if tx.send(m).await.is_err() {
                return; // the connection is gone
            }
        }
    }
}

/// A function name's namespace as the original's deltas say it: up to the last dot, or the
/// whole name.
fn delta_namespace(name: &str) -> &str {
    name.rsplit_once('.').map_or(name, |(ns, _)| ns)
}

fn identity(f: &FunctionEntry) -> Value {
    json!({"name": f.name, "function_id": f.function_id, "version": f.version.to_string()})
}

/// The original's `DiscoveryDeltaMessage` from `before` to `now`, and its namespaces;
/// `None` when nothing it reports changed.
fn delta(
    info: &NodeView,
    catalog: &Catalog,
    before: &Seen,
    now: &Seen,
    sequence: u64,
) -> Option<(Value, BTreeSet<String>)> {
    if before == now {
        return None;
    }
    let wall = info.env.wall_seconds();
    let cluster = &info.cluster_id;
    let node_name = |id: NodeId| {
        now.members
            .get(&id)
            .or_else(|| before.members.get(&id))
            .map_or_else(|| catalog.node_id_of(id), |m| node_id(&m.name, id))
    };
    let mut namespaces = BTreeSet::new();
    let added: Vec<Value> = now
        .functions
        .iter()
        .filter(|(k, f)| before.functions.get(*k) != Some(*f))
        .map(|((node, ..), f)| {
            namespaces.insert(delta_namespace(&f.name).to_owned());
            json!({"identity": identity(f), "resources": f.resources, "node_id": node_name(*node),
                   "cluster_id": cluster, "scope": "zone", "tags": [], "advertised_at": wall})
        })
        .collect();
    let removed: Vec<Value> = before
        .functions
        .iter()
        .filter(|(k, _)| !now.functions.contains_key(*k))
        .map(|((node, ..), f)| {
            namespaces.insert(delta_namespace(&f.name).to_owned());
            json!({"cluster_id": cluster, "node_id": node_name(*node), "identity": identity(f),
                   "resources": f.resources})
        })
        .collect();
    let nodes: Vec<Value> = now
        .members
        .values()
        .filter(|m| before.members.get(&m.id) != Some(*m))
        .map(|m| {
            let endpoints: Vec<Value> = m
                .advertised_urls
                .iter()
                .map(|u| crate::builtins::discovery::transport_endpoint(u))
                .collect();
            json!({"node_id": node_name(m.id), "cluster_id": m.cluster_id, "scope": "zone",
                   "resources": m.resources, "capabilities": crate::view::SERVED_SYSTEMS,
                   "transport_endpoints": endpoints, "tags": [], "advertised_at": wall})
        })
        .collect();
    let node_removals: Vec<Value> = before
        .members
        .keys()
        .filter(|id| !now.members.contains_key(id))
        .map(|id| json!({"cluster_id": cluster, "node_id": node_name(*id)}))
        .collect();
    if namespaces.is_empty() {
        namespaces.insert(cluster.clone());
    }
    let counts = json!({
        "functions_added": added.len(), "functions_removed": removed.len(),
        "topics_added": 0, "topics_removed": 0, "queues_added": 0, "queues_removed": 0,
        "services_added": 0, "services_removed": 0, "caches_added": 0, "caches_removed": 0,
        "cache_profiles_added": 0, "cache_profiles_removed": 0,
        "nodes_added": nodes.len(), "nodes_removed": node_removals.len(),
    });
    let payload = json!({
        "delta": {
            "update_id": format!("{}-{sequence}", info.control.id),
            "cluster_id": cluster,
            "sent_at": wall,
            "functions": added, "function_removals": removed,
            "topics": [], "topic_removals": [], "queues": [], "queue_removals": [],
            "services": [], "service_removals": [], "caches": [], "cache_removals": [],
            "cache_profiles": [], "cache_profile_removals": [],
            "nodes": nodes, "node_removals": node_removals,
        },
        "counts": counts,
        "namespaces": namespaces,
        "source_node": info.node_id,
        "source_cluster": cluster,
        "published_at": wall,
    });
    Some((payload, namespaces))
}
