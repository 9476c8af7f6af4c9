//! One client connection: read frames, run each request as its own task, write replies
//! through a single writer that coalesces them into as few socket writes as it can.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use futures_util::stream::SplitStream;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, error::CapacityError};

use super::Shared;
use crate::env::BoxStream;
use crate::protocol::{ErrorCode, Incoming, RpcReply, WireError, decode_frame};
use crate::rpc::execute;
use crate::transport::{Outbound, write_loop};

type Ws = WebSocketStream<BoxStream>;

/// A peer that has not finished the WebSocket handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether replies go out as text or binary: the same kind as the request.
#[derive(Clone, Copy)]
enum FrameKind {
    Text,
    Binary,
}

impl FrameKind {
    fn frame(self, reply: &RpcReply) -> Message {
        match self {
            FrameKind::Text => Message::text(reply.to_json_string()),
            FrameKind::Binary => Message::binary(reply.to_json_string().into_bytes()),
        }
    }
}

/// Serves one accepted stream until the client leaves or the node drains.
pub(super) async fn serve_connection(
    shared: Arc<Shared>,
    stream: BoxStream,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
) {
    let config = crate::transport::websocket_config(shared.settings.max_message_bytes);
    let handshake = tokio_tungstenite::accept_async_with_config(stream, Some(config));
    let ws = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "websocket handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "websocket handshake timed out");
            return;
        }
    };
    shared.stats.active_clients.fetch_add(1, Ordering::Relaxed);
    let (sink, frames) = ws.split();
    let max_inflight = shared.settings.max_inflight_per_connection;
    let (tx, rx) = mpsc::channel(max_inflight + 16);
    let writer = tokio::spawn(write_loop(sink, rx));
    let (id, inflight) = shared.stats.track_connection();
    let _tracked = Tracked {
        stats: &shared.stats,
        id,
    };
    let conn = Connection {
        shared: shared.clone(),
        tx,
        max_inflight,
        inflight,
    };
    conn.read_loop(frames, shutdown).await;
    drop(conn);
    // The writer ends once every sender (the connection and its request tasks) is gone.
    let _ = writer.await;
    shared.stats.active_clients.fetch_sub(1, Ordering::Relaxed);
}

/// Unregisters a connection's in-flight counter however the connection ends.
struct Tracked<'a> {
    stats: &'a super::Stats,
    id: u64,
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        self.stats.forget_connection(self.id);
    }
}

struct Connection {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Outbound>,
    /// Requests running at once; at the limit the node stops reading this client
    /// (backpressure through TCP).
    max_inflight: usize,
    /// How many of this connection's requests are running, for `cluster_map`.
    inflight: Arc<std::sync::atomic::AtomicUsize>,
}

/// What a frame read from the client means for the connection.
enum Read {
    Data(tungstenite::Bytes, FrameKind),
    Skip,
    End,
}

/// A running request: resolves to its reply and the frame kind to send it in.
type RequestFuture<'a> = futures_util::future::BoxFuture<'a, (FrameKind, RpcReply)>;

impl Connection {
    async fn next_frame(&self, frames: &mut SplitStream<Ws>) -> Read {
        match frames.next().await {
            Some(Ok(m @ Message::Text(_))) => Read::Data(m.into_data(), FrameKind::Text),
            Some(Ok(Message::Binary(b))) => Read::Data(b, FrameKind::Binary),
            Some(Ok(Message::Close(_))) | None => Read::End,
            Some(Ok(_)) => Read::Skip, // ping/pong: tungstenite answers pings itself
            Some(Err(e)) => {
                self.on_read_error(e).await;
                Read::End
            }
        }
    }

    /// Reads requests and runs them concurrently inside this task: a request is a future
    /// polled here, not a task of its own, so finishing one wakes nobody else and a client
    /// that leaves cancels its requests by the drop of `running`. Handlers are async; a
    /// function that burns CPU should move that work off the runtime (as in any tokio
    /// server).
    async fn read_loop(&self, mut frames: SplitStream<Ws>, mut shutdown: watch::Receiver<bool>) {
        let stop = super::stopping(&mut shutdown);
        tokio::pin!(stop);
        let mut draining = false;
        let mut running: FuturesUnordered<RequestFuture<'_>> = FuturesUnordered::new();
        loop {
            if draining && running.is_empty() {
                let frame = CloseFrame {
                    code: CloseCode::Away,
                    reason: "node shutting down".into(),
                };
                let _ = self.tx.send(Outbound::Close(frame)).await;
                return;
            }
            self.inflight.store(running.len(), Ordering::Relaxed);
            tokio::select! {
                biased;
                _ = &mut stop, if !draining => draining = true,
                Some((kind, reply)) = running.next(), if !running.is_empty() => {
                    if !self.send(kind, &reply).await {
                        return;
                    }
                }
                read = self.next_frame(&mut frames), if running.len() < self.max_inflight => {
                    match read {
                        Read::Data(bytes, kind) => {
                            if let Some(reply) = self.on_frame(&bytes, kind, draining, &mut running)
                                && !self.send(kind, &reply).await
                            {
                                return;
                            }
                        }
                        Read::Skip => {}
                        Read::End => return,
                    }
                }
            }
        }
    }

    /// Starts the request in `bytes`, or returns the immediate reply to a frame that is not
    /// one (or to any request while draining).
    fn on_frame<'a>(
        &'a self,
        bytes: &[u8],
        kind: FrameKind,
        draining: bool,
        running: &mut FuturesUnordered<RequestFuture<'a>>,
    ) -> Option<RpcReply> {
        let req = match decode_frame(bytes) {
            Ok(Incoming::Rpc(req)) => req,
            Err(e) => return Some(RpcReply::failure(e.u, WireError::new(e.code, e.message))),
        };
        if draining {
            return Some(RpcReply::failure(
                Value::String(req.u),
                WireError::new(
                    ErrorCode::ShuttingDown,
                    "node is draining; retry on another node",
                ),
            ));
        }
        let shared = &*self.shared;
        let mut request: RequestFuture<'_> = Box::pin(async move {
            let reply = execute(
                &shared.registry,
                shared.env.clock.as_ref(),
                shared.limits,
                req,
            )
            .await;
            (kind, reply)
        });
        // Most requests complete on their first poll; only those that wait join `running`.
        let waker = futures_util::task::noop_waker();
        match request
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&waker))
        {
            std::task::Poll::Ready((_, reply)) => Some(reply),
            std::task::Poll::Pending => {
                running.push(request);
                None
            }
        }
    }

    async fn send(&self, kind: FrameKind, reply: &RpcReply) -> bool {
        self.tx
            .send(Outbound::Frame(kind.frame(reply)))
            .await
            .is_ok()
    }

    async fn on_read_error(&self, e: tungstenite::Error) {
        match e {
            tungstenite::Error::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
                tracing::debug!(size, max_size, "closing connection: message too large");
                let frame = CloseFrame {
                    code: CloseCode::Size,
                    reason: format!("message of {size} bytes exceeds the limit of {max_size}")
                        .into(),
                };
                let _ = self.tx.send(Outbound::Close(frame)).await;
            }
            other => tracing::debug!(error = %other, "connection read failed"),
        }
    }
}
