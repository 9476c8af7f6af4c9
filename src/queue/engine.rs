//! One queue's state and what happens to it: sends, receives, acks, nacks, visibility
//! changes, redrives and the passing of time. Pure: the time comes in with every command
//! (ms since the epoch), nothing is read from a clock or written anywhere, so the same engine
//! can run behind a SQLite store or as a Raft state machine and be replayed exactly.
//!
//! A message is, at any moment, exactly one of: pending (waiting behind its delay or its
//! group, or ready), in flight (received, invisible until its visibility deadline), dead
//! (moved to the dead-letter side after `max_receives` deliveries), or gone (acknowledged or
//! expired: the engine keeps nothing of it). Every index is an ordered set keyed by what
//! the next step needs, so each operation costs O(log n) per message it touches:
//!
//! * `ready`: (order key, seq) of messages a receive may take now; the order key is the
//!   priority (higher first) for `priority` queues and 0 otherwise, so FIFO by seq within;
//! * `delayed`: (visible at, seq) of pending messages not yet visible (send delay, nack delay);
//! * `in_flight`: (visibility deadline, seq);
//! * `expiring`: (expires at, seq) of pending messages under a TTL;
//! * `groups`: per message group, its messages in send order; only the head of a group with
//!   nothing in flight is ready (one in flight per group, in order, as SQS FIFO groups);
//! * `dedup`: deduplication id → the message it named, until its window ends.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// How a queue orders its ready messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum QueueType {
    /// Send order.
    #[default]
    Fifo,
    /// Higher `priority` first, send order among equals.
    Priority,
    /// As `Fifo`; the per-message delay does the delaying (the original's `delay` type).
    Delay,
}

/// A queue's settings (the original's `QueueConfiguration`, in ms and counts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueConfig {
    pub queue_type: QueueType,
    /// Most live messages (pending and in flight); a full queue refuses sends.
    pub max_size: usize,
    /// Most payload bytes of live messages.
    pub max_bytes: usize,
    pub visibility_timeout_ms: u64,
    /// Deliveries after which a message that comes back goes to the dead-letter side
    /// (0: never; it is redelivered forever).
    pub max_receives: u32,
    /// How long a deduplication id keeps naming its message (0: no deduplication).
    pub dedup_window_ms: u64,
    /// Most deduplication ids remembered at once.
    pub max_dedup_ids: usize,
    /// How long a pending message lives (0: until it is acknowledged).
    pub message_ttl_ms: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            queue_type: QueueType::Fifo,
            max_size: 10_000,
            max_bytes: 64 << 20,
            visibility_timeout_ms: 30_000,
            max_receives: 3,
            dedup_window_ms: 300_000,
            max_dedup_ids: 100_000,
            message_ttl_ms: 0,
        }
    }
}

/// What a send asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Send {
    pub payload: Arc<[u8]>,
    /// What travels with the payload that the engine does not read (topic, headers);
    /// counted in the queue's bytes.
    pub meta: Option<Arc<[u8]>>,
    pub priority: i64,
    pub delay_ms: u64,
    pub dedup_id: Option<String>,
    pub group: Option<String>,
    /// At most once: the message is gone as soon as it is received (no ack).
    pub fire_and_forget: bool,
    /// Addressed to one named consumer: only its receives take it (a broadcast's or a
    /// quorum's copy).
    pub to: Option<Arc<str>>,
}

/// A send's result: the message's id, and whether it repeated a deduplication id still in
/// its window (then nothing was added; the id is the first send's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    pub id: u64,
    pub duplicate: bool,
}

/// Names one delivery of a message: an ack, nack or extension with it acts only while that
/// delivery is the message's current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Receipt {
    pub id: u64,
    pub delivery: u32,
}

/// A received message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub receipt: Receipt,
    pub payload: Arc<[u8]>,
    pub meta: Option<Arc<[u8]>>,
    /// How many times it was delivered, this time included.
    pub receive_count: u32,
    pub priority: i64,
    pub group: Option<String>,
}

/// Where a message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    InFlight,
    Dead,
    /// Acknowledged, expired, purged or never sent: the engine holds nothing of it.
    Gone,
}

/// What happened to messages without a command naming them (time passing), for metrics and
/// for the store: each is final for that message, or moves it to the dead-letter side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// Its visibility timeout ran out: pending again.
    Redelivering(u64),
    /// Out of receives: now on the dead-letter side.
    DeadLettered(u64),
    /// Its TTL ran out while pending: gone.
    Expired(u64),
}

/// Why a command was refused; the state is as before.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum QueueError {
    #[error("the queue is full ({0}): it refuses new messages until some are acknowledged")]
    Full(Cow<'static, str>),
    #[error(
        "receipt {}/{} is not current: the message was acknowledged, expired, or delivered again since",
        .0.id, .0.delivery
    )]
    StaleReceipt(Receipt),
    #[error("too many deduplication ids in their window ({0}): wait, or send without one")]
    DedupFull(usize),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Where {
    /// Behind its group's head.
    Waiting,
    Delayed(u64),
    Ready,
    InFlight(u64),
    Dead,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    payload: Arc<[u8]>,
    meta: Option<Arc<[u8]>>,
    priority: i64,
    group: Option<String>,
    fire_and_forget: bool,
    /// Deliveries ever (receipts name them; never reset, so no old receipt matches again).
    deliveries: u32,
    /// Deliveries since it was sent or redriven (what `max_receives` counts).
    receives: u32,
    expires_at: Option<u64>,
    at: Where,
    /// The consumer holding it while in flight, when the receive named one.
    holder: Option<Arc<str>>,
    /// The only consumer that may receive it, when addressed.
    to: Option<Arc<str>>,
}

impl Entry {
    /// What it counts toward the queue's bytes.
    fn size(&self) -> usize {
        self.payload.len() + self.meta.as_ref().map_or(0, |m| m.len())
    }
}

/// One queue.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Queue {
    config: QueueConfig,
    next_seq: u64,
    entries: BTreeMap<u64, Entry>,
    ready: BTreeSet<(i64, u64)>,
    /// Ready messages addressed to one consumer, by consumer.
    ready_for: BTreeMap<Arc<str>, BTreeSet<(i64, u64)>>,
    delayed: BTreeSet<(u64, u64)>,
    in_flight: BTreeSet<(u64, u64)>,
    expiring: BTreeSet<(u64, u64)>,
    /// Per group: its live (not dead) messages in send order, and whether one is in flight.
    groups: BTreeMap<String, (VecDeque<u64>, bool)>,
    dedup: BTreeMap<String, (u64, u64)>,
    dedup_expiring: BTreeSet<(u64, String)>,
    /// Live messages and their payload bytes (dead ones are apart).
    live: usize,
    live_bytes: usize,
    dead: BTreeSet<u64>,
    /// In-flight messages per named consumer (only those holding some).
    holders: BTreeMap<Arc<str>, usize>,
}

/// A consumer that names itself when it receives: it holds at most `max_in_flight`
/// messages at once (JetStream's `max_ack_pending`), each until acked, nacked or back at
/// its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub id: Arc<str>,
    pub max_in_flight: usize,
}

impl Queue {
    pub fn new(config: QueueConfig) -> Queue {
        Queue {
            config,
            next_seq: 1,
            ..Queue::default()
        }
    }

    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Messages pending (delayed, waiting or ready).
    pub fn depth(&self) -> usize {
        self.live - self.in_flight.len()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    pub fn dead_lettered(&self) -> usize {
        self.dead.len()
    }

    /// Whether `messages` more messages of `bytes` in all fit (a send of several copies
    /// checks first, so that it adds all or none).
    pub fn has_room(&self, messages: usize, bytes: usize) -> bool {
        self.live + messages <= self.config.max_size
            && self.live_bytes + bytes <= self.config.max_bytes
    }

    /// Messages consumer `holder` has in flight.
    pub fn held(&self, holder: &str) -> usize {
        self.holders.get(holder).copied().unwrap_or(0)
    }

    pub fn status(&self, id: u64) -> Status {
        match self.entries.get(&id).map(|e| &e.at) {
            None => Status::Gone,
            Some(Where::InFlight(_)) => Status::InFlight,
            Some(Where::Dead) => Status::Dead,
            Some(_) => Status::Pending,
        }
    }

    fn order_key(&self, e: &Entry) -> i64 {
        match self.config.queue_type {
            QueueType::Priority => -e.priority,
            QueueType::Fifo | QueueType::Delay => 0,
        }
    }

    /// Adds a message (or names the one its deduplication id already names).
    pub fn send(&mut self, now: u64, s: Send) -> Result<Sent, QueueError> {
        let mut events = Vec::new();
        self.advance(now, &mut events);
        if let Some(d) = &s.dedup_id
            && self.config.dedup_window_ms > 0
            && let Some((id, _)) = self.dedup.get(d)
        {
            return Ok(Sent {
                id: *id,
                duplicate: true,
            });
        }
        if self.live >= self.config.max_size {
            return Err(QueueError::Full("messages".into()));
        }
        let size = s.payload.len() + s.meta.as_ref().map_or(0, |m| m.len());
        if self.live_bytes + size > self.config.max_bytes {
            return Err(QueueError::Full("bytes".into()));
        }
        let dedup = s.dedup_id.filter(|_| self.config.dedup_window_ms > 0);
        if dedup.is_some() && self.dedup.len() >= self.config.max_dedup_ids {
            return Err(QueueError::DedupFull(self.config.max_dedup_ids));
        }
        let id = self.next_seq;
        self.next_seq += 1;
        if let Some(d) = dedup {
            let until = now.saturating_add(self.config.dedup_window_ms);
            self.dedup_expiring.insert((until, d.clone()));
            self.dedup.insert(d, (id, until));
        }
        let expires_at = (self.config.message_ttl_ms > 0)
            .then(|| now.saturating_add(self.config.message_ttl_ms));
        if let Some(t) = expires_at {
            self.expiring.insert((t, id));
        }
        self.live += 1;
        self.live_bytes += size;
        let visible_at = now.saturating_add(s.delay_ms);
        let entry = Entry {
            payload: s.payload,
            meta: s.meta,
            priority: s.priority,
            group: s.group.clone(),
            fire_and_forget: s.fire_and_forget,
            deliveries: 0,
            receives: 0,
            expires_at,
            at: Where::Waiting,
            holder: None,
            to: s.to.clone(),
        };
        self.entries.insert(id, entry);
        if let Some(g) = &s.group {
            let (members, _) = self.groups.entry(g.clone()).or_default();
            members.push_back(id);
        }
        self.make_pending(id, visible_at, now);
        Ok(Sent {
            id,
            duplicate: false,
        })
    }

    /// Puts message `id` (in no index) among the pending: delayed until `visible_at`, or
    /// ready, or waiting behind its group.
    fn make_pending(&mut self, id: u64, visible_at: u64, now: u64) {
        let Some(e) = self.entries.get(&id) else {
            return;
        };
        let at = if visible_at > now {
            self.delayed.insert((visible_at, id));
            Where::Delayed(visible_at)
        } else if self.group_blocks(e.group.as_deref(), id) {
            Where::Waiting
        } else {
            let key = self.order_key(e);
            self.set_ready(key, id);
            Where::Ready
        };
        if let Some(e) = self.entries.get_mut(&id) {
            e.at = at;
        }
    }

    /// Whether `id` must wait for its group: a message of the group is in flight, or `id`
    /// is not the group's head.
    fn group_blocks(&self, group: Option<&str>, id: u64) -> bool {
        group
            .and_then(|g| self.groups.get(g))
            .is_some_and(|(members, busy)| *busy || members.front() != Some(&id))
    }

    /// After a group's head left (acked, expired, dead) or came back: the group's new head,
    /// if it was waiting and is not delayed, becomes ready.
    fn group_moved(&mut self, group: Option<&str>) {
        let Some(g) = group else {
            return;
        };
        let head = match self.groups.get(g) {
            None => return,
            Some((members, _)) if members.is_empty() => {
                self.groups.remove(g);
                return;
            }
            Some((_, true)) => return,
            Some((members, false)) => members.front().copied(),
        };
        if let Some(h) = head
            && let Some(e) = self.entries.get(&h)
            && matches!(e.at, Where::Waiting)
        {
            let key = self.order_key(e);
            self.set_ready(key, h);
            if let Some(e) = self.entries.get_mut(&h) {
                e.at = Where::Ready;
            }
        }
    }

    /// `id` is ready: for every consumer, or for the one it is addressed to.
    fn set_ready(&mut self, key: i64, id: u64) {
        match self.entries.get(&id).and_then(|e| e.to.clone()) {
            Some(to) => {
                self.ready_for.entry(to).or_default().insert((key, id));
            }
            None => {
                self.ready.insert((key, id));
            }
        }
    }

    fn unset_ready(&mut self, key: i64, id: u64) {
        match self.entries.get(&id).and_then(|e| e.to.clone()) {
            Some(to) => {
                if let Some(set) = self.ready_for.get_mut(&to) {
                    set.remove(&(key, id));
                    if set.is_empty() {
                        self.ready_for.remove(&to);
                    }
                }
            }
            None => {
                self.ready.remove(&(key, id));
            }
        }
    }

    /// Takes `id` out of whichever index holds it.
    fn unindex(&mut self, id: u64) {
        let Some(e) = self.entries.get(&id) else {
            return;
        };
        match e.at {
            Where::Ready => {
                let key = self.order_key(e);
                self.unset_ready(key, id);
            }
            Where::Delayed(t) => {
                self.delayed.remove(&(t, id));
            }
            Where::InFlight(t) => {
                self.in_flight.remove(&(t, id));
                self.release(id);
            }
            Where::Waiting | Where::Dead => {}
        }
    }

    /// `id` is no longer in flight: its consumer holds one message fewer.
    fn release(&mut self, id: u64) {
        let Some(h) = self.entries.get_mut(&id).and_then(|e| e.holder.take()) else {
            return;
        };
        if let Some(n) = self.holders.get_mut(&h) {
            *n -= 1;
            if *n == 0 {
                self.holders.remove(&h);
            }
        }
    }

    /// `id` is in flight for consumer `h`.
    fn hold(&mut self, id: u64, h: &Arc<str>) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.holder = Some(h.clone());
            *self.holders.entry(h.clone()).or_default() += 1;
        }
    }

    /// Drops `id` entirely (acknowledged, expired, purged), and frees its group.
    fn remove(&mut self, id: u64) {
        self.unindex(id);
        let Some(e) = self.entries.remove(&id) else {
            return;
        };
        if let Some(t) = e.expires_at {
            self.expiring.remove(&(t, id));
        }
        if matches!(e.at, Where::Dead) {
            self.dead.remove(&id);
            return;
        }
        self.live -= 1;
        self.live_bytes -= e.size();
        self.leave_group(e.group.as_deref(), id, matches!(e.at, Where::InFlight(_)));
    }

    /// `id` leaves its group (it was in flight: the group is free again).
    fn leave_group(&mut self, group: Option<&str>, id: u64, was_in_flight: bool) {
        if let Some(g) = group
            && let Some((members, busy)) = self.groups.get_mut(g)
        {
            members.retain(|m| *m != id);
            if was_in_flight {
                *busy = false;
            }
            self.group_moved(Some(g));
        }
    }

    /// Up to `max` ready messages, best first, each in flight for `visibility_ms` (or the
    /// queue's timeout).
    pub fn receive(&mut self, now: u64, max: usize, visibility_ms: Option<u64>) -> Vec<Delivery> {
        self.receive_as(now, max, visibility_ms, None)
    }

    /// [`Queue::receive`] for consumer `holder`: no more than it may still hold.
    pub fn receive_as(
        &mut self,
        now: u64,
        max: usize,
        visibility_ms: Option<u64>,
        holder: Option<&Holder>,
    ) -> Vec<Delivery> {
        let mut events = Vec::new();
        self.advance(now, &mut events);
        let visibility = visibility_ms.unwrap_or(self.config.visibility_timeout_ms);
        let max = match holder {
            Some(h) => max.min(h.max_in_flight.saturating_sub(self.held(&h.id))),
            None => max,
        };
        let mut out = Vec::new();
        while out.len() < max {
            // The best of what is ready for anyone and what is addressed to this consumer.
            let general = self.ready.iter().next().copied();
            let mine = holder
                .and_then(|h| self.ready_for.get(&h.id))
                .and_then(|set| set.iter().next().copied());
            let Some((key, id)) = general.into_iter().chain(mine).min() else {
                break;
            };
            self.unset_ready(key, id);
            let Some(e) = self.entries.get_mut(&id) else {
                continue;
            };
            e.deliveries += 1;
            e.receives += 1;
            let delivery = Delivery {
                receipt: Receipt {
                    id,
                    delivery: e.deliveries,
                },
                payload: e.payload.clone(),
                meta: e.meta.clone(),
                receive_count: e.receives,
                priority: e.priority,
                group: e.group.clone(),
            };
            if e.fire_and_forget {
                // At most once: gone on delivery. (It was ready: nothing in flight.)
                e.at = Where::Waiting;
                self.remove(id);
            } else {
                let deadline = now.saturating_add(visibility);
                e.at = Where::InFlight(deadline);
                let group = e.group.clone();
                self.in_flight.insert((deadline, id));
                if let Some(h) = holder {
                    self.hold(id, &h.id);
                }
                if let Some(g) = group
                    && let Some((_, busy)) = self.groups.get_mut(&g)
                {
                    *busy = true;
                }
            }
            out.push(delivery);
        }
        out
    }

    /// The message of `r`, if `r` is its current delivery and it is in flight.
    fn current(&self, r: Receipt) -> Result<(), QueueError> {
        match self.entries.get(&r.id) {
            Some(e) if e.deliveries == r.delivery && matches!(e.at, Where::InFlight(_)) => Ok(()),
            _ => Err(QueueError::StaleReceipt(r)),
        }
    }

    /// Acknowledges a delivery: the message is gone.
    pub fn ack(&mut self, now: u64, r: Receipt) -> Result<(), QueueError> {
        let mut events = Vec::new();
        self.advance(now, &mut events);
        self.current(r)?;
        self.remove(r.id);
        Ok(())
    }

    /// Gives a delivery back: pending again after `delay_ms`, or dead-lettered when out of
    /// receives.
    pub fn nack(&mut self, now: u64, r: Receipt, delay_ms: u64) -> Result<Vec<Event>, QueueError> {
        let mut events = Vec::new();
        self.advance(now, &mut events);
        self.current(r)?;
        self.come_back(r.id, now, delay_ms, &mut events);
        Ok(events)
    }

    /// Moves a delivery's visibility deadline to `now + visibility_ms`.
    pub fn change_visibility(
        &mut self,
        now: u64,
        r: Receipt,
        visibility_ms: u64,
    ) -> Result<(), QueueError> {
        let mut events = Vec::new();
        self.advance(now, &mut events);
        self.current(r)?;
        // Still held by whoever held it.
        let holder = self.entries.get(&r.id).and_then(|e| e.holder.clone());
        self.unindex(r.id);
        let deadline = now.saturating_add(visibility_ms);
        self.in_flight.insert((deadline, r.id));
        if let Some(e) = self.entries.get_mut(&r.id) {
            e.at = Where::InFlight(deadline);
        }
        if let Some(h) = holder {
            self.hold(r.id, &h);
        }
        Ok(())
    }

    /// An in-flight message comes back (nack, or its deadline passed).
    fn come_back(&mut self, id: u64, now: u64, delay_ms: u64, events: &mut Vec<Event>) {
        self.unindex(id);
        let Some(e) = self.entries.get(&id) else {
            return;
        };
        let group = e.group.clone();
        let out_of_receives =
            self.config.max_receives > 0 && e.receives >= self.config.max_receives;
        if let Some(g) = &group
            && let Some((_, busy)) = self.groups.get_mut(g)
        {
            *busy = false;
        }
        if out_of_receives {
            let bytes = e.size();
            if let Some(t) = e.expires_at {
                self.expiring.remove(&(t, id));
            }
            if let Some(e) = self.entries.get_mut(&id) {
                e.at = Where::Dead;
                e.expires_at = None;
            }
            self.live -= 1;
            self.live_bytes -= bytes;
            self.dead.insert(id);
            self.leave_group(group.as_deref(), id, false);
            events.push(Event::DeadLettered(id));
        } else if e.expires_at.is_some_and(|t| t <= now) {
            // Its TTL ran out while it was in flight.
            if let Some(e) = self.entries.get_mut(&id) {
                e.at = Where::Waiting;
            }
            self.remove(id);
            events.push(Event::Expired(id));
        } else {
            if let Some(e) = self.entries.get_mut(&id) {
                e.at = Where::Waiting;
            }
            self.make_pending(id, now.saturating_add(delay_ms), now);
            // Its group is free again: its head (this message, or one redriven ahead of it)
            // may go.
            self.group_moved(group.as_deref());
            events.push(Event::Redelivering(id));
        }
    }

    /// Lets time pass to `now`: deadlines, delays, TTLs and dedup windows that ran out.
    /// Every command does this first; call it alone to learn what time did.
    pub fn tick(&mut self, now: u64) -> Vec<Event> {
        let mut events = Vec::new();
        self.advance(now, &mut events);
        events
    }

    fn advance(&mut self, now: u64, events: &mut Vec<Event>) {
        while let Some(&(t, id)) = self.in_flight.iter().next() {
            if t > now {
                break;
            }
            self.come_back(id, now, 0, events);
        }
        while let Some(&(t, id)) = self.delayed.iter().next() {
            if t > now {
                break;
            }
            self.delayed.remove(&(t, id));
            if let Some(e) = self.entries.get_mut(&id) {
                e.at = Where::Waiting;
            }
            self.make_pending(id, now, now);
        }
        while let Some(&(t, id)) = self.expiring.iter().next() {
            if t > now {
                break;
            }
            self.expiring.remove(&(t, id));
            // In flight: it expires if it comes back (its receipt still acks it).
            match self.entries.get(&id).map(|e| &e.at) {
                Some(Where::InFlight(_)) => {
                    if let Some(e) = self.entries.get_mut(&id) {
                        e.expires_at = Some(t);
                    }
                }
                Some(_) => {
                    self.remove(id);
                    events.push(Event::Expired(id));
                }
                None => {}
            }
        }
        while let Some((t, d)) = self.dedup_expiring.iter().next().cloned() {
            if t > now {
                break;
            }
            self.dedup_expiring.remove(&(t, d.clone()));
            self.dedup.remove(&d);
        }
    }

    /// Up to `max` dead-lettered messages, oldest first.
    pub fn dead_letters(&self, max: usize) -> Vec<DeadLetter> {
        self.dead
            .iter()
            .take(max)
            .filter_map(|id| {
                self.entries.get(id).map(|e| DeadLetter {
                    id: *id,
                    payload: e.payload.clone(),
                    meta: e.meta.clone(),
                    deliveries: e.deliveries,
                })
            })
            .collect()
    }

    /// Moves every dead-lettered message back to pending, its receive count reset (room
    /// permitting: the rest stay dead). The ids moved.
    pub fn redrive(&mut self, now: u64) -> Vec<u64> {
        let mut events = Vec::new();
        self.advance(now, &mut events);
        let dead: Vec<u64> = self.dead.iter().copied().collect();
        let mut moved = Vec::new();
        for id in dead {
            let Some(e) = self.entries.get(&id) else {
                continue;
            };
            if self.live >= self.config.max_size
                || self.live_bytes + e.size() > self.config.max_bytes
            {
                break;
            }
            let (bytes, group) = (e.size(), e.group.clone());
            if let Some(e) = self.entries.get_mut(&id) {
                e.receives = 0;
                e.at = Where::Waiting;
            }
            self.dead.remove(&id);
            self.live += 1;
            self.live_bytes += bytes;
            if let Some(g) = group {
                // Back in its group in send order; when that makes it the head, the head
                // before it waits again (one ready per group, in order).
                let (members, _) = self.groups.entry(g).or_default();
                let at = members.partition_point(|m| *m < id);
                members.insert(at, id);
                let displaced = (at == 0).then(|| members.get(1).copied()).flatten();
                if let Some(old) = displaced
                    && self
                        .entries
                        .get(&old)
                        .is_some_and(|e| matches!(e.at, Where::Ready))
                {
                    self.unindex(old);
                    if let Some(e) = self.entries.get_mut(&old) {
                        e.at = Where::Waiting;
                    }
                }
            }
            self.make_pending(id, now, now);
            moved.push(id);
        }
        moved
    }

    /// Drops every pending message (in-flight ones finish; dead letters stay). The ids
    /// dropped.
    pub fn purge(&mut self, now: u64) -> Vec<u64> {
        let mut events = Vec::new();
        self.advance(now, &mut events);
        let pending: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e.at, Where::Ready | Where::Delayed(_) | Where::Waiting))
            .map(|(id, _)| *id)
            .collect();
        for id in &pending {
            self.remove(*id);
        }
        pending
    }

    /// The next time something is due by itself (a delay or visibility deadline ends), for
    /// a waiting receive to look again.
    pub fn next_due(&self) -> Option<u64> {
        let delayed = self.delayed.iter().next().map(|(t, _)| *t);
        let in_flight = self.in_flight.iter().next().map(|(t, _)| *t);
        delayed.into_iter().chain(in_flight).min()
    }

    /// The next time time itself changes the queue (a delay, visibility deadline or TTL
    /// runs out): a replicated queue's leader proposes a tick then, and not before.
    pub fn due_at(&self) -> Option<u64> {
        let expiring = self.expiring.iter().next().map(|(t, _)| *t);
        self.next_due().into_iter().chain(expiring).min()
    }

    /// Whether a receive at `now` (by `holder`, if named) would take something: a message
    /// is ready for it, or a deadline that may make one ready has passed. A replicated
    /// queue's leader proposes a receive only then, so a waiting consumer writes nothing.
    pub fn can_deliver(&self, now: u64, holder: Option<&Holder>) -> bool {
        if let Some(h) = holder
            && self.held(&h.id) >= h.max_in_flight
        {
            return false;
        }
        let addressed = holder
            .and_then(|h| self.ready_for.get(&h.id))
            .is_some_and(|r| !r.is_empty());
        !self.ready.is_empty() || addressed || self.next_due().is_some_and(|t| t <= now)
    }

    /// The oldest live message's id (ids grow with sends), for its age.
    pub fn oldest(&self) -> Option<u64> {
        self.entries
            .iter()
            .find(|(_, e)| !matches!(e.at, Where::Dead))
            .map(|(id, _)| *id)
    }

    /// Puts back a message as a store kept it (a restart). Call in id order, before any
    /// other command; a message due earlier becomes visible `now`. Bounds are not checked:
    /// the queue held it.
    pub fn restore(&mut self, now: u64, m: Stored) {
        self.next_seq = self.next_seq.max(m.id.saturating_add(1));
        let size = m.payload.len() + m.meta.as_ref().map_or(0, |x| x.len());
        let entry = Entry {
            payload: m.payload,
            meta: m.meta,
            priority: m.priority,
            group: m.group.clone(),
            fire_and_forget: m.fire_and_forget,
            deliveries: m.deliveries,
            receives: m.receives,
            expires_at: if m.dead { None } else { m.expires_at },
            at: Where::Waiting,
            holder: None,
            to: m.to.clone(),
        };
        self.entries.insert(m.id, entry);
        if m.dead {
            if let Some(e) = self.entries.get_mut(&m.id) {
                e.at = Where::Dead;
            }
            self.dead.insert(m.id);
            return;
        }
        if let Some(t) = m.expires_at {
            self.expiring.insert((t, m.id));
        }
        self.live += 1;
        self.live_bytes += size;
        if let Some(g) = &m.group {
            self.groups.entry(g.clone()).or_default().0.push_back(m.id);
        }
        self.make_pending(m.id, m.visible_at, now);
    }

    /// Every message the queue holds, as a store keeps it: what [`Queue::restore`] takes
    /// back (an in-flight message comes back pending until its deadline).
    pub fn stored(&self) -> Vec<Stored> {
        self.entries
            .iter()
            .map(|(id, e)| Stored {
                id: *id,
                payload: e.payload.clone(),
                meta: e.meta.clone(),
                priority: e.priority,
                group: e.group.clone(),
                fire_and_forget: e.fire_and_forget,
                deliveries: e.deliveries,
                receives: e.receives,
                expires_at: e.expires_at,
                visible_at: match e.at {
                    Where::Delayed(t) | Where::InFlight(t) => t,
                    Where::Waiting | Where::Ready | Where::Dead => 0,
                },
                dead: matches!(e.at, Where::Dead),
                to: e.to.clone(),
            })
            .collect()
    }

    /// The deduplication ids in their window: (id, message, window end).
    pub fn dedup_ids(&self) -> Vec<(String, u64, u64)> {
        self.dedup
            .iter()
            .map(|(d, (id, until))| (d.clone(), *id, *until))
            .collect()
    }

    /// The id the next send gets (a store keeps it, so that ids are never reused).
    pub fn next_id(&self) -> u64 {
        self.next_seq
    }

    /// Puts back the next id a store kept ([`Queue::next_id`]).
    pub fn restore_next_id(&mut self, next: u64) {
        self.next_seq = self.next_seq.max(next);
    }

    /// Puts back a deduplication id a store kept, naming message `id` until `until`.
    pub fn restore_dedup(&mut self, dedup_id: String, id: u64, until: u64) {
        self.next_seq = self.next_seq.max(id.saturating_add(1));
        self.dedup_expiring.insert((until, dedup_id.clone()));
        self.dedup.insert(dedup_id, (id, until));
    }
}

/// A dead-lettered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: u64,
    pub payload: Arc<[u8]>,
    pub meta: Option<Arc<[u8]>>,
    /// Deliveries ever.
    pub deliveries: u32,
}

/// A message as a store keeps it ([`Queue::restore`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub id: u64,
    pub payload: Arc<[u8]>,
    pub meta: Option<Arc<[u8]>>,
    pub priority: i64,
    pub group: Option<String>,
    pub fire_and_forget: bool,
    pub deliveries: u32,
    pub receives: u32,
    pub expires_at: Option<u64>,
    /// When it may be received (its delay, or the deadline of the delivery it was in).
    pub visible_at: u64,
    pub dead: bool,
    /// The consumer it is addressed to.
    pub to: Option<Arc<str>>,
}
