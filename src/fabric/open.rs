//! The handle of one open peer connection that this side's calls share: their requests go
//! out through it (written through on an idle link, queued for the connection's task on a
//! busy one), and its lifecycle says whether new calls may use it.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::Sink;
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message;

use super::conn::{Conn, Writer};
use super::lifecycle::{Event, Rank};

/// An open connection as this side's calls use it.
pub(crate) struct Open {
    pub(crate) conn: Arc<Conn>,
    pub(crate) next_id: AtomicU64,
    /// The node that dialled it (0: a tool, or a node that did not say).
    pub(crate) dialled_by: u64,
    /// The peer protocol the two ends settled on in the hello.
    pub(crate) protocol: u32,
    /// Dropped with the last handle: this side then tells the peer it is done with it.
    pub(crate) _alive: mpsc::Sender<()>,
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
        let idle = self.conn.pending.lock().len() <= 1; // this call's own entry
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
