//! The task of one open peer connection ([`drive`]): it reads every frame, routes replies
//! to this side's calls by id, answers the peer's requests through the planes' handlers
//! (`served`), writes what is queued, and ends the connection when its lifecycle, the
//! socket, the node or the byte budget says so. [`start`] makes a connection whose hello is
//! done into the handle calls share and this task.

use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::budget::{self, Reading};
use super::conn::Conn;
use super::endpoint::{Endpoint, until_true};
use super::frame::{Incoming, PeerWs, next_incoming};
use super::lifecycle::{Event, Use};
use super::open::Open;
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

/// How long a stopping node's connection waits for the steps it runs for the peer to
/// finish and their answers to be written. Meanwhile new requests are refused as `Busy`
/// (nothing ran: the peer sends the step elsewhere), so a step is not lost because it
/// arrived as the node left.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Starts using `ws`, whose hello is done: the handle that calls share, and the task that
/// must run for the connection to work (the dialler spawns it; an accepted connection's
/// own task runs it).
pub(crate) fn start(
    ws: PeerWs,
    dialled_by: u64,
    endpoint: Arc<Endpoint>,
    protocol: u32,
) -> (Arc<Open>, impl Future<Output = ()> + Send + 'static) {
    let (writer, frames) = ws.split();
    let (alive, handles_gone) = mpsc::channel(1);
    let conn = Arc::new(Conn::new(writer, endpoint.traffic.clone()));
    let open = Arc::new(Open {
        conn: conn.clone(),
        next_id: AtomicU64::new(1),
        dialled_by,
        protocol,
        _alive: alive,
    });
    (open, drive(frames, conn, handles_gone, endpoint))
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
    // Set when the node stops: the last moment to wait for the steps still running.
    let mut stopping: Option<tokio::time::Instant> = None;
    let handles_gone = async move {
        let _ = handles_gone.recv().await;
    };
    tokio::pin!(handles_gone);
    loop {
        let life = conn.life();
        if life.closed {
            break;
        }
        if stopping.is_some() && !served.running_steps() && !pace.unflushed && !conn.has_queued() {
            break;
        }
        let Some(reading) = pace.reading(&conn, &served) else {
            break;
        };
        let over_budget = conn.unwritten.bytes() > budget::UNWRITTEN_BYTES_MAX;
        let silent_ok = life.here != Use::Using && !served.answering_any();
        tokio::select! {
            biased;
            () = &mut node_stops, if stopping.is_none() => {
                stopping = Some(tokio::time::Instant::now() + STOP_GRACE);
            }
            Some(()) = futures_util::future::OptionFuture::from(
                stopping.map(tokio::time::sleep_until),
            ) => break,
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
    first: io::Result<Option<Incoming>>,
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
