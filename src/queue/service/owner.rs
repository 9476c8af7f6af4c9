//! A queue's calls on its owner: each runs the engine under the queue's lock and hands the
//! writes it made to the store in the same order (`with`); a send answers once its commit
//! is done, a receive waits (long poll) for messages, due times or the queue's deletion.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use super::{COMMIT_WITHIN, Op, Owned, QueueFail, Queues, State, store_key};
use crate::control::replica::CommitError;
use crate::control::{CatalogCommand, CatalogError, QueueEntry};
use crate::queue::engine::{Delivery, Event};
use crate::queue::request::{self, Guarantee};
use crate::queue::store::{Row, StoreError, Write};

impl Queues {
    /// Runs `op` on queue `entry`, owned here.
    pub(super) async fn run(
        &self,
        op: Op,
        entry: &QueueEntry,
        req: Value,
    ) -> Result<Value, QueueFail> {
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
                let Some(handles) = receipt_handles(&req)? else {
                    let r = self.receipt(&q, &req.receipt_handle)?;
                    self.ack(&q, r)?;
                    return Ok(json!({ "success": true, "acknowledged": true }));
                };
                // Each on its own: one stale receipt fails alone, named with its reason.
                let mut failed = Vec::new();
                let mut acked = 0;
                for h in handles {
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
    ) -> (R, Option<crate::queue::store::Committed>) {
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
        let guarantee = checked.guarantee;
        let (outcome, last) = self.with_last(q, |st, now, writes| {
            let send = checked.send;
            let window = st.queue.config().dedup_window_ms;
            let ttl = st.queue.config().message_ttl_ms;
            // Who gets it: anyone (one message), or a copy for each chosen consumer.
            let targets: Vec<Option<Arc<str>>> = match guarantee {
                Guarantee::Broadcast | Guarantee::Quorum(_) => addressees(st, now, guarantee)?
                    .into_iter()
                    .map(Some)
                    .collect(),
                Guarantee::AtLeastOnce | Guarantee::FireAndForget => vec![None],
            };
            let size = send.payload.len() + send.meta.as_ref().map_or(0, |m| m.len());
            if targets.len() > 1 && !st.queue.has_room(targets.len(), targets.len() * size) {
                return Err(QueueFail::from(crate::queue::engine::QueueError::Full(
                    "messages or bytes, for every copy".into(),
                )));
            }
            let mut first = None;
            let mut copies = 0;
            for (i, to) in targets.into_iter().enumerate() {
                let mut send = send.clone();
                send.to = to;
                if i > 0 {
                    send.dedup_id = None; // the first copy holds the send's dedup id
                }
                let row = Row {
                    message: crate::queue::engine::Stored {
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
                        to: send.to.clone(),
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
                    // Answered once the first send's commit (ahead in the store) is done;
                    // its copies were made then.
                    writes.push(Write::Barrier);
                    first = Some(sent);
                    break;
                }
                let mut row = row;
                row.message.id = sent.id;
                st.sent_ms.insert(sent.id, now);
                writes.push(Write::Insert {
                    queue: q.key.clone(),
                    row: Box::new(row),
                    dedup,
                    next_id: st.queue.next_id(),
                });
                first.get_or_insert(sent);
                copies += 1;
            }
            let sent = first.ok_or_else(|| QueueFail::Invalid("nothing to send".into()))?;
            Ok::<_, QueueFail>((sent, copies))
        });
        let (sent, copies) = outcome?;
        // The commit of the last write handed over covers this one (a duplicate's barrier
        // waits for the first send's, which is ahead of it).
        let committed = match last {
            Some(c) => c,
            None => self.store.write(Write::Barrier),
        };
        if sent.duplicate {
            q.counters.duplicates.fetch_add(1, Ordering::Relaxed);
        } else {
            q.counters.sent.fetch_add(copies, Ordering::Relaxed);
            q.arrived.notify_waiters();
        }
        let mut reply = json!({
            "success": true,
            "message_id": message_id(q, sent.id),
            "duplicate": sent.duplicate,
        });
        if matches!(guarantee, Guarantee::Broadcast | Guarantee::Quorum(_)) && !sent.duplicate {
            reply["copies"] = json!(copies);
        }
        Ok((reply, Committed(committed)))
    }

    async fn send_batch(&self, q: &Owned, req: Value) -> Result<Value, QueueFail> {
        let checked = checked_batch(&req, &q.name, &self.limits.request)?;
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

    fn receipt(&self, q: &Owned, handle: &str) -> Result<crate::queue::engine::Receipt, QueueFail> {
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

    fn ack(&self, q: &Owned, r: crate::queue::engine::Receipt) -> Result<(), QueueFail> {
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
    fn nack(
        &self,
        q: &Owned,
        r: crate::queue::engine::Receipt,
        delay: u64,
    ) -> Result<bool, QueueFail> {
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
        r: crate::queue::engine::Receipt,
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
                if let Some(h) = &c.holder {
                    st.active.insert(h.id.clone(), now);
                }
                let got = st
                    .queue
                    .receive_as(now, c.max, c.visibility_ms, c.holder.as_ref());
                let vis = c
                    .visibility_ms
                    .unwrap_or(st.queue.config().visibility_timeout_ms);
                for d in &got {
                    writes.push(
                        if st.queue.status(d.receipt.id) == crate::queue::engine::Status::Gone {
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
        deliveries_json(&q.name, q.incarnation, q.boot, got)
    }

    fn stats(&self, q: &Owned) -> Value {
        let now = self.now();
        self.with(q, |_, _, _| ());
        let s = q.snapshot(now);
        let mut stats = json!({
            "queue_name": q.name,
            "depth": s.depth,
            "in_flight": s.in_flight,
            "dead_lettered": s.dead_lettered,
            "oldest_message_age_seconds": s.oldest_age_ms as f64 / 1000.0,
            "durable": self.durable(),
        });
        q.counters.add_totals(&mut stats);
        stats
    }

    /// `queue_delete`, on the owner: out of the catalog, then its rows.
    pub(super) async fn delete(&self, entry: &QueueEntry) -> Result<Value, QueueFail> {
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
}

/// A send's commit, to wait for before answering.
pub struct Committed(crate::queue::store::Committed);

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
pub(super) struct Waiter<'a>(&'a AtomicUsize);

impl<'a> Waiter<'a> {
    pub(super) fn enter(count: &'a AtomicUsize, max: usize) -> Result<Waiter<'a>, QueueFail> {
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

pub(super) fn decode<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, QueueFail> {
    serde_json::from_value(v).map_err(|e| QueueFail::Invalid(e.to_string()))
}

/// `queue_ack`'s several receipts (`receipt_handles`, 1 to `MAX_ACK_BATCH`, and then no
/// `receipt_handle`), or `None` when it acks one.
pub(super) fn receipt_handles(
    req: &request::ReceiptRequest,
) -> Result<Option<&[String]>, QueueFail> {
    let Some(handles) = &req.receipt_handles else {
        return Ok(None);
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
    Ok(Some(handles))
}

/// `queue_send_batch`'s messages, each checked as a `queue_send` to queue `name`, all before
/// any is sent: a batch with a bad message sends nothing.
pub(super) fn checked_batch(
    req: &Value,
    name: &str,
    limits: &request::Limits,
) -> Result<Vec<request::CheckedSend>, QueueFail> {
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
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut m = m.clone();
            if let Some(o) = m.as_object_mut() {
                o.insert("queue_name".into(), json!(name));
            }
            let r: request::SendRequest =
                decode(m).map_err(|e| QueueFail::Invalid(format!("messages[{i}]: {e}")))?;
            request::send(&r, limits).map_err(|e| QueueFail::Invalid(format!("messages[{i}]: {e}")))
        })
        .collect()
}

/// A message id as clients see it: the queue's incarnation and the message's number, so
/// ids of a queue created again under its name differ.
fn message_id(q: &Owned, id: u64) -> String {
    message_id_of(q.incarnation, id)
}

pub(super) fn message_id_of(incarnation: u64, id: u64) -> String {
    format!("{incarnation:x}-{id}")
}

/// A receive's reply: each delivery with its id and receipt (`boot` names the run of the
/// queue the receipts are good for).
pub(super) fn deliveries_json(
    name: &str,
    incarnation: u64,
    boot: u64,
    got: Vec<Delivery>,
) -> Value {
    let messages: Vec<Value> = got
        .into_iter()
        .map(|d| {
            let mut m = message_json(&d.payload, d.meta.as_deref());
            m["message_id"] = json!(message_id_of(incarnation, d.receipt.id));
            m["receipt_handle"] = json!(request::receipt_handle(boot, d.receipt));
            m["receive_count"] = json!(d.receive_count);
            m["priority"] = json!(d.priority);
            if let Some(g) = d.group {
                m["message_group_id"] = json!(g);
            }
            m
        })
        .collect();
    json!({ "queue_name": name, "messages": messages })
}

/// A message's payload (its JSON text) with its topic and headers.
pub(super) fn message_json(payload: &[u8], meta: Option<&[u8]>) -> Value {
    let meta = request::meta_of(meta);
    json!({
        "message_payload": serde_json::from_slice::<Value>(payload).unwrap_or(Value::Null),
        "topic": meta.topic,
        "headers": meta.headers,
    })
}

/// A named consumer counts as active this long after it last asked for messages (a long
/// poll waits at most 20 s, so a live subscription or pull consumer asks again within it).
const ACTIVE_FOR_MS: u64 = 30_000;

/// The consumers a broadcast or quorum send copies to: every active one, or the `n` that
/// hold the fewest messages now (then by name). None active, or fewer than `n`: refused,
/// not dead-lettered or kept for nobody.
fn addressees(st: &mut State, now: u64, guarantee: Guarantee) -> Result<Vec<Arc<str>>, QueueFail> {
    addressees_of(&mut st.active, &st.queue, now, guarantee)
}

/// [`addressees`] of a queue and its named consumers.
pub(super) fn addressees_of(
    active: &mut std::collections::BTreeMap<Arc<str>, u64>,
    queue: &crate::queue::engine::Queue,
    now: u64,
    guarantee: Guarantee,
) -> Result<Vec<Arc<str>>, QueueFail> {
    active.retain(|_, seen| now.saturating_sub(*seen) <= ACTIVE_FOR_MS);
    let active: Vec<Arc<str>> = active.keys().cloned().collect();
    match guarantee {
        Guarantee::Quorum(n) => {
            let n = n as usize;
            if active.len() < n {
                return Err(QueueFail::refused(
                    "quorum_unavailable",
                    format!(
                        "{n} acknowledgements need {n} active consumers (named consumers that \
                         received in the last {} s); {} are",
                        ACTIVE_FOR_MS / 1000,
                        active.len()
                    ),
                ));
            }
            let mut by_load: Vec<(usize, Arc<str>)> =
                active.into_iter().map(|c| (queue.held(&c), c)).collect();
            by_load.sort();
            Ok(by_load.into_iter().take(n).map(|(_, c)| c).collect())
        }
        _ if active.is_empty() => Err(QueueFail::refused(
            "no_consumers",
            format!(
                "a broadcast goes to the queue's active consumers (named consumers that \
                 received in the last {} s); there are none",
                ACTIVE_FOR_MS / 1000
            ),
        )),
        _ => Ok(active),
    }
}
