//! The serving side of one peer connection: the peer's requests handed to the planes'
//! handlers and answered, replies routed to this side's calls, cancels, and the limit on
//! forwarded steps run at once for one peer.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio_tungstenite::tungstenite::Message;

use super::conn::{Answered, Conn};
use super::endpoint::Endpoint;
use super::frame::{Frame, Incoming, encode};
use super::lifecycle::Event;
use super::plane::{Answer, Handler, PlaneHandler, Work};

/// Forwarded steps one connection may run at once for the peer; beyond it a step is
/// refused as `Busy` (nothing ran: the entry node tries another node, or fails the request
/// with 1004).
const MAX_STEPS_PER_LINK: usize = 4096;

/// The serving side of one connection.
pub(crate) struct Served {
    /// Where spawned requests send their replies.
    replies: mpsc::Sender<(u64, Message)>,
    /// Forwarded steps, by request id, so that a cancel can stop one; dropping the set
    /// when the connection ends cancels the rest.
    steps: JoinSet<()>,
    running: BTreeMap<u64, AbortHandle>,
    /// Requests being answered in a task (steps and others): the peer waits for them.
    answering: BTreeSet<u64>,
}

/// The frame that answers request `id` with `reply`.
fn reply_frame(id: u64, reply: Result<Vec<u8>, String>) -> io::Result<Message> {
    encode(&match reply {
        Ok(body) => Frame::Reply { id, body },
        Err(why) => Frame::Unsupported {
            id,
            why: format!("this node does not know the request ({why})"),
        },
    })
}

impl Served {
    pub(crate) fn new(replies: mpsc::Sender<(u64, Message)>) -> Served {
        Served {
            replies,
            steps: JoinSet::new(),
            running: BTreeMap::new(),
            answering: BTreeSet::new(),
        }
    }

    pub(crate) fn has_steps(&self) -> bool {
        !self.steps.is_empty()
    }

    /// Waits for a step task to end (its reply has gone through `replies`).
    pub(crate) async fn reap(&mut self) {
        let _ = self.steps.join_next().await;
    }

    /// Whether forwarded steps still run (or wait for their answer to be queued).
    pub(crate) fn running_steps(&self) -> bool {
        !self.running.is_empty()
    }

    /// Whether the peer still waits for an answer to anything it asked.
    pub(crate) fn answering_any(&self) -> bool {
        !self.answering.is_empty()
    }

    /// Requests being answered in tasks, forwarded steps aside.
    pub(crate) fn answering_others(&self) -> usize {
        self.answering.len().saturating_sub(self.running.len())
    }

    pub(crate) fn replied(&mut self, id: u64, frame: Message, conn: &Conn) {
        self.running.remove(&id);
        self.answering.remove(&id);
        conn.push(frame);
    }

    /// Handles one frame; `false` ends the connection (closed, unreadable, a frame no
    /// admitted peer sends, or the node is gone).
    pub(crate) fn handle(
        &mut self,
        frame: io::Result<Option<Incoming>>,
        conn: &Conn,
        e: &Endpoint,
    ) -> bool {
        let frame = match frame {
            Ok(Some(Incoming::Frame(f))) => f,
            Ok(Some(Incoming::Unknown { id, why })) => {
                // A newer build's request: say so, and keep the connection.
                self.answer_now(id, Err(why), conn);
                return true;
            }
            Ok(None) | Err(_) => return false,
        };
        let answered = |id: u64, a: Answered| {
            if let Some(waiter) = conn.pending.lock().remove(&id) {
                let _ = waiter.send(a);
            }
        };
        match frame {
            Frame::Reply { id, body } => answered(id, Answered::Reply(body)),
            Frame::Unsupported { id, why } => answered(id, Answered::Unsupported(why)),
            Frame::Busy { id, why } => answered(id, Answered::Busy(why)),
            // The node is stopping: nothing new runs; the peer may send it elsewhere.
            Frame::Request { id, .. } if e.is_closed() => {
                let why = "this node is stopping".to_owned();
                if let Ok(frame) = encode(&Frame::Busy { id, why }) {
                    conn.push(frame);
                }
            }
            Frame::Request { id, plane, body } => match e.planes().get(plane) {
                Handler::By(handler) => self.start(handler, id, body, conn),
                Handler::Missing => {
                    self.answer_now(id, Err(format!("{plane:?} is not served here")), conn)
                }
                Handler::Gone => return false,
            },
            Frame::Cancel { id } => {
                if let Some(step) = self.running.remove(&id) {
                    step.abort();
                    self.answering.remove(&id);
                }
            }
            Frame::Done => conn.apply(Event::PeerDone),
            Frame::Retire => conn.apply(Event::PeerRetired),
            // A second hello or welcome: not a peer we know.
            Frame::Hello(_) | Frame::Welcome(_) | Frame::Challenge { .. } | Frame::Proof(_) => {
                return false;
            }
        }
        true
    }

    fn answer_now(&self, id: u64, reply: Result<Vec<u8>, String>, conn: &Conn) {
        if let Ok(frame) = reply_frame(id, reply) {
            conn.push(frame);
        }
    }

    /// Answers request `id`: at once if it finishes on its first poll (most steps and
    /// heartbeats do), else in a task whose reply comes back through `replies`.
    fn start(&mut self, handler: Arc<dyn PlaneHandler>, id: u64, body: Vec<u8>, conn: &Conn) {
        let Answer { work, mut reply } = handler.answer(body);
        let is_step = work == Work::Step;
        if is_step && self.running.len() >= MAX_STEPS_PER_LINK {
            let why = format!("this node already runs {MAX_STEPS_PER_LINK} steps for the peer");
            if let Ok(frame) = encode(&Frame::Busy { id, why }) {
                conn.push(frame);
            }
            return;
        }
        let waker = futures_util::task::noop_waker();
        match reply
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&waker))
        {
            std::task::Poll::Ready(r) => self.answer_now(id, r, conn),
            std::task::Poll::Pending => {
                let replies = self.replies.clone();
                let task = async move {
                    let r = reply.await;
                    if let Ok(frame) = reply_frame(id, r) {
                        let _ = replies.send((id, frame)).await;
                    }
                };
                self.answering.insert(id);
                if is_step {
                    self.running.insert(id, self.steps.spawn(task));
                } else {
                    tokio::spawn(task);
                }
            }
        }
    }
}
