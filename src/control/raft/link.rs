//! The peer link: one WebSocket to a peer (path `/_mpreg/raft` on its client port) carrying
//! many RPCs at once. After the handshake the caller says hello (its cluster id, if it has
//! one); then every request carries an id and the replies, in whatever order they finish,
//! carry it back. A node shares one link per peer among all its Raft replication streams,
//! votes and membership calls.
//!
//! Every call has a deadline. A call that misses it breaks the link: turmoil's TCP (and a
//! real one behind a dead peer) never delivers what was lost, so the only safe recovery is a
//! new connection. The calls still waiting fail at once and the next call reconnects.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::network::{PeerService, RaftReply, RaftRequest, answer};
use crate::env::{BoxStream, Env};
use crate::transport::websocket_config;

/// Largest frame on a peer link (snapshots travel in one).
pub(crate) const MAX_FRAME_BYTES: usize = 64 << 20;

/// The path a peer's WebSocket handshake asks for; it marks the connection as Raft's.
pub const RAFT_PATH: &str = "/_mpreg/raft";

pub(crate) type PeerWs = WebSocketStream<BoxStream>;

/// What travels on a link.
#[derive(Debug, Serialize, Deserialize)]
enum Frame {
    /// The caller's first frame: its cluster id (`None`: a tool, not a node).
    Hello {
        cluster: Option<String>,
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
async fn next_frame(ws: &mut PeerWs) -> io::Result<Option<Frame>> {
    while let Some(msg) = ws.next().await {
        match msg.map_err(io::Error::other)? {
            Message::Binary(b) => return decode(&b).map(Some),
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

/// An open link: calls are sent to its task, replies routed back by id.
struct Open {
    outbox: mpsc::Sender<Message>,
    pending: Arc<Mutex<Pending>>,
    next_id: AtomicU64,
    /// Set to break the link (its task then drops the socket and every waiting call).
    broken: watch::Sender<bool>,
}

impl Open {
    fn is_broken(&self) -> bool {
        *self.broken.borrow() || self.outbox.is_closed()
    }

    fn break_it(&self) {
        let _ = self.broken.send(true);
    }
}

/// A link to one peer address, opened on first use and reopened after it broke. Clones
/// share the connection.
#[derive(Clone)]
pub(crate) struct Link {
    env: Env,
    addr: String,
    cluster: Option<String>,
    open: Arc<tokio::sync::Mutex<Option<Arc<Open>>>>,
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("peer {what} timed out"))
}

impl Link {
    pub(crate) fn new(env: Env, addr: String, cluster: Option<String>) -> Link {
        Link {
            env,
            addr,
            cluster,
            open: Arc::default(),
        }
    }

    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// One RPC within `ttl` (connecting first if needed, within the same deadline).
    pub(crate) async fn call(&self, req: RaftRequest, ttl: Duration) -> io::Result<RaftReply> {
        let deadline = tokio::time::Instant::now() + ttl;
        let open = tokio::time::timeout_at(deadline, self.connected())
            .await
            .map_err(|_| timed_out("connect"))??;
        let id = open.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&open.pending).insert(id, tx);
        let frame = encode(&Frame::Request { id, req })?;
        let sent = tokio::time::timeout_at(deadline, open.outbox.send(frame)).await;
        let result = match sent {
            Ok(Ok(())) => match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(_)) => io::Error::new(io::ErrorKind::ConnectionAborted, "peer link broke"),
                Err(_) => timed_out("rpc"),
            },
            Ok(Err(_)) => io::Error::new(io::ErrorKind::ConnectionAborted, "peer link closed"),
            Err(_) => timed_out("send"),
        };
        lock(&open.pending).remove(&id);
        // Whatever was lost on this connection will never arrive: start afresh.
        open.break_it();
        Err(result)
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
            cluster: self.cluster.clone(),
        })?)
        .await
        .map_err(io::Error::other)?;
        match next_frame(&mut ws).await? {
            Some(Frame::Welcome(Ok(()))) => {}
            Some(Frame::Welcome(Err(why))) => {
                return Err(io::Error::new(io::ErrorKind::PermissionDenied, why));
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the peer did not answer the hello",
                ));
            }
        }
        let (outbox, queue) = mpsc::channel(256);
        let (broken, broken_rx) = watch::channel(false);
        let open = Arc::new(Open {
            outbox,
            pending: Arc::default(),
            next_id: AtomicU64::new(1),
            broken,
        });
        tokio::spawn(drive(ws, queue, open.pending.clone(), broken_rx));
        *slot = Some(open.clone());
        Ok(open)
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

/// Owns the socket of one open link: writes queued requests, routes replies to their
/// callers, and ends (failing every waiting call) when the link breaks or closes.
async fn drive(
    mut ws: PeerWs,
    mut queue: mpsc::Receiver<Message>,
    pending: Arc<Mutex<Pending>>,
    mut broken: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            biased;
            () = until_broken(&mut broken) => break,
            out = queue.recv() => match out {
                Some(frame) => if ws.send(frame).await.is_err() { break },
                None => break, // every handle is gone
            },
            frame = next_frame(&mut ws) => match frame {
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
    // Dropping the senders fails the waiting calls at once.
    lock(&pending).clear();
    queue.close();
}

/// Serves one peer's link: checks its hello, then answers every request concurrently and
/// writes the replies as they finish. Ends when the peer disconnects or misbehaves.
pub async fn serve_peer(service: PeerService, mut ws: PeerWs) {
    let hello = match next_frame(&mut ws).await {
        Ok(Some(Frame::Hello { cluster })) => cluster,
        _ => return,
    };
    let welcome = match hello {
        Some(c) if c != service.cluster_id => Err(format!(
            "this node is in cluster `{}`, not `{c}`",
            service.cluster_id
        )),
        _ => Ok(()),
    };
    let refused = welcome.is_err();
    let Ok(frame) = encode(&Frame::Welcome(welcome)) else {
        return;
    };
    if ws.send(frame).await.is_err() || refused {
        return;
    }
    let (replies, mut outgoing) = mpsc::channel::<Message>(256);
    loop {
        tokio::select! {
            biased;
            Some(frame) = outgoing.recv() => if ws.send(frame).await.is_err() { return },
            frame = next_frame(&mut ws) => match frame {
                Ok(Some(Frame::Request { id, req })) => {
                    let (service, replies) = (service.clone(), replies.clone());
                    tokio::spawn(async move {
                        let reply = answer(&service, req).await;
                        if let Ok(frame) = encode(&Frame::Reply { id, reply }) {
                            let _ = replies.send(frame).await;
                        }
                    });
                }
                Ok(Some(_)) => return, // a second hello, or a reply: not a peer we know
                Ok(None) | Err(_) => return,
            },
        }
    }
}
