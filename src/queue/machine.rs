//! A queue as a replicated state machine: what each replica of a queue's Raft group runs
//! on the entries it applies. The engine is unchanged; the machine feeds it commands that
//! carry the proposing leader's time, so every replica computes the same state and the
//! same answers from the same entries.
//!
//! Time: an entry carries the clock of the leader that proposed it, and the machine never
//! lets it go back (a new leader's clock may be behind its predecessor's): the engine sees
//! `max(at_ms, the latest time it saw)`. Receives are entries too: taking a message in
//! flight changes the state every replica must agree on (who may ack it, when it returns).
//!
//! A snapshot is the whole engine state, exactly: in-flight messages with their deadlines
//! and holders, delivery counters, dedup windows. (`Queue::stored`, what the owner's store
//! keeps, turns in-flight messages pending; a replica restored from that would refuse an
//! ack the others accept.) Decoding one is bounded by the caller's limit.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::fabric::codec;

use super::engine::{Delivery, Event, Holder, Queue, QueueConfig, QueueError, Receipt, Send, Sent};

/// One log entry of a queue's group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCommand {
    /// The proposing leader's clock (ms since the epoch).
    pub at_ms: u64,
    pub op: QueueOp,
}

/// What an entry asks of the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueOp {
    Send(Send),
    /// Several sends, each on its own (one refused leaves the others).
    SendBatch(Vec<Send>),
    /// Up to `max` messages in flight for `visibility_ms` (or the queue's timeout), for
    /// `holder` (a named consumer and how many it may hold) if given.
    Receive {
        max: u32,
        visibility_ms: Option<u64>,
        holder: Option<(Arc<str>, u32)>,
    },
    Ack(Receipt),
    Nack {
        receipt: Receipt,
        delay_ms: u64,
    },
    ChangeVisibility {
        receipt: Receipt,
        visibility_ms: u64,
    },
    /// Lets time pass (due redeliveries, expiries, dead letters) with no other command.
    Tick,
    Purge,
    Redrive,
    /// The queue's settings, as the group's first entry: every replica starts from its log,
    /// not from its own node's view of the catalog. Taken only while the queue never held a
    /// message (settings do not change under messages); later ones are refused.
    Configure(QueueConfig),
    /// Several commands in one entry (the leader's proposer groups concurrent calls), each
    /// applied on its own at the entry's time. A batch inside a batch does nothing.
    Batch(Vec<QueueOp>),
}

/// What applying an entry answered, the same on every replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueOutput {
    /// An entry that is not a queue command (Raft's blank and membership entries).
    Noop,
    Sent(Result<Sent, QueueError>),
    SentBatch(Vec<Result<Sent, QueueError>>),
    Received(Vec<Delivery>),
    Acked(Result<(), QueueError>),
    Nacked(Result<Vec<Event>, QueueError>),
    VisibilityChanged(Result<(), QueueError>),
    Ticked(Vec<Event>),
    Purged(Vec<u64>),
    Redriven(Vec<u64>),
    /// Whether the settings were taken.
    Configured(bool),
    /// One output per command of a `Batch`, in order.
    Batch(Vec<QueueOutput>),
}

/// Why a snapshot could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("queue snapshot unreadable: {0}")]
    Decode(String),
    #[error("queue snapshot unwritable: {0}")]
    Encode(String),
}

/// One replica's queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueMachine {
    queue: Queue,
    /// The latest time the engine was given: it never goes back.
    now_ms: u64,
}

impl QueueMachine {
    pub fn new(config: QueueConfig) -> QueueMachine {
        QueueMachine {
            queue: Queue::new(config),
            now_ms: 0,
        }
    }

    /// The queue, to read (depth, stats, dead letters): reads change nothing.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// The time the engine last saw.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Applies one entry.
    pub fn apply(&mut self, cmd: QueueCommand) -> QueueOutput {
        self.now_ms = self.now_ms.max(cmd.at_ms);
        match cmd.op {
            QueueOp::Batch(ops) => QueueOutput::Batch(
                ops.into_iter()
                    .map(|op| match op {
                        QueueOp::Batch(_) => QueueOutput::Noop,
                        op => self.apply_one(op),
                    })
                    .collect(),
            ),
            op => self.apply_one(op),
        }
    }

    fn apply_one(&mut self, op: QueueOp) -> QueueOutput {
        let now = self.now_ms;
        let q = &mut self.queue;
        match op {
            QueueOp::Send(s) => QueueOutput::Sent(q.send(now, s)),
            QueueOp::SendBatch(sends) => {
                QueueOutput::SentBatch(sends.into_iter().map(|s| q.send(now, s)).collect())
            }
            QueueOp::Receive {
                max,
                visibility_ms,
                holder,
            } => {
                let holder = holder.map(|(id, max_in_flight)| Holder {
                    id,
                    max_in_flight: max_in_flight as usize,
                });
                QueueOutput::Received(q.receive_as(
                    now,
                    max as usize,
                    visibility_ms,
                    holder.as_ref(),
                ))
            }
            QueueOp::Ack(r) => QueueOutput::Acked(q.ack(now, r)),
            QueueOp::Nack { receipt, delay_ms } => {
                QueueOutput::Nacked(q.nack(now, receipt, delay_ms))
            }
            QueueOp::ChangeVisibility {
                receipt,
                visibility_ms,
            } => QueueOutput::VisibilityChanged(q.change_visibility(now, receipt, visibility_ms)),
            QueueOp::Tick => QueueOutput::Ticked(q.tick(now)),
            QueueOp::Purge => QueueOutput::Purged(q.purge(now)),
            QueueOp::Redrive => QueueOutput::Redriven(q.redrive(now)),
            QueueOp::Configure(config) => {
                // No message was ever sent: nothing but the settings to replace.
                let fresh = q.next_id() == 1;
                if fresh {
                    *q = Queue::new(config);
                }
                QueueOutput::Configured(fresh)
            }
            QueueOp::Batch(_) => QueueOutput::Noop, // `apply` opens batches
        }
    }

    /// The whole state, exactly (see the module's note).
    pub fn snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        codec::encode_stored(self).map_err(|e| SnapshotError::Encode(e.to_string()))
    }

    /// A replica as `snapshot` left it; at most `limit` bytes are read (and no length in
    /// them claims more than they hold: `codec::decode_stored_within`).
    pub fn restore(bytes: &[u8], limit: usize) -> Result<QueueMachine, SnapshotError> {
        codec::decode_stored_within(bytes, limit).map_err(|e| SnapshotError::Decode(e.to_string()))
    }
}
