//! The queues at the IO edge: every node answers every queue call; the queue's owner (named
//! in the catalog) runs it, and any other node forwards the call to the owner on the data
//! plane and hands back the answer.
//!
//! On the owner, a queue is an [`Owned`]: its engine behind a brief lock, the store key its
//! messages are written under, and a `Notify` that wakes long-polling receives. Every
//! command runs the engine and hands its writes to the store under that lock (so the store
//! applies them in the engine's order); a send then waits for its commit before it is
//! answered. A queue is loaded from the store the first time a call reaches it after the
//! node starts (or it was created), so a restarted owner serves what it stored.
//!
//! Time: the engine runs on wall-clock milliseconds (`Env`), since deadlines, delays, TTLs
//! and dedup windows are written to the store and must mean the same after a restart.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::engine::Queue;
use super::request::{self, Limits};
use super::store::{Store, StoreError, Write};
use crate::config::Settings;
use crate::control::replica::{CommitError, Control};
use crate::control::{CatalogCommand, CatalogError, NodeId, QueueEntry};
use crate::data::client::DataClient;
use crate::env::Env;
use crate::fabric::Fabric;
use crate::fabric::heartbeat::SharedDetector;
use crate::fabric::liveness::Liveness;

pub use super::counters::{Counters, Snapshot};
pub use super::fail::QueueFail;

mod owner;
mod replicated;

/// How long a catalog commit (create, delete) may take before the call fails (1017).
const COMMIT_WITHIN: Duration = Duration::from_secs(5);
/// How long a miss waits to catch up with the leader before it is answered `not found`.
const MISS_CATCH_UP: Duration = Duration::from_secs(1);
/// How long a forwarded call may take beyond its own wait (for a replicated queue, also
/// how long a call looks for its group's leader).
const FORWARD_SLACK: Duration = Duration::from_secs(10);

/// This node's queue bounds, from its settings.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub request: Limits,
    /// Most queues this node owns.
    pub max_queues: usize,
    /// Most receives waiting at once on this node.
    pub max_waiters: usize,
}

impl QueueLimits {
    pub fn from_settings(s: &Settings) -> QueueLimits {
        QueueLimits {
            request: Limits {
                max_messages: s.queue_max_messages,
                max_queue_bytes: s.queue_max_bytes,
                max_message_bytes: s.queue_max_message_bytes,
                max_dedup_ids: s.queue_max_dedup_ids,
                max_in_flight: s.queue_max_in_flight,
            },
            max_queues: s.queue_max_queues,
            max_waiters: s.queue_max_waiters,
        }
    }
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            request: Limits::default(),
            max_queues: 1000,
            max_waiters: 10_000,
        }
    }
}

/// The calls routed to a queue's owner, by the built-in's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Delete,
    Stats,
    Send,
    SendBatch,
    Receive,
    Ack,
    Nack,
    ChangeVisibility,
    Purge,
    Dlq,
    Redrive,
}

impl Op {
    pub const ALL: [Op; 11] = [
        Op::Delete,
        Op::Stats,
        Op::Send,
        Op::SendBatch,
        Op::Receive,
        Op::Ack,
        Op::Nack,
        Op::ChangeVisibility,
        Op::Purge,
        Op::Dlq,
        Op::Redrive,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Delete => "queue_delete",
            Op::Stats => "queue_stats",
            Op::Send => "queue_send",
            Op::SendBatch => "queue_send_batch",
            Op::Receive => "queue_receive",
            Op::Ack => "queue_ack",
            Op::Nack => "queue_nack",
            Op::ChangeVisibility => "queue_change_visibility",
            Op::Purge => "queue_purge",
            Op::Dlq => "queue_dlq",
            Op::Redrive => "queue_redrive",
        }
    }

    pub fn parse(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.name() == name)
    }
}

/// A queue's state on its owner.
struct State {
    queue: Queue,
    /// When each live or dead message was sent (wall ms), for ages and latencies.
    sent_ms: BTreeMap<u64, u64>,
    /// Named consumers (subscriptions, and pull consumers naming themselves) and when each
    /// last asked for messages: those a broadcast or quorum send copies to.
    active: BTreeMap<Arc<str>, u64>,
}

/// A queue this node owns.
pub struct Owned {
    pub name: String,
    incarnation: u64,
    /// Names this run of the queue in receipt handles.
    boot: u64,
    key: Arc<str>,
    state: Mutex<State>,
    arrived: Notify,
    /// Set when the queue is deleted: receives waiting on it answer at once.
    deleted: std::sync::atomic::AtomicBool,
    pub counters: Counters,
}

impl Owned {
    pub fn snapshot(&self, now: u64) -> Snapshot {
        let st = self.state.lock();
        let oldest = st
            .queue
            .oldest()
            .and_then(|id| st.sent_ms.get(&id))
            .map_or(0, |t| now.saturating_sub(*t));
        Snapshot {
            depth: st.queue.depth(),
            in_flight: st.queue.in_flight(),
            dead_lettered: st.queue.dead_lettered(),
            oldest_age_ms: oldest,
        }
    }
}

/// The store key of a queue's rows: its name and incarnation.
fn store_key(q: &QueueEntry) -> Arc<str> {
    Arc::from(format!("{}#{:x}", q.name, q.incarnation))
}

/// Every node's queue service.
pub struct Queues {
    env: Env,
    control: Arc<Control>,
    fabric: Fabric,
    detector: SharedDetector,
    store: Store,
    limits: QueueLimits,
    owned: Mutex<BTreeMap<String, Arc<Owned>>>,
    /// One load from the store at a time (a queue is loaded once).
    loading: tokio::sync::Mutex<()>,
    waiters: AtomicUsize,
    /// The replicated queues' groups this node holds replicas of.
    groups: Arc<crate::queue::groups::Groups>,
    /// Set once this node's stored queues are back in the catalog ([`Queues::reclaim`]):
    /// until then, a queue not in the catalog may be one of them.
    reclaimed: tokio::sync::watch::Sender<bool>,
}

impl Queues {
    pub(crate) fn new(
        env: Env,
        control: Arc<Control>,
        fabric: Fabric,
        detector: SharedDetector,
        store: Store,
        limits: QueueLimits,
        groups: Arc<crate::queue::groups::Groups>,
    ) -> Queues {
        Queues {
            env,
            control,
            fabric,
            detector,
            store,
            limits,
            owned: Mutex::default(),
            loading: tokio::sync::Mutex::new(()),
            waiters: AtomicUsize::new(0),
            groups,
            reclaimed: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Whether acknowledged sends outlive the process (SQLite mode).
    pub fn durable(&self) -> bool {
        self.store.durable()
    }

    pub fn limits(&self) -> &QueueLimits {
        &self.limits
    }

    /// This node's id.
    pub fn node(&self) -> NodeId {
        self.control.id
    }

    /// The node's clock, now (for how long things have lasted).
    pub(crate) fn now_instant(&self) -> tokio::time::Instant {
        self.env.clock.now()
    }

    /// The replicated queues' groups this node holds replicas of.
    pub fn groups(&self) -> &crate::queue::groups::Groups {
        &self.groups
    }

    /// The queues this node owns and has loaded, by name.
    pub fn owned(&self) -> Vec<Arc<Owned>> {
        self.owned.lock().values().cloned().collect()
    }

    fn now(&self) -> u64 {
        self.env.clock.wall_ms()
    }

    /// Wall-clock ms (the queues' time).
    pub(crate) fn wall_ms(&self) -> u64 {
        self.now()
    }

    /// Sends, receives, acks and nacks on the queues this node has loaded, since it started.
    pub fn operations(&self) -> u64 {
        self.owned()
            .iter()
            .map(|q| {
                let c = &q.counters;
                [&c.sent, &c.received, &c.acked, &c.nacked]
                    .iter()
                    .map(|a| a.load(Ordering::Relaxed))
                    .sum::<u64>()
            })
            .sum()
    }

    /// Receives waiting now on this node.
    pub fn waiting(&self) -> usize {
        self.waiters.load(Ordering::Relaxed)
    }

    /// Whether the catalog holds queue `name` (this node's replica).
    pub fn exists(&self, name: &str) -> bool {
        self.entry(name).is_some()
    }

    fn entry(&self, name: &str) -> Option<QueueEntry> {
        self.control
            .catalog
            .read(|s| s.catalog.queue(name).cloned())
    }

    /// `queue_create`: a new queue owned by this node, committed to the catalog. The same
    /// settings again answer the existing queue (`created: false`); other settings are
    /// refused.
    pub async fn create(&self, req: &request::CreateRequest) -> Result<Value, QueueFail> {
        let (name, config) = request::create(req, &self.limits.request)?;
        let spec = request::spec_of(&config);
        if let Ok(existing) = self.entry_after_reclaim(&name).await {
            return if existing.spec == spec {
                Ok(self.created(&existing, false))
            } else {
                Err(QueueFail::Exists(name))
            };
        }
        let me = self.control.id;
        let replicas = self.place(req.replicas)?;
        let mine = self.control.catalog.read(|s| {
            s.catalog
                .queues()
                .filter(|q| q.owner == me || q.replicas.contains(&me))
                .count()
        });
        if mine >= self.limits.max_queues {
            return Err(QueueFail::refused(
                "too_many_queues",
                format!(
                    "this node owns {mine} queues, its most (queue_max_queues): create it on \
                     another node, or delete one"
                ),
            ));
        }
        let entry = QueueEntry {
            name: name.clone(),
            owner: me,
            incarnation: self.env.rng.next_u64(),
            created_ms: self.now(),
            spec,
            replicas,
        };
        match self.commit_create(&entry).await {
            Ok(()) if entry.replicated() => {
                // Committed by the catalog's leader; this replica applies it before the
                // answer, so a call through this node right after finds the queue. Then
                // this node's replica, if it holds one, starts now rather than at the queue
                // task's next look (the others start when their nodes apply it).
                let _ = self.control.linearizable(COMMIT_WITHIN).await;
                self.groups.reconcile().await;
                Ok(self.created(&entry, true))
            }
            Ok(()) => {
                let def =
                    serde_json::to_vec(&entry).map_err(|e| QueueFail::Invalid(e.to_string()))?;
                self.store
                    .write(Write::Define {
                        queue: store_key(&entry),
                        entry: def,
                    })
                    .await
                    .map_err(|_| QueueFail::store(StoreError::Closed))?
                    .map_err(QueueFail::store)?;
                self.load(&entry).await?;
                Ok(self.created(&entry, true))
            }
            Err(CommitError::Refused(CatalogError::QueueExists(_))) => match self.entry(&name) {
                // Created meanwhile through another node.
                Some(existing) if existing.spec == entry.spec => Ok(self.created(&existing, false)),
                _ => Err(QueueFail::Exists(name)),
            },
            Err(CommitError::Refused(e)) => {
                Err(QueueFail::refused("catalog_refused", e.to_string()))
            }
            Err(CommitError::Unavailable(why)) => Err(QueueFail::unavailable(
                "catalog_unavailable",
                format!("the catalog could not commit the queue: {why}"),
            )),
        }
    }

    /// Commits queue `entry` to the catalog. A queue with one replica goes as the command of
    /// formats 5–6, which every member reads (one of an older build too, during a rolling
    /// upgrade); a replicated one as the new command (`place` chose replicas only while every
    /// member reads it).
    async fn commit_create(&self, entry: &QueueEntry) -> Result<(), CommitError> {
        let cmd = if entry.replicated() {
            CatalogCommand::CreateQueue(entry.clone())
        } else {
            CatalogCommand::CreateQueueV6(crate::control::catalog::QueueEntryV6 {
                name: entry.name.clone(),
                owner: entry.owner,
                incarnation: entry.incarnation,
                created_ms: entry.created_ms,
                spec: entry.spec.clone(),
            })
        };
        self.control.propose_within(cmd, COMMIT_WITHIN).await
    }

    /// Where a new queue's replicas go: none (R = 1, the creating node keeps it) or R
    /// distinct live members, those holding the fewest replicas first. Asked for nothing,
    /// R is 3 in a cluster of three or more nodes whose members all run queue groups.
    fn place(&self, asked: Option<u32>) -> Result<Vec<NodeId>, QueueFail> {
        let me = self.control.id;
        let now = self.env.clock.now();
        let (members, (mut load, firsts)) = self.control.catalog.read(|s| {
            let members: Vec<NodeId> = s.catalog.members().map(|m| m.id).collect();
            (members, s.catalog.replica_load())
        });
        let r = match asked {
            None if members.len() >= 3 => 3,
            None | Some(1) => return Ok(Vec::new()),
            Some(n @ (3 | 5)) => n as usize,
            Some(n) => {
                return Err(QueueFail::Invalid(format!(
                    "replicas: 1, 3 or 5 (a majority of them must be up), not {n}"
                )));
            }
        };
        if !self
            .control
            .members_speak(crate::fabric::frame::REPLICAS_PROTOCOL)
        {
            return match asked {
                None => Ok(Vec::new()),
                Some(_) => Err(QueueFail::refused(
                    "replicas_unsupported",
                    "some member of the cluster runs an older build without replicated \
                     queues (or is not connected): create the queue with replicas 1, or \
                     after the upgrade",
                )),
            };
        }
        let live: Vec<NodeId> = {
            let d = self.detector.lock();
            members
                .into_iter()
                .filter(|id| *id == me || d.status(*id, now) != Liveness::Down)
                .collect()
        };
        if live.len() < r {
            return Err(QueueFail::refused(
                "not_enough_nodes",
                format!(
                    "{r} replicas need {r} live nodes; the cluster has {} up",
                    live.len()
                ),
            ));
        }
        let mut ranked: Vec<(usize, NodeId)> = live
            .into_iter()
            .map(|id| (load.remove(&id).unwrap_or(0), id))
            .collect();
        ranked.sort();
        let mut chosen: Vec<NodeId> = ranked.into_iter().take(r).map(|(_, id)| id).collect();
        // The first replica initializes the group and campaigns first, so it usually leads:
        // the chosen node that is first of the fewest groups goes first, spreading leaders.
        // Among those, this node: the one creating a queue is likely the one its producers
        // talk to, and a call served by the leader skips a hop (in the R3 benchmark, where
        // every call comes through one node, about 1.35x the sends/s of a forwarded call).
        if let Some(at) = (0..chosen.len()).min_by_key(|i| {
            let id = chosen[*i];
            (firsts.get(&id).copied().unwrap_or(0), id != me, *i)
        }) {
            chosen.swap(0, at);
        }
        Ok(chosen)
    }

    fn created(&self, q: &QueueEntry, created: bool) -> Value {
        let mut v = self.control.catalog.read(|s| entry_json(q, &s.catalog));
        v["created"] = json!(created);
        v["success"] = json!(true);
        v
    }

    /// `queue_list`: every queue in the catalog (any node answers from its replica).
    pub fn list(&self) -> Value {
        let queues: Vec<Value> = self.control.catalog.read(|s| {
            s.catalog
                .queues()
                .map(|q| entry_json(q, &s.catalog))
                .collect()
        });
        json!({ "count": queues.len(), "queues": queues })
    }

    /// Runs `op` on the queue its request names: here if this node owns it, else on the
    /// owner through the data plane.
    pub async fn call(&self, op: Op, req: Value) -> Result<Value, QueueFail> {
        let name = req
            .get("queue_name")
            .and_then(Value::as_str)
            .ok_or_else(|| QueueFail::Invalid("queue_name: required".into()))?;
        request::queue_name(name)?;
        let entry = self.entry_after_reclaim(name).await?;
        if entry.replicated() {
            self.group_call(op, &entry, req).await
        } else if entry.owner == self.control.id {
            self.run(op, &entry, req).await
        } else {
            self.forward(&entry, op, req).await
        }
    }

    /// The catalog's queue `name`; not there while this node may still be giving the
    /// catalog back its stored queues, it waits for that (at most the commit bound).
    async fn entry_after_reclaim(&self, name: &str) -> Result<QueueEntry, QueueFail> {
        if let Some(e) = self.entry(name) {
            return Ok(e);
        }
        let mut done = self.reclaimed.subscribe();
        if !*done.borrow() {
            let _ = tokio::time::timeout(COMMIT_WITHIN, done.wait_for(|d| *d)).await;
        }
        if let Some(e) = self.entry(name) {
            return Ok(e);
        }
        // A queue created through another node a moment ago may not have reached this
        // replica yet (a follower learns a commit with the leader's next append): a miss is
        // confirmed by catching up with the leader before it is answered. Misses only: the
        // calls that find their queue never wait for this.
        let _ = self.control.linearizable(MISS_CATCH_UP).await;
        self.entry(name)
            .ok_or_else(|| QueueFail::NotFound(name.to_owned()))
    }

    /// A call forwarded by another node: run here if this node owns the queue.
    pub async fn serve_forwarded(&self, op: &str, body: &[u8]) -> Result<Vec<u8>, QueueFail> {
        let op = Op::parse(op)
            .ok_or_else(|| QueueFail::Invalid(format!("{op:.40?} is not a queue call")))?;
        let req: Value = serde_json::from_slice(body)
            .map_err(|e| QueueFail::Invalid(format!("the request is not JSON: {e}")))?;
        let name = req.get("queue_name").and_then(Value::as_str).unwrap_or("");
        let entry = self
            .entry(name)
            .ok_or_else(|| QueueFail::NotFound(name.to_owned()))?;
        if entry.replicated() {
            let reply = self.serve_group(op, &entry, req).await?;
            return serde_json::to_vec(&reply).map_err(|e| QueueFail::Invalid(e.to_string()));
        }
        if entry.owner != self.control.id {
            return Err(QueueFail::unavailable(
                "queue_moved",
                format!("queue `{name}` is not owned by the node it was forwarded to"),
            ));
        }
        let reply = self.run(op, &entry, req).await?;
        serde_json::to_vec(&reply).map_err(|e| QueueFail::Invalid(e.to_string()))
    }

    async fn forward(&self, entry: &QueueEntry, op: Op, req: Value) -> Result<Value, QueueFail> {
        let owner = entry.owner;
        let down = || {
            QueueFail::unavailable(
                "queue_owner_down",
                format!(
                    "queue `{}` lives on node {}, which cannot be reached; its messages are \
                     kept there and the queue answers again when that node is back",
                    entry.name,
                    self.control.catalog.read(|s| s.catalog.node_id_of(owner)),
                ),
            )
        };
        let ttl = replicated::wait_of(&req) + FORWARD_SLACK;
        match self.call_node(owner, op, &req, ttl).await {
            Ok(answer) => answer,
            Err(Unreached::Down | Unreached::NotMember) => Err(down()),
            Err(Unreached::Failed(e)) => Err(QueueFail::unavailable(
                "queue_owner_down",
                format!("{} ({e})", down()),
            )),
        }
    }

    /// Runs `op` with `req` on node `target` through the data plane, within `ttl`: its
    /// answer (a queue failure included), or why it was not reached.
    async fn call_node(
        &self,
        target: NodeId,
        op: Op,
        req: &Value,
        ttl: Duration,
    ) -> Result<Result<Value, QueueFail>, Unreached> {
        let held_down = {
            let now = self.env.clock.now();
            self.detector.lock().status(target, now) == Liveness::Down
        };
        if held_down {
            return Err(Unreached::Down);
        }
        let addr = self
            .control
            .member_addr(target)
            .ok_or(Unreached::NotMember)?;
        let body = match serde_json::to_vec(req) {
            Ok(b) => b,
            Err(e) => return Ok(Err(QueueFail::Invalid(e.to_string()))),
        };
        let client = DataClient::new(self.fabric.link_to(target.0, &addr));
        match client.queue(op.name(), body, ttl).await {
            Ok(Ok(reply)) => Ok(serde_json::from_slice(&reply)
                .map_err(|e| QueueFail::unavailable("queue_owner_reply", e.to_string()))),
            Ok(Err((kind, code, message))) => Ok(Err(QueueFail::from_wire(kind, code, message))),
            Err(e) => Err(Unreached::Failed(e.to_string())),
        }
    }

    /// The queue `entry` on this node, loaded from the store the first time.
    async fn load(&self, entry: &QueueEntry) -> Result<Arc<Owned>, QueueFail> {
        if let Some(q) = self.loaded(entry) {
            return Ok(q);
        }
        let _one = self.loading.lock().await;
        if let Some(q) = self.loaded(entry) {
            return Ok(q);
        }
        let key = store_key(entry);
        let stored = self.store.load(&key).await.map_err(QueueFail::store)?;
        let now = self.now();
        let mut queue = Queue::new(request::config_of(&entry.spec));
        let mut sent_ms = BTreeMap::new();
        for row in stored.rows {
            sent_ms.insert(row.message.id, row.sent_ms);
            queue.restore(now, row.message);
        }
        for (d, id, until) in stored.dedup {
            if until > now {
                queue.restore_dedup(d, id, until);
            }
        }
        queue.restore_next_id(stored.next_id);
        let owned = Arc::new(Owned {
            name: entry.name.clone(),
            incarnation: entry.incarnation,
            boot: self.env.rng.next_u64(),
            key,
            state: Mutex::new(State {
                queue,
                sent_ms,
                active: BTreeMap::new(),
            }),
            arrived: Notify::new(),
            deleted: std::sync::atomic::AtomicBool::new(false),
            counters: Counters::default(),
        });
        self.owned.lock().insert(entry.name.clone(), owned.clone());
        Ok(owned)
    }

    fn loaded(&self, entry: &QueueEntry) -> Option<Arc<Owned>> {
        self.owned
            .lock()
            .get(&entry.name)
            .filter(|q| q.incarnation == entry.incarnation)
            .cloned()
    }

    /// Gives the catalog back the queues this node's store defines and the catalog does
    /// not hold (it forgot them: a one-node cluster stopped, and so ended). A queue created
    /// again elsewhere under the name meanwhile wins; the stored messages are kept, not
    /// served, and said so. The node's queue task calls it once the node is registered.
    pub async fn reclaim(&self) -> Result<usize, QueueFail> {
        let me = self.control.id;
        let mut reclaimed = 0;
        for bytes in self.store.defs().await.map_err(QueueFail::store)? {
            let Ok(mut def) = serde_json::from_slice::<QueueEntry>(&bytes) else {
                tracing::warn!("an unreadable queue definition in the queue store is skipped");
                continue;
            };
            def.owner = me;
            match self.entry(&def.name) {
                Some(e) if e.incarnation == def.incarnation => {}
                Some(_) => tracing::warn!(
                    queue = %def.name,
                    "a queue of this name was created elsewhere while this node was away; \
                     this node's stored messages of the earlier queue are kept, not served"
                ),
                None => {
                    self.commit_create(&def).await.map_err(|e| {
                        QueueFail::unavailable("catalog_unavailable", e.to_string())
                    })?;
                    reclaimed += 1;
                }
            }
        }
        Ok(reclaimed)
    }
}

/// A catalog queue in replies (`queue_list`, `queue_create`), with its owner's and
/// replicas' node ids. (Called inside a catalog read: it must not read the catalog again.)
fn entry_json(q: &QueueEntry, catalog: &crate::control::Catalog) -> Value {
    let s = &q.spec;
    let replica_nodes: Vec<String> = q.replicas.iter().map(|r| catalog.node_id_of(*r)).collect();
    json!({
        "queue_name": q.name,
        "owner": catalog.node_id_of(q.owner),
        "replicas": q.replicas.len().max(1),
        "replica_nodes": replica_nodes,
        "queue_type": s.queue_type.as_str(),
        "max_size": s.max_size,
        "max_bytes": s.max_bytes,
        "default_visibility_timeout_seconds": s.visibility_timeout_ms as f64 / 1000.0,
        "dead_letter_max_receives": s.max_receives,
        "enable_dead_letter_queue": s.max_receives > 0,
        "enable_deduplication": s.dedup_window_ms > 0,
        "deduplication_window_seconds": s.dedup_window_ms as f64 / 1000.0,
        "message_ttl_seconds": (s.message_ttl_ms > 0).then(|| s.message_ttl_ms as f64 / 1000.0),
        "created_at": q.created_ms as f64 / 1000.0,
    })
}

/// How often the queue task lets time pass on the loaded queues.
const TICK: Duration = Duration::from_millis(200);

/// Why a call to another node did not reach it (`Queues::call_node`).
enum Unreached {
    /// The failure detector holds it down.
    Down,
    /// It is not a member (no address).
    NotMember,
    /// The call failed on the way.
    Failed(String),
}

/// The node's queue task: once the node is registered (its catalog caught up), gives the
/// catalog back this node's stored queues it forgot; then lets time pass on the loaded
/// queues every [`TICK`], until shutdown.
pub(crate) async fn run(
    queues: Arc<Queues>,
    mut registered: tokio::sync::watch::Receiver<bool>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    tokio::select! {
        _ = registered.wait_for(|r| *r) => {}
        _ = shutdown.wait_for(|s| *s) => return,
    }
    let reclaimed = queues.reclaim().await;
    queues.reclaimed.send_replace(true);
    match reclaimed {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            queues = n,
            "gave the catalog back this node's stored queues"
        ),
        Err(e) => tracing::warn!(error = %e, "could not give the catalog back its queues"),
    }
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stop = tokio::select! {
            _ = every.tick() => false,
            _ = shutdown.wait_for(|s| *s) => true,
        };
        if stop {
            break;
        }
        queues.tick();
        queues.groups.reconcile().await;
        queues.groups.watch_leaders().await;
        queues.groups.repair().await;
        queues.tick_groups().await;
    }
    queues.groups.shutdown().await;
}

/// The queues as the data plane sees them: calls forwarded to this node as an owner.
pub(crate) struct FromPeers(pub(crate) Arc<Queues>);

impl crate::data::plane::PeerQueues for FromPeers {
    fn call(
        &self,
        op: String,
        request: Vec<u8>,
    ) -> crate::registry::BoxFuture<Result<Vec<u8>, crate::data::client::QueueFailure>> {
        let queues = self.0.clone();
        Box::pin(async move {
            queues
                .serve_forwarded(&op, &request)
                .await
                .map_err(|e| e.to_wire())
        })
    }
}
