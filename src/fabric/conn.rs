//! One open peer connection: what the handle this side's calls share (`open::Open`) and
//! the connection's task have in common ([`Conn`]), and the task, which reads every frame,
//! routes replies to the calls by id, answers the peer's requests through the planes'
//! handlers and writes what is queued ([`drive`]). What the connection
//! is doing is a [`Lifecycle`] (pure, `fabric::lifecycle`); this module only carries out
//! its actions.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::{FutureExt, Sink, SinkExt, StreamExt};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;

use super::budget::{self, Reading, Unwritten};
use super::endpoint::Endpoint;
use super::frame::{Frame, PeerWs, encode, next_incoming};
use super::lifecycle::{Event, Lifecycle, Use};
pub(crate) use super::open::Open;
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
    unwritten: Unwritten,
    pub(crate) pending: Mutex<Pending>,
    life: Mutex<Lifecycle>,
    /// Tells the task that the lifecycle changed from outside it (a call retired it, a
    /// write through it failed).
    changed: Notify,
    /// The node's peer traffic, which this connection adds to.
    traffic: Arc<budget::Traffic>,
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

    pub(crate) fn life(&self) -> Lifecycle {
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
            let Some(frame) = lock(&self.queue).pop_front() else {
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
    async fn write_all(&self) -> io::Result<()> {
        let mut w = self.writer.lock().await;
        self.write_queued(&mut w).await
    }
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
        traffic: endpoint.traffic.clone(),
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
    let mut pace = Pace::new(&conn);
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
        let Some(reading) = pace.reading(&conn, &served) else {
            break;
        };
        let over_budget = conn.unwritten.bytes() > budget::UNWRITTEN_BYTES_MAX;
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
            written = conn.write_all(), if pace.unflushed => match written {
                Ok(()) => pace.unflushed = false,
                Err(_) => break,
            },
            Some((id, frame)) = replied.recv() => {
                served.replied(id, frame, &conn);
                while let Ok((id, frame)) = replied.try_recv() {
                    served.replied(id, frame, &conn);
                }
            }
            Some(()) = futures_util::future::OptionFuture::from(
                silent_ok.then(|| tokio::time::sleep_until(pace.last_heard + DONE_SILENCE)),
            ) => conn.apply(Event::Silence),
            () = served.reap(), if served.has_steps() => {}
            // Frames queued, or a caller's write cut short: flush either way.
            () = conn.queued.notified() => pace.unflushed = true,
            // Over budget and writing nothing: wake to disconnect (see `budget::reading`).
            Some(()) = futures_util::future::OptionFuture::from(
                over_budget.then(|| tokio::time::sleep_until(pace.written_at + budget::STALL_LIMIT)),
            ) => {}
            // Read unless over budget: the replies to this side's calls arrive here too, so
            // a busy peer is refused steps (`Served::start`) rather than left unread; only
            // a peer that does not read what it is sent stops being read.
            frame = next_incoming(&mut frames, &conn.traffic), if reading == Reading::Read => {
                pace.last_heard = tokio::time::Instant::now();
                if !read_batch(frame, &mut frames, &mut served, &conn, &endpoint) {
                    break;
                }
            }
        }
    }
    finish(ended, &conn).await;
}

/// Handles `first` and whatever else has arrived already, before the replies they produce
/// go out together; `false` ends the connection.
fn read_batch(
    first: io::Result<Option<super::frame::Incoming>>,
    frames: &mut futures_util::stream::SplitStream<PeerWs>,
    served: &mut Served,
    conn: &Conn,
    endpoint: &Endpoint,
) -> bool {
    let mut frame = Some(first);
    let mut batch = 0;
    while let Some(f) = frame.take() {
        if !served.handle(f, conn, endpoint) {
            return false;
        }
        batch += 1;
        if batch < READ_BATCH {
            frame = next_incoming(frames, &conn.traffic).now_or_never();
        }
    }
    true
}

/// What the task knows of the connection's pace: when the peer was last heard, when a
/// frame last left the queue, and whether frames may still sit unflushed in the writer.
struct Pace {
    /// A connection this side is done with closes after a silence with nothing to answer,
    /// since a peer that died never says `Done`.
    last_heard: tokio::time::Instant,
    /// Frames written by then, and when the count last moved: a connection over its byte
    /// budget that writes nothing for a while has a peer that does not read.
    written: u64,
    written_at: tokio::time::Instant,
    unflushed: bool,
}

impl Pace {
    fn new(conn: &Conn) -> Pace {
        let now = tokio::time::Instant::now();
        Pace {
            last_heard: now,
            written: conn.unwritten.written(),
            written_at: now,
            unflushed: false,
        }
    }

    /// Whether to read this turn (`None`: disconnect, the peer does not read).
    fn reading(&mut self, conn: &Conn, served: &Served) -> Option<Reading> {
        self.unflushed |= conn.has_queued();
        let now = tokio::time::Instant::now();
        if conn.unwritten.written() != self.written {
            (self.written, self.written_at) = (conn.unwritten.written(), now);
        }
        let unwritten = conn.unwritten.bytes();
        match budget::reading(unwritten, served.answering_others(), now - self.written_at) {
            Reading::Disconnect => {
                tracing::warn!(
                    unwritten,
                    "closing a peer connection: the peer has read nothing for {:?} while {} \
                     bytes wait for it",
                    budget::STALL_LIMIT,
                    unwritten
                );
                None
            }
            r => Some(r),
        }
    }
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
