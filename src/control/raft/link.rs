//! The peer link: one WebSocket between two nodes (path `/_mpreg/raft` on the client port)
//! carrying many RPCs at once, in both directions. After the handshake the dialling side
//! says hello (its peer protocol, its cluster id, the node it means to reach, and who it
//! is); then either side sends requests, each with an id that its reply carries back in
//! whatever order the replies finish.
//!
//! One connection per node pair: a node that accepts a peer's connection uses it for its
//! own calls to that peer too, instead of dialling a second one. When both dial at the same
//! moment, both keep the connection dialled by the node with the lower id (see
//! [`Open::preferred_over`]); each side sends `Done` on the other connection once none of
//! its calls wait on it, and the connection closes when both have. A connection the peer
//! has left (`Done`) never wins over one it may use, and a node link stops calling on it,
//! so the two sides cannot settle on two different connections.
//!
//! Every call has a deadline. A Raft call that misses it retires the connection: turmoil's
//! TCP (and a real one behind a dead peer) never delivers what was lost, so the only safe
//! recovery is a new connection. This side's calls still waiting fail at once and its next
//! call reconnects; the peer is told (`Retire`), moves to a new connection too, and still
//! gets the answers to what it had sent, so one side's timeout does not cost the other
//! side's calls.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use futures_util::{FutureExt, Sink, SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio_tungstenite::tungstenite::Message;

use super::frame::{
    Caller, Frame, Hello, Incoming, MAX_FRAME_BYTES, MIN_PEER_PROTOCOL, PEER_PROTOCOL, PeerWs,
    RAFT_PATH, encode, next_incoming,
};
use super::hello::{Welcomed, say_hello, welcome};
use super::network::{PeerService, RaftReply, RaftRequest, answer};
use crate::env::Env;
use crate::fabric::ClusterSecret;
use crate::fabric::budget::{self, Reading, Unwritten};
use crate::fabric::handshake::{self, RefusalLog};
use crate::rpc::StepOutcome;
use crate::transport::websocket_config;

/// How long opening a link (TCP, WebSocket handshake, hello) may take, whatever the call's
/// deadline: a peer that is gone or cut off never answers, and a forwarded step should move
/// on to another node well before its request's deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long an accepted link may take to say hello, and then to prove itself.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

type Pending = BTreeMap<u64, oneshot::Sender<RaftReply>>;

fn lock(p: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    // Entries are inserted and removed whole; a poisoned map is still consistent.
    p.lock().unwrap_or_else(PoisonError::into_inner)
}

type Writer = futures_util::stream::SplitSink<PeerWs, Message>;

/// The sending side of an open connection: a queue of frames, written by a caller of an
/// idle link itself or by the connection's task (see [`Open::send`]).
struct Outgoing {
    /// `None` once the connection ended: the socket is closed with it, not kept open by the
    /// handle a link may still hold.
    writer: tokio::sync::Mutex<Option<Writer>>,
    queue: Mutex<VecDeque<Message>>,
    /// Tells the connection's task that frames wait in the queue.
    queued: tokio::sync::Notify,
    /// Set when the connection's task has ended: nothing will be read from it again.
    ended: AtomicBool,
    /// This side sends no new request on it (a call of its own missed its deadline).
    retired: AtomicBool,
    /// The peer retired it: no new request goes on it either.
    peer_retired: AtomicBool,
    /// The peer said `Done` (or retired it): it uses another connection to this node.
    peer_done: AtomicBool,
    /// What the queue holds, in bytes (`fabric::budget`): over the budget, the connection
    /// stops reading.
    unwritten: Unwritten,
}

fn lock_queue(q: &Mutex<VecDeque<Message>>) -> MutexGuard<'_, VecDeque<Message>> {
    // Frames go in and out whole; a poisoned queue is still consistent.
    q.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Outgoing {
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
            let Some(frame) = lock_queue(&self.queue).pop_front() else {
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

    fn has_queued(&self) -> bool {
        !lock_queue(&self.queue).is_empty()
    }

    fn push(&self, frame: Message) {
        self.unwritten.queued(frame.len());
        lock_queue(&self.queue).push_back(frame);
    }

    /// Drops every queued frame (the connection ended).
    fn drop_queued(&self) {
        for frame in lock_queue(&self.queue).drain(..) {
            self.unwritten.left(frame.len(), false);
        }
    }
}

/// What the links of one node share: who the node is (its hellos say so, so that a peer
/// can use the connection for its calls back), how it answers the requests peers send on
/// connections it dialled, and how many connections it has open.
#[derive(Default)]
pub(crate) struct Endpoint {
    /// What both ends of every connection prove they hold (`fabric::handshake`).
    secret: ClusterSecret,
    /// Refused hellos and proofs, logged at most once per interval.
    refusals: RefusalLog,
    /// Speaks the next build's protocol too (tests of rolling upgrades: `super::next`).
    next: bool,
    /// What this node saw of the other build, when `next`.
    pub(crate) upgrade: super::next::UpgradeStats,
    me: OnceLock<Caller>,
    service: OnceLock<Weak<PeerService>>,
    open: AtomicUsize,
    /// Set when the node has stopped: every connection ends and no new one is dialled.
    closed: watch::Sender<bool>,
}

impl Endpoint {
    /// An endpoint whose connections prove `secret`; with `next`, it speaks the next
    /// build's protocol as well (`super::next`).
    pub(crate) fn new(secret: ClusterSecret, next: bool) -> Endpoint {
        Endpoint {
            secret,
            next,
            ..Endpoint::default()
        }
    }

    /// The oldest and newest peer protocols this node speaks.
    pub(crate) fn protocols(&self) -> (u32, u32) {
        (MIN_PEER_PROTOCOL, PEER_PROTOCOL + u32::from(self.next))
    }

    pub(crate) fn secret(&self) -> &ClusterSecret {
        &self.secret
    }

    /// Whether this node speaks the next build's protocol (`super::next`).
    pub(crate) fn speaks_next(&self) -> bool {
        self.next
    }

    /// Sets who this node is; hellos name nobody before (a node learns its id at start).
    pub(crate) fn introduce(&self, me: Caller) {
        let _ = self.me.set(me);
    }

    /// Sets what answers requests on connections this node dialled.
    pub(crate) fn serve_with(&self, service: Weak<PeerService>) {
        let _ = self.service.set(service);
    }

    /// Peer connections open now, dialled or accepted.
    pub(crate) fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Ends every connection of this node, dialled or accepted, and dials no more (the
    /// node has stopped: a peer must not keep sending it requests).
    pub(crate) fn close(&self) {
        self.closed.send_replace(true);
    }

    fn service(&self) -> Weak<PeerService> {
        self.service.get().cloned().unwrap_or_default()
    }
}

/// An open connection: this side's calls write requests (see [`Outgoing`]); its task reads
/// every frame, routing replies to the calls by id and answering the peer's requests.
pub(crate) struct Open {
    out: Arc<Outgoing>,
    pending: Arc<Mutex<Pending>>,
    next_id: AtomicU64,
    /// Set to break the connection (its task then drops the socket and every waiting call).
    broken: watch::Sender<bool>,
    /// The node that dialled it (0: a tool, or a node that did not say).
    dialled_by: u64,
    /// Dropped with the last handle: this side then tells the peer it is done with it.
    _alive: mpsc::Sender<()>,
}

impl Open {
    /// Whether new calls may go on it: not broken, ended or retired by either side.
    fn usable(&self) -> bool {
        !*self.broken.borrow()
            && !self.out.ended.load(Ordering::Acquire)
            && !self.out.retired.load(Ordering::Acquire)
            && !self.out.peer_retired.load(Ordering::Acquire)
    }

    fn break_it(&self) {
        let _ = self.broken.send(true);
    }

    /// Stops using it for this side's calls: the ones waiting fail at once, new ones go
    /// elsewhere, and the peer is told so (it moves too, and still gets its answers here).
    fn retire(&self) {
        if self.out.retired.swap(true, Ordering::AcqRel) {
            return;
        }
        lock(&self.pending).clear();
        if let Ok(frame) = encode(&Frame::Retire) {
            self.send_later(frame);
        }
    }

    /// Whether both nodes should use this connection rather than `other`, an open one
    /// between the same two nodes. The one the lower id dialled wins, a rule both sides
    /// apply alike; of two the same node dialled, the newer (`self`) wins, since a node
    /// dials only when it has no working connection.
    fn preferred_over(&self, other: &Open) -> bool {
        // One the peer has left is never kept over one it may use: the two sides can rank
        // a pair differently when one of them never saw the other connection work (a dial
        // that timed out at the dialler after the peer had accepted it).
        match (self.peer_left(), other.peer_left()) {
            (false, true) => true,
            (true, false) => false,
            _ => self.rank() <= other.rank(),
        }
    }

    fn peer_left(&self) -> bool {
        self.out.peer_done.load(Ordering::Acquire)
    }

    /// A connection whose dialler did not say who it is ranks last (the peer never uses it
    /// for its calls, so it must not win here either).
    fn rank(&self) -> u64 {
        match self.dialled_by {
            0 => u64::MAX,
            id => id,
        }
    }

    /// Sends `frame`. On an idle link (no other call waiting) the caller writes and
    /// flushes it itself: no hand-off to another task before it leaves. On a busy one it
    /// is queued for the connection's task, which writes everything queued with one flush.
    async fn send(&self, frame: Message) -> io::Result<()> {
        if !self.usable() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "peer link closed",
            ));
        }
        self.out.push(frame);
        let idle = lock(&self.pending).len() <= 1; // this call's own entry
        let writer = if idle {
            self.out.writer.try_lock().ok()
        } else {
            None
        };
        match writer {
            Some(mut w) => {
                // A caller that gives up mid-write may leave frames in the writer, its own or
                // replies the task queued: the task is told to flush them.
                let mut unfinished = FlushLater(Some(&self.out.queued));
                let written = self.out.write_queued(&mut w).await;
                unfinished.0 = None;
                match (&written, w.as_mut()) {
                    (Ok(()), Some(w)) => disown_writes(w),
                    _ => self.break_it(),
                }
                written
            }
            None => {
                self.out.queued.notify_one();
                Ok(())
            }
        }
    }

    /// Queues `frame` for the connection's task (from code that cannot wait).
    fn send_later(&self, frame: Message) {
        self.out.push(frame);
        self.out.queued.notify_one();
    }
}

/// Wakes the connection's task to flush, unless disarmed (see [`Open::send`]).
struct FlushLater<'a>(Option<&'a tokio::sync::Notify>);

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
fn start(
    ws: PeerWs,
    dialled_by: u64,
    endpoint: Arc<Endpoint>,
    service: Weak<PeerService>,
) -> (Arc<Open>, impl Future<Output = ()> + Send + 'static) {
    let (writer, frames) = ws.split();
    let (alive, handles_gone) = mpsc::channel(1);
    let (broken, broken_rx) = watch::channel(false);
    let out = Arc::new(Outgoing {
        writer: tokio::sync::Mutex::new(Some(writer)),
        queue: Mutex::default(),
        queued: tokio::sync::Notify::new(),
        ended: AtomicBool::new(false),
        retired: AtomicBool::new(false),
        peer_retired: AtomicBool::new(false),
        peer_done: AtomicBool::new(false),
        unwritten: Unwritten::default(),
    });
    let open = Arc::new(Open {
        out: out.clone(),
        pending: Arc::default(),
        next_id: AtomicU64::new(1),
        broken,
        dialled_by,
        _alive: alive,
    });
    let task = drive(Driven {
        frames,
        out,
        pending: open.pending.clone(),
        broken: broken_rx,
        handles_gone,
        service,
        endpoint,
    });
    (open, task)
}

/// A link to one peer, opened on first use (or adopted from the peer's own dial) and
/// reopened after it broke. Clones share the connection.
#[derive(Clone)]
pub(crate) struct Link(Arc<LinkInner>);

pub(crate) struct LinkInner {
    env: Env,
    addr: String,
    cluster: Option<String>,
    /// The node this link must reach: a different node now at `addr` (one restarted there
    /// with a new id) refuses the hello, so it never answers for the one that is gone.
    node: Option<u64>,
    /// Whether the hello says who this node is, offering the peer the connection for its
    /// calls back (links to a node; not a join's or a tool's).
    introduce: bool,
    endpoint: Arc<Endpoint>,
    /// The connection in use.
    slot: Mutex<Option<Arc<Open>>>,
    /// Held while dialling, so that calls arriving meanwhile wait for that connection.
    dialling: tokio::sync::Mutex<()>,
}

impl std::ops::Deref for Link {
    type Target = LinkInner;
    fn deref(&self) -> &LinkInner {
        &self.0
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("peer {what} timed out"))
}

fn lock_slot(s: &Mutex<Option<Arc<Open>>>) -> MutexGuard<'_, Option<Arc<Open>>> {
    // One handle, replaced whole; a poisoned slot is still consistent.
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How a new link introduces itself and what it shares with the node's other links.
pub(crate) struct LinkTo {
    pub(crate) cluster: Option<String>,
    pub(crate) node: Option<u64>,
    pub(crate) introduce: bool,
    pub(crate) endpoint: Arc<Endpoint>,
}

impl Link {
    pub(crate) fn new(env: Env, addr: String, to: LinkTo) -> Link {
        Link(Arc::new(LinkInner {
            env,
            addr,
            cluster: to.cluster,
            node: to.node,
            introduce: to.introduce,
            endpoint: to.endpoint,
            slot: Mutex::default(),
            dialling: tokio::sync::Mutex::default(),
        }))
    }

    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// One RPC within `ttl` (connecting first if needed, within the same deadline). A
    /// missed deadline breaks the link.
    pub(crate) async fn call(&self, req: RaftRequest, ttl: Duration) -> io::Result<RaftReply> {
        self.exchange(Outbound::Raft(req), ttl, true)
            .await
            .map_err(|f| f.error)
    }

    /// A forwarded step: says whether the request left, and a missed deadline does not
    /// break the link (the step was merely slow; Raft's own calls and the heartbeats judge
    /// the link). Dropping the future before the answer cancels the step on the peer.
    pub(crate) async fn call_step(
        &self,
        req: impl Into<Outbound>,
        ttl: Duration,
    ) -> Result<RaftReply, CallFailure> {
        self.exchange(req.into(), ttl, false).await
    }

    /// Whether this node speaks the next build's protocol (`super::next`).
    pub(crate) fn speaks_next(&self) -> bool {
        self.endpoint.next
    }

    /// What this node saw of the other build (`super::next`).
    pub(crate) fn upgrade_stats(&self) -> &super::next::UpgradeStats {
        &self.endpoint.upgrade
    }

    async fn exchange(
        &self,
        req: Outbound,
        ttl: Duration,
        break_on_timeout: bool,
    ) -> Result<RaftReply, CallFailure> {
        let not_sent = |error| CallFailure { sent: false, error };
        let deadline = tokio::time::Instant::now() + ttl;
        let connect_by = deadline.min(tokio::time::Instant::now() + CONNECT_TIMEOUT);
        let open = tokio::time::timeout_at(connect_by, self.connected())
            .await
            .map_err(|_| not_sent(timed_out("connect")))?
            .map_err(not_sent)?;
        let id = open.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = match req {
            Outbound::Raft(req) => encode(&Frame::Request { id, req }),
            Outbound::Next(req) => encode(&super::next::NextFrame::Request { id, req }),
        }
        .map_err(not_sent)?;
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = lock(&open.pending);
            if pending.len() >= budget::MAX_PENDING_CALLS {
                return Err(not_sent(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("{} calls already wait on this peer link", pending.len()),
                )));
            }
            pending.insert(id, tx);
        }
        let mut call = InFlight {
            open: &open,
            id,
            sent: false,
            answered: false,
        };
        let failure = match tokio::time::timeout_at(deadline, open.send(frame)).await {
            Ok(Ok(())) => {
                call.sent = true;
                match tokio::time::timeout_at(deadline, rx).await {
                    Ok(Ok(reply)) => {
                        call.answered = true;
                        return Ok(reply);
                    }
                    Ok(Err(_)) => {
                        io::Error::new(io::ErrorKind::ConnectionAborted, "peer link broke")
                    }
                    Err(_) => timed_out("rpc"),
                }
            }
            Ok(Err(e)) => e,
            Err(_) => timed_out("send"),
        };
        if break_on_timeout {
            // Whatever was lost on this connection will never arrive: start afresh.
            self.retire(&open);
        }
        Err(CallFailure {
            sent: call.sent,
            error: failure,
        })
    }

    /// Retires the connection in use (if any); the next call reconnects. For callers that
    /// judge the link dead by their own rule (the heartbeats, after several misses).
    pub(crate) async fn reset(&self) {
        if let Some(open) = lock_slot(&self.slot).take() {
            open.retire();
        }
    }

    /// Retires `open` and stops using it here.
    fn retire(&self, open: &Arc<Open>) {
        open.retire();
        let mut slot = lock_slot(&self.slot);
        if slot.as_ref().is_some_and(|o| Arc::ptr_eq(o, open)) {
            *slot = None;
        }
    }

    /// The connection in use, unless there is none, it broke, or (on a link to a node)
    /// the peer left it for another: the next call then dials, and the peer adopts that
    /// one, so two nodes never stay on two different connections.
    fn current(&self) -> Option<Arc<Open>> {
        lock_slot(&self.slot)
            .as_ref()
            .filter(|o| o.usable() && !(self.introduce && o.peer_left()))
            .cloned()
    }

    /// Puts `open` in use unless the connection in use is preferred to it, and returns
    /// the one in use. The other is left to the calls still waiting on it; it closes once
    /// neither side waits for anything on it.
    pub(crate) fn install(&self, open: Arc<Open>) -> Arc<Open> {
        let mut slot = lock_slot(&self.slot);
        if let Some(current) = slot.as_ref().filter(|o| o.usable())
            && !open.preferred_over(current)
        {
            return current.clone();
        }
        *slot = Some(open.clone());
        open
    }

    /// The connection in use, dialling one (and saying hello) if there is none.
    async fn connected(&self) -> io::Result<Arc<Open>> {
        if let Some(open) = self.current() {
            return Ok(open);
        }
        let _dialling = self.dialling.lock().await;
        // Another call dialled meanwhile, or the peer dialled this node and its connection
        // was adopted.
        if let Some(open) = self.current() {
            return Ok(open);
        }
        let open = self.dial().await?;
        Ok(self.install(open))
    }

    async fn dial(&self) -> io::Result<Arc<Open>> {
        if *self.endpoint.closed.borrow() {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "this node has stopped",
            ));
        }
        let tcp = self.env.net.connect(&self.addr).await?;
        let url = format!("ws://{}{RAFT_PATH}", self.addr);
        let config = websocket_config(MAX_FRAME_BYTES);
        let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(config))
            .await
            .map_err(io::Error::other)?;
        let from = self
            .introduce
            .then(|| self.endpoint.me.get().cloned())
            .flatten();
        let dialled_by = from.as_ref().map_or(0, |me| me.id);
        let (min_protocol, protocol) = self.endpoint.protocols();
        let hello = Hello {
            protocol,
            min_protocol,
            cluster: self.cluster.clone(),
            node: self.node,
            from,
            nonce: handshake::nonce(&self.env.rng),
        };
        let protocol = say_hello(&mut ws, &hello, &self.endpoint.secret, &self.addr).await?;
        tracing::debug!(addr = %self.addr, protocol, "peer link open");
        let service = self.endpoint.service();
        let (open, task) = start(ws, dialled_by, self.endpoint.clone(), service);
        tokio::spawn(task);
        Ok(open)
    }
}

/// A request as it leaves: in this build's words, or (a node speaking the next build's
/// protocol) in the next build's.
pub(crate) enum Outbound {
    Raft(RaftRequest),
    Next(super::next::NextRequest),
}

impl From<RaftRequest> for Outbound {
    fn from(req: RaftRequest) -> Outbound {
        Outbound::Raft(req)
    }
}

/// Why a call has no answer, and whether its request left.
#[derive(Debug)]
pub(crate) struct CallFailure {
    /// The request was handed to the link: the peer may have received it.
    pub(crate) sent: bool,
    pub(crate) error: io::Error,
}

/// A call waiting for its answer. However the wait ends (answer, deadline, the caller
/// dropping it), its entry leaves the pending map; a request that left unanswered is
/// cancelled on the peer.
struct InFlight<'o> {
    open: &'o Open,
    id: u64,
    sent: bool,
    answered: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        lock(&self.open.pending).remove(&self.id);
        if self.sent
            && !self.answered
            && let Ok(frame) = encode(&Frame::Cancel { id: self.id })
        {
            // Best effort: a closed link drops it (and has already cancelled everything on
            // the peer's side).
            self.open.send_later(frame);
        }
    }
}

/// Resolves once `rx` says true: the link is broken, or the node closed its links (never,
/// if the sender is gone).
async fn until_broken(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// What a connection's task works with.
struct Driven {
    frames: futures_util::stream::SplitStream<PeerWs>,
    out: Arc<Outgoing>,
    pending: Arc<Mutex<Pending>>,
    broken: watch::Receiver<bool>,
    handles_gone: mpsc::Receiver<()>,
    service: Weak<PeerService>,
    endpoint: Arc<Endpoint>,
}

/// Marks a connection's end however its task ends (cancelled with the accepting
/// connection's task included): the calls still waiting fail at once (their senders are
/// dropped), later calls see it ended, and it no longer counts as open.
struct Ended<'a> {
    out: &'a Outgoing,
    pending: &'a Mutex<Pending>,
    endpoint: &'a Endpoint,
}

impl Drop for Ended<'_> {
    fn drop(&mut self) {
        self.out.ended.store(true, Ordering::Release);
        lock(self.pending).clear();
        self.out.drop_queued();
        self.endpoint.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The task of one open connection: routes replies to this side's calls, answers the
/// peer's requests, writes what is queued, and ends when the connection breaks or closes,
/// or once neither side waits for anything on it (both said `Done`).
async fn drive(d: Driven) {
    let Driven {
        mut frames,
        out,
        pending,
        mut broken,
        mut handles_gone,
        service,
        endpoint,
    } = d;
    endpoint.open.fetch_add(1, Ordering::Relaxed);
    let ended = Ended {
        out: &out,
        pending: &pending,
        endpoint: &endpoint,
    };
    let mut closed = endpoint.closed.subscribe();
    let (replies, mut replied) = mpsc::channel::<(u64, Message)>(256);
    let mut served = Served {
        service,
        replies,
        steps: JoinSet::new(),
        running: BTreeMap::new(),
        answering: BTreeSet::new(),
    };
    // Whether this side, and the peer, are done with the connection.
    let (mut done_here, mut done_there) = (false, false);
    // When the peer last sent a frame: a connection this side is done with closes after
    // a silence with nothing to answer, since a peer that died (or a previous boot of it)
    // never says `Done`.
    let mut last_heard = tokio::time::Instant::now();
    // Frames were handed to the writer and may not all have left yet.
    let mut unflushed = false;
    // The long-lived waits are made once, not at every turn of the loop (each turn would
    // register and drop their wakers again, a cost on every frame).
    let ends = async {
        tokio::select! {
            () = until_broken(&mut broken) => {}
            () = until_broken(&mut closed) => {}
        }
    };
    tokio::pin!(ends);
    let handles_gone = async move {
        let _ = handles_gone.recv().await;
    };
    tokio::pin!(handles_gone);
    // When a frame last left the queue (and how many had by then): a connection over its
    // byte budget that writes nothing for a while has a peer that does not read.
    let mut progress = (out.unwritten.written(), tokio::time::Instant::now());
    while !(done_here && done_there) {
        // A retired connection: its `Retire` went out with the queue.
        done_here |= out.retired.load(Ordering::Acquire);
        unflushed |= out.has_queued();
        let now = tokio::time::Instant::now();
        if out.unwritten.written() != progress.0 {
            progress = (out.unwritten.written(), now);
        }
        let unwritten = out.unwritten.bytes();
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
        tokio::select! {
            biased;
            () = &mut ends => break,
            // Polled only until it resolves: resolving sets `done_here`.
            () = &mut handles_gone, if !done_here => {
                done_here = true;
                if let Ok(frame) = encode(&Frame::Done) {
                    out.push(frame);
                }
            }
            // Writing never holds up reading: a peer that waits for its replies to be read
            // before it reads would otherwise stall both sides.
            written = out.write_all(), if unflushed => match written {
                Ok(()) => unflushed = false,
                Err(_) => break,
            },
            Some((id, frame)) = replied.recv() => {
                served.replied(id, frame, &out);
                while let Ok((id, frame)) = replied.try_recv() {
                    served.replied(id, frame, &out);
                }
            }
            Some(()) = futures_util::future::OptionFuture::from(
                (done_here && served.answering.is_empty())
                    .then(|| tokio::time::sleep_until(last_heard + DONE_SILENCE)),
            ) => break,
            Some(_) = served.steps.join_next(), if !served.steps.is_empty() => {}
            // Frames queued, or a caller's write cut short: flush either way.
            () = out.queued.notified() => unflushed = true,
            // Over budget and writing nothing: wake to disconnect (see `budget::reading`).
            Some(()) = futures_util::future::OptionFuture::from(
                over_budget.then(|| tokio::time::sleep_until(progress.1 + budget::STALL_LIMIT)),
            ) => {}
            // Read unless over budget: the replies to this side's calls arrive here too, so
            // a busy peer is refused steps (`Served::start`) rather than left unread; only
            // a peer that does not read what it is sent stops being read.
            frame = next_incoming(&mut frames, endpoint.next), if reading == Reading::Read => {
                last_heard = tokio::time::Instant::now();
                let mut frame = Some(frame);
                // Whatever else has arrived already is handled before the replies go out,
                // so that they leave together.
                let mut batch = 0;
                while let Some(f) = frame.take() {
                    match served.handle(f, &pending, &out, &endpoint) {
                        Handled::Continue => {}
                        Handled::PeerDone => {
                            done_there = true;
                            out.peer_done.store(true, Ordering::Release);
                        }
                        Handled::PeerRetired => {
                            done_there = true;
                            out.peer_done.store(true, Ordering::Release);
                            out.peer_retired.store(true, Ordering::Release);
                        }
                        Handled::End => return finish(ended, &out).await,
                    }
                    batch += 1;
                    if batch < READ_BATCH {
                        frame = next_incoming(&mut frames, endpoint.next).now_or_never();
                    }
                }
            }
        }
    }
    finish(ended, &out).await;
}

/// Ends a connection: fails what still waits on it, then closes the socket (the peer then
/// cancels the steps it runs for this side). A writer stuck on a dead peer is given up on.
async fn finish(ended: Ended<'_>, out: &Outgoing) {
    drop(ended);
    // The writer leaves the connection, so the socket closes when it is dropped (done or
    // given up on) whoever still holds the connection's handle.
    let close = async {
        let writer = out.writer.lock().await.take();
        if let Some(mut w) = writer {
            let _ = w.close().await;
        }
    };
    let _ = tokio::time::timeout(CONNECT_TIMEOUT, close).await;
}

/// How long a connection this side is done with stays open without a frame from the peer
/// and with none of its requests still being answered. A live peer moves to the connection
/// both sides prefer as soon as it exists, and then sends on this one only the replies and
/// cancels of calls it had made here.
const DONE_SILENCE: Duration = Duration::from_secs(3);

/// Forwarded steps one connection may run at once for the peer; beyond it a step is
/// refused as `NotHere` (nothing ran: the entry node tries another node, or fails the
/// request with 1004). The connection is never left unread, since the replies to this
/// side's own calls travel on it too.
const MAX_STEPS_PER_LINK: usize = 4096;

/// Serves a connection a peer dialled: checks its hello and its proof that it holds the
/// cluster secret, then runs it as any other; when the hello says which node dialled, this
/// node uses the connection for its calls to that node too. Ends when the peer disconnects
/// or misbehaves; the forwarded steps still running then are cancelled (nobody waits for
/// them). `remote` is the peer's socket address, for the log.
pub async fn serve_peer(service: Arc<PeerService>, mut ws: PeerWs, remote: SocketAddr) {
    let endpoint = service.network.endpoint().clone();
    let mut closed = endpoint.closed.subscribe();
    let admitted = tokio::select! {
        biased;
        () = until_broken(&mut closed) => return,
        admitted = tokio::time::timeout(HELLO_TIMEOUT, welcome(&service, &endpoint, &mut ws)) => {
            admitted
        }
    };
    let from = match admitted {
        Ok(Ok(Welcomed { from, protocol })) => {
            tracing::debug!(%remote, protocol, "peer link accepted");
            from
        }
        Ok(Err(why)) => {
            endpoint
                .refusals
                .refused(service.env.clock.now(), &remote.to_string(), &why);
            return;
        }
        Err(_) => {
            let why = "no hello and proof within the deadline";
            endpoint
                .refusals
                .refused(service.env.clock.now(), &remote.to_string(), why);
            return;
        }
    };
    let dialled_by = from.as_ref().map_or(0, |c| c.id);
    let (open, task) = start(ws, dialled_by, endpoint, Arc::downgrade(&service));
    if let Some(caller) = from.filter(|c| c.id != service.id) {
        service
            .network
            .link_to(caller.id, &caller.addr)
            .install(open);
    } else {
        drop(open);
    }
    task.await;
}

/// Frames read in one go before the replies they produced are written.
const READ_BATCH: usize = 64;

/// What one frame means for the connection.
enum Handled {
    Continue,
    /// The peer is done with the connection.
    PeerDone,
    /// The peer retired the connection: this side moves off it too.
    PeerRetired,
    /// The connection ends (closed, unreadable, or a frame no peer sends now).
    End,
}

/// The serving side of one connection.
struct Served {
    /// This node's peer service (gone once the node is: the connection then ends).
    service: Weak<PeerService>,
    /// Where spawned requests send their replies.
    replies: mpsc::Sender<(u64, Message)>,
    /// Forwarded steps, by request id, so that a cancel can stop one; dropping the set
    /// when the connection ends cancels the rest.
    steps: JoinSet<()>,
    running: BTreeMap<u64, AbortHandle>,
    /// Requests being answered in a task (steps and others): the peer waits for them.
    answering: BTreeSet<u64>,
}

impl Served {
    /// Requests being answered in tasks, forwarded steps aside.
    fn answering_others(&self) -> usize {
        self.answering.len().saturating_sub(self.running.len())
    }

    fn replied(&mut self, id: u64, frame: Message, out: &Outgoing) {
        self.running.remove(&id);
        self.answering.remove(&id);
        out.push(frame);
    }

    fn handle(
        &mut self,
        frame: io::Result<Option<Incoming>>,
        pending: &Mutex<Pending>,
        out: &Outgoing,
        endpoint: &Endpoint,
    ) -> Handled {
        let frame = match frame {
            Ok(Some(Incoming::Frame(f))) => f,
            Ok(Some(Incoming::Unknown { id, why })) => {
                // A newer build's request: say so, and keep the connection.
                let why = format!("this node does not know the request ({why})");
                if let Ok(frame) = encode(&Frame::Unsupported { id, why }) {
                    out.push(frame);
                }
                return Handled::Continue;
            }
            Ok(Some(Incoming::Next { id, req })) => {
                return match super::next::as_this_build(req, &endpoint.upgrade) {
                    super::next::Served::As(req) => self.request(id, req, out),
                    super::next::Served::Answered(reply) => {
                        if let Ok(frame) = encode(&Frame::Reply { id, reply }) {
                            out.push(frame);
                        }
                        Handled::Continue
                    }
                };
            }
            Ok(None) | Err(_) => return Handled::End,
        };
        match frame {
            Frame::Reply { id, reply } => {
                if let Some(waiter) = lock(pending).remove(&id) {
                    let _ = waiter.send(reply);
                }
                Handled::Continue
            }
            Frame::Unsupported { id, why } => {
                if let Some(waiter) = lock(pending).remove(&id) {
                    let _ = waiter.send(RaftReply::Unsupported(why));
                }
                Handled::Continue
            }
            Frame::Request { id, req } => self.request(id, req, out),
            Frame::Cancel { id } => {
                if let Some(step) = self.running.remove(&id) {
                    step.abort();
                    self.answering.remove(&id);
                }
                Handled::Continue
            }
            Frame::Done => Handled::PeerDone,
            Frame::Retire => Handled::PeerRetired,
            // A second hello or welcome: not a peer we know.
            Frame::Hello(_) | Frame::Welcome(_) | Frame::Challenge { .. } | Frame::Proof(_) => {
                Handled::End
            }
        }
    }

    fn request(&mut self, id: u64, req: RaftRequest, out: &Outgoing) -> Handled {
        match self.service.upgrade() {
            Some(service) => {
                self.start(service, id, req, out);
                Handled::Continue
            }
            // This node is gone (or a tool, which serves nothing).
            None => Handled::End,
        }
    }

    /// Answers request `id`: at once if it finishes on its first poll (most steps and
    /// heartbeats do), else in a task whose reply comes back through `replies`.
    fn start(&mut self, service: Arc<PeerService>, id: u64, req: RaftRequest, out: &Outgoing) {
        let is_step = matches!(req, RaftRequest::Step(_));
        if is_step && self.running.len() >= MAX_STEPS_PER_LINK {
            let busy = StepOutcome::NotHere(format!(
                "node {:016x} already runs {MAX_STEPS_PER_LINK} steps for this peer",
                service.id
            ));
            if let Ok(frame) = encode(&Frame::Reply {
                id,
                reply: RaftReply::Step(busy),
            }) {
                out.push(frame);
            }
            return;
        }
        let mut reply = Box::pin(async move { answer(&service, req).await });
        let waker = futures_util::task::noop_waker();
        match reply
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&waker))
        {
            std::task::Poll::Ready(reply) => {
                if let Ok(frame) = encode(&Frame::Reply { id, reply }) {
                    out.push(frame);
                }
            }
            std::task::Poll::Pending => {
                let replies = self.replies.clone();
                let task = async move {
                    let reply = reply.await;
                    if let Ok(frame) = encode(&Frame::Reply { id, reply }) {
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
