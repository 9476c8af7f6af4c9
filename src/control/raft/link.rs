//! The peer link: one WebSocket to a peer (path `/_mpreg/raft` on its client port) carrying
//! many RPCs at once. After the handshake the caller says hello (its cluster id, if it has
//! one); then every request carries an id and the replies, in whatever order they finish,
//! carry it back. A node shares one link per peer among all its Raft replication streams,
//! votes and membership calls.
//!
//! Every call has a deadline. A call that misses it breaks the link: turmoil's TCP (and a
//! real one behind a dead peer) never delivers what was lost, so the only safe recovery is a
//! new connection. The calls still waiting fail at once and the next call reconnects.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
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
pub(crate) const PEER_PROTOCOL: u32 = 2;

/// How long an accepted link may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// What travels on a link.
#[derive(Debug, Serialize, Deserialize)]
enum Frame {
    /// The caller's first frame: its peer protocol ([`PEER_PROTOCOL`]), its cluster id
    /// (`None`: a tool, not a node), and the node it means to reach (`None`: whichever
    /// node is at the address).
    Hello {
        protocol: u32,
        cluster: Option<String>,
        node: Option<u64>,
    },
    /// The answer to `Hello`: accepted, or why not.
    Welcome(Result<(), String>),
    Request {
        id: u64,
        req: RaftRequest,
    },
    Reply {
        id: u64,
        reply: RaftReply,
    },
    /// The caller no longer waits for request `id`: a forwarded step stops running.
    Cancel {
        id: u64,
    },
}

fn encode<T: Serialize>(value: &T) -> io::Result<Message> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map(Message::binary)
        .map_err(io::Error::other)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The next binary frame, decoded; `None` when the peer closed.
async fn next_frame<S>(ws: &mut S) -> io::Result<Option<Frame>>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    next_binary(ws).await?.map(|b| decode(&b)).transpose()
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

/// The sending side of an open link: a queue of frames, written by a caller of an idle
/// link itself or by the link's task (see [`Open::send`]).
struct Outgoing {
    writer: tokio::sync::Mutex<Writer>,
    queue: Mutex<VecDeque<Message>>,
    /// Tells the link's task that frames wait in the queue.
    queued: tokio::sync::Notify,
    /// Set when the link's task has ended: nothing will be read from this link again.
    ended: std::sync::atomic::AtomicBool,
}

fn lock_queue(q: &Mutex<VecDeque<Message>>) -> MutexGuard<'_, VecDeque<Message>> {
    // Frames go in and out whole; a poisoned queue is still consistent.
    q.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Outgoing {
    /// Writes every queued frame and flushes. A frame leaves the queue only once the sink
    /// has room for it, so a writer cancelled at an await point strands nothing.
    async fn write_queued(&self, w: &mut Writer) -> io::Result<()> {
        loop {
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut *w).poll_ready(cx))
                .await
                .map_err(io::Error::other)?;
            let Some(frame) = lock_queue(&self.queue).pop_front() else {
                break;
            };
            std::pin::Pin::new(&mut *w)
                .start_send(frame)
                .map_err(io::Error::other)?;
        }
        w.flush().await.map_err(io::Error::other)
    }
}

/// An open link: callers write requests (see [`Outgoing`]); its task reads the replies and
/// routes them back by id.
struct Open {
    out: Arc<Outgoing>,
    pending: Arc<Mutex<Pending>>,
    next_id: AtomicU64,
    /// Set to break the link (its task then drops the socket and every waiting call).
    broken: watch::Sender<bool>,
    /// Dropped with the last handle, which ends the link's task.
    _alive: mpsc::Sender<()>,
}

impl Open {
    fn is_broken(&self) -> bool {
        *self.broken.borrow() || self.out.ended.load(Ordering::Acquire)
    }

    fn break_it(&self) {
        let _ = self.broken.send(true);
    }

    /// Sends `frame`. On an idle link (no other call waiting) the caller writes and
    /// flushes it itself: no hand-off to another task before it leaves. On a busy one it
    /// is queued for the link's task, which writes everything queued with one flush.
    async fn send(&self, frame: Message) -> io::Result<()> {
        if self.is_broken() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "peer link closed",
            ));
        }
        lock_queue(&self.out.queue).push_back(frame);
        let idle = lock(&self.pending).len() <= 1; // this call's own entry
        let writer = if idle {
            self.out.writer.try_lock().ok()
        } else {
            None
        };
        match writer {
            Some(mut w) => {
                let written = self.out.write_queued(&mut w).await;
                match written {
                    Ok(()) => disown_writes(&mut w),
                    Err(_) => self.break_it(),
                }
                written
            }
            None => {
                self.out.queued.notify_one();
                Ok(())
            }
        }
    }

    /// Queues `frame` for the link's task (from code that cannot wait).
    fn send_later(&self, frame: Message) {
        lock_queue(&self.out.queue).push_back(frame);
        self.out.queued.notify_one();
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

/// A link to one peer address, opened on first use and reopened after it broke. Clones
/// share the connection.
#[derive(Clone)]
pub(crate) struct Link(Arc<LinkInner>);

pub(crate) struct LinkInner {
    env: Env,
    addr: String,
    cluster: Option<String>,
    /// The node this link must reach: a different node now at `addr` (one restarted there
    /// with a new id) refuses the hello, so it never answers for the one that is gone.
    node: Option<u64>,
    open: tokio::sync::Mutex<Option<Arc<Open>>>,
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

impl Link {
    pub(crate) fn new(env: Env, addr: String, cluster: Option<String>, node: Option<u64>) -> Link {
        Link(Arc::new(LinkInner {
            env,
            addr,
            cluster,
            node,
            open: tokio::sync::Mutex::default(),
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
        lock(&open.pending).insert(id, tx);
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
            open.break_it();
        }
        Err(CallFailure {
            sent: call.sent,
            error: failure,
        })
    }

    /// Drops the connection (if any); the next call reconnects. For callers that judge the
    /// link dead by their own rule (the heartbeats, after several misses).
    pub(crate) async fn reset(&self) {
        if let Some(open) = self.open.lock().await.take() {
            open.break_it();
        }
    }

    /// The open link, connecting (and saying hello) if there is none or it broke.
    async fn connected(&self) -> io::Result<Arc<Open>> {
        let mut slot = self.open.lock().await;
        if let Some(open) = slot.as_ref().filter(|o| !o.is_broken()) {
            return Ok(open.clone());
        }
        *slot = None;
        let tcp = self.env.net.connect(&self.addr).await?;
        let url = format!("ws://{}{RAFT_PATH}", self.addr);
        let config = websocket_config(MAX_FRAME_BYTES);
        let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(config))
            .await
            .map_err(io::Error::other)?;
        ws.send(encode(&Frame::Hello {
            protocol: PEER_PROTOCOL,
            cluster: self.cluster.clone(),
            node: self.node,
        })?)
        .await
        .map_err(io::Error::other)?;
        match next_frame(&mut ws).await {
            Ok(Some(Frame::Welcome(Ok(())))) => {}
            Ok(Some(Frame::Welcome(Err(why)))) => {
                return Err(io::Error::new(io::ErrorKind::PermissionDenied, why));
            }
            // A build that cannot read this hello drops the connection without a word.
            other => {
                let what = match other {
                    Err(e) => e.to_string(),
                    Ok(None) => "it closed the link".to_owned(),
                    Ok(Some(_)) => "it sent another frame".to_owned(),
                };
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the peer did not answer the hello ({what}): is it an mpreg node of \
                         a build speaking another peer protocol?"
                    ),
                ));
            }
        }
        let (writer, frames) = ws.split();
        let (alive, handles_gone) = mpsc::channel(1);
        let (broken, broken_rx) = watch::channel(false);
        let out = Arc::new(Outgoing {
            writer: tokio::sync::Mutex::new(writer),
            queue: Mutex::default(),
            queued: tokio::sync::Notify::new(),
            ended: std::sync::atomic::AtomicBool::new(false),
        });
        let open = Arc::new(Open {
            out: out.clone(),
            pending: Arc::default(),
            next_id: AtomicU64::new(1),
            broken,
            _alive: alive,
        });
        tokio::spawn(drive(
            frames,
            out,
            open.pending.clone(),
            broken_rx,
            handles_gone,
        ));
        *slot = Some(open.clone());
        Ok(open)
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

/// Resolves once the link is marked broken (never, if every handle is gone).
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

/// The task of one open link: routes replies to their callers, writes frames queued while
/// a caller was writing, and ends (failing every waiting call, closing the socket) when
/// the link breaks or closes or its last handle is gone.
async fn drive(
    mut frames: futures_util::stream::SplitStream<PeerWs>,
    out: Arc<Outgoing>,
    pending: Arc<Mutex<Pending>>,
    mut broken: watch::Receiver<bool>,
    mut handles_gone: mpsc::Receiver<()>,
) {
    loop {
        tokio::select! {
            biased;
            () = until_broken(&mut broken) => break,
            _ = handles_gone.recv() => break,
            () = out.queued.notified() => {
                let mut w = out.writer.lock().await;
                if out.write_queued(&mut w).await.is_err() {
                    break;
                }
            }
            frame = next_frame(&mut frames) => match frame {
                Ok(Some(Frame::Reply { id, reply })) => {
                    if let Some(waiter) = lock(&pending).remove(&id) {
                        let _ = waiter.send(reply);
                    }
                }
                Ok(Some(_)) => {} // nothing else is expected after the welcome
                Ok(None) | Err(_) => break,
            },
        }
    }
    // Dropping the senders fails the waiting calls at once; later calls see the link ended
    // (a call registered between the two finds no reply and hits its deadline).
    out.ended.store(true, Ordering::Release);
    lock(&pending).clear();
    lock_queue(&out.queue).clear();
    // Close the socket (the peer then cancels the steps it runs for this link); a writer
    // stuck on a dead peer is given up on.
    let close = async {
        let mut w = out.writer.lock().await;
        let _ = w.close().await;
    };
    let _ = tokio::time::timeout(CONNECT_TIMEOUT, close).await;
}

/// Forwarded steps one link may run at once; beyond it the node stops reading the link
/// (backpressure through TCP) until some finish.
const MAX_STEPS_PER_LINK: usize = 4096;

/// Serves one peer's link: checks its hello, then answers every request concurrently and
/// writes the replies as they finish. Ends when the peer disconnects or misbehaves; the
/// forwarded steps still running then are cancelled (nobody waits for them).
pub async fn serve_peer(service: PeerService, mut ws: PeerWs) {
    let Ok(Ok(Some(hello))) = tokio::time::timeout(HELLO_TIMEOUT, next_binary(&mut ws)).await
    else {
        return;
    };
    let welcome = match admit(&hello, &service.cluster_id, service.id) {
        Some(welcome) => welcome,
        None => return, // not a hello: not a peer
    };
    if let Err(why) = &welcome {
        tracing::debug!(%why, "refused a peer link");
    }
    let refused = welcome.is_err();
    let Ok(frame) = encode(&Frame::Welcome(welcome)) else {
        return;
    };
    if ws.send(frame).await.is_err() || refused {
        return;
    }
    let service = Arc::new(service);
    let (replies, mut outgoing) = mpsc::channel::<(u64, Message)>(256);
    let mut link = Served {
        service,
        replies,
        steps: JoinSet::new(),
        running: BTreeMap::new(),
        out: Vec::new(),
    };
    loop {
        tokio::select! {
            biased;
            Some((id, frame)) = outgoing.recv() => {
                link.replied(id, frame);
                while let Ok((id, frame)) = outgoing.try_recv() {
                    link.replied(id, frame);
                }
            }
            Some(_) = link.steps.join_next(), if !link.steps.is_empty() => {}
            frame = next_frame(&mut ws), if link.steps.len() < MAX_STEPS_PER_LINK => {
                if !link.handle(frame) {
                    return;
                }
                // Whatever else has arrived already is handled before the replies go out,
                // so that they leave together.
                for _ in 0..READ_BATCH {
                    if link.steps.len() >= MAX_STEPS_PER_LINK {
                        break;
                    }
                    match next_frame(&mut ws).now_or_never() {
                        Some(frame) => if !link.handle(frame) { return },
                        None => break,
                    }
                }
            }
        }
        if !link.out.is_empty() {
            for frame in link.out.drain(..) {
                if ws.feed(frame).await.is_err() {
                    return;
                }
            }
            if ws.flush().await.is_err() {
                return;
            }
        }
    }
}

/// The answer to the hello in `bytes` from a node serving `cluster_id` as node `id`, or
/// `None` if the bytes are no hello at all.
fn admit(bytes: &[u8], cluster_id: &str, id: u64) -> Option<Result<(), String>> {
    let (protocol, cluster, node) = match decode::<Frame>(bytes) {
        Ok(Frame::Hello {
            protocol,
            cluster,
            node,
        }) => (protocol, cluster, node),
        Ok(_) => return None,
        // Another build's hello: its version still leads it (variant 0, then the version).
        Err(_) => match decode::<(u32, u32)>(bytes) {
            Ok((0, protocol)) => (protocol, None, None),
            _ => return None,
        },
    };
    Some(if protocol != PEER_PROTOCOL {
        Err(format!(
            "this node speaks peer protocol {PEER_PROTOCOL}, the caller {protocol}: run one \
             mpreg version across the cluster"
        ))
    } else if let Some(c) = cluster.filter(|c| c != cluster_id) {
        Err(format!("this node is in cluster `{cluster_id}`, not `{c}`"))
    } else if let Some(n) = node.filter(|n| *n != id) {
        Err(format!("this is node {id:016x}, not {n:016x}"))
    } else {
        Ok(())
    })
}

/// Frames read in one go before the replies they produced are written.
const READ_BATCH: usize = 64;

/// The serving side of one link.
struct Served {
    service: Arc<PeerService>,
    /// Where spawned requests send their replies.
    replies: mpsc::Sender<(u64, Message)>,
    /// Forwarded steps, by request id, so that a cancel can stop one; dropping the set
    /// when the link ends cancels the rest.
    steps: JoinSet<()>,
    running: BTreeMap<u64, AbortHandle>,
    /// Replies ready to write.
    out: Vec<Message>,
}

impl Served {
    fn replied(&mut self, id: u64, frame: Message) {
        self.running.remove(&id);
        self.out.push(frame);
    }

    /// Handles one frame; `false` ends the link.
    fn handle(&mut self, frame: io::Result<Option<Frame>>) -> bool {
        match frame {
            Ok(Some(Frame::Request { id, req })) => {
                let is_step = matches!(req, RaftRequest::Step(_));
                let service = self.service.clone();
                let mut reply = Box::pin(async move { answer(&service, req).await });
                // Most steps and heartbeats finish on their first poll: answer those here,
                // without a task.
                let waker = futures_util::task::noop_waker();
                match reply
                    .as_mut()
                    .poll(&mut std::task::Context::from_waker(&waker))
                {
                    std::task::Poll::Ready(reply) => {
                        if let Ok(frame) = encode(&Frame::Reply { id, reply }) {
                            self.out.push(frame);
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
                        if is_step {
                            self.running.insert(id, self.steps.spawn(task));
                        } else {
                            tokio::spawn(task);
                        }
                    }
                }
                true
            }
            Ok(Some(Frame::Cancel { id })) => {
                if let Some(step) = self.running.remove(&id) {
                    step.abort();
                }
                true
            }
            // A second hello, or a reply: not a peer we know.
            Ok(Some(_)) | Ok(None) | Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(protocol: u32, cluster: Option<&str>, node: Option<u64>) -> Vec<u8> {
        let frame = Frame::Hello {
            protocol,
            cluster: cluster.map(str::to_owned),
            node,
        };
        bincode::serde::encode_to_vec(&frame, bincode::config::standard()).unwrap()
    }

    #[test]
    fn a_hello_is_admitted_only_from_this_protocol_cluster_and_for_this_node() {
        let ok = admit(&hello(PEER_PROTOCOL, Some("c"), Some(7)), "c", 7);
        assert_eq!(ok, Some(Ok(())));
        // Tools name neither cluster nor node.
        assert_eq!(
            admit(&hello(PEER_PROTOCOL, None, None), "c", 7),
            Some(Ok(()))
        );
        let other_cluster = admit(&hello(PEER_PROTOCOL, Some("d"), None), "c", 7);
        assert_eq!(
            other_cluster,
            Some(Err("this node is in cluster `c`, not `d`".into()))
        );
        let other_node = admit(&hello(PEER_PROTOCOL, Some("c"), Some(8)), "c", 7);
        assert_eq!(
            other_node,
            Some(Err(format!("this is node {:016x}, not {:016x}", 7, 8)))
        );
        let Some(Err(why)) = admit(&hello(PEER_PROTOCOL + 1, Some("c"), Some(7)), "c", 7) else {
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
        let mut future =
            bincode::serde::encode_to_vec((0u32, PEER_PROTOCOL + 1), bincode::config::standard())
                .unwrap();
        future.extend([0xff, 0xfe, 0xfd]);
        let Some(Err(why)) = admit(&future, "c", 7) else {
            panic!("a later build's hello was not refused");
        };
        assert!(why.contains("run one mpreg version"), "{why}");
        // The hello of the build before versions (cluster and node only) reads as an
        // older protocol and is refused too, not misread.
        let old = bincode::serde::encode_to_vec(
            (0u32, Some("c".to_owned()), Some(7u64)),
            bincode::config::standard(),
        )
        .unwrap();
        assert!(matches!(admit(&old, "c", 7), Some(Err(_))));
        // Frames that are no hello are not answered at all.
        let cancel = encode(&Frame::Cancel { id: 1 }).unwrap().into_data();
        assert_eq!(admit(&cancel, "c", 7), None);
    }
}
