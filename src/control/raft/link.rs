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
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::network::{PeerService, RaftReply, RaftRequest, answer};
use crate::env::{BoxStream, Env};
use crate::fabric::budget::{self, Reading, Unwritten};
use crate::fabric::handshake::{self, Nonce, Proof, RefusalLog, Side};
use crate::fabric::{ClusterSecret, codec};
use crate::rpc::StepOutcome;
use crate::transport::websocket_config;

/// Largest frame on a peer link (snapshots travel in one).
pub(crate) const MAX_FRAME_BYTES: usize = 64 << 20;

/// How long opening a link (TCP, WebSocket handshake, hello) may take, whatever the call's
/// deadline: a peer that is gone or cut off never answers, and a forwarded step should move
/// on to another node well before its request's deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The path a peer's WebSocket handshake asks for; it marks the connection as Raft's.
pub const RAFT_PATH: &str = "/_mpreg/raft";

pub(crate) type PeerWs = WebSocketStream<BoxStream>;

/// The peer protocol this build speaks; bump it whenever a frame, request or reply changes
/// its encoding. bincode is not self-describing, so nodes of two builds that disagree would
/// otherwise fail mid-conversation; the hello lets the serving node refuse at once, saying
/// why. It stays `Frame`'s first variant with the version as its first field, so that any
/// later build can still read the version when the rest of the frame has changed.
pub const PEER_PROTOCOL: u32 = 4;

/// How long an accepted link may take to say hello, and then to prove itself.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest hello or proof frame read before a peer has proved itself: a hello is a
/// cluster id, two addresses and a nonce, so anything bigger is not one.
const MAX_HELLO_BYTES: usize = 4096;

/// A node introducing itself in its hello: its Raft id and the address its peers know it
/// by, so that the node it dialled can use the connection as its own link back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub id: u64,
    pub addr: String,
}

/// The dialler's first frame: its peer protocol ([`PEER_PROTOCOL`]), its cluster id
/// (`None`: a tool, not a node), the node it means to reach (`None`: whichever node is at
/// the address), who it is (`None`: a tool, or a node that wants no calls back on this
/// connection, such as a join), and its fresh nonce for the challenge-response
/// (`fabric::handshake`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    pub cluster: Option<String>,
    pub node: Option<u64>,
    pub from: Option<Caller>,
    pub nonce: Nonce,
}

/// What travels on a link. Before the dialler has proved itself the acceptor reads only
/// `Hello` and then `Proof`; anything else closes the connection.
#[derive(Debug, Serialize, Deserialize)]
pub enum Frame {
    Hello(Hello),
    /// The answer to `Hello`: accepted, or why not.
    Welcome(Result<(), String>),
    /// The acceptor's answer to a hello of this protocol: its nonce, and its proof that it
    /// holds the cluster secret.
    Challenge {
        nonce: Nonce,
        proof: Proof,
    },
    /// The dialler's proof that it holds the cluster secret.
    Proof(Proof),
    Request {
        id: u64,
        req: RaftRequest,
    },
    Reply {
        id: u64,
        reply: RaftReply,
    },
    /// The sender no longer waits for its request `id`: a forwarded step stops running.
    Cancel {
        id: u64,
    },
    /// The sender waits for nothing more on this connection and will send no request on
    /// it (it talks to this peer on another one).
    Done,
    /// As `Done`, because a call of the sender's missed its deadline here: the receiver
    /// sends no new request on it either (both move to a new connection), but still gets
    /// answers to the ones it sent.
    Retire,
}

fn encode<T: Serialize>(value: &T) -> io::Result<Message> {
    codec::encode(value)
        .map(Message::binary)
        .map_err(io::Error::other)
}

/// Decodes `bytes` of at most `max` bytes, every claimed length bounded by the frame
/// (`fabric::codec`).
fn decode<T: DeserializeOwned>(bytes: &[u8], max: usize) -> io::Result<T> {
    codec::decode(bytes, max).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// A peer frame as bytes (tests and tools that speak the peer protocol by hand).
pub fn encode_frame(frame: &Frame) -> io::Result<Vec<u8>> {
    codec::encode(frame).map_err(io::Error::other)
}

/// The frame in `bytes`, decoded as a node decodes it.
pub fn decode_frame(bytes: &[u8]) -> io::Result<Frame> {
    decode(bytes, MAX_FRAME_BYTES)
}

/// The next binary frame, decoded; `None` when the peer closed.
async fn next_frame<S>(ws: &mut S) -> io::Result<Option<Frame>>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    next_binary(ws)
        .await?
        .map(|b| decode(&b, MAX_FRAME_BYTES))
        .transpose()
}

/// The next binary frame's bytes; `None` when the peer closed.
async fn next_binary<S>(ws: &mut S) -> io::Result<Option<tokio_tungstenite::tungstenite::Bytes>>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    while let Some(msg) = ws.next().await {
        match msg.map_err(io::Error::other)? {
            Message::Binary(b) => return Ok(Some(b)),
            Message::Close(_) => return Ok(None),
            _ => {}
        }
    }
    Ok(None)
}

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
    me: OnceLock<Caller>,
    service: OnceLock<Weak<PeerService>>,
    open: AtomicUsize,
    /// Set when the node has stopped: every connection ends and no new one is dialled.
    closed: watch::Sender<bool>,
}

impl Endpoint {
    /// An endpoint whose connections prove `secret`.
    pub(crate) fn with_secret(secret: ClusterSecret) -> Endpoint {
        Endpoint {
            secret,
            ..Endpoint::default()
        }
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
        self.exchange(req, ttl, true).await.map_err(|f| f.error)
    }

    /// A forwarded step: says whether the request left, and a missed deadline does not
    /// break the link (the step was merely slow; Raft's own calls and the heartbeats judge
    /// the link). Dropping the future before the answer cancels the step on the peer.
    pub(crate) async fn call_step(
        &self,
        req: RaftRequest,
        ttl: Duration,
    ) -> Result<RaftReply, CallFailure> {
        self.exchange(req, ttl, false).await
    }

    async fn exchange(
        &self,
        req: RaftRequest,
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
        let frame = encode(&Frame::Request { id, req }).map_err(not_sent)?;
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
        let hello = Hello {
            protocol: PEER_PROTOCOL,
            cluster: self.cluster.clone(),
            node: self.node,
            from,
            nonce: handshake::nonce(&self.env.rng),
        };
        say_hello(&mut ws, &hello, &self.endpoint.secret, &self.addr).await?;
        let service = self.endpoint.service();
        let (open, task) = start(ws, dialled_by, self.endpoint.clone(), service);
        tokio::spawn(task);
        Ok(open)
    }
}

/// The dialler's half of the hello (`fabric::handshake`): sends `hello`, checks that the
/// node at `addr` proves it holds `secret`, proves the same, and waits to be welcomed.
async fn say_hello(
    ws: &mut PeerWs,
    hello: &Hello,
    secret: &ClusterSecret,
    addr: &str,
) -> io::Result<()> {
    let denied = |why: String| io::Error::new(io::ErrorKind::PermissionDenied, why);
    let bytes = encode_frame(&Frame::Hello(hello.clone()))?;
    ws.send(Message::binary(bytes.clone()))
        .await
        .map_err(io::Error::other)?;
    match next_frame(ws).await {
        Ok(Some(Frame::Challenge { nonce, proof })) => {
            if !handshake::verify(secret, Side::Acceptor, &bytes, &nonce, &proof) {
                return Err(denied(format!(
                    "the node at {addr} and this process do not hold the same cluster \
                     secret (do both read the same --cluster-secret-file?)"
                )));
            }
            let mine = handshake::prove(secret, Side::Dialler, &bytes, &nonce);
            ws.send(encode(&Frame::Proof(mine))?)
                .await
                .map_err(io::Error::other)?;
        }
        Ok(Some(Frame::Welcome(Err(why)))) => return Err(denied(why)),
        other => return Err(unanswered(other)),
    }
    match next_frame(ws).await {
        Ok(Some(Frame::Welcome(Ok(())))) => Ok(()),
        Ok(Some(Frame::Welcome(Err(why)))) => Err(denied(why)),
        other => Err(unanswered(other)),
    }
}

/// A hello the peer did not answer as this build expects: a build that cannot read it
/// drops the connection without a word.
fn unanswered(got: io::Result<Option<Frame>>) -> io::Error {
    let what = match got {
        Err(e) => e.to_string(),
        Ok(None) => "it closed the link".to_owned(),
        Ok(Some(_)) => "it sent another frame".to_owned(),
    };
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "the peer did not answer the hello ({what}): is it an mpreg node of a build \
             speaking another peer protocol?"
        ),
    )
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
            frame = next_frame(&mut frames), if reading == Reading::Read => {
                last_heard = tokio::time::Instant::now();
                let mut frame = Some(frame);
                // Whatever else has arrived already is handled before the replies go out,
                // so that they leave together.
                let mut batch = 0;
                while let Some(f) = frame.take() {
                    match served.handle(f, &pending, &out) {
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
                        frame = next_frame(&mut frames).now_or_never();
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
        Ok(Ok(from)) => from,
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

/// The acceptor's half of the hello (`fabric::handshake`): reads the hello (nothing else),
/// answers with this node's nonce and proof, reads the dialler's proof (nothing else), and
/// welcomes it if the proof holds and the hello is for this cluster and node. Returns who
/// dialled (when it said), or why it was refused; a refused dialler is told why, except
/// that a failed proof is answered with no detail.
async fn welcome(
    service: &PeerService,
    endpoint: &Endpoint,
    ws: &mut PeerWs,
) -> Result<Option<Caller>, String> {
    let hello_bytes = next_small_frame(ws).await?;
    let hello = match parse_hello(&hello_bytes) {
        Some(Ok(hello)) => hello,
        Some(Err(why)) => return Err(refuse(ws, why).await),
        None => return Err("the first frame was not a hello".into()),
    };
    let nonce = handshake::nonce(&service.env.rng);
    let proof = handshake::prove(&endpoint.secret, Side::Acceptor, &hello_bytes, &nonce);
    send(ws, &Frame::Challenge { nonce, proof }).await?;
    let answer = next_small_frame(ws).await?;
    let proved = match decode::<Frame>(&answer, MAX_HELLO_BYTES) {
        Ok(Frame::Proof(p)) => {
            handshake::verify(&endpoint.secret, Side::Dialler, &hello_bytes, &nonce, &p)
        }
        _ => return Err("the frame after the hello was not a proof".into()),
    };
    if !proved {
        let why = "the caller did not prove it holds the cluster secret";
        return Err(refuse(ws, why.into()).await);
    }
    match admit(&hello, &service.cluster_id, service.id) {
        Ok(from) => {
            send(ws, &Frame::Welcome(Ok(()))).await?;
            Ok(from)
        }
        Err(why) => Err(refuse(ws, why).await),
    }
}

/// The next frame of a peer not yet admitted: at most [`MAX_HELLO_BYTES`].
async fn next_small_frame(
    ws: &mut PeerWs,
) -> Result<tokio_tungstenite::tungstenite::Bytes, String> {
    match next_binary(ws).await {
        Ok(Some(b)) if b.len() <= MAX_HELLO_BYTES => Ok(b),
        Ok(Some(b)) => Err(format!("a {}-byte frame before the proof", b.len())),
        Ok(None) => Err("closed during the hello".into()),
        Err(e) => Err(format!("unreadable during the hello: {e}")),
    }
}

async fn send(ws: &mut PeerWs, frame: &Frame) -> Result<(), String> {
    let frame = encode(frame).map_err(|e| e.to_string())?;
    ws.send(frame).await.map_err(|e| e.to_string())
}

/// Tells the dialler why it is refused, and returns the reason.
async fn refuse(ws: &mut PeerWs, why: String) -> String {
    let _ = send(ws, &Frame::Welcome(Err(why.clone()))).await;
    let _ = ws.close(None).await;
    why
}

/// The hello in `bytes`: `None` if the bytes are no hello at all, `Err` for a hello of
/// another peer protocol (an older or newer build: its version still leads its hello).
pub fn parse_hello(bytes: &[u8]) -> Option<Result<Hello, String>> {
    let protocol = match decode::<Frame>(bytes, MAX_HELLO_BYTES) {
        Ok(Frame::Hello(hello)) if hello.protocol == PEER_PROTOCOL => return Some(Ok(hello)),
        Ok(Frame::Hello(hello)) => hello.protocol,
        Ok(_) => return None,
        // Another build's hello: variant 0, then the version.
        Err(_) => match codec::decode_prefix::<(u32, u32)>(bytes) {
            // This build's own version on an unreadable hello: malformed, not another build.
            Ok(((0, protocol), _)) if protocol != PEER_PROTOCOL => protocol,
            _ => return None,
        },
    };
    Some(Err(format!(
        "this node speaks peer protocol {PEER_PROTOCOL}, the caller {protocol}: run one \
         mpreg version across the cluster"
    )))
}

/// Whether a proved `hello` is for this node (`id`, serving `cluster_id`): if so, who
/// dialled, if it said.
fn admit(hello: &Hello, cluster_id: &str, id: u64) -> Result<Option<Caller>, String> {
    if let Some(c) = hello.cluster.as_ref().filter(|c| *c != cluster_id) {
        Err(format!("this node is in cluster `{cluster_id}`, not `{c}`"))
    } else if let Some(n) = hello.node.filter(|n| *n != id) {
        Err(format!("this is node {id:016x}, not {n:016x}"))
    } else {
        Ok(hello.from.clone())
    }
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
        frame: io::Result<Option<Frame>>,
        pending: &Mutex<Pending>,
        out: &Outgoing,
    ) -> Handled {
        match frame {
            Ok(Some(Frame::Reply { id, reply })) => {
                if let Some(waiter) = lock(pending).remove(&id) {
                    let _ = waiter.send(reply);
                }
                Handled::Continue
            }
            Ok(Some(Frame::Request { id, req })) => match self.service.upgrade() {
                Some(service) => {
                    self.start(service, id, req, out);
                    Handled::Continue
                }
                // This node is gone (or a tool, which serves nothing).
                None => Handled::End,
            },
            Ok(Some(Frame::Cancel { id })) => {
                if let Some(step) = self.running.remove(&id) {
                    step.abort();
                    self.answering.remove(&id);
                }
                Handled::Continue
            }
            Ok(Some(Frame::Done)) => Handled::PeerDone,
            Ok(Some(Frame::Retire)) => Handled::PeerRetired,
            // A second hello or welcome: not a peer we know.
            Ok(Some(
                Frame::Hello(_) | Frame::Welcome(_) | Frame::Challenge { .. } | Frame::Proof(_),
            ))
            | Ok(None)
            | Err(_) => Handled::End,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(protocol: u32, cluster: Option<&str>, node: Option<u64>) -> Hello {
        Hello {
            protocol,
            cluster: cluster.map(str::to_owned),
            node,
            from: None,
            nonce: [3; handshake::NONCE_BYTES],
        }
    }

    fn bytes(h: &Hello) -> Vec<u8> {
        encode_frame(&Frame::Hello(h.clone())).unwrap()
    }

    #[test]
    fn a_hello_is_admitted_only_for_this_cluster_and_this_node() {
        let ok = hello(PEER_PROTOCOL, Some("c"), Some(7));
        assert_eq!(parse_hello(&bytes(&ok)), Some(Ok(ok.clone())));
        assert_eq!(admit(&ok, "c", 7), Ok(None));
        // Tools name neither cluster nor node.
        assert_eq!(admit(&hello(PEER_PROTOCOL, None, None), "c", 7), Ok(None));
        // A node that says who it is is admitted as that node.
        let from = Caller {
            id: 9,
            addr: "127.0.0.1:9".into(),
        };
        let introduced = Hello {
            from: Some(from.clone()),
            ..ok
        };
        assert_eq!(admit(&introduced, "c", 7), Ok(Some(from)));
        assert_eq!(
            admit(&hello(PEER_PROTOCOL, Some("d"), None), "c", 7),
            Err("this node is in cluster `c`, not `d`".into())
        );
        assert_eq!(
            admit(&hello(PEER_PROTOCOL, Some("c"), Some(8)), "c", 7),
            Err(format!("this is node {:016x}, not {:016x}", 7, 8))
        );
        let Some(Err(why)) = parse_hello(&bytes(&hello(PEER_PROTOCOL + 1, Some("c"), None))) else {
            panic!("another protocol was admitted");
        };
        assert!(why.contains(&format!(
            "protocol {PEER_PROTOCOL}, the caller {}",
            PEER_PROTOCOL + 1
        )));
    }

    #[test]
    fn another_builds_hello_is_refused_by_its_version_whatever_follows_it() {
        // A later build whose hello grew a field this build cannot decode: variant 0, its
        // version, then bytes of any shape.
        let mut future = codec::encode(&(0u32, PEER_PROTOCOL + 1)).unwrap();
        future.extend([0xff, 0xfe, 0xfd]);
        let Some(Err(why)) = parse_hello(&future) else {
            panic!("a later build's hello was not refused");
        };
        assert!(why.contains("run one mpreg version"), "{why}");
        // Protocol 3's hello (no nonce in it) is refused by its version, not misread.
        let three =
            codec::encode(&(0u32, 3u32, Some("c".to_owned()), Some(7u64), None::<Caller>)).unwrap();
        let Some(Err(why)) = parse_hello(&three) else {
            panic!("protocol 3's hello was admitted");
        };
        assert!(why.contains("the caller 3"), "{why}");
        // Frames that are no hello are not answered at all.
        let cancel = encode_frame(&Frame::Cancel { id: 1 }).unwrap();
        assert_eq!(parse_hello(&cancel), None);
    }

    #[test]
    fn a_hello_whose_lengths_lie_is_no_hello_and_costs_nothing() {
        // Variant 0, protocol, Some(cluster) claiming 2^62 bytes: the 15-byte frame that
        // used to abort the process.
        let mut lying = vec![0, PEER_PROTOCOL as u8, 1, 253];
        lying.extend((1u64 << 62).to_le_bytes());
        assert_eq!(parse_hello(&lying), None);
        assert!(decode_frame(&lying).is_err());
    }
}
