//! One client connection: read frames, run each request as its own task, write replies
//! through a single writer that coalesces them into as few socket writes as it can.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use std::panic::AssertUnwindSafe;

use futures_util::stream::SplitStream;
use futures_util::{FutureExt, StreamExt};
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
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
    let (tx, rx) = mpsc::channel(shared.settings.max_inflight_per_connection + 16);
    let writer = tokio::spawn(write_loop(sink, rx));
    let mut conn = Connection {
        shared: shared.clone(),
        tx,
        permits: Arc::new(Semaphore::new(shared.settings.max_inflight_per_connection)),
        requests: JoinSet::new(),
    };
    conn.read_loop(frames, shutdown).await;
    drop(conn);
    // The writer ends once every sender (the connection and its request tasks) is gone.
    let _ = writer.await;
    shared.stats.active_clients.fetch_sub(1, Ordering::Relaxed);
}

/// Counts a request as in flight for as long as it lives, however it ends.
struct InflightGuard<'a>(&'a super::Stats);

impl<'a> InflightGuard<'a> {
    fn enter(stats: &'a super::Stats) -> Self {
        stats.inflight.fetch_add(1, Ordering::Relaxed);
        InflightGuard(stats)
    }
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Connection {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Outbound>,
    /// One per running request; when none is left the node stops reading this client.
    permits: Arc<Semaphore>,
    /// Running requests; dropping the set cancels them (client gone).
    requests: JoinSet<()>,
}

impl Connection {
    async fn read_loop(
        &mut self,
        mut frames: SplitStream<Ws>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut draining = *shutdown.borrow();
        loop {
            if draining && self.requests.is_empty() {
                let frame = CloseFrame {
                    code: CloseCode::Away,
                    reason: "node shutting down".into(),
                };
                let _ = self.tx.send(Outbound::Close(frame)).await;
                return;
            }
            tokio::select! {
                biased;
                _ = super::stopping(&mut shutdown), if !draining => draining = true,
                msg = frames.next(), if self.permits.available_permits() > 0 => {
                    let go_on = match msg {
                        Some(Ok(Message::Text(t))) => self.on_frame(t.as_bytes(), FrameKind::Text, draining).await,
                        Some(Ok(Message::Binary(b))) => self.on_frame(&b, FrameKind::Binary, draining).await,
                        Some(Ok(Message::Close(_))) | None => false,
                        Some(Ok(_)) => true, // ping/pong: tungstenite answers pings itself
                        Some(Err(e)) => {
                            self.on_read_error(e).await;
                            false
                        }
                    };
                    if !go_on {
                        // The client is gone: cancel whatever it was still waiting for.
                        self.requests.abort_all();
                        return;
                    }
                }
                Some(_) = self.requests.join_next(), if !self.requests.is_empty() => {}
            }
        }
    }

    /// Handles one data frame; `false` ends the connection.
    async fn on_frame(&mut self, bytes: &[u8], kind: FrameKind, draining: bool) -> bool {
        let req = match decode_frame(bytes) {
            Ok(Incoming::Rpc(req)) => req,
            Err(e) => {
                let reply = RpcReply::failure(e.u, WireError::new(e.code, e.message));
                return self.send(kind, &reply).await;
            }
        };
        if draining {
            let reply = RpcReply::failure(
                Value::String(req.u),
                WireError::new(
                    ErrorCode::ShuttingDown,
                    "node is draining; retry on another node",
                ),
            );
            return self.send(kind, &reply).await;
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            // Unreachable: the read branch only runs with a permit available.
            return false;
        };
        let shared = self.shared.clone();
        let tx = self.tx.clone();
        self.requests.spawn(async move {
            let _inflight = InflightGuard::enter(&shared.stats);
            let u = Value::String(req.u.clone());
            let run = execute(
                &shared.registry,
                shared.env.clock.as_ref(),
                shared.limits,
                req,
            );
            // Function panics are caught per step; this catches a node bug, so that the
            // client still gets an answer.
            let reply = AssertUnwindSafe(run)
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    RpcReply::failure(
                        u,
                        WireError::new(ErrorCode::Internal, "request handling panicked"),
                    )
                });
            let _ = tx.send(Outbound::Frame(kind.frame(&reply))).await;
            drop(permit);
        });
        true
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
