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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::engine::{Delivery, Event, Queue, QueueError};
use super::request::{self, Invalid, Limits};
use super::store::{Row, Store, StoreError, Write};
use crate::config::Settings;
use crate::control::replica::{CommitError, Control};
use crate::control::{CatalogCommand, CatalogError, QueueEntry};
use crate::data::client::DataClient;
use crate::env::Env;
use crate::fabric::Fabric;
use crate::fabric::heartbeat::SharedDetector;
use crate::fabric::liveness::Liveness;

/// How long a catalog commit (create, delete) may take before the call fails (1017).
const COMMIT_WITHIN: Duration = Duration::from_secs(5);
/// How long a forwarded call may take beyond its own wait.
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

/// Why a queue call failed: each kind has a stable name (in the message, first) and a
/// client error code (`builtins/queue.rs`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueFail {
    /// The request is wrong (1007).
    #[error("[invalid_request] {0}")]
    Invalid(String),
    #[error("[queue_not_found] no queue `{0}`")]
    NotFound(String),
    #[error("[queue_exists] queue `{0}` exists with other settings")]
    Exists(String),
    /// Full, stale receipt, too many dedup ids or waiters: the queue said no (1003).
    #[error("[{code}] {message}")]
    Refused { code: String, message: String },
    /// The owner cannot be reached, or the catalog cannot commit (1017).
    #[error("[{code}] {message}")]
    Unavailable { code: String, message: String },
}

impl QueueFail {
    fn refused(code: &str, message: impl Into<String>) -> QueueFail {
        QueueFail::Refused {
            code: code.into(),
            message: message.into(),
        }
    }
    fn unavailable(code: &str, message: impl Into<String>) -> QueueFail {
        QueueFail::Unavailable {
            code: code.into(),
            message: message.into(),
        }
    }
    fn store(e: StoreError) -> QueueFail {
        QueueFail::unavailable("queue_store", e.to_string())
    }
    /// As it travels between nodes: (kind, code, message).
    pub fn to_wire(&self) -> (u8, String, String) {
        match self {
            QueueFail::Invalid(m) => (0, String::new(), m.clone()),
            QueueFail::NotFound(q) => (1, String::new(), q.clone()),
            QueueFail::Exists(q) => (2, String::new(), q.clone()),
            QueueFail::Refused { code, message } => (3, code.clone(), message.clone()),
            QueueFail::Unavailable { code, message } => (4, code.clone(), message.clone()),
        }
    }
    pub fn from_wire(kind: u8, code: String, message: String) -> QueueFail {
        match kind {
            0 => QueueFail::Invalid(message),
            1 => QueueFail::NotFound(message),
            2 => QueueFail::Exists(message),
            3 => QueueFail::Refused { code, message },
            _ => QueueFail::Unavailable { code, message },
        }
    }
}

impl From<Invalid> for QueueFail {
    fn from(e: Invalid) -> QueueFail {
        QueueFail::Invalid(e.to_string())
    }
}

impl From<QueueError> for QueueFail {
    fn from(e: QueueError) -> QueueFail {
        let code = match e {
            QueueError::Full(_) => "queue_full",
            QueueError::StaleReceipt(_) => "stale_receipt",
            QueueError::DedupFull(_) => "dedup_full",
        };
        QueueFail::refused(code, e.to_string())
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

/// One queue's counters since its owner started.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub duplicates: AtomicU64,
    pub received: AtomicU64,
    pub acked: AtomicU64,
    pub nacked: AtomicU64,
    pub redelivered: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub expired: AtomicU64,
    /// From a message's send to its ack (wall clock, ms resolution).
    pub send_to_ack: crate::registry::stats::Latency,
}

/// A queue's state on its owner.
struct State {
    queue: Queue,
    /// When each live or dead message was sent (wall ms), for ages and latencies.
    sent_ms: BTreeMap<u64, u64>,
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

/// What `queue_stats` and the metrics read of a queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub depth: usize,
    pub in_flight: usize,
    pub dead_lettered: usize,
    pub oldest_age_ms: u64,
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
        let mine = self
            .control
            .catalog
            .read(|s| s.catalog.queues().filter(|q| q.owner == me).count());
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
        };
        match self
            .control
            .propose_within(CatalogCommand::CreateQueue(entry.clone()), COMMIT_WITHIN)
            .await
        {
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

    fn created(&self, q: &QueueEntry, created: bool) -> Value {
        let owner = self.control.catalog.read(|s| s.catalog.node_id_of(q.owner));
        let mut v = entry_json(q, owner);
        v["created"] = json!(created);
        v["success"] = json!(true);
        v
    }

    /// `queue_list`: every queue in the catalog (any node answers from its replica).
    pub fn list(&self) -> Value {
        let queues: Vec<Value> = self.control.catalog.read(|s| {
            s.catalog
                .queues()
                .map(|q| entry_json(q, s.catalog.node_id_of(q.owner)))
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
        if entry.owner == self.control.id {
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
        let held_down = {
            let now = self.env.clock.now();
            self.detector.lock().status(owner, now) == Liveness::Down
        };
        if held_down {
            return Err(down());
        }
        let addr = self.control.member_addr(owner).ok_or_else(down)?;
        let wait = req
            .get("wait_seconds")
            .and_then(Value::as_f64)
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(Duration::ZERO, |s| {
                Duration::from_secs_f64(s.min(request::MAX_WAIT_SECONDS))
            });
        let body = serde_json::to_vec(&req).map_err(|e| QueueFail::Invalid(e.to_string()))?;
        let client = DataClient::new(self.fabric.link_to(owner.0, &addr));
        match client.queue(op.name(), body, wait + FORWARD_SLACK).await {
            Ok(Ok(reply)) => serde_json::from_slice(&reply)
                .map_err(|e| QueueFail::unavailable("queue_owner_reply", e.to_string())),
            Ok(Err((kind, code, message))) => Err(QueueFail::from_wire(kind, code, message)),
            Err(e) => Err(QueueFail::unavailable(
                "queue_owner_down",
                format!("{} ({e})", down()),
            )),
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
            state: Mutex::new(State { queue, sent_ms }),
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

    async fn run(&self, op: Op, entry: &QueueEntry, req: Value) -> Result<Value, QueueFail> {
        if op == Op::Delete {
            return self.delete(entry).await;
        }
        let q = self.load(entry).await?;
        match op {
            Op::Delete => unreachable!("answered above"),
            Op::Stats => Ok(self.stats(&q)),
            Op::Send => {
                let req: request::SendRequest = decode(req)?;
                let checked = request::send(&req, &self.limits.request)?;
                let sent = self.send(&q, checked)?;
                let (reply, committed) = sent;
                committed.done().await?;
                Ok(reply)
            }
            Op::SendBatch => self.send_batch(&q, req).await,
            Op::Receive => {
                let req: request::ReceiveRequest = decode(req)?;
                let checked = request::receive(&req, &self.limits.request)?;
                self.receive(&q, checked).await
            }
            Op::Ack => {
                let req: request::ReceiptRequest = decode(req)?;
                let Some(handles) = req.receipt_handles else {
                    let r = self.receipt(&q, &req.receipt_handle)?;
                    self.ack(&q, r)?;
                    return Ok(json!({ "success": true, "acknowledged": true }));
                };
                if handles.is_empty() || handles.len() > request::MAX_ACK_BATCH {
                    return Err(QueueFail::Invalid(format!(
                        "receipt_handles: 1 to {} per ack",
                        request::MAX_ACK_BATCH
                    )));
                }
                if !req.receipt_handle.is_empty() {
                    return Err(QueueFail::Invalid(
                        "give receipt_handle or receipt_handles, not both".into(),
                    ));
                }
                // Each on its own: one stale receipt fails alone, named with its reason.
                let mut failed = Vec::new();
                let mut acked = 0;
                for h in &handles {
                    match self.receipt(&q, h).and_then(|r| self.ack(&q, r)) {
                        Ok(()) => acked += 1,
                        Err(e) => failed.push(json!({"receipt_handle": h, "error": e.to_string()})),
                    }
                }
                Ok(json!({ "success": failed.is_empty(), "acknowledged": acked, "failed": failed }))
            }
            Op::Nack => {
                let req: request::ReceiptRequest = decode(req)?;
                let r = self.receipt(&q, &req.receipt_handle)?;
                let delay = request::delay_ms("delay_seconds", req.delay_seconds)?;
                let dead = self.nack(&q, r, delay)?;
                Ok(json!({ "success": true, "dead_lettered": dead }))
            }
            Op::ChangeVisibility => {
                let req: request::ReceiptRequest = decode(req)?;
                let r = self.receipt(&q, &req.receipt_handle)?;
                let ms = request::visibility_ms(req.visibility_timeout_seconds)?;
                self.change_visibility(&q, r, ms)?;
                Ok(json!({ "success": true }))
            }
            Op::Purge => {
                let purged = self.with(&q, |st, now, writes| {
                    let ids = st.queue.purge(now);
                    for id in &ids {
                        st.sent_ms.remove(id);
                        writes.push(Write::Delete {
                            queue: q.key.clone(),
                            id: *id,
                        });
                    }
                    ids.len()
                });
                Ok(json!({ "success": true, "purged": purged }))
            }
            Op::Dlq => {
                let max = req
                    .get("max_messages")
                    .and_then(Value::as_u64)
                    .unwrap_or(100)
                    .clamp(1, 1000) as usize;
                let st = q.state.lock();
                let messages: Vec<Value> = st
                    .queue
                    .dead_letters(max)
                    .into_iter()
                    .map(|d| {
                        let mut m = message_json(&d.payload, d.meta.as_deref());
                        m["message_id"] = json!(message_id(&q, d.id));
                        m["receive_count"] = json!(d.deliveries);
                        m["sent_at"] =
                            json!(st.sent_ms.get(&d.id).map_or(0.0, |t| *t as f64 / 1000.0));
                        m
                    })
                    .collect();
                Ok(json!({
                    "queue_name": q.name,
                    "count": st.queue.dead_lettered(),
                    "messages": messages,
                }))
            }
            Op::Redrive => {
                let moved = self.with(&q, |st, now, writes| {
                    let ids = st.queue.redrive(now);
                    for id in &ids {
                        writes.push(Write::Dead {
                            queue: q.key.clone(),
                            id: *id,
                            dead: false,
                            visible_at: now,
                        });
                    }
                    ids.len()
                });
                q.arrived.notify_waiters();
                Ok(json!({ "success": true, "redriven": moved }))
            }
        }
    }

    /// Runs `f` on the queue's state after letting time pass, then hands the writes it
    /// made (and what time did) to the store, in order, under the lock.
    fn with<R>(&self, q: &Owned, f: impl FnOnce(&mut State, u64, &mut Vec<Write>) -> R) -> R {
        self.with_last(q, f).0
    }

    /// [`Queues::with`], also giving the commit of the last write handed over: it covers
    /// every write before it (writes are applied in order, a commit takes all waiting).
    fn with_last<R>(
        &self,
        q: &Owned,
        f: impl FnOnce(&mut State, u64, &mut Vec<Write>) -> R,
    ) -> (R, Option<super::store::Committed>) {
        let now = self.now();
        let mut writes = Vec::new();
        let mut st = q.state.lock();
        let events = st.queue.tick(now);
        self.events(q, &mut st, &events, &mut writes);
        let r = f(&mut st, now, &mut writes);
        let mut last = None;
        for w in writes {
            last = Some(self.store.write(w));
        }
        (r, last)
    }

    /// What time did to a queue's messages: counted, and written.
    fn events(&self, q: &Owned, st: &mut State, events: &[Event], writes: &mut Vec<Write>) {
        for e in events {
            match *e {
                Event::Redelivering(_) => {
                    q.counters.redelivered.fetch_add(1, Ordering::Relaxed);
                }
                Event::DeadLettered(id) => {
                    q.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    writes.push(Write::Dead {
                        queue: q.key.clone(),
                        id,
                        dead: true,
                        visible_at: 0,
                    });
                }
                Event::Expired(id) => {
                    q.counters.expired.fetch_add(1, Ordering::Relaxed);
                    st.sent_ms.remove(&id);
                    writes.push(Write::Delete {
                        queue: q.key.clone(),
                        id,
                    });
                }
            }
        }
    }

    /// Lets time pass on every loaded queue (the node's queue task calls it): deadlines
    /// that ran out wake waiting receives, dead letters and expiries are written.
    pub fn tick(&self) {
        for q in self.owned() {
            let woke = self.with(&q, |_, _, writes| !writes.is_empty());
            let due = q.state.lock().queue.next_due();
            if woke || due.is_some_and(|t| t <= self.now()) {
                q.arrived.notify_waiters();
            }
        }
    }

    /// Adds one checked message; its reply, and the commit to wait for before answering.
    fn send(
        &self,
        q: &Owned,
        checked: request::CheckedSend,
    ) -> Result<(Value, Committed), QueueFail> {
        let (outcome, last) = self.with_last(q, |st, now, writes| {
            let send = checked.send;
            let window = st.queue.config().dedup_window_ms;
            let ttl = st.queue.config().message_ttl_ms;
            let row = Row {
                message: super::engine::Stored {
                    id: 0,
                    payload: send.payload.clone(),
                    meta: send.meta.clone(),
                    priority: send.priority,
                    group: send.group.clone(),
                    fire_and_forget: send.fire_and_forget,
                    deliveries: 0,
                    receives: 0,
                    expires_at: (ttl > 0).then(|| now.saturating_add(ttl)),
                    visible_at: now.saturating_add(send.delay_ms),
                    dead: false,
                },
                sent_ms: now,
            };
            let dedup = send
                .dedup_id
                .clone()
                .filter(|_| window > 0)
                .map(|d| (d, now.saturating_add(window)));
            let sent = st.queue.send(now, send)?;
            if sent.duplicate {
                // Answered once the first send's commit (ahead in the store) is done.
                writes.push(Write::Barrier);
            } else {
                let mut row = row;
                row.message.id = sent.id;
                st.sent_ms.insert(sent.id, now);
                writes.push(Write::Insert {
                    queue: q.key.clone(),
                    row: Box::new(row),
                    dedup,
                    next_id: st.queue.next_id(),
                });
            }
            Ok::<_, QueueFail>(sent)
        });
        let sent = outcome?;
        // The commit of the last write handed over covers this one (a duplicate's barrier
        // waits for the first send's, which is ahead of it).
        let committed = match last {
            Some(c) => c,
            None => self.store.write(Write::Barrier),
        };
        if sent.duplicate {
            q.counters.duplicates.fetch_add(1, Ordering::Relaxed);
        } else {
            q.counters.sent.fetch_add(1, Ordering::Relaxed);
            q.arrived.notify_waiters();
        }
        Ok((
            json!({
                "success": true,
                "message_id": message_id(q, sent.id),
                "duplicate": sent.duplicate,
            }),
            Committed(committed),
        ))
    }

    async fn send_batch(&self, q: &Owned, req: Value) -> Result<Value, QueueFail> {
        let Some(messages) = req.get("messages").and_then(Value::as_array) else {
            return Err(QueueFail::Invalid(
                "messages: required, a list of queue_send requests".into(),
            ));
        };
        if messages.is_empty() || messages.len() > request::MAX_SEND_BATCH {
            return Err(QueueFail::Invalid(format!(
                "messages: 1 to {} per batch",
                request::MAX_SEND_BATCH
            )));
        }
        // Checked all first: a batch with a bad message sends nothing.
        let mut checked = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            let mut m = m.clone();
            if let Some(o) = m.as_object_mut() {
                o.insert("queue_name".into(), json!(q.name));
            }
            let r: request::SendRequest =
                decode(m).map_err(|e| QueueFail::Invalid(format!("messages[{i}]: {e}")))?;
            checked.push(
                request::send(&r, &self.limits.request)
                    .map_err(|e| QueueFail::Invalid(format!("messages[{i}]: {e}")))?,
            );
        }
        let mut results = Vec::with_capacity(checked.len());
        let mut last = None;
        for c in checked {
            match self.send(q, c) {
                Ok((reply, committed)) => {
                    results.push(reply);
                    last = Some(committed);
                }
                Err(e) => results.push(json!({ "success": false, "error": e.to_string() })),
            }
        }
        if let Some(c) = last {
            c.done().await?;
        }
        Ok(json!({ "results": results }))
    }

    fn receipt(&self, q: &Owned, handle: &str) -> Result<super::engine::Receipt, QueueFail> {
        let (boot, r) = request::parse_receipt(handle)?;
        if boot != q.boot {
            return Err(QueueFail::refused(
                "stale_receipt",
                format!(
                    "receipt {handle:.80} is from an earlier run of queue `{}` (its owner \
                     restarted, or the queue was created again): receive the message again",
                    q.name
                ),
            ));
        }
        Ok(r)
    }

    fn ack(&self, q: &Owned, r: super::engine::Receipt) -> Result<(), QueueFail> {
        let sent = self.with(q, |st, now, writes| {
            st.queue.ack(now, r)?;
            writes.push(Write::Delete {
                queue: q.key.clone(),
                id: r.id,
            });
            Ok::<_, QueueFail>(st.sent_ms.remove(&r.id).map(|t| now.saturating_sub(t)))
        })?;
        q.counters.acked.fetch_add(1, Ordering::Relaxed);
        // A consumer waiting because it held its most may take another now.
        q.arrived.notify_waiters();
        if let Some(ms) = sent {
            q.counters.send_to_ack.record(Duration::from_millis(ms));
        }
        Ok(())
    }

    /// Whether the message went to the dead letters.
    fn nack(&self, q: &Owned, r: super::engine::Receipt, delay: u64) -> Result<bool, QueueFail> {
        let dead = self.with(q, |st, now, writes| {
            let events = st.queue.nack(now, r, delay)?;
            let dead = events.contains(&Event::DeadLettered(r.id));
            let redelivering = events.contains(&Event::Redelivering(r.id));
            let others: Vec<Event> = events
                .into_iter()
                .filter(|e| !matches!(e, Event::Redelivering(id) | Event::DeadLettered(id) if *id == r.id))
                .collect();
            self.events(q, st, &others, writes);
            if dead {
                q.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                writes.push(Write::Dead {
                    queue: q.key.clone(),
                    id: r.id,
                    dead: true,
                    visible_at: 0,
                });
            } else if redelivering {
                writes.push(Write::Update {
                    queue: q.key.clone(),
                    id: r.id,
                    deliveries: r.delivery,
                    receives: 0,
                    visible_at: now.saturating_add(delay),
                });
            }
            Ok::<_, QueueFail>(dead)
        })?;
        q.counters.nacked.fetch_add(1, Ordering::Relaxed);
        q.arrived.notify_waiters();
        Ok(dead)
    }

    fn change_visibility(
        &self,
        q: &Owned,
        r: super::engine::Receipt,
        ms: u64,
    ) -> Result<(), QueueFail> {
        self.with(q, |st, now, writes| {
            st.queue.change_visibility(now, r, ms)?;
            writes.push(Write::Update {
                queue: q.key.clone(),
                id: r.id,
                deliveries: r.delivery,
                receives: 0,
                visible_at: now.saturating_add(ms),
            });
            Ok::<_, QueueFail>(())
        })
    }

    /// Up to `max` messages, waiting up to `wait_ms` for the first.
    async fn receive(&self, q: &Owned, c: request::CheckedReceive) -> Result<Value, QueueFail> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(c.wait_ms);
        let mut waiting = None;
        loop {
            let arrived = q.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let (got, due) = self.with(q, |st, now, writes| {
                let got = st
                    .queue
                    .receive_as(now, c.max, c.visibility_ms, c.holder.as_ref());
                let vis = c
                    .visibility_ms
                    .unwrap_or(st.queue.config().visibility_timeout_ms);
                for d in &got {
                    writes.push(
                        if st.queue.status(d.receipt.id) == super::engine::Status::Gone {
                            // At most once: gone on delivery.
                            st.sent_ms.remove(&d.receipt.id);
                            Write::Delete {
                                queue: q.key.clone(),
                                id: d.receipt.id,
                            }
                        } else {
                            Write::Update {
                                queue: q.key.clone(),
                                id: d.receipt.id,
                                deliveries: d.receipt.delivery,
                                receives: d.receive_count,
                                visible_at: now.saturating_add(vis),
                            }
                        },
                    );
                }
                (got, st.queue.next_due().map(|t| t.saturating_sub(now)))
            });
            if q.deleted.load(Ordering::Relaxed) && got.is_empty() {
                return Err(QueueFail::NotFound(q.name.clone()));
            }
            let now = tokio::time::Instant::now();
            if !got.is_empty() || now >= deadline {
                drop(waiting);
                q.counters
                    .received
                    .fetch_add(got.len() as u64, Ordering::Relaxed);
                return Ok(self.deliveries(q, got));
            }
            if waiting.is_none() {
                waiting = Some(Waiter::enter(&self.waiters, self.limits.max_waiters)?);
            }
            let wake = due.map_or(deadline, |ms| {
                deadline.min(now + Duration::from_millis(ms.max(1)))
            });
            tokio::select! {
                _ = &mut arrived => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    fn deliveries(&self, q: &Owned, got: Vec<Delivery>) -> Value {
        let messages: Vec<Value> = got
            .into_iter()
            .map(|d| {
                let mut m = message_json(&d.payload, d.meta.as_deref());
                m["message_id"] = json!(message_id(q, d.receipt.id));
                m["receipt_handle"] = json!(request::receipt_handle(q.boot, d.receipt));
                m["receive_count"] = json!(d.receive_count);
                m["priority"] = json!(d.priority);
                if let Some(g) = d.group {
                    m["message_group_id"] = json!(g);
                }
                m
            })
            .collect();
        json!({ "queue_name": q.name, "messages": messages })
    }

    fn stats(&self, q: &Owned) -> Value {
        let now = self.now();
        self.with(q, |_, _, _| ());
        let s = q.snapshot(now);
        let c = &q.counters;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let acks = n(&c.acked);
        let latency = c.send_to_ack.snapshot();
        json!({
            "queue_name": q.name,
            "depth": s.depth,
            "in_flight": s.in_flight,
            "dead_lettered": s.dead_lettered,
            "oldest_message_age_seconds": s.oldest_age_ms as f64 / 1000.0,
            "total_messages_sent": n(&c.sent),
            "total_messages_received": n(&c.received),
            "total_messages_acknowledged": acks,
            "total_messages_nacked": n(&c.nacked),
            "total_messages_redelivered": n(&c.redelivered),
            "total_messages_dead_lettered": n(&c.dead_lettered),
            "total_messages_expired": n(&c.expired),
            "duplicate_sends": n(&c.duplicates),
            "average_send_to_ack_ms": if latency.count == 0 { 0.0 } else { latency.sum_seconds * 1000.0 / latency.count as f64 },
            "durable": self.durable(),
        })
    }

    /// `queue_delete`, on the owner: out of the catalog, then its rows.
    async fn delete(&self, entry: &QueueEntry) -> Result<Value, QueueFail> {
        match self
            .control
            .propose_within(
                CatalogCommand::DeleteQueue {
                    name: entry.name.clone(),
                },
                COMMIT_WITHIN,
            )
            .await
        {
            Ok(()) | Err(CommitError::Refused(CatalogError::UnknownQueue(_))) => {}
            Err(e) => {
                return Err(QueueFail::unavailable(
                    "catalog_unavailable",
                    format!("the catalog could not commit the delete: {e}"),
                ));
            }
        }
        let removed = {
            let mut owned = self.owned.lock();
            match owned.get(&entry.name) {
                Some(q) if q.incarnation == entry.incarnation => owned.remove(&entry.name),
                _ => None,
            }
        };
        if let Some(q) = removed {
            // Waiting receives see the queue gone at once.
            q.deleted.store(true, Ordering::Relaxed);
            q.arrived.notify_waiters();
        }
        self.store
            .write(Write::Drop {
                queue: store_key(entry),
            })
            .await
            .map_err(|_| QueueFail::store(StoreError::Closed))?
            .map_err(QueueFail::store)?;
        Ok(json!({ "success": true, "deleted": true, "queue_name": entry.name }))
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
                    self.control
                        .propose_within(CatalogCommand::CreateQueue(def), COMMIT_WITHIN)
                        .await
                        .map_err(|e| {
                            QueueFail::unavailable("catalog_unavailable", e.to_string())
                        })?;
                    reclaimed += 1;
                }
            }
        }
        Ok(reclaimed)
    }
}

/// A send's commit, to wait for before answering.
pub struct Committed(super::store::Committed);

impl Committed {
    async fn done(self) -> Result<(), QueueFail> {
        match self.0.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(QueueFail::store(e)),
            Err(_) => Err(QueueFail::store(StoreError::Closed)),
        }
    }
}

/// One waiting receive, counted against the node's bound while it waits.
struct Waiter<'a>(&'a AtomicUsize);

impl<'a> Waiter<'a> {
    fn enter(count: &'a AtomicUsize, max: usize) -> Result<Waiter<'a>, QueueFail> {
        let before = count.fetch_add(1, Ordering::Relaxed);
        let w = Waiter(count);
        if before >= max {
            return Err(QueueFail::refused(
                "too_many_waiters",
                format!(
                    "{max} receives are waiting on this node already (queue_max_waiters): \
                     receive without wait_seconds, or later"
                ),
            ));
        }
        Ok(w)
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn decode<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, QueueFail> {
    serde_json::from_value(v).map_err(|e| QueueFail::Invalid(e.to_string()))
}

/// A message id as clients see it: the queue's incarnation and the message's number, so
/// ids of a queue created again under its name differ.
fn message_id(q: &Owned, id: u64) -> String {
    format!("{:x}-{id}", q.incarnation)
}

/// A message's payload (its JSON text) with its topic and headers.
fn message_json(payload: &[u8], meta: Option<&[u8]>) -> Value {
    let meta = request::meta_of(meta);
    json!({
        "message_payload": serde_json::from_slice::<Value>(payload).unwrap_or(Value::Null),
        "topic": meta.topic,
        "headers": meta.headers,
    })
}

/// A catalog queue in replies (`queue_list`, `queue_create`), with its owner's node id.
/// (Called inside a catalog read: it must not read the catalog again.)
fn entry_json(q: &QueueEntry, owner: String) -> Value {
    let s = &q.spec;
    json!({
        "queue_name": q.name,
        "owner": owner,
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
        tokio::select! {
            _ = every.tick() => queues.tick(),
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
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
