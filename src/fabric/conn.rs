//! One open peer connection: the handle this side's calls share ([`Open`]) and the task
//! that reads every frame, routes replies to the calls by id, answers the peer's requests
//! through the planes' handlers and writes what is queued ([`drive`]). What the connection
//! is doing is a [`Lifecycle`] (pure, `fabric::lifecycle`); this module only carries out
//! its actions.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::{FutureExt, Sink, SinkExt, StreamExt};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;

use super::budget::{self, Reading, Unwritten};
use super::endpoint::Endpoint;
use super::frame::{Frame, PeerWs, encode, next_incoming};
use super::lifecycle::{Event, Lifecycle, Rank, Use};
use super::served::Served;

/// How long a connection this side is done with stays open without a frame from the peer
/// and with none of its requests still being answered. A live peer moves to the connection
/// both sides prefer as soon as it exists, and then sends on this one only the replies and
/// cancels of calls it had made here.
const DONE_SILENCE: Duration = Duration::from_secs(3);

/// Frames read in one go before the replies they produced are written.
const READ_BATCH: usize = 64;

/// How long closing a socket may take (a writer stuck on a dead peer is given up on).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

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

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every value here is replaced or edited whole; a poisoned one is still consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

type Writer = futures_util::stream::SplitSink<PeerWs, Message>;

/// What the handle and the connection's task share.
pub(crate) struct Conn {
    /// `None` once the connection ended: the socket is closed with it, not kept open by the
    /// handle a link may still hold.
    writer: tokio::sync::Mutex<Option<Writer>>,
    queue: Mutex<VecDeque<Message>>,
    /// Tells the task that frames wait in the queue.
    queued: Notify,
    /// What the queue holds, in bytes (`fabric::budget`): over the budget, the connection
    /// stops reading.
    unwritten: Unwritten,
    pub(crate) pending: Mutex<Pending>,
    life: Mutex<Lifecycle>,
    /// Tells the task that the lifecycle changed from outside it (a call retired it, a
    /// write through it failed).
    changed: Notify,
}

impl Conn {
    /// Applies `event` to the lifecycle and carries out what needs no socket: queue `Done`
    /// or `Retire`, fail the waiting calls; the task closes the socket.
    pub(crate) fn apply(&self, event: Event) {
        let actions = lock(&self.life).on(event);
        for action in &actions {
            match action {
                super::lifecycle::Action::SendDone => self.push_frame(&Frame::Done),
                super::lifecycle::Action::SendRetire => self.push_frame(&Frame::Retire),
                super::lifecycle::Action::FailPending => lock(&self.pending).clear(),
                super::lifecycle::Action::Close => {}
            }
        }
        if !actions.is_empty() {
            self.queued.notify_one();
            self.changed.notify_one();
        }
    }

    fn life(&self) -> Lifecycle {
        *lock(&self.life)
    }

    fn push_frame(&self, frame: &Frame) {
        if let Ok(frame) = encode(frame) {
            self.push(frame);
        }
    }

    pub(crate) fn push(&self, frame: Message) {
        self.unwritten.queued(frame.len());
        lock(&self.queue).push_back(frame);
    }

    fn has_queued(&self) -> bool {
        !lock(&self.queue).is_empty()
    }

    /// Drops every queued frame (the connection ended).
    fn drop_queued(&self) {
        for frame in lock(&self.queue).drain(..) {
            self.unwritten.left(frame.len(), false);
        }
    }

    /// Writes every queued frame and flushes. A frame leaves the queue only once the sink
    /// has room for it, so a writer cancelled at an await point strands nothing.
    async fn write_queued(&self, w: &mut Option<Writer>) -> io::Result<()> {
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
            let Some(frame) = lock(&self.queue).pop_front() else {
                break;
            };
            self.unwritten.left(frame.len(), true);
            std::pin::Pin::new(&mut *w)
                .start_send(frame)
                .map_err(io::Error::other)?;
        }
        w.flush().await.map_err(io::Error::other)
    }

    /// Takes the writer (after any caller writing through) and writes what is queued.
    async fn write_all(&self) -> io::Result<()> {
        let mut w = self.writer.lock().await;
        self.write_queued(&mut w).await
    }
}

/// An open connection as this side's calls use it.
pub(crate) struct Open {
    pub(crate) conn: Arc<Conn>,
    next_id: AtomicU64,
    /// The node that dialled it (0: a tool, or a node that did not say).
    dialled_by: u64,
    /// Dropped with the last handle: this side then tells the peer it is done with it.
    _alive: mpsc::Sender<()>,
}

impl Open {
    /// Whether new calls may go on it.
    pub(crate) fn usable(&self) -> bool {
        self.conn.life().usable()
    }

    pub(crate) fn peer_left(&self) -> bool {
        self.conn.life().peer_left()
    }

    pub(crate) fn rank(&self) -> Rank {
        Rank {
            dialled_by: self.dialled_by,
            peer_left: self.peer_left(),
        }
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Stops using it for this side's calls: the ones waiting fail at once, new ones go
    /// elsewhere, and the peer is told so (it moves too, and still gets its answers here).
    pub(crate) fn retire(&self) {
        self.conn.apply(Event::CallMissedDeadline);
    }

    fn break_it(&self) {
        self.conn.apply(Event::Broken);
    }

    /// Sends `frame`. On an idle link (no other call waiting) the caller writes and
    /// flushes it itself: no hand-off to another task before it leaves. On a busy one it
    /// is queued for the connection's task, which writes everything queued with one flush.
    pub(crate) async fn send(&self, frame: Message) -> io::Result<()> {
        if !self.usable() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "peer link closed",
            ));
        }
        self.conn.push(frame);
        let idle = lock(&self.conn.pending).len() <= 1; // this call's own entry
        let writer = if idle {
            self.conn.writer.try_lock().ok()
        } else {
            None
        };
        match writer {
            Some(mut w) => {
                // A caller that gives up mid-write may leave frames in the writer, its own or
                // replies the task queued: the task is told to flush them.
                let mut unfinished = FlushLater(Some(&self.conn.queued));
                let written = self.conn.write_queued(&mut w).await;
                unfinished.0 = None;
                match (&written, w.as_mut()) {
                    (Ok(()), Some(w)) => disown_writes(w),
                    _ => self.break_it(),
                }
                written
            }
            None => {
                self.conn.queued.notify_one();
                Ok(())
            }
        }
    }

    /// Queues `frame` for the connection's task (from code that cannot wait).
    pub(crate) fn send_later(&self, frame: Message) {
        self.conn.push(frame);
        self.conn.queued.notify_one();
    }
}

/// Wakes the connection's task to flush, unless disarmed (see [`Open::send`]).
struct FlushLater<'a>(Option<&'a Notify>);

impl Drop for FlushLater<'_> {
    fn drop(&mut self) {
        if let Some(queued) = self.0 {
            queued.notify_one();
        }
    }
}

/// Leaves no task's waker behind as the link's writer. tokio-tungstenite wakes the last
/// writer's task whenever the socket turns readable (its waker proxy wakes readers and
/// writers alike), so a caller that wrote through would be woken, for nothing, by every
/// frame the link receives; with two tasks woken at once tokio also wakes a second worker
/// thread to share them, a futex round trip per forwarded call. A flush of the emptied
/// buffer under a no-op waker takes the caller's place.
fn disown_writes(w: &mut Writer) {
    let waker = futures_util::task::noop_waker();
    // Ready at once (nothing is buffered); anything else is left to the next writer.
    let _ = std::pin::Pin::new(w).poll_flush(&mut std::task::Context::from_waker(&waker));
}

/// Starts using `ws`, whose hello is done: the handle that calls share, and the task that
/// must run for the connection to work (the dialler spawns it; an accepted connection's
/// own task runs it).
pub(crate) fn start(
    ws: PeerWs,
    dialled_by: u64,
    endpoint: Arc<Endpoint>,
) -> (Arc<Open>, impl Future<Output = ()> + Send + 'static) {
    let (writer, frames) = ws.split();
    let (alive, handles_gone) = mpsc::channel(1);
    let conn = Arc::new(Conn {
        writer: tokio::sync::Mutex::new(Some(writer)),
        queue: Mutex::default(),
        queued: Notify::new(),
        unwritten: Unwritten::default(),
        pending: Mutex::default(),
        life: Mutex::default(),
        changed: Notify::new(),
    });
    let open = Arc::new(Open {
        conn: conn.clone(),
        next_id: AtomicU64::new(1),
        dialled_by,
        _alive: alive,
    });
    (open, drive(frames, conn, handles_gone, endpoint))
}

/// Resolves once `rx` says true (never, if the sender is gone).
pub(crate) async fn until_true(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Marks a connection's end however its task ends (cancelled with the accepting
/// connection's task included): the calls still waiting fail at once, later calls see it
/// ended, and it no longer counts as open.
struct Ended<'a> {
    conn: &'a Conn,
    endpoint: &'a Endpoint,
}

impl Drop for Ended<'_> {
    fn drop(&mut self) {
        self.conn.apply(Event::Broken);
        self.conn.drop_queued();
        self.endpoint.connection_closed();
    }
}

/// The task of one open connection: routes replies to this side's calls, answers the
/// peer's requests, writes what is queued, and ends when its lifecycle closes it, the
/// socket fails, the node stops, or the peer stops reading (`fabric::budget`).
async fn drive(
    mut frames: futures_util::stream::SplitStream<PeerWs>,
    conn: Arc<Conn>,
    mut handles_gone: mpsc::Receiver<()>,
    endpoint: Arc<Endpoint>,
) {
    endpoint.connection_opened();
    let ended = Ended {
        conn: &conn,
        endpoint: &endpoint,
    };
    let mut node_closed = endpoint.closed();
    let (replies, mut replied) = mpsc::channel::<(u64, Message)>(256);
    let mut served = Served::new(replies);
    // When the peer last sent a frame: a connection this side is done with closes after a
    // silence with nothing to answer, since a peer that died never says `Done`.
    let mut last_heard = tokio::time::Instant::now();
    // Frames were handed to the writer and may not all have left yet.
    let mut unflushed = false;
    // When a frame last left the queue (and how many had by then): a connection over its
    // byte budget that writes nothing for a while has a peer that does not read.
    let mut progress = (conn.unwritten.written(), tokio::time::Instant::now());
    // The long-lived waits are made once, not at every turn of the loop.
    let node_stops = until_true(&mut node_closed);
    tokio::pin!(node_stops);
    let mut gone = false;
    let handles_gone = async move {
        let _ = handles_gone.recv().await;
    };
    tokio::pin!(handles_gone);
    loop {
        let life = conn.life();
        if life.closed {
            break;
        }
        unflushed |= conn.has_queued();
        let now = tokio::time::Instant::now();
        if conn.unwritten.written() != progress.0 {
            progress = (conn.unwritten.written(), now);
        }
        let unwritten = conn.unwritten.bytes();
        let reading = budget::reading(unwritten, served.answering_others(), now - progress.1);
        if reading == Reading::Disconnect {
            tracing::warn!(
                unwritten,
                "closing a peer connection: the peer has read nothing for {:?} while {} \
                 bytes wait for it",
                budget::STALL_LIMIT,
                unwritten
            );
            break;
        }
        let over_budget = unwritten > budget::UNWRITTEN_BYTES_MAX;
        let silent_ok = life.here != Use::Using && !served.answering_any();
        tokio::select! {
            biased;
            () = &mut node_stops => break,
            () = conn.changed.notified() => {}
            () = &mut handles_gone, if !gone => {
                gone = true;
                conn.apply(Event::HandlesGone);
            }
            // Writing never holds up reading: a peer that waits for its replies to be read
            // before it reads would otherwise stall both sides.
            written = conn.write_all(), if unflushed => match written {
                Ok(()) => unflushed = false,
                Err(_) => break,
            },
            Some((id, frame)) = replied.recv() => {
                served.replied(id, frame, &conn);
                while let Ok((id, frame)) = replied.try_recv() {
                    served.replied(id, frame, &conn);
                }
            }
            Some(()) = futures_util::future::OptionFuture::from(
                silent_ok.then(|| tokio::time::sleep_until(last_heard + DONE_SILENCE)),
            ) => conn.apply(Event::Silence),
            () = served.reap(), if served.has_steps() => {}
            // Frames queued, or a caller's write cut short: flush either way.
            () = conn.queued.notified() => unflushed = true,
            // Over budget and writing nothing: wake to disconnect (see `budget::reading`).
            Some(()) = futures_util::future::OptionFuture::from(
                over_budget.then(|| tokio::time::sleep_until(progress.1 + budget::STALL_LIMIT)),
            ) => {}
            // Read unless over budget: the replies to this side's calls arrive here too, so
            // a busy peer is refused steps (`Served::start`) rather than left unread; only
            // a peer that does not read what it is sent stops being read.
            frame = next_incoming(&mut frames), if reading == Reading::Read => {
                last_heard = tokio::time::Instant::now();
                let mut frame = Some(frame);
                // Whatever else has arrived already is handled before the replies go out,
                // so that they leave together.
                let mut batch = 0;
                while let Some(f) = frame.take() {
                    if !served.handle(f, &conn, &endpoint) {
                        return finish(ended, &conn).await;
                    }
                    batch += 1;
                    if batch < READ_BATCH {
                        frame = next_incoming(&mut frames).now_or_never();
                    }
                }
            }
        }
    }
    finish(ended, &conn).await;
}

/// Ends a connection: fails what still waits on it, then closes the socket (the peer then
/// cancels the steps it runs for this side).
async fn finish(ended: Ended<'_>, conn: &Conn) {
    drop(ended);
    // The writer leaves the connection, so the socket closes when it is dropped (done or
    // given up on) whoever still holds the connection's handle.
    let close = async {
        let writer = conn.writer.lock().await.take();
        if let Some(mut w) = writer {
            let _ = w.close().await;
        }
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
}
