//! What the two sides of one open peer connection share ([`Conn`]): the handle this side's
//! calls use (`open::Open`) and the connection's task (`drive`). It holds the writer, the
//! frames queued for it, the calls waiting for their answers and the connection's
//! [`Lifecycle`] (pure, `fabric::lifecycle`), whose actions it carries out where they need
//! no socket.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::Arc;

use futures_util::{Sink, SinkExt};
use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};
use tokio_tungstenite::tungstenite::Message;

use super::budget::{self, Unwritten};
use super::frame::{Frame, PeerWs, encode};
use super::lifecycle::{Action, Event, Lifecycle};

/// How a call of this side's was answered.
#[derive(Debug)]
pub(crate) enum Answered {
    Reply(Vec<u8>),
    /// The peer does not know the request (nothing was done).
    Unsupported(String),
    /// The peer runs as much as it may for this node (nothing was done).
    Busy(String),
}

pub(crate) type Pending = BTreeMap<u64, oneshot::Sender<Answered>>;

pub(crate) type Writer = futures_util::stream::SplitSink<PeerWs, Message>;

/// What the handle and the connection's task share.
pub(crate) struct Conn {
    /// `None` once the connection ended: the socket is closed with it, not kept open by the
    /// handle a link may still hold.
    pub(crate) writer: tokio::sync::Mutex<Option<Writer>>,
    queue: Mutex<VecDeque<Message>>,
    /// Tells the task that frames wait in the queue.
    pub(crate) queued: Notify,
    /// What the queue holds, in bytes (`fabric::budget`): over the budget, the connection
    /// stops reading.
    pub(crate) unwritten: Unwritten,
    pub(crate) pending: Mutex<Pending>,
    life: Mutex<Lifecycle>,
    /// Tells the task that the lifecycle changed from outside it (a call retired it, a
    /// write through it failed).
    pub(crate) changed: Notify,
    /// The node's peer traffic, which this connection adds to.
    pub(crate) traffic: Arc<budget::Traffic>,
}

impl Conn {
    /// A connection that writes to `writer`, adding to `traffic`, with nothing queued or
    /// waiting yet.
    pub(crate) fn new(writer: Writer, traffic: Arc<budget::Traffic>) -> Conn {
        Conn {
            writer: tokio::sync::Mutex::new(Some(writer)),
            queue: Mutex::default(),
            queued: Notify::new(),
            unwritten: Unwritten::default(),
            pending: Mutex::default(),
            life: Mutex::default(),
            changed: Notify::new(),
            traffic,
        }
    }

    /// Applies `event` to the lifecycle and carries out what needs no socket: queue `Done`
    /// or `Retire`, fail the waiting calls; the task closes the socket.
    pub(crate) fn apply(&self, event: Event) {
        let actions = self.life.lock().on(event);
        for action in &actions {
            match action {
                Action::SendDone => self.push_frame(&Frame::Done),
                Action::SendRetire => self.push_frame(&Frame::Retire),
                Action::FailPending => self.pending.lock().clear(),
                Action::Close => {}
            }
        }
        if !actions.is_empty() {
            self.queued.notify_one();
            self.changed.notify_one();
        }
    }

    pub(crate) fn life(&self) -> Lifecycle {
        *self.life.lock()
    }

    fn push_frame(&self, frame: &Frame) {
        if let Ok(frame) = encode(frame) {
            self.push(frame);
        }
    }

    pub(crate) fn push(&self, frame: Message) {
        self.unwritten.queued(frame.len());
        self.queue.lock().push_back(frame);
    }

    pub(crate) fn has_queued(&self) -> bool {
        !self.queue.lock().is_empty()
    }

    /// Drops every queued frame (the connection ended).
    pub(crate) fn drop_queued(&self) {
        for frame in self.queue.lock().drain(..) {
            self.unwritten.left(frame.len(), false);
        }
    }

    /// Writes every queued frame and flushes. A frame leaves the queue only once the sink
    /// has room for it, so a writer cancelled at an await point strands nothing.
    pub(crate) async fn write_queued(&self, w: &mut Option<Writer>) -> io::Result<()> {
        let Some(w) = w.as_mut() else {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "peer link closed",
            ));
        };
        loop {
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut *w).poll_ready(cx))
                .await
                .map_err(io::Error::other)?;
            let Some(frame) = self.queue.lock().pop_front() else {
                break;
            };
            self.unwritten.left(frame.len(), true);
            self.traffic
                .bytes_out
                .fetch_add(frame.len() as u64, std::sync::atomic::Ordering::Relaxed);
            std::pin::Pin::new(&mut *w)
                .start_send(frame)
                .map_err(io::Error::other)?;
        }
        w.flush().await.map_err(io::Error::other)
    }

    /// Takes the writer (after any caller writing through) and writes what is queued.
    pub(crate) async fn write_all(&self) -> io::Result<()> {
        let mut w = self.writer.lock().await;
        self.write_queued(&mut w).await
    }
}
