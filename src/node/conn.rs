//! One client connection, served by one task that owns the whole WebSocket: it reads
//! frames, runs their requests concurrently as futures, and writes replies, flushing only
//! when no more input or finished request is ready, so that one socket write carries as many
//! replies as were ready (the echo server's "write while input flows, flush when it runs
//! dry"). No channel, writer task or stream split sits between a reply and the socket.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream};
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, error::CapacityError};

use super::admission::{self, Admitted};
use super::shared::Shared;
use super::worker::Worker;
use crate::auth::{Access, WORKER_ROLE};
use crate::builtins::catalog_watch::CatalogWatch;
use crate::data::client_budget::ConnBudget;
use crate::data::stats::ErrorCounts;
use crate::env::BoxStream;
use crate::fabric::serve_peer;
use crate::protocol::{ErrorCode, Incoming, WireError, decode_frame, decode_text};
use crate::pubsub::mailbox::Mailbox;
use crate::rpc::reply::Done;
use crate::rpc::{Reply, Unordered, execute_in};

type Ws = WebSocketStream<BoxStream>;

/// How long a closing connection waits for its close frame to leave.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A frame's payload: text (tungstenite checked it is UTF-8) or bytes.
enum Frame<'f> {
    Text(&'f str),
    Binary(&'f [u8]),
}

/// Whether replies go out as text or binary: the same kind as the request.
#[derive(Clone, Copy)]
enum FrameKind {
    Text,
    Binary,
}

impl FrameKind {
    /// The reply as a frame; a reply larger than the node's message limit is replaced by a
    /// 1016 error (clients apply the same limit and would otherwise drop the connection).
    fn frame(self, reply: &Reply, max_message_bytes: usize, errors: &ErrorCounts) -> Message {
        if let Err(e) = &reply.outcome {
            errors.record(e.code, &reply.u, &e.details);
        }
        self.message(reply.to_text(max_message_bytes))
    }

    /// `json` in a frame of this kind.
    fn message(self, json: String) -> Message {
        match self {
            FrameKind::Text => Message::text(json),
            FrameKind::Binary => Message::binary(json.into_bytes()),
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
    let Some((ws, admitted)) = admission::upgrade(&shared, stream, peer).await else {
        shared
            .view
            .stats
            .handshakes_failed
            .fetch_add(1, Ordering::Relaxed);
        return;
    };
    let (access, expires, _slot) = match admitted {
        Admitted::Client {
            access,
            expires,
            slot,
        } => (access, expires, slot),
        Admitted::Peer => {
            shared
                .view
                .stats
                .peer_links_accepted
                .fetch_add(1, Ordering::Relaxed);
            // Peer links outlive the shutdown signal: a stopping node still needs its peers
            // to commit its departure. They end once it has left (or given up), when the
            // node closes its network; ending them here instead would leave the socket open
            // under the node's own calls on it.
            return serve_peer(shared.view.fabric.clone(), ws, peer).await;
        }
    };
    let expires = expires.and_then(|exp| admission::expiry(exp, shared.view.env.clock.as_ref()));
    let (id, tally) = shared.view.stats.track_connection();
    let _tracked = Tracked {
        stats: &shared.view.stats,
        pubsub: &shared.view.pubsub,
        id,
    };
    let conn = Connection {
        shared: &shared,
        max_inflight: shared.settings.max_inflight_per_connection,
        tally,
        id,
        requests: std::sync::atomic::AtomicU64::new(0),
        trees: Arc::default(),
        access,
    };
    conn.serve(ws, shutdown, expires).await;
}

/// Unregisters a connection (its in-flight counter, its subscriptions) however the
/// connection ends, panics and aborts included. (Its `ClientSlot` gives back its place.)
struct Tracked<'a> {
    stats: &'a crate::data::stats::Stats,
    pubsub: &'a crate::pubsub::exchange::Exchange,
    id: u64,
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        // Its subscriptions die with it.
        self.pubsub.forget(self.id);
        self.stats.forget_connection(self.id);
    }
}

struct Connection<'a> {
    shared: &'a Shared,
    /// Requests running at once; at the limit the node stops reading this client
    /// (backpressure through TCP).
    max_inflight: usize,
    /// Its requests running (for `cluster_map`), bytes and request sizes (for `/metrics`).
    tally: Arc<crate::data::stats::ConnTally>,
    /// Its number on this node and how many requests it sent: a request's made trace id.
    id: u64,
    requests: std::sync::atomic::AtomicU64,
    /// Bytes of JSON trees its running calls decoded (`registry::meter`).
    trees: Arc<AtomicUsize>,
    /// What the client's token allows (everything, when tokens are not required).
    access: Access,
}

/// A running request: resolves to its reply, and the bytes its frame was charged.
type RequestFuture<'a> = futures_util::future::BoxFuture<'a, (Message, usize)>;

/// Polls a request once: most complete then, and their reply is queued; one that waits
/// joins `running` (which polls it again with a real waker), holding its frame's bytes.
#[inline]
fn run_or_hold<'a>(
    mut request: RequestFuture<'a>,
    charged: usize,
    out: &mut Outbox<'a>,
    running: &mut Unordered<RequestFuture<'a>>,
) {
    let waker = futures_util::task::noop_waker();
    match request.as_mut().poll(&mut Context::from_waker(&waker)) {
        Poll::Ready((reply, _)) => out.push(reply),
        Poll::Pending => {
            out.budget.charge(charged);
            running.push(request);
        }
    }
}

/// Replies waiting to be written, and the connection's bytes (`budget.rs`).
struct Outbox<'a> {
    queue: VecDeque<Message>,
    /// Counts the bytes queued to the client.
    tally: Arc<crate::data::stats::ConnTally>,
    budget: ConnBudget<'a>,
    /// When a reply last moved into the socket, or the queue was last empty.
    last_progress: Instant,
    /// Something other than a notification was queued since the last flush: it goes out
    /// at once. Notifications alone wait one turn of the scheduler before the flush, so
    /// that those published meanwhile share its write (`poll_event`).
    urgent: bool,
    /// The flush already waited its turn.
    waited: bool,
    /// Publishes read since the connection last had nothing to do (`Connection::publish`).
    publish_streak: u32,
}

impl Outbox<'_> {
    /// Queues a notification (which may wait a turn to share a write).
    fn push_notification(&mut self, m: Message) {
        let urgent = self.urgent;
        self.push(m);
        self.urgent = urgent;
    }

    fn push(&mut self, m: Message) {
        self.urgent = true;
        self.tally
            .bytes_out
            .fetch_add(m.len() as u64, Ordering::Relaxed);
        self.budget.charge(m.len());
        self.queue.push_back(m);
    }

    fn pop(&mut self) -> Option<Message> {
        let m = self.queue.pop_front()?;
        self.budget.release(m.len());
        Some(m)
    }
}

/// Publishes in a row a connection hands out itself before it passes them to the
/// publishing task (`Connection::publish`).
const INLINE_PUBLISHES: u32 = 4;

/// How often a connection paused by the node's budget (not its own) looks again: another
/// connection's release does not wake it.
const NODE_BUDGET_RECHECK: Duration = Duration::from_millis(25);

/// What woke the connection.
enum Event {
    Stop,
    /// A request finished; its reply, ready to send, and the bytes its frame held.
    Finished((Message, usize)),
    Frame(Option<Result<Message, tungstenite::Error>>),
    /// The socket failed while writing: the client is gone.
    WriteFailed,
    /// A call for the worker on the other end.
    ToWorker(Message),
    /// A notification for one of the client's subscriptions (`catalog_watch`).
    Push(Message),
    /// Replies have not drained for the stall timeout: the client stopped reading.
    Stalled,
    /// The client's token ran out.
    Expired,
    /// A subscriber's notifications overflowed its queue (policy `disconnect`).
    TooSlow,
}

/// What the connection does after an event.
enum After {
    Continue,
    /// Send what is queued, then this close frame.
    Close(CloseFrame),
    /// The client sent a close frame: answer it and end.
    AnswerClose,
    /// End at once (the client is gone, or does not read).
    Gone,
    ReadError(tungstenite::Error),
}

impl<'a> Connection<'a> {
    async fn serve(&self, ws: Ws, shutdown: watch::Receiver<bool>, expires: Option<Instant>) {
        let mut worker = None;
        self.serve_frames(ws, shutdown, expires, &mut worker).await;
        // A worker's functions leave with its connection.
        if let Some(w) = worker {
            self.shared
                .view
                .stats
                .workers
                .fetch_sub(1, Ordering::Relaxed);
            let which = w.end();
            if !which.is_empty() {
                self.shared.view.functions.remove(&which);
                let functions = self.shared.view.functions.clone();
                tokio::spawn(async move {
                    if let Err(e) = functions.unpublish(which).await {
                        tracing::warn!(error = %e, "a disconnected worker's functions stay in the catalog");
                    }
                });
            }
        }
    }

    async fn serve_frames(
        &self,
        mut ws: Ws,
        mut shutdown: watch::Receiver<bool>,
        expires: Option<Instant>,
        worker: &mut Option<Worker>,
    ) {
        let mut expiry = expires.map(|at| Box::pin(tokio::time::sleep_until(at)));
        // The flag itself, read when a frame is handled: a frame read in the same poll that
        // ran a request (which may have let the client learn of the shutdown and send it)
        // can follow the signal without `stop` having been polled since.
        let signalled = shutdown.clone();
        let stop = crate::shutdown::stopping(&mut shutdown);
        tokio::pin!(stop);
        let clock = self.shared.view.env.clock.clone();
        let timer = tokio::time::sleep_until(clock.now());
        tokio::pin!(timer);
        let mut draining = false;
        let mut running: Unordered<RequestFuture<'a>> = Unordered::new();
        let mut out = Outbox {
            queue: VecDeque::new(),
            tally: self.tally.clone(),
            budget: self.shared.view.clients.connection(),
            last_progress: clock.now(),
            urgent: false,
            waited: false,
            publish_streak: 0,
        };
        let mut unflushed = false;
        // The client's subscriptions to the catalog's changes and to queues (none until it
        // subscribes).
        let mut watch = Pushed::default();
        // Where its topic subscriptions' notifications wait (from its first subscription).
        let mut mailbox: Option<Arc<Mailbox>> = None;
        let stall = Duration::from_millis(self.shared.settings.reply_stall_timeout_ms);
        loop {
            if draining && running.is_empty() {
                let frame = CloseFrame {
                    code: CloseCode::Away,
                    reason: "node shutting down".into(),
                };
                return close(ws, out.queue, frame).await;
            }
            self.tally.inflight.store(running.len(), Ordering::Relaxed);
            let event = std::future::poll_fn(|cx| {
                if let Some(e) = expiry.as_mut()
                    && e.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(Event::Expired);
                }
                let state = PollState {
                    ws: &mut ws,
                    out: &mut out,
                    unflushed: &mut unflushed,
                    running: &mut running,
                    timer: timer.as_mut(),
                    now: clock.now(),
                    stall,
                    max_inflight: self.max_inflight,
                    trees: self.trees.load(Ordering::Relaxed),
                    publish_room: self.shared.fanout.has_room(),
                };
                poll_event(
                    cx,
                    state,
                    stop.as_mut(),
                    draining,
                    worker.as_mut().map(|w| &mut w.outbox),
                    Pushes {
                        catalog: watch.catalog.as_mut().map(|w| &mut w.outbox),
                        queues: watch.queues.as_mut().map(|w| &mut w.outbox),
                        mailbox: mailbox.as_deref(),
                    },
                )
            })
            .await;
            if matches!(event, Event::Frame(_)) && *signalled.borrow() {
                draining = true;
            }
            let after = self.on_event(
                event,
                &mut draining,
                &mut running,
                &mut out,
                worker,
                &mut watch,
                &mut mailbox,
            );
            match after {
                After::Continue => {}
                After::Close(frame) => return close(ws, out.queue, frame).await,
                // The client closed: answer its close frame (tungstenite queued the reply).
                // `SinkExt::close` flushes it; the inherent `close` would try to send a
                // second close frame and fail. Dropping `running` cancels its requests.
                After::AnswerClose => {
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, SinkExt::close(&mut ws)).await;
                    return;
                }
                // The client is gone, or no close frame can reach it: dropping the
                // connection frees what it held.
                After::Gone => return,
                After::ReadError(e) => return self.on_read_error(ws, out.queue, e).await,
            }
        }
    }

    /// What one event does to the connection's state, and whether the connection goes on.
    #[allow(clippy::too_many_arguments)] // the connection's state, borrowed piecewise
    #[inline]
    fn on_event(
        &self,
        event: Event,
        draining: &mut bool,
        running: &mut Unordered<RequestFuture<'a>>,
        out: &mut Outbox<'a>,
        worker: &mut Option<Worker>,
        watch: &mut Pushed,
        mailbox: &mut Option<Arc<Mailbox>>,
    ) -> After {
        match event {
            Event::Stop => *draining = true,
            Event::Finished((reply, charged)) => {
                out.budget.release(charged);
                // Notifications waiting go first: a publish's ack follows its publisher's
                // own notifications.
                while let Some(text) = mailbox.as_deref().and_then(Mailbox::pop) {
                    out.push_notification(Message::text(text));
                }
                out.push(reply);
            }
            Event::ToWorker(call) => out.push(call),
            Event::Push(push) => {
                out.push_notification(push);
                // And what else waits now, within the same bounds: a pass of the loop per
                // notification would cost more than the notification.
                if let Some(m) = mailbox.as_deref() {
                    while out.queue.len() < self.max_inflight && !out.budget.over_own() {
                        let Some(text) = m.pop() else { break };
                        out.push_notification(Message::text(text));
                    }
                }
            }
            Event::Frame(Some(Ok(Message::Text(t)))) => {
                let frame = Frame::Text(t.as_str());
                let draining = *draining;
                self.on_frame(
                    frame,
                    FrameKind::Text,
                    draining,
                    running,
                    out,
                    worker,
                    watch,
                    mailbox,
                )
            }
            Event::Frame(Some(Ok(Message::Binary(b)))) => {
                let frame = Frame::Binary(&b);
                let draining = *draining;
                self.on_frame(
                    frame,
                    FrameKind::Binary,
                    draining,
                    running,
                    out,
                    worker,
                    watch,
                    mailbox,
                )
            }
            // Ping/pong: tungstenite answers pings itself.
            Event::Frame(Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)))) => {}
            Event::Frame(Some(Ok(Message::Close(_)))) => return After::AnswerClose,
            Event::Frame(None) | Event::WriteFailed => return After::Gone,
            Event::Stalled => {
                self.shared
                    .view
                    .clients
                    .stalled
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    queued = out.queue.len(),
                    "disconnecting a client that stopped reading its replies"
                );
                return After::Gone;
            }
            Event::Frame(Some(Err(e))) => return After::ReadError(e),
            Event::TooSlow => {
                tracing::info!("disconnecting a subscriber that fell behind its notifications");
                return After::Close(CloseFrame {
                    code: CloseCode::Policy,
                    reason: "subscriber too slow (pubsub_slow_subscriber = disconnect)".into(),
                });
            }
            // Replies already made go out; requests still running are cancelled.
            Event::Expired => {
                return After::Close(CloseFrame {
                    code: CloseCode::from(admission::TOKEN_EXPIRED_CLOSE),
                    reason: "token expired".into(),
                });
            }
        }
        After::Continue
    }

    /// Starts the request in `bytes`, or queues the immediate reply to a frame that is not
    /// one (or to any request while draining).
    #[allow(clippy::too_many_arguments)] // the connection's state, borrowed piecewise
    #[inline]
    fn on_frame(
        &self,
        frame: Frame<'_>,
        kind: FrameKind,
        draining: bool,
        running: &mut Unordered<RequestFuture<'a>>,
        out: &mut Outbox<'a>,
        worker: &mut Option<Worker>,
        watch: &mut Pushed,
        mailbox: &mut Option<Arc<Mailbox>>,
    ) {
        let (decoded, charged) = match frame {
            Frame::Text(t) => (decode_text(t), t.len()),
            Frame::Binary(b) => (decode_frame(b), b.len()),
        };
        self.tally
            .bytes_in
            .fetch_add(charged as u64, Ordering::Relaxed);
        match decoded {
            Ok(Incoming::Rpc(req)) if crate::builtins::queue::is_subscription_call(&req) => {
                self.queue_subscription(req, kind, watch, out)
            }
            Ok(Incoming::Rpc(req)) => {
                self.start_request(req, kind, charged, draining, running, out)
            }
            other => self.on_message(other, kind, draining, running, out, worker, watch, mailbox),
        }
    }

    /// A frame that is not a call (a worker's answer or registration, pub/sub), or that
    /// did not decode: handled or answered at once.
    #[allow(clippy::too_many_arguments)] // the connection's state, borrowed piecewise
    fn on_message(
        &self,
        decoded: Result<Incoming, crate::protocol::DecodeError>,
        kind: FrameKind,
        draining: bool,
        running: &mut Unordered<RequestFuture<'a>>,
        out: &mut Outbox<'a>,
        worker: &mut Option<Worker>,
        watch: &mut Pushed,
        mailbox: &mut Option<Arc<Mailbox>>,
    ) {
        let max = self.shared.settings.max_message_bytes;
        match decoded {
            // Taken by `on_frame`.
            Ok(Incoming::Rpc(_)) => {}
            Ok(Incoming::CallResult(result)) => match worker {
                Some(w) => w.answer(result),
                None => {
                    tracing::debug!(u = %result.u, "call-result on a connection that registered nothing")
                }
            },
            Ok(Incoming::Register(reg)) => {
                if draining {
                    let reply = Reply::failure(
                        Value::String(reg.u),
                        WireError::new(ErrorCode::ShuttingDown, "node is draining"),
                    );
                    out.push(kind.frame(&reply, max, &self.shared.view.stats.errors));
                } else {
                    self.register_worker(reg, kind, running, out, worker);
                }
            }
            Ok(Incoming::Subscribe(req)) => {
                let ack = self.subscribe(req, kind, watch, mailbox);
                out.push(kind.message(ack.to_string()));
            }
            Ok(Incoming::Publish(req)) => {
                self.publish(req, kind, out, running, mailbox.as_deref());
            }
            Ok(Incoming::Cache(text)) => self.cache_request(&text, kind, draining, running, out),
            Ok(Incoming::Unsubscribe(req)) => {
                let in_watch = watch
                    .catalog
                    .as_ref()
                    .is_some_and(|w| w.unsubscribe(&req.subscription_id))
                    || watch
                        .queues
                        .as_mut()
                        .is_some_and(|q| q.unsubscribe(&req.subscription_id));
                let removed = self
                    .shared
                    .view
                    .pubsub
                    .unsubscribe(self.id, &req.subscription_id)
                    || in_watch;
                let why = (!removed).then_some("no such subscription on this connection");
                let ack = crate::protocol::pubsub::ack(&req.u, removed, why);
                out.push(kind.message(ack.to_string()));
            }
            Err(e) => {
                let reply = Reply::failure(e.u, WireError::new(e.code, e.message));
                out.push(kind.frame(&reply, max, &self.shared.view.stats.errors));
            }
        }
    }

    /// Starts a call (most finish on their first poll), or answers it at once when the node
    /// drains or the connection is at its limit.
    #[inline]
    fn start_request(
        &self,
        req: crate::protocol::RpcRequest,
        kind: FrameKind,
        charged: usize,
        draining: bool,
        running: &mut Unordered<RequestFuture<'a>>,
        out: &mut Outbox<'a>,
    ) {
        let max = self.shared.settings.max_message_bytes;
        let refused = if draining {
            Some(WireError::new(
                ErrorCode::ShuttingDown,
                "node is draining; retry on another node",
            ))
        } else if running.len() >= self.max_inflight {
            // Only a worker's connection is read at its limit (the answers its own
            // requests wait for arrive on it); what it sends beyond the limit is refused.
            Some(WireError::new(
                ErrorCode::LimitExceeded,
                format!(
                    "this connection already has {} requests running (max_inflight_per_connection)",
                    self.max_inflight
                ),
            ))
        } else {
            None
        };
        if let Some(error) = refused {
            let reply = Reply::failure(Value::String(req.u), error);
            return out.push(kind.frame(&reply, max, &self.shared.view.stats.errors));
        }
        self.tally.dag_steps.record(req.cmds.len() as u64);
        let shared = self.shared;
        let registry = shared.view.functions.current();
        let trees = self.trees.clone();
        let access = self.access.clone();
        let trace = crate::rpc::Trace::Made {
            node: shared.view.control.id.0,
            conn: self.id,
            seq: self.requests.fetch_add(1, Ordering::Relaxed),
        };
        let mut request: RequestFuture<'a> =
            Box::pin(crate::registry::meter::metered(trees, async move {
                let reply = execute_in(
                    &registry,
                    Some(&*shared.view.peers),
                    shared.view.env.clock.as_ref(),
                    shared.limits,
                    &access,
                    trace,
                    req,
                )
                .await;
                (kind.frame(&reply, max, &shared.view.stats.errors), charged)
            }));
        // Most requests complete on their first poll (`run_or_hold`, written out here: this
        // is the call path every request takes).
        let waker = futures_util::task::noop_waker();
        match request.as_mut().poll(&mut Context::from_waker(&waker)) {
            Poll::Ready((reply, _)) => out.push(reply),
            Poll::Pending => {
                out.budget.charge(charged);
                running.push(request);
            }
        }
    }

    /// Publishes on this node: every matching subscription here gets it, and every
    /// interested peer, by way of the node's publishing task (`fanout`), in the order this
    /// connection sent them. The ack means the node took the message, not that anyone
    /// received it; a connection that subscribes gets its own notifications first, as the
    /// original sends them (its ack waits until the message was handed out).
    fn publish(
        &self,
        req: crate::protocol::pubsub::PublishRequest,
        kind: FrameKind,
        out: &mut Outbox<'a>,
        running: &mut Unordered<RequestFuture<'a>>,
        mailbox: Option<&Mailbox>,
    ) {
        use crate::protocol::pubsub::ack_text;
        if let Err(why) = req.message.check() {
            return out.push(kind.message(ack_text(&req.u, false, Some(&why))));
        }
        let own = |out: &mut Outbox<'a>| {
            while let Some(text) = mailbox.and_then(Mailbox::pop) {
                out.push(Message::text(text));
            }
        };
        // A publish that finds the connection idle and the publishing task with nothing
        // queued (so nothing of this connection's ahead of it) is handed out here and now:
        // the hop to the publishing task costs latency. A stream of them goes through the
        // task, which hands out while this connection reads the next.
        out.publish_streak += 1;
        if out.publish_streak <= INLINE_PUBLISHES && self.shared.fanout.idle() {
            self.shared.fanout.publish(req.message);
            own(out);
            return out.push(kind.message(ack_text(&req.u, true, None)));
        }
        match self.shared.fanout.enqueue(req.message, mailbox.is_some()) {
            Err(()) => out.push(kind.message(ack_text(
                &req.u,
                false,
                Some("node is shutting down; publish on another node"),
            ))),
            Ok(None) => out.push(kind.message(ack_text(&req.u, true, None))),
            Ok(Some(handed)) => {
                let u = req.u;
                let mut request: RequestFuture<'a> = Box::pin(async move {
                    let _ = handed.await;
                    (kind.message(ack_text(&u, true, None)), 0)
                });
                let waker = futures_util::task::noop_waker();
                match request.as_mut().poll(&mut Context::from_waker(&waker)) {
                    Poll::Ready((ack, _)) => {
                        own(out);
                        out.push(ack);
                    }
                    // Its notifications and then its ack when the publishing task is done.
                    Poll::Pending => running.push(request),
                }
            }
        }
    }

    /// Subscribes this connection to topics (the catalog's, or those clients publish on);
    /// the ack says whether it took.
    fn subscribe(
        &self,
        req: crate::protocol::pubsub::SubscribeRequest,
        kind: FrameKind,
        watch: &mut Pushed,
        mailbox: &mut Option<Arc<Mailbox>>,
    ) -> serde_json::Value {
        let patterns = &req.subscription.patterns;
        if patterns
            .iter()
            .any(|p| crate::queue::feed::queue_topic(&p.pattern).is_some())
        {
            // A queue subscription: one pattern, `mpreg.queue.<queue>`.
            let answer = match &patterns[..] {
                [p] => {
                    let sub = crate::queue::feed::SubscribeRequest {
                        queue_name: crate::queue::feed::queue_topic(&p.pattern)
                            .unwrap_or_default()
                            .to_owned(),
                        subscription_id: Some(req.subscription.subscription_id.clone()),
                        ..Default::default()
                    };
                    self.feed_queue(kind, watch, sub).map(drop)
                }
                _ => Err(format!(
                    "a queue subscription is one pattern, `{}<queue>`",
                    crate::queue::feed::TOPIC_PREFIX
                )),
            };
            return match answer {
                Ok(()) => crate::protocol::pubsub::ack(&req.u, true, None),
                Err(why) => crate::protocol::pubsub::ack(&req.u, false, Some(&why)),
            };
        }
        let discovery_only = patterns
            .iter()
            .all(|p| crate::builtins::catalog_watch::is_discovery(&p.pattern));
        if !discovery_only {
            let sub = req.subscription;
            if let Err(why) = sub.check(self.shared.view.pubsub.held(self.id)) {
                return crate::protocol::pubsub::ack(&req.u, false, Some(&why));
            }
            let settings = &self.shared.settings;
            let disconnect =
                settings.pubsub_slow_subscriber == crate::config::SlowSubscriber::Disconnect;
            let m = mailbox.get_or_insert_with(|| {
                Arc::new(Mailbox::new(settings.pubsub_queue_bytes, disconnect))
            });
            let backlog_ms = sub.backlog_ms();
            let token = self.shared.view.pubsub.subscribe(
                self.id,
                m,
                sub.subscription_id.clone(),
                sub.patterns.clone(),
                backlog_ms.is_some(),
            );
            if let (Some(token), Some(ms)) = (token, backlog_ms) {
                // Half the queue: a notification is about twice what its message costs to
                // keep, and live ones need room too.
                tokio::spawn(self.shared.fanout.clone().backlog(
                    self.id,
                    sub.subscription_id,
                    token,
                    sub.patterns,
                    ms,
                    settings.pubsub_queue_bytes / 2,
                ));
            }
            return crate::protocol::pubsub::ack(&req.u, true, None);
        }
        let settings = &self.shared.settings;
        let role = settings
            .introspection_role
            .as_ref()
            .filter(|_| settings.auth_required);
        let refused = match role {
            Some(role) if !self.access.has_role(role) => Some(format!(
                "{} lacks the `{role}` role the catalog's topics need",
                self.access.describe()
            )),
            _ => req
                .subscription
                .check(watch.catalog.as_ref().map_or(0, CatalogWatch::held))
                .err(),
        };
        if let Some(why) = refused {
            return crate::protocol::pubsub::ack(&req.u, false, Some(&why));
        }
        let w = watch.catalog.get_or_insert_with(|| {
            CatalogWatch::start(
                self.shared.view.clone(),
                matches!(kind, FrameKind::Binary),
                settings.max_message_bytes,
            )
        });
        w.subscribe(req.subscription.subscription_id, req.subscription.patterns);
        crate::protocol::pubsub::ack(&req.u, true, None)
    }

    /// Answers a `cache-request`: most are answered on their first poll (L1); one that
    /// waits for L2 runs beside the connection's other requests, under the same limit.
    fn cache_request(
        &self,
        text: &str,
        kind: FrameKind,
        draining: bool,
        running: &mut Unordered<RequestFuture<'a>>,
        out: &mut Outbox<'a>,
    ) {
        use crate::cache::request::{Outcome, decode, response_text};
        let view = &self.shared.view;
        let refuse = |u: &str, why: String| {
            kind.message(match &view.cache {
                Some(cache) => cache.refusal(u, why),
                None => {
                    let ts = view.env.wall_seconds();
                    let key = crate::cache::CacheKey::default();
                    let id = crate::cache::request::OperationId("", None);
                    response_text(u, &key, id, ts, Some(0.0), &Outcome::error(why))
                }
            })
        };
        let req = match decode(text) {
            Ok(r) => r,
            Err(e) => {
                let u = crate::protocol::jscan::find_u(text.as_bytes()).unwrap_or_default();
                return out.push(refuse(&u, format!("not a valid cache-request: {e}")));
            }
        };
        let refused = match &view.cache {
            None => Some("the cache is off on this node (enable_default_cache)".to_owned()),
            Some(_) if draining => Some("node is draining; retry on another node".to_owned()),
            Some(_) if running.len() >= self.max_inflight => Some(format!(
                "this connection already has {} requests running (max_inflight_per_connection)",
                self.max_inflight
            )),
            Some(_) => view
                .cache_role
                .as_ref()
                .filter(|role| !self.access.has_role(role))
                .map(|role| {
                    format!(
                        "{} lacks the `{role}` role cache requests need",
                        self.access.describe()
                    )
                }),
        };
        let Some(cache) = view.cache.clone().filter(|_| refused.is_none()) else {
            return out.push(refuse(&req.u, refused.unwrap_or_default()));
        };
        if let Some(answer) = cache.answer_now(&req) {
            return out.push(kind.message(answer));
        }
        let charged = text.len();
        let req = Box::new(req);
        let request: RequestFuture<'a> =
            Box::pin(async move { (kind.message(cache.handle(*req).await), charged) });
        run_or_hold(request, charged, out, running);
    }

    /// Starts feeding this connection queue subscription `sub` (the token's role checked
    /// first); its answer, or why not.
    fn feed_queue(
        &self,
        kind: FrameKind,
        watch: &mut Pushed,
        sub: crate::queue::feed::SubscribeRequest,
    ) -> Result<Value, String> {
        let settings = &self.shared.settings;
        if let Some(role) = settings
            .queue_role
            .as_ref()
            .filter(|_| settings.auth_required)
            && !self.access.has_role(role)
        {
            return Err(format!(
                "{} lacks the `{role}` role queue subscriptions need",
                self.access.describe()
            ));
        }
        let view = &self.shared.view;
        let feeds = watch.queues.get_or_insert_with(|| {
            crate::queue::feed::QueueFeeds::new(matches!(kind, FrameKind::Binary))
        });
        let holder = format!("{}/{}", view.control.id, self.id);
        feeds
            .subscribe(&view.queues, &holder, sub)
            .map_err(|e| e.to_string())
    }

    /// `queue_subscribe` or `queue_unsubscribe`, the single command of `req`: answered here,
    /// on the connection the subscription feeds.
    fn queue_subscription(
        &self,
        req: crate::protocol::RpcRequest,
        kind: FrameKind,
        watch: &mut Pushed,
        out: &mut Outbox<'a>,
    ) {
        use crate::builtins::queue::{SubscriptionCall, subscription_call};
        let max = self.shared.settings.max_message_bytes;
        let u = Value::String(req.u.clone());
        let (name, call) = match subscription_call(&req) {
            Ok(c) => c,
            Err(e) => {
                let reply = Reply::failure(u, e);
                return out.push(kind.frame(&reply, max, &self.shared.view.stats.errors));
            }
        };
        let answer = match call {
            SubscriptionCall::Subscribe(sub) => self.feed_queue(kind, watch, sub),
            SubscriptionCall::Unsubscribe(id) => {
                let ended = watch.queues.as_mut().is_some_and(|q| q.unsubscribe(&id));
                if ended {
                    Ok(serde_json::json!({"success": true, "subscription_id": id}))
                } else {
                    Err(format!(
                        "[subscription_not_found] no queue subscription {id:?} on this connection"
                    ))
                }
            }
        };
        let reply = match answer {
            Ok(v) => Reply::success(
                u,
                crate::rpc::reply::Done {
                    r: vec![(name, crate::protocol::json::Json::from(v))],
                    ..Default::default()
                },
            ),
            Err(why) => Reply::failure(u, WireError::new(ErrorCode::ExecutionFailed, why)),
        };
        out.push(kind.frame(&reply, max, &self.shared.view.stats.errors));
    }

    /// Registers a worker's functions here (callable at once) and answers once the catalog
    /// has them (routable from every node).
    fn register_worker(
        &self,
        reg: crate::protocol::RegisterRequest,
        kind: FrameKind,
        running: &mut Unordered<RequestFuture<'a>>,
        out: &mut Outbox<'a>,
        worker: &mut Option<Worker>,
    ) {
        let max = self.shared.settings.max_message_bytes;
        let u = Value::String(reg.u.clone());
        if !self.access.has_role(WORKER_ROLE) {
            let why = format!(
                "{} may not register functions: that needs the `{WORKER_ROLE}` role",
                self.access.describe()
            );
            let reply = Reply::failure(u, WireError::new(ErrorCode::Forbidden, why));
            return out.push(kind.frame(&reply, max, &self.shared.view.stats.errors));
        }
        let w = worker.get_or_insert_with(|| {
            self.shared
                .view
                .stats
                .workers
                .fetch_add(1, Ordering::Relaxed);
            Worker::new(self.shared.view.stats.clone())
        });
        if let Err(why) = w.check(&reg) {
            let reply = Reply::failure(u, WireError::new(ErrorCode::LimitExceeded, why));
            return out.push(kind.frame(&reply, max, &self.shared.view.stats.errors));
        }
        let entries = match self.shared.view.functions.add_checked(w.functions(&reg)) {
            Ok(entries) => entries,
            Err(e) => {
                let reply =
                    Reply::failure(u, WireError::new(ErrorCode::InvalidRequest, e.to_string()));
                return out.push(kind.frame(&reply, max, &self.shared.view.stats.errors));
            }
        };
        w.serving(&entries);
        let functions = &self.shared.view.functions;
        let errors = &self.shared.view.stats.errors;
        let within = Duration::from_millis(self.shared.settings.request_timeout_ms);
        running.push(Box::pin(async move {
            let reply = match functions.publish_within(entries.clone(), within).await {
                Ok(()) => {
                    let listed: Vec<Value> = entries
                        .iter()
                        .map(|e| {
                            let mut d = crate::builtins::introspection::describe_entry(e);
                            d.insert("idempotent".into(), Value::Bool(e.idempotent));
                            Value::Object(d)
                        })
                        .collect();
                    let r = vec![("registered".to_owned(), Value::Array(listed).into())];
                    Reply::success(
                        u,
                        Done {
                            r,
                            ..Done::default()
                        },
                    )
                }
                // Refused when it committed (the leader's catalog had a conflicting entry
                // this replica had not seen yet): taken off this node again.
                Err(e @ crate::data::functions::PublishError::Refused(_)) => {
                    Reply::failure(u, WireError::new(ErrorCode::InvalidRequest, e.to_string()))
                }
                Err(e) => Reply::failure(
                    u,
                    WireError::new(
                        ErrorCode::ClusterUnavailable,
                        format!("registered on this node, but not in the cluster catalog: {e}"),
                    ),
                ),
            };
            (kind.frame(&reply, max, errors), 0)
        }));
    }

    async fn on_read_error(&self, ws: Ws, out: VecDeque<Message>, e: tungstenite::Error) {
        match e {
            tungstenite::Error::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
                tracing::debug!(size, max_size, "closing connection: message too large");
                let frame = CloseFrame {
                    code: CloseCode::Size,
                    reason: format!("message of {size} bytes exceeds the limit of {max_size}")
                        .into(),
                };
                close(ws, out, frame).await;
            }
            tungstenite::Error::Protocol(e) => {
                let frame = CloseFrame {
                    code: CloseCode::Protocol,
                    reason: e.to_string().into(),
                };
                close(ws, out, frame).await;
            }
            tungstenite::Error::Utf8(e) => {
                let frame = CloseFrame {
                    code: CloseCode::Invalid,
                    reason: format!("text frame is not UTF-8: {e}").into(),
                };
                close(ws, out, frame).await;
            }
            other => tracing::debug!(error = %other, "connection read failed"),
        }
    }
}

/// The connection's state one step borrows.
struct PollState<'s, 'a> {
    ws: &'s mut Ws,
    out: &'s mut Outbox<'a>,
    unflushed: &'s mut bool,
    running: &'s mut Unordered<RequestFuture<'a>>,
    timer: Pin<&'s mut tokio::time::Sleep>,
    now: Instant,
    stall: Duration,
    max_inflight: usize,
    trees: usize,
    /// The node's publish queue has room (`Fanout::has_room`).
    publish_room: bool,
}

/// What the node pushes to the client unasked: catalog deltas, topic notifications.
struct Pushes<'x> {
    catalog: Option<&'x mut tokio::sync::mpsc::Receiver<Message>>,
    queues: Option<&'x mut tokio::sync::mpsc::Receiver<Message>>,
    mailbox: Option<&'x Mailbox>,
}

/// What the node pushes this connection besides topic notifications: the catalog's
/// changes and queue subscriptions' deliveries (none until the client subscribes).
#[derive(Default)]
struct Pushed {
    catalog: Option<CatalogWatch>,
    queues: Option<crate::queue::feed::QueueFeeds>,
}

/// One step of the connection: moves queued replies into the socket, then reports the
/// first ready event. Flushes only when nothing is ready, so replies that finish together
/// leave in one write.
fn poll_event<'a>(
    cx: &mut Context<'_>,
    st: PollState<'_, 'a>,
    stop: Pin<&mut impl Future<Output = ()>>,
    draining: bool,
    to_worker: Option<&mut tokio::sync::mpsc::Receiver<Message>>,
    pushes: Pushes<'_>,
) -> Poll<Event> {
    use futures_util::StreamExt;
    let PollState {
        ws,
        out,
        unflushed,
        running,
        mut timer,
        now,
        stall,
        max_inflight,
        trees,
        publish_room,
    } = st;
    let moved = match write_queued(cx, ws, out, unflushed, now, stall) {
        Ok(moved) => moved,
        Err(ended) => return Poll::Ready(ended),
    };
    if !draining && stop.poll(cx).is_ready() {
        return Poll::Ready(Event::Stop);
    }
    if let Poll::Ready(Some(reply)) = running.poll_next_unpin(cx) {
        return Poll::Ready(Event::Finished(reply));
    }
    let worker = to_worker.is_some();
    if out.queue.len() < max_inflight
        && !out.budget.over_own()
        && let Some(calls) = to_worker
        && let Poll::Ready(Some(call)) = calls.poll_recv(cx)
    {
        return Poll::Ready(Event::ToWorker(call));
    }
    // An overflowed subscriber (policy `disconnect`) goes whether or not it has room.
    if pushes
        .mailbox
        .is_some_and(|m| m.overflowed.load(std::sync::atomic::Ordering::Relaxed))
    {
        return Poll::Ready(Event::TooSlow);
    }
    if out.queue.len() < max_inflight && !out.budget.over_own() {
        if let Some(catalog) = pushes.catalog
            && let Poll::Ready(Some(push)) = catalog.poll_recv(cx)
        {
            return Poll::Ready(Event::Push(push));
        }
        if let Some(queues) = pushes.queues
            && let Poll::Ready(Some(push)) = queues.poll_recv(cx)
        {
            return Poll::Ready(Event::Push(push));
        }
        if let Some(mailbox) = pushes.mailbox
            && let Poll::Ready(text) = mailbox.poll_pop(cx)
        {
            return Poll::Ready(Event::Push(Message::text(text)));
        }
    }
    // Read only with room for another request, no backlog of unsent replies, and bytes to
    // spare. A worker's connection is read at its in-flight limit: the answers its
    // requests may be waiting for arrive on it (requests beyond the limit are refused).
    let room = (worker || running.len() < max_inflight) && out.queue.len() < max_inflight;
    let mut wake_at: Option<Instant> = None;
    if room && publish_room && out.budget.may_read(trees) {
        if let Poll::Ready(frame) = Pin::new(&mut *ws).poll_next(cx) {
            return Poll::Ready(Event::Frame(frame));
        }
    } else if room && !out.budget.over_own() {
        // Paused by the node's budget or its publish queue: other connections' writes and
        // the publishing task free them, and wake no one here; look again shortly.
        wake_at = Some(now + NODE_BUDGET_RECHECK);
    }
    if !out.queue.is_empty() && !moved {
        // Waiting on the client to read: wake at the stall deadline (checked above).
        let deadline = out.last_progress + stall;
        wake_at = Some(wake_at.map_or(deadline, |w| w.min(deadline)));
    }
    if let Some(at) = wake_at {
        timer.as_mut().reset(at);
        if timer.as_mut().poll(cx).is_ready() {
            cx.waker().wake_by_ref();
        }
    }
    out.publish_streak = 0; // nothing was ready: the next publish finds the connection idle
    flush_idle(cx, ws, out, unflushed)
}

/// Moves queued replies into the socket while it takes them; whether any moved.
/// `Err`: the connection ends (the write failed, or replies have not drained for the
/// stall timeout).
#[inline]
fn write_queued(
    cx: &mut Context<'_>,
    ws: &mut Ws,
    out: &mut Outbox<'_>,
    unflushed: &mut bool,
    now: Instant,
    stall: Duration,
) -> Result<bool, Event> {
    let mut moved = false;
    while !out.queue.is_empty() {
        match Pin::new(&mut *ws).poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                if let Some(m) = out.pop()
                    && Pin::new(&mut *ws).start_send(m).is_err()
                {
                    return Err(Event::WriteFailed);
                }
                moved = true;
                *unflushed = true;
            }
            Poll::Ready(Err(_)) => return Err(Event::WriteFailed),
            Poll::Pending => break, // the socket is full: keep reading nothing new
        }
    }
    if moved || out.queue.is_empty() {
        out.last_progress = now;
    } else if now.saturating_duration_since(out.last_progress) >= stall {
        return Err(Event::Stalled);
    }
    Ok(moved)
}

/// Nothing was ready: flushes what was written, after one turn for more notifications to
/// join it when only notifications wait.
#[inline]
fn flush_idle(
    cx: &mut Context<'_>,
    ws: &mut Ws,
    out: &mut Outbox<'_>,
    unflushed: &mut bool,
) -> Poll<Event> {
    if *unflushed && out.queue.is_empty() {
        if !out.urgent && !out.waited {
            // Only notifications: one turn for more to join this write (a write per
            // notification costs more than the notification).
            out.waited = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        match Pin::new(&mut *ws).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                *unflushed = false;
                out.urgent = false;
                out.waited = false;
            }
            Poll::Ready(Err(_)) => return Poll::Ready(Event::WriteFailed),
            Poll::Pending => {}
        }
    }
    Poll::Pending
}

/// Sends what is queued and a close frame, then closes (bounded by [`CLOSE_TIMEOUT`]).
async fn close(mut ws: Ws, out: VecDeque<Message>, frame: CloseFrame) {
    let flush_all = async {
        for m in out {
            ws.feed(m).await?;
        }
        ws.send(Message::Close(Some(frame))).await?;
        SinkExt::close(&mut ws).await
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, flush_all).await;
}
