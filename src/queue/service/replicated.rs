//! A replicated queue's calls (`replicas` R > 1): each change is an entry of the queue's
//! Raft group, proposed by the group's leader with the leader's clock and answered with
//! what applying it answered (`queue::machine`); a send is acknowledged once a majority of
//! the replicas have it on disk. Reads (stats, dead letters) are the leader's state.
//!
//! Any node takes the call: the group's leader runs it; another replica, or a node with
//! none, forwards it to the leader it knows or, knowing none, to the replicas in placement
//! order, following "not the leader" answers until a deadline. A call is retried only on
//! such an answer or a peer that could not be reached, so a send whose answer was lost may
//! be sent twice (at least once; a deduplication id makes it once).
//!
//! Receipts name the queue's incarnation (not a run of a node): a message received from
//! one leader is acked on the next.

use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use serde_json::{Value, json};

use super::owner::{
    Waiter, addressees_of, checked_batch, decode, deliveries_json, message_id_of, message_json,
    receipt_handles,
};
use super::{COMMIT_WITHIN, FORWARD_SLACK, Op, QueueFail, Queues, Unreached};
use crate::control::QueueEntry;
use crate::queue::engine::{Event, Receipt, Send};
use crate::queue::groups::{MAX_ENTRY_BYTES, Replica};
use crate::queue::machine::{QueueCommand, QueueOp, QueueOutput};
use crate::queue::request::{self, Guarantee};

/// The code a replica answers a forwarded call with when it does not lead the group; its
/// message is the leader's node id, or empty.
const NOT_LEADER: &str = "queue_not_leader";
/// Pause between attempts while a group has no leader (an election takes about one
/// election timeout), doubled up to a second.
const RETRY_FIRST: Duration = Duration::from_millis(25);

fn not_leader(leader: Option<u64>) -> QueueFail {
    QueueFail::unavailable(
        NOT_LEADER,
        leader.map(|l| l.to_string()).unwrap_or_default(),
    )
}

impl Queues {
    /// Runs `op` on replicated queue `entry`: here if this node leads its group, else on
    /// the leader (module note).
    pub(super) async fn group_call(
        &self,
        op: Op,
        entry: &QueueEntry,
        req: Value,
    ) -> Result<Value, QueueFail> {
        if op == Op::Delete {
            return self.delete(entry).await;
        }
        let me = self.control.id;
        let deadline = tokio::time::Instant::now() + wait_of(&req) + FORWARD_SLACK;
        let mut hint: Option<u64> = None;
        let mut next = 0usize;
        let mut pause = RETRY_FIRST;
        let mut last = String::from("no replica answered");
        loop {
            let local = self.groups.get(entry);
            if let Some(r) = &local
                && r.is_leader(me)
            {
                match self.run_group(op, r, req.clone()).await {
                    Err(QueueFail::Unavailable { code, message }) if code == NOT_LEADER => {
                        hint = message.parse().ok();
                    }
                    other => return other,
                }
            }
            let target = hint
                .take()
                .or_else(|| local.as_ref().and_then(|r| r.leader()))
                .filter(|l| *l != me.0)
                .or_else(|| {
                    // No leader known: the replicas in turn (this node's own is asked above).
                    let others: Vec<u64> = entry
                        .replicas
                        .iter()
                        .map(|id| id.0)
                        .filter(|id| *id != me.0)
                        .collect();
                    let pick = others.get(next % others.len().max(1)).copied();
                    next += 1;
                    pick
                });
            if let Some(target) = target {
                match self.forward_group(entry, target, op, &req, deadline).await {
                    Err(QueueFail::Unavailable { code, message }) if code == NOT_LEADER => {
                        match message.parse::<u64>() {
                            Ok(l) if l != target => {
                                hint = Some(l);
                                continue; // a named leader: ask it at once
                            }
                            _ => last = format!("node {target} knows no leader"),
                        }
                    }
                    Err(QueueFail::Unavailable { code, message }) if code == "queue_owner_down" => {
                        last = message;
                    }
                    other => return other,
                }
            }
            let now = tokio::time::Instant::now();
            if now + pause >= deadline {
                return Err(QueueFail::unavailable(
                    "queue_no_leader",
                    format!(
                        "queue `{}` has no leader a majority of its replicas follow ({last}); \
                         it answers again once one is elected",
                        entry.name
                    ),
                ));
            }
            // The pause ends early when this node's replica learns of a new leader (an
            // election it saw): a call need not wait out its backoff after a failover.
            let known = local.as_ref().and_then(|r| r.leader());
            match &local {
                Some(r) => {
                    let mut metrics = r.raft.metrics();
                    let _ = tokio::time::timeout(
                        pause,
                        metrics
                            .wait_for(|m| m.current_leader.is_some() && m.current_leader != known),
                    )
                    .await;
                }
                None => tokio::time::sleep(pause).await,
            }
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// A replicated queue's call forwarded by another node: run here if this node leads.
    pub(super) async fn serve_group(
        &self,
        op: Op,
        entry: &QueueEntry,
        req: Value,
    ) -> Result<Value, QueueFail> {
        let me = self.control.id;
        match self.groups.get(entry) {
            Some(r) if r.is_leader(me) => self.run_group(op, &r, req).await,
            Some(r) => Err(not_leader(r.leader())),
            None => Err(not_leader(None)),
        }
    }

    async fn forward_group(
        &self,
        entry: &QueueEntry,
        target: u64,
        op: Op,
        req: &Value,
        deadline: tokio::time::Instant,
    ) -> Result<Value, QueueFail> {
        let ttl = deadline.saturating_duration_since(tokio::time::Instant::now());
        let why = match self
            .call_node(crate::control::NodeId(target), op, req, ttl)
            .await
        {
            Ok(answer) => return answer,
            Err(Unreached::Down) => format!("node {target} is down"),
            Err(Unreached::NotMember) => format!("node {target} is not a member"),
            Err(Unreached::Failed(e)) => format!(
                "node {target} (a replica of queue `{}`) could not be reached: {e}",
                entry.name
            ),
        };
        Err(QueueFail::unavailable("queue_owner_down", why))
    }

    /// Proposes `op` to the group this node leads; what applying it answered.
    async fn write(&self, r: &Replica, op: QueueOp) -> Result<QueueOutput, QueueFail> {
        let cmd = QueueCommand {
            at_ms: self.now(),
            op,
        };
        match tokio::time::timeout(COMMIT_WITHIN, r.proposer.write(cmd)).await {
            Ok(Ok(resp)) => Ok(resp.data),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(not_leader(f.leader_id))
            }
            Ok(Err(e)) => Err(QueueFail::unavailable(
                "queue_group_unavailable",
                format!("queue `{}`: {e}", r.entry.name),
            )),
            Err(_) => Err(QueueFail::unavailable(
                "queue_group_unavailable",
                format!(
                    "queue `{}`: a majority of its replicas did not commit within {} s (it \
                     may still commit)",
                    r.entry.name,
                    COMMIT_WITHIN.as_secs()
                ),
            )),
        }
    }

    /// Runs `op` on the group this node leads.
    async fn run_group(&self, op: Op, r: &Replica, req: Value) -> Result<Value, QueueFail> {
        let c = &r.counters;
        match op {
            Op::Delete => self.delete(&r.entry).await,
            Op::Stats => Ok(self.group_stats(r)),
            Op::Send => {
                let req: request::SendRequest = decode(req)?;
                let checked = request::send(&req, &self.limits.request)?;
                self.group_send(r, checked).await
            }
            Op::SendBatch => {
                let mut sends = Vec::new();
                let mut bytes = 0usize;
                for (i, checked) in checked_batch(&req, &r.entry.name, &self.limits.request)?
                    .into_iter()
                    .enumerate()
                {
                    if !matches!(
                        checked.guarantee,
                        Guarantee::AtLeastOnce | Guarantee::FireAndForget
                    ) {
                        return Err(QueueFail::Invalid(format!(
                            "messages[{i}]: broadcast and quorum sends go one at a time"
                        )));
                    }
                    bytes += checked.send.payload.len()
                        + checked.send.meta.as_ref().map_or(0, |m| m.len());
                    sends.push(checked.send);
                }
                if bytes > MAX_ENTRY_BYTES {
                    return Err(QueueFail::Invalid(format!(
                        "messages: {bytes} bytes in all; a replicated queue takes at most \
                         {MAX_ENTRY_BYTES} per batch (send fewer at once)"
                    )));
                }
                let QueueOutput::SentBatch(results) =
                    self.write(r, QueueOp::SendBatch(sends)).await?
                else {
                    return Err(mismatched());
                };
                let results: Vec<Value> = results
                    .into_iter()
                    .map(|s| match s {
                        Ok(s) => {
                            count_sent(c, s.duplicate, 1);
                            json!({
                                "success": true,
                                "message_id": message_id_of(r.entry.incarnation, s.id),
                                "duplicate": s.duplicate,
                            })
                        }
                        Err(e) => {
                            json!({ "success": false, "error": QueueFail::from(e).to_string() })
                        }
                    })
                    .collect();
                r.sm.applied().notify_waiters();
                Ok(json!({ "results": results }))
            }
            Op::Receive => {
                let req: request::ReceiveRequest = decode(req)?;
                let checked = request::receive(&req, &self.limits.request)?;
                self.group_receive(r, checked).await
            }
            Op::Ack => {
                let req: request::ReceiptRequest = decode(req)?;
                let single = req.receipt_handles.is_none();
                let handles = match receipt_handles(&req)? {
                    None => vec![req.receipt_handle.clone()],
                    Some(h) => h.to_vec(),
                };
                // All at once: the proposer puts them in one entry.
                let outcomes = futures_util::future::join_all(handles.iter().map(|h| async {
                    let receipt = self.group_receipt(r, h)?;
                    match self.write(r, QueueOp::Ack(receipt)).await? {
                        QueueOutput::Acked(res) => res.map_err(QueueFail::from),
                        _ => Err(mismatched()),
                    }
                }))
                .await;
                let mut failed = Vec::new();
                let mut acked = 0;
                for (h, done) in handles.iter().zip(outcomes) {
                    match done {
                        Ok(()) => {
                            acked += 1;
                            c.acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) if single => return Err(e),
                        Err(e) => failed.push(json!({"receipt_handle": h, "error": e.to_string()})),
                    }
                }
                // A consumer waiting because it held its most may take another now.
                r.sm.applied().notify_waiters();
                if single {
                    return Ok(json!({ "success": true, "acknowledged": true }));
                }
                Ok(json!({ "success": failed.is_empty(), "acknowledged": acked, "failed": failed }))
            }
            Op::Nack => {
                let req: request::ReceiptRequest = decode(req)?;
                let receipt = self.group_receipt(r, &req.receipt_handle)?;
                let delay_ms = request::delay_ms("delay_seconds", req.delay_seconds)?;
                let QueueOutput::Nacked(res) =
                    self.write(r, QueueOp::Nack { receipt, delay_ms }).await?
                else {
                    return Err(mismatched());
                };
                let events = res.map_err(QueueFail::from)?;
                let dead = events.contains(&Event::DeadLettered(receipt.id));
                c.nacked.fetch_add(1, Ordering::Relaxed);
                count_events(c, &events);
                Ok(json!({ "success": true, "dead_lettered": dead }))
            }
            Op::ChangeVisibility => {
                let req: request::ReceiptRequest = decode(req)?;
                let receipt = self.group_receipt(r, &req.receipt_handle)?;
                let visibility_ms = request::visibility_ms(req.visibility_timeout_seconds)?;
                match self
                    .write(
                        r,
                        QueueOp::ChangeVisibility {
                            receipt,
                            visibility_ms,
                        },
                    )
                    .await?
                {
                    QueueOutput::VisibilityChanged(res) => res.map_err(QueueFail::from)?,
                    _ => return Err(mismatched()),
                }
                Ok(json!({ "success": true }))
            }
            Op::Purge => match self.write(r, QueueOp::Purge).await? {
                QueueOutput::Purged(ids) => Ok(json!({ "success": true, "purged": ids.len() })),
                _ => Err(mismatched()),
            },
            Op::Redrive => match self.write(r, QueueOp::Redrive).await? {
                QueueOutput::Redriven(ids) => {
                    r.sm.applied().notify_waiters();
                    Ok(json!({ "success": true, "redriven": ids.len() }))
                }
                _ => Err(mismatched()),
            },
            Op::Dlq => {
                let max = req
                    .get("max_messages")
                    .and_then(Value::as_u64)
                    .unwrap_or(100)
                    .clamp(1, 1000) as usize;
                let incarnation = r.entry.incarnation;
                Ok(r.sm.read(|m| {
                    let messages: Vec<Value> = m
                        .queue()
                        .dead_letters(max)
                        .into_iter()
                        .map(|d| {
                            let mut v = message_json(&d.payload, d.meta.as_deref());
                            v["message_id"] = json!(message_id_of(incarnation, d.id));
                            v["receive_count"] = json!(d.deliveries);
                            v
                        })
                        .collect();
                    json!({
                        "queue_name": r.entry.name,
                        "count": m.queue().dead_lettered(),
                        "messages": messages,
                    })
                }))
            }
        }
    }

    async fn group_send(
        &self,
        r: &Replica,
        checked: request::CheckedSend,
    ) -> Result<Value, QueueFail> {
        let now = self.now();
        let send = checked.send;
        let many = matches!(
            checked.guarantee,
            Guarantee::Broadcast | Guarantee::Quorum(_)
        );
        let reply = |id: u64, duplicate: bool| {
            json!({
                "success": true,
                "message_id": message_id_of(r.entry.incarnation, id),
                "duplicate": duplicate,
            })
        };
        let size = send.payload.len() + send.meta.as_ref().map_or(0, |m| m.len());
        if size > MAX_ENTRY_BYTES {
            return Err(QueueFail::Invalid(format!(
                "message_payload: {size} bytes; a replicated queue takes at most \
                 {MAX_ENTRY_BYTES}"
            )));
        }
        let copies = if many { 0 } else { 1 };
        // A full queue refuses here, writing nothing (the machine checks again as it applies):
        // a producer retrying into a full queue does not grow the log.
        // (A send with a dedup id goes on: it may name a message already in, a duplicate.)
        if copies == 1 && send.dedup_id.is_none() && !r.sm.read(|m| m.queue().has_room(1, size)) {
            return Err(QueueFail::from(crate::queue::engine::QueueError::Full(
                "messages or bytes".into(),
            )));
        }
        if !many {
            let QueueOutput::Sent(res) = self.write(r, QueueOp::Send(send)).await? else {
                return Err(mismatched());
            };
            let sent = res.map_err(QueueFail::from)?;
            count_sent(&r.counters, sent.duplicate, 1);
            r.sm.applied().notify_waiters();
            return Ok(reply(sent.id, sent.duplicate));
        }
        let targets = {
            let mut active = r.active.lock();
            r.sm.read(|m| addressees_of(&mut active, m.queue(), now, checked.guarantee))?
        };
        let size = send.payload.len() + send.meta.as_ref().map_or(0, |m| m.len());
        if !r
            .sm
            .read(|m| m.queue().has_room(targets.len(), targets.len() * size))
        {
            return Err(QueueFail::from(crate::queue::engine::QueueError::Full(
                "messages or bytes, for every copy".into(),
            )));
        }
        if targets.len().saturating_mul(size) > MAX_ENTRY_BYTES {
            return Err(QueueFail::Invalid(format!(
                "{} copies of {size} bytes: a replicated queue takes at most {MAX_ENTRY_BYTES} \
                 in one send",
                targets.len()
            )));
        }
        let copies: Vec<Send> = targets
            .into_iter()
            .enumerate()
            .map(|(i, to)| {
                let mut s = send.clone();
                s.to = Some(to);
                if i > 0 {
                    s.dedup_id = None; // the first copy holds the send's dedup id
                }
                s
            })
            .collect();
        let QueueOutput::SentBatch(results) = self.write(r, QueueOp::SendBatch(copies)).await?
        else {
            return Err(mismatched());
        };
        let mut first = None;
        let mut sent = 0;
        for res in results {
            let s = res.map_err(QueueFail::from)?;
            first.get_or_insert(s);
            if s.duplicate {
                break; // the first send made the copies
            }
            sent += 1;
        }
        let first = first.ok_or_else(|| QueueFail::Invalid("nothing to send".into()))?;
        count_sent(&r.counters, first.duplicate, sent);
        r.sm.applied().notify_waiters();
        let mut v = reply(first.id, first.duplicate);
        if !first.duplicate {
            v["copies"] = json!(sent);
        }
        Ok(v)
    }

    /// Up to `max` messages, waiting up to `wait_ms` for the first. A receive is an entry
    /// (it takes messages in flight on every replica), proposed only when the leader's
    /// state says it would take something: a waiting consumer writes nothing.
    async fn group_receive(
        &self,
        r: &Replica,
        c: request::CheckedReceive,
    ) -> Result<Value, QueueFail> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(c.wait_ms);
        let mut waiting = None;
        let me = self.control.id;
        loop {
            let applied = r.sm.applied().notified();
            tokio::pin!(applied);
            applied.as_mut().enable();
            let now = self.now();
            if let Some(h) = &c.holder {
                r.active.lock().insert(h.id.clone(), now);
            }
            let (ready, due) = r.sm.read(|m| {
                (
                    m.queue().can_deliver(now, c.holder.as_ref()),
                    m.queue().next_due(),
                )
            });
            if ready {
                let holder = c
                    .holder
                    .as_ref()
                    .map(|h| (h.id.clone(), h.max_in_flight.min(u32::MAX as usize) as u32));
                let op = QueueOp::Receive {
                    max: c.max.min(u32::MAX as usize) as u32,
                    visibility_ms: c.visibility_ms,
                    holder,
                };
                let QueueOutput::Received(got) = self.write(r, op).await? else {
                    return Err(mismatched());
                };
                if !got.is_empty() {
                    drop(waiting);
                    r.counters
                        .received
                        .fetch_add(got.len() as u64, Ordering::Relaxed);
                    return Ok(deliveries_json(
                        &r.entry.name,
                        r.entry.incarnation,
                        r.entry.incarnation,
                        got,
                    ));
                }
            }
            let at = tokio::time::Instant::now();
            if at >= deadline {
                return Ok(deliveries_json(
                    &r.entry.name,
                    r.entry.incarnation,
                    r.entry.incarnation,
                    Vec::new(),
                ));
            }
            if !r.is_leader(me) || self.groups.get(&r.entry).is_none() {
                // Leadership moved (or the queue went) while waiting: ask the new leader.
                return Err(not_leader(r.leader()));
            }
            if waiting.is_none() {
                waiting = Some(Waiter::enter(&self.waiters, self.limits.max_waiters)?);
            }
            let wake = due.map_or(deadline, |t| {
                let ms = t.saturating_sub(now).max(1);
                deadline.min(at + Duration::from_millis(ms))
            });
            // Leadership is checked again at least every second.
            let wake = wake.min(at + Duration::from_secs(1));
            tokio::select! {
                _ = &mut applied => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    fn group_receipt(&self, r: &Replica, handle: &str) -> Result<Receipt, QueueFail> {
        let (boot, receipt) = request::parse_receipt(handle)?;
        if boot != r.entry.incarnation {
            return Err(QueueFail::refused(
                "stale_receipt",
                format!(
                    "receipt {handle:.80} is not of this queue `{}` (it was created again): \
                     receive the message again",
                    r.entry.name
                ),
            ));
        }
        Ok(receipt)
    }

    fn group_stats(&self, r: &Replica) -> Value {
        let (depth, in_flight, dead) = r.sm.read(|m| {
            let q = m.queue();
            (q.depth(), q.in_flight(), q.dead_lettered())
        });
        let m = r.raft.metrics().borrow().clone();
        let leader_node = m.current_leader.map(|l| {
            self.control
                .catalog
                .read(|s| s.catalog.node_id_of(crate::control::NodeId(l)))
        });
        let mut stats = json!({
            "queue_name": r.entry.name,
            "depth": depth,
            "in_flight": in_flight,
            "dead_lettered": dead,
            "durable": self.durable(),
            "replicas": r.entry.replicas.iter().map(|id| id.0).collect::<Vec<_>>(),
            "leader": m.current_leader,
            "leader_node": leader_node,
            "voters": m.membership_config.membership().voter_ids().collect::<Vec<_>>(),
            "term": m.current_term,
            "last_log_index": m.last_log_index,
            "last_applied": m.last_applied.map(|l| l.index),
        });
        r.counters.add_totals(&mut stats);
        stats
    }

    /// Lets time pass on the groups this node leads whose queues have something due
    /// (redeliveries, delays, expiries): one tick entry each, only then.
    pub(super) async fn tick_groups(&self) {
        let me = self.control.id;
        let now = self.now();
        for r in self.groups.all() {
            if !r.is_leader(me) || !r.sm.read(|m| m.queue().due_at().is_some_and(|t| t <= now)) {
                continue;
            }
            match self.write(&r, QueueOp::Tick).await {
                Ok(QueueOutput::Ticked(events)) => {
                    count_events(&r.counters, &events);
                    r.sm.applied().notify_waiters();
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(queue = %r.entry.name, error = %e, "a queue tick did not commit")
                }
            }
        }
    }
}

fn count_sent(c: &super::Counters, duplicate: bool, copies: u64) {
    if duplicate {
        c.duplicates.fetch_add(1, Ordering::Relaxed);
    } else {
        c.sent.fetch_add(copies, Ordering::Relaxed);
    }
}

fn count_events(c: &super::Counters, events: &[Event]) {
    for e in events {
        let counter = match e {
            Event::Redelivering(_) => &c.redelivered,
            Event::DeadLettered(_) => &c.dead_lettered,
            Event::Expired(_) => &c.expired,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

fn mismatched() -> QueueFail {
    QueueFail::unavailable(
        "queue_group_unavailable",
        "the queue's group answered another command's output",
    )
}

/// How long a call may wait by its own asking (`wait_seconds`).
pub(super) fn wait_of(req: &Value) -> Duration {
    req.get("wait_seconds")
        .and_then(Value::as_f64)
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(Duration::ZERO, |s| {
            Duration::from_secs_f64(s.min(request::MAX_WAIT_SECONDS))
        })
}
