//! The client library: one WebSocket connection, many requests in flight, replies matched
//! by `u`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mpreg::ClientError> {
//! use serde_json::json;
//! let client = mpreg::Client::connect("ws://127.0.0.1:9000").await?;
//! let sum = client
//!     .call("add", json!([2, 3]))
//!     .locs(["cpu"])
//!     .function_id("math.add")
//!     .version_constraint(">=1.0.0,<2.0.0")
//!     .await?;
//! # Ok(()) }
//! ```

pub mod cache;
mod cluster;
mod cluster_pubsub;
mod error;
pub mod pubsub;
pub mod queue;

use std::collections::BTreeMap;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

pub use cluster::{ClusterClient, Retry};
pub use cluster_pubsub::ClusterSubscription;
pub use error::ClientError;
pub use pubsub::{Notification, Subscription};
pub use queue::{Consumer, Delivery, Queue, QueueSubscription};

use crate::env::Env;
use crate::protocol::{RpcCommand, RpcReply, RpcRequest};
use crate::transport::{websocket_config, write_loop};

/// Client-side wait beyond the request's own timeout, so the node's timeout error (1004)
/// arrives before the client gives up.
const TIMEOUT_GRACE: Duration = Duration::from_secs(2);
/// Replies larger than this are refused (as the original Python client's default).
const MAX_REPLY_BYTES: usize = 20 * 1024 * 1024;
/// Requests queued for the socket before `call` waits.
const SEND_QUEUE: usize = 1024;

/// Requests awaiting replies, and whether the connection has ended (then nothing more will
/// be answered).
#[derive(Default)]
struct PendingState {
    waiting: BTreeMap<u64, oneshot::Sender<RpcReply>>,
    /// Subscribes, unsubscribes and publishes awaiting their `pubsub-ack`, by sequence
    /// number (`Err`: the node's reason for refusing).
    acks: BTreeMap<u64, oneshot::Sender<Result<(), String>>>,
    /// `cache-request`s awaiting their `cache-response`, by sequence number.
    cache: BTreeMap<u64, oneshot::Sender<serde_json::Value>>,
    /// Where each subscription's notifications go, by its id.
    subscriptions: BTreeMap<String, pubsub::Route>,
    closed: bool,
    /// The node closed the connection as "going away" (1001): it was draining, and it only
    /// closes once every request it ran has been answered, so an unanswered request on
    /// this connection never ran.
    drained: bool,
}

type Pending = Mutex<PendingState>;

/// A connection to one node. Cheap to clone; all clones share the connection.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::Sender<Message>,
    /// Requests awaiting their reply, by sequence number.
    pending: Arc<Pending>,
    next_seq: AtomicU64,
    /// Random per-connection prefix of every `u`, so ids stay unique across clients.
    prefix: String,
    default_timeout: Duration,
    url: String,
}

/// `ws://host:port[/path]` or `wss://…` → (`host:port`, whether it is TLS).
fn authority(url: &str) -> Result<(String, bool), ClientError> {
    let u = crate::ids::NodeUrl::parse(url).map_err(|e| ClientError::InvalidUrl {
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    Ok((u.authority(), u.is_tls()))
}

/// How a client presents itself to a node: a token (for nodes that require one) and, for
/// `wss://`, the TLS it trusts and shows. Built once and shared by every connection.
#[derive(Clone, Default)]
pub struct ConnectOptions {
    token: Option<String>,
    tls: Option<crate::tls::ClientTls>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("token", &self.token.as_ref().map(|_| "…"))
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl ConnectOptions {
    pub fn new() -> ConnectOptions {
        ConnectOptions::default()
    }

    /// The token sent as `Authorization: Bearer …` on the upgrade.
    pub fn token(mut self, token: impl Into<String>) -> ConnectOptions {
        self.token = Some(token.into());
        self
    }

    /// For `wss://`: the CAs to trust (`ca: None`, the system's store and `SSL_CERT_FILE`)
    /// and a client certificate with its key, for nodes that require one.
    pub fn tls(
        mut self,
        files: &crate::tls::ClientTlsFiles,
    ) -> Result<ConnectOptions, ClientError> {
        self.tls = Some(
            crate::tls::ClientTls::from_files(files)
                .map_err(|e| ClientError::Tls(e.to_string()))?,
        );
        Ok(self)
    }
}

/// Opens a raw WebSocket to `url` (for tools that speak the protocol themselves, the
/// benchmark, tests): TCP through `env`, TLS for `wss://`, the token on the
/// upgrade. A node that refuses the upgrade (401, 403) says why in the error.
pub async fn open_websocket(
    env: &Env,
    url: &str,
    options: &ConnectOptions,
    max_message_bytes: usize,
) -> Result<tokio_tungstenite::WebSocketStream<crate::env::BoxStream>, ClientError> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let (addr, tls) = authority(url)?;
    let connect_error = |source| ClientError::Connect {
        url: url.to_owned(),
        source,
    };
    let mut stream = env.net.connect(&addr).await.map_err(connect_error)?;
    if tls {
        let client_tls = match &options.tls {
            Some(t) => t.clone(),
            None => crate::tls::ClientTls::from_files(&crate::tls::ClientTlsFiles::default())
                .map_err(|e| ClientError::Tls(e.to_string()))?,
        };
        stream = client_tls
            .connect(stream, &addr)
            .await
            .map_err(|e| ClientError::Tls(format!("{url}: {e}")))?;
    }
    let mut request = url
        .into_client_request()
        .map_err(|e| ClientError::InvalidUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
    if let Some(token) = &options.token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| ClientError::InvalidUrl {
                url: url.to_owned(),
                reason: "the token is not a valid header value".to_owned(),
            })?;
        request.headers_mut().insert("authorization", value);
    }
    let config = websocket_config(max_message_bytes);
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|e| handshake_error(url, e))?;
    Ok(ws)
}

/// A failed upgrade: the node's refusal (status and reason), or what else went wrong.
fn handshake_error(url: &str, e: tokio_tungstenite::tungstenite::Error) -> ClientError {
    match e {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            let reason = resp
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).trim().to_owned())
                .unwrap_or_default();
            ClientError::Refused {
                url: url.to_owned(),
                status: resp.status().as_u16(),
                reason,
            }
        }
        other => ClientError::Handshake {
            url: url.to_owned(),
            message: other.to_string(),
        },
    }
}

impl Client {
    /// Connects with the production environment.
    pub async fn connect(url: &str) -> Result<Client, ClientError> {
        Client::connect_with(&Env::production(), url).await
    }

    /// Connects through `env` (the simulator passes its own).
    pub async fn connect_with(env: &Env, url: &str) -> Result<Client, ClientError> {
        Client::connect_with_options(env, url, &ConnectOptions::default()).await
    }

    /// Connects through `env`, presenting `options` (a token, TLS trust).
    pub async fn connect_with_options(
        env: &Env,
        url: &str,
        options: &ConnectOptions,
    ) -> Result<Client, ClientError> {
        let ws = open_websocket(env, url, options, MAX_REPLY_BYTES).await?;
        let (sink, frames) = ws.split();
        let (tx, rx) = mpsc::channel(SEND_QUEUE);
        tokio::spawn(write_loop(sink, rx));
        let pending: Arc<Pending> = Arc::default();
        tokio::spawn(read_loop(frames, pending.clone()));
        Ok(Client {
            inner: Arc::new(Inner {
                tx,
                pending,
                next_seq: AtomicU64::new(0),
                prefix: env.rng.hex_id(4),
                default_timeout: Duration::from_secs(30),
                url: url.to_owned(),
            }),
        })
    }

    /// The node this client talks to.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// One call; options are set on the returned builder, which is awaited.
    pub fn call(&self, fun: impl Into<String>, args: Value) -> CallBuilder<'_> {
        let fun = fun.into();
        let cmd = RpcCommand::new(String::new(), fun).args(args);
        CallBuilder {
            client: self,
            cmd,
            timeout: None,
        }
    }

    /// Runs `cmds` as one DAG; returns every sink's result by command name.
    pub async fn request(&self, cmds: Vec<RpcCommand>) -> Result<Map<String, Value>, ClientError> {
        let reply = self
            .send(RpcRequest::new(String::new(), cmds), None)
            .await?;
        reply
            .r
            .ok_or_else(|| ClientError::Protocol("reply has neither `r` nor `error`".into()))
    }

    /// Sends a full request (its `u` is replaced) and returns the reply, failing with
    /// [`ClientError::Rpc`] when the reply carries an error.
    pub async fn send(
        &self,
        req: RpcRequest,
        timeout: Option<Duration>,
    ) -> Result<RpcReply, ClientError> {
        self.send_tracked(req, timeout).await.map_err(|f| f.error)
    }

    /// Whether the connection has ended (nothing more can be sent or answered on it).
    pub fn is_closed(&self) -> bool {
        self.inner.pending.lock().closed || self.inner.tx.is_closed()
    }

    /// [`Client::send`], saying on failure whether the request left this client (the
    /// cluster client retries only what certainly did not).
    pub(crate) async fn send_tracked(
        &self,
        mut req: RpcRequest,
        timeout: Option<Duration>,
    ) -> Result<RpcReply, SendFailure> {
        let not_sent = |error| SendFailure { sent: false, error };
        let sent = |error| SendFailure { sent: true, error };
        let inner = &self.inner;
        if let Some(t) = timeout {
            req.timeout_ms = Some(u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1));
        }
        let wait = timeout
            .unwrap_or(inner.default_timeout)
            .saturating_add(TIMEOUT_GRACE);
        let seq = inner.next_seq.fetch_add(1, Ordering::Relaxed);
        req.u = format!("{}-{seq}", inner.prefix);
        let frame = serde_json::to_string(&req)
            .map_err(|e| not_sent(ClientError::Protocol(e.to_string())))?;
        let (reply_tx, reply_rx) = oneshot::channel();
        {
            let mut pending = inner.pending.lock();
            if pending.closed {
                return Err(not_sent(ClientError::Closed));
            }
            pending.waiting.insert(seq, reply_tx);
        }
        // Removes the pending entry however this future ends (timeout, drop, error).
        let _guard = PendingGuard {
            pending: &inner.pending,
            seq,
        };
        inner
            .tx
            .send(Message::text(frame))
            .await
            .map_err(|_| not_sent(ClientError::Closed))?;
        let reply = match tokio::time::timeout(wait, reply_rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => {
                let ran_maybe = !inner.pending.lock().drained;
                let failure = SendFailure {
                    sent: ran_maybe,
                    error: ClientError::Closed,
                };
                return Err(failure);
            }
            Err(_) => return Err(sent(ClientError::Timeout(wait))),
        };
        match reply.error {
            Some(e) => Err(sent(ClientError::Rpc {
                code: e.code,
                message: e.message,
                details: e.details,
            })),
            None => Ok(reply),
        }
    }
}

impl Client {
    /// A fresh id on this connection (`<prefix>-<kind>-<n>`).
    fn next_id(&self, kind: &str) -> String {
        let seq = self.inner.next_seq.fetch_add(1, Ordering::Relaxed);
        format!("{}-{kind}-{seq}", self.inner.prefix)
    }

    fn route_subscription(&self, id: String, route: pubsub::Route) {
        self.inner.pending.lock().subscriptions.insert(id, route);
    }

    fn forget_subscription(&self, id: &str) {
        self.inner.pending.lock().subscriptions.remove(id);
    }

    /// Sends the pub/sub message `make(u)` and waits for its `pubsub-ack`.
    async fn pubsub_request(
        &self,
        make: impl FnOnce(&str) -> serde_json::Value,
    ) -> Result<(), ClientError> {
        let inner = &self.inner;
        let seq = inner.next_seq.fetch_add(1, Ordering::Relaxed);
        let u = format!("{}-{seq}", inner.prefix);
        let frame = make(&u).to_string();
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = inner.pending.lock();
            if pending.closed {
                return Err(ClientError::Closed);
            }
            pending.acks.insert(seq, tx);
        }
        let sent = inner.tx.send(Message::text(frame)).await;
        let result = match sent {
            Err(_) => Err(ClientError::Closed),
            Ok(()) => match tokio::time::timeout(inner.default_timeout, rx).await {
                Ok(Ok(Ok(()))) => Ok(()),
                Ok(Ok(Err(why))) => Err(ClientError::PubSub(why)),
                Ok(Err(_)) => Err(ClientError::Closed),
                Err(_) => Err(ClientError::Timeout(inner.default_timeout)),
            },
        };
        inner.pending.lock().acks.remove(&seq);
        result
    }
}

/// A pub/sub frame from the node (an ack or a notification): handed to whoever waits.
fn dispatch_pubsub(text: &[u8], pending: &Pending) {
    let Ok(frame) = serde_json::from_slice::<serde_json::Value>(text) else {
        return;
    };
    match frame["role"].as_str() {
        Some("pubsub-ack") => {
            let seq = frame["operation_id"]
                .as_str()
                .and_then(|u| u.rsplit_once('-'))
                .and_then(|(_, n)| n.parse::<u64>().ok());
            let outcome = if frame["success"] == true {
                Ok(())
            } else {
                Err(frame["error"].as_str().unwrap_or("refused").to_owned())
            };
            if let Some(tx) = seq.and_then(|s| pending.lock().acks.remove(&s)) {
                let _ = tx.send(outcome);
            }
        }
        Some("pubsub-notification") => {
            if let Some(n) = pubsub::Notification::from_frame(&frame)
                && let Some(route) = pending.lock().subscriptions.get(&n.subscription_id)
            {
                route.deliver(n);
            }
        }
        _ => {}
    }
}

/// Whether a frame's text is a pub/sub message (its `role` says so).
fn is_pubsub(reply: &RpcReply) -> bool {
    reply
        .role
        .as_deref()
        .is_some_and(|r| r.starts_with("pubsub-"))
}

/// A failed send, and whether the request had left the client.
#[derive(Debug)]
pub(crate) struct SendFailure {
    pub(crate) sent: bool,
    pub(crate) error: ClientError,
}

struct PendingGuard<'a> {
    pending: &'a Pending,
    seq: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.pending.lock().waiting.remove(&self.seq);
    }
}

/// Routes replies to their callers; when the connection ends, every caller gets `Closed`.
async fn read_loop<S>(mut frames: S, pending: Arc<Pending>)
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    while let Some(Ok(msg)) = frames.next().await {
        let bytes: &[u8] = match &msg {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
            _ => &[],
        };
        let reply: RpcReply = match &msg {
            Message::Text(_) | Message::Binary(_) => match serde_json::from_slice(bytes) {
                Ok(r) if is_pubsub(&r) => {
                    dispatch_pubsub(bytes, &pending);
                    continue;
                }
                Ok(r) if r.role.as_deref() == Some("cache-response") => {
                    cache::dispatch(bytes, &r, &pending);
                    continue;
                }
                Ok(r) => r,
                Err(e) => {
                    // An ack refusing with a reason does not read as a reply.
                    if !bytes.is_empty() {
                        dispatch_pubsub(bytes, &pending);
                    }
                    tracing::debug!(error = %e, "a frame that is not a reply");
                    continue;
                }
            },
            Message::Close(frame) => {
                if frame.as_ref().is_some_and(|f| f.code == CloseCode::Away) {
                    pending.lock().drained = true;
                }
                break;
            }
            _ => continue,
        };
        let seq = reply
            .u
            .as_str()
            .and_then(|u| u.rsplit_once('-'))
            .and_then(|(_, n)| n.parse::<u64>().ok());
        if let Some(tx) = seq.and_then(|s| pending.lock().waiting.remove(&s)) {
            let _ = tx.send(reply);
        }
    }
    // Dropping the senders wakes every waiting caller with `Closed`, and ends every
    // subscription's stream.
    let mut pending = pending.lock();
    pending.closed = true;
    pending.waiting.clear();
    pending.acks.clear();
    pending.cache.clear();
    pending.subscriptions.clear();
}

/// The name of a call's one command: the function's name, as the original client sends,
/// unless an argument would then read as a reference to the call itself (`echo("echo")`
/// would be a self reference); then the first of `fun#1`, `fun#2`, … that no argument uses.
fn call_name(cmd: &RpcCommand) -> String {
    use crate::rpc::resolve::{Ref, references};
    let mentions = |s: &str, name: &str| {
        s == name
            || s.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('.'))
    };
    let used = |name: &str| {
        [&cmd.args, &cmd.kwargs].iter().any(|text| {
            references(text.get()).any(|f| match f.reference {
                Ref::Implicit(s) | Ref::Explicit(s) => mentions(&s, name),
            })
        })
    };
    if !used(&cmd.fun) {
        return cmd.fun.clone();
    }
    (1u64..)
        .map(|k| format!("{}#{k}", cmd.fun))
        .find(|n| !used(n))
        .unwrap_or_default()
}

/// A call being configured; `.await` sends it.
pub struct CallBuilder<'c> {
    client: &'c Client,
    cmd: RpcCommand,
    timeout: Option<Duration>,
}

/// The setters every call builder has: the command's matching fields and a deadline.
/// (For builders with `cmd: RpcCommand` and `timeout: Option<Duration>` fields.)
macro_rules! call_setters {
    () => {
        /// Resources the executing function must have.
        pub fn locs<I, S>(mut self, locs: I) -> Self
        where
            I: IntoIterator<Item = S>,
            S: Into<String>,
        {
            self.cmd = self.cmd.locs(locs);
            self
        }

        pub fn function_id(mut self, id: impl Into<String>) -> Self {
            self.cmd = self.cmd.function_id(id);
            self
        }

        /// e.g. `>=1.0.0,<2.0.0`.
        pub fn version_constraint(mut self, c: impl Into<String>) -> Self {
            self.cmd = self.cmd.version_constraint(c);
            self
        }

        pub fn kwarg(mut self, key: impl Into<String>, value: Value) -> Self {
            self.cmd = self.cmd.kwarg(key, value);
            self
        }

        /// Deadline for this call, enforced by the node and by the client.
        pub fn timeout(mut self, t: Duration) -> Self {
            self.timeout = Some(t);
            self
        }
    };
}
pub(crate) use call_setters;

impl CallBuilder<'_> {
    call_setters!();
}

/// A one-command request for `cmd` (named by [`call_name`]), and that name.
pub(crate) fn single_call(mut cmd: RpcCommand) -> (RpcRequest, String) {
    cmd.name = call_name(&cmd);
    let name = cmd.name.clone();
    (RpcRequest::new(String::new(), vec![cmd]), name)
}

/// The result of a [`single_call`] named `name` in `reply`.
pub(crate) fn single_result(mut reply: RpcReply, name: &str) -> Result<Value, ClientError> {
    reply
        .r
        .as_mut()
        .and_then(|r| r.remove(name))
        .ok_or_else(|| ClientError::Protocol(format!("reply has no result for `{name}`")))
}

impl<'c> IntoFuture for CallBuilder<'c> {
    type Output = Result<Value, ClientError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'c>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let (req, name) = single_call(self.cmd);
            single_result(self.client.send(req, self.timeout).await?, &name)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_names_never_reference_themselves() {
        let cmd = RpcCommand::new("", "echo").args(serde_json::json!(["echo", "echo#1.x"]));
        assert_eq!(call_name(&cmd), "echo#2");
        let cmd = RpcCommand::new("", "echo").args(serde_json::json!(["hi"]));
        assert_eq!(call_name(&cmd), "echo");
    }

    #[test]
    fn urls() {
        assert_eq!(
            authority("ws://127.0.0.1:9000").unwrap(),
            ("127.0.0.1:9000".to_owned(), false)
        );
        assert_eq!(
            authority("ws://node:9000/any/path?x=1").unwrap(),
            ("node:9000".to_owned(), false)
        );
        assert_eq!(
            authority("wss://a:1/?token=t").unwrap(),
            ("a:1".to_owned(), true)
        );
        assert!(authority("http://a:1").is_err());
        assert!(authority("ws://nohost").is_err());
    }
}
