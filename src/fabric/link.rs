//! A link to one peer: opened on first use (or adopted from the peer's own dial, see
//! `serve`), reopened after it broke, shared by every plane's calls to that peer. One
//! connection per node pair: when both nodes dial at once, both keep the one the lower id
//! dialled (`lifecycle::preferred`), and a connection the peer has left is not called on.
//!
//! Every call has a deadline. A Raft call that misses it retires the connection (turmoil's
//! TCP, like a real one behind a dead peer, never delivers what was lost, so the only safe
//! recovery is a new connection); a patient call (a forwarded step, a heartbeat: merely
//! slow, maybe) leaves it up.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::budget;
use super::conn::Answered;
use super::drive::start;
use super::endpoint::Endpoint;
use super::frame::{Frame, Hello, MAX_FRAME_BYTES, PEER_PATH, Plane, encode};
use super::handshake;
use super::hello::say_hello;
use super::lifecycle::preferred;
use super::open::Open;
use crate::transport::websocket_config;

/// How long opening a link (TCP, WebSocket handshake, hello) may take, whatever the call's
/// deadline: a peer that is gone or cut off never answers, and a forwarded step should move
/// on to another node well before its request's deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A link to one peer. Clones share the connection.
#[derive(Clone)]
pub struct Link(Arc<LinkInner>);

pub(crate) struct LinkInner {
    addr: String,
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

/// How a new link introduces itself and what it shares with the node's other links.
pub(crate) struct LinkTo {
    pub(crate) node: Option<u64>,
    pub(crate) introduce: bool,
    pub(crate) endpoint: Arc<Endpoint>,
}

/// Why a call has no answer, and whether its request may have been acted on.
#[derive(Debug)]
pub struct CallFailure {
    /// The request left: the peer may have received it and acted on it.
    pub sent: bool,
    pub error: io::Error,
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("peer {what} timed out"))
}

impl Link {
    pub(crate) fn new(addr: String, to: LinkTo) -> Link {
        Link(Arc::new(LinkInner {
            addr,
            node: to.node,
            introduce: to.introduce,
            endpoint: to.endpoint,
            slot: Mutex::default(),
            dialling: tokio::sync::Mutex::default(),
        }))
    }

    /// The peer protocol of the connection in use (`None`: none is open).
    pub fn protocol(&self) -> Option<u32> {
        self.current().map(|o| o.protocol)
    }

    /// The `host:port` this link reaches.
    pub fn addr(&self) -> &str {
        &self.0.addr
    }

    /// One call of `plane` within `ttl` (connecting first if needed, within the same
    /// deadline); a missed deadline retires the connection.
    pub async fn call(
        &self,
        plane: Plane,
        body: Vec<u8>,
        ttl: Duration,
    ) -> Result<Vec<u8>, CallFailure> {
        self.exchange(plane, body, ttl, true).await
    }

    /// As [`Link::call`], but a missed deadline leaves the connection up: the peer may just
    /// be slow (a step running, a commit waiting for a quorum). Dropping the future before
    /// the answer cancels the request on the peer.
    pub async fn call_patiently(
        &self,
        plane: Plane,
        body: Vec<u8>,
        ttl: Duration,
    ) -> Result<Vec<u8>, CallFailure> {
        self.exchange(plane, body, ttl, false).await
    }

    async fn exchange(
        &self,
        plane: Plane,
        body: Vec<u8>,
        ttl: Duration,
        retire_on_timeout: bool,
    ) -> Result<Vec<u8>, CallFailure> {
        let not_sent = |error| CallFailure { sent: false, error };
        let deadline = tokio::time::Instant::now() + ttl;
        let connect_by = deadline.min(tokio::time::Instant::now() + CONNECT_TIMEOUT);
        let open = tokio::time::timeout_at(connect_by, self.connected())
            .await
            .map_err(|_| not_sent(timed_out("connect")))?
            .map_err(not_sent)?;
        let id = open.next_id();
        let frame = encode(&Frame::Request { id, plane, body }).map_err(not_sent)?;
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = open.conn.pending.lock();
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
                    Ok(Ok(answer)) => {
                        call.answered = true;
                        return answered(answer);
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
        if retire_on_timeout {
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
    pub fn reset(&self) {
        if let Some(open) = self.0.slot.lock().take() {
            open.retire();
        }
    }

    /// Retires `open` and stops using it here.
    fn retire(&self, open: &Arc<Open>) {
        open.retire();
        let mut slot = self.0.slot.lock();
        if slot.as_ref().is_some_and(|o| Arc::ptr_eq(o, open)) {
            *slot = None;
        }
    }

    /// The connection in use, unless there is none, it broke, or (on a link to a node)
    /// the peer left it for another: the next call then dials, and the peer adopts that
    /// one, so two nodes never stay on two different connections.
    fn current(&self) -> Option<Arc<Open>> {
        self.0
            .slot
            .lock()
            .as_ref()
            .filter(|o| o.usable() && !(self.0.introduce && o.peer_left()))
            .cloned()
    }

    /// Puts `open` in use unless the connection in use is preferred to it, and returns
    /// the one in use. The other is left to the calls still waiting on it; it closes once
    /// neither side waits for anything on it.
    pub(crate) fn install(&self, open: Arc<Open>) -> Arc<Open> {
        let mut slot = self.0.slot.lock();
        if let Some(current) = slot.as_ref().filter(|o| o.usable())
            && !preferred(open.rank(), current.rank())
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
        let _dialling = self.0.dialling.lock().await;
        // Another call dialled meanwhile, or the peer dialled this node and its connection
        // was adopted.
        if let Some(open) = self.current() {
            return Ok(open);
        }
        let open = self.dial().await?;
        Ok(self.install(open))
    }

    async fn dial(&self) -> io::Result<Arc<Open>> {
        let e = &self.0.endpoint;
        if e.is_closed() {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "this node has stopped",
            ));
        }
        let addr = &self.0.addr;
        let tcp = e.env.net.connect(addr).await?;
        let (stream, url) = match &e.tls {
            Some(tls) => (
                tls.dial(tcp, addr).await?,
                format!("wss://{addr}{PEER_PATH}"),
            ),
            None => (tcp, format!("ws://{addr}{PEER_PATH}")),
        };
        let config = websocket_config(MAX_FRAME_BYTES);
        let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
            .await
            .map_err(io::Error::other)?;
        let from = self.0.introduce.then(|| e.me().cloned()).flatten();
        let dialled_by = from.as_ref().map_or(0, |me| me.id);
        let (min_protocol, protocol) = e.protocols();
        let hello = Hello {
            protocol,
            min_protocol,
            cluster: e.cluster.clone(),
            node: self.0.node,
            from,
            nonce: handshake::nonce(&e.env.rng),
        };
        let protocol = say_hello(&mut ws, &hello, e.secret(), addr).await?;
        tracing::debug!(%addr, protocol, "peer link open");
        let (open, task) = start(ws, dialled_by, e.clone(), protocol);
        tokio::spawn(task);
        Ok(open)
    }
}

/// What a call's answer means: a reply, or a refusal that says nothing was done.
fn answered(answer: Answered) -> Result<Vec<u8>, CallFailure> {
    let refused = |kind, why: String| CallFailure {
        sent: false,
        error: io::Error::new(kind, why),
    };
    match answer {
        Answered::Reply(body) => Ok(body),
        Answered::Unsupported(why) => Err(refused(io::ErrorKind::Unsupported, why)),
        Answered::Busy(why) => Err(refused(io::ErrorKind::WouldBlock, why)),
    }
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
        self.open.conn.pending.lock().remove(&self.id);
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
