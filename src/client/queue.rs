//! Queues from Rust: the `queue_*` built-ins behind typed calls, and a consumer that is a
//! [`Stream`] of deliveries, each acked, nacked or extended.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mpreg::ClientError> {
//! use futures_util::StreamExt;
//! use serde_json::json;
//! use std::time::Duration;
//! let client = mpreg::Client::connect("ws://127.0.0.1:9000").await?;
//! let orders = client.queue("orders");
//! orders.create().visibility_timeout(Duration::from_secs(30)).max_receives(5).await?;
//! // Answered once the message is stored (fsynced by a node in sqlite mode).
//! let sent = orders.send(json!({"id": 1})).dedup_id("order-1").await?;
//! let mut consumer = orders.consumer().max(10).wait(Duration::from_secs(20));
//! while let Some(delivery) = consumer.next().await {
//!     let delivery = delivery?;
//!     // … work on delivery.payload …
//!     delivery.ack().await?;
//! }
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Client, ClientError};

type Boxed<'a, T> = Pin<Box<dyn Future<Output = Result<T, ClientError>> + Send + 'a>>;

/// One queue, by name, on the cluster a [`Client`] reaches (any node forwards to the
/// queue's owner). Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    client: Client,
    name: String,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("name", &self.name).finish()
    }
}

impl Client {
    /// The queue `name` (nothing is asked of the node until a call).
    pub fn queue(&self, name: impl Into<String>) -> Queue {
        Queue {
            client: self.clone(),
            name: name.into(),
        }
    }
}

fn seconds(d: Duration) -> Value {
    json!(d.as_secs_f64())
}

fn decode<T: serde::de::DeserializeOwned>(fun: &str, v: Value) -> Result<T, ClientError> {
    serde_json::from_value(v).map_err(|e| ClientError::Protocol(format!("{fun}: {e}")))
}

impl Queue {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Calls the built-in `fun` with this queue's name and `fields`.
    pub async fn call(
        &self,
        fun: &str,
        mut fields: Map<String, Value>,
    ) -> Result<Value, ClientError> {
        fields.insert("queue_name".into(), json!(self.name));
        self.client.call(fun, json!([Value::Object(fields)])).await
    }

    /// `queue_create`: settings are set on the builder; the same settings again answer
    /// with the existing queue, other settings are refused.
    pub fn create(&self) -> CreateBuilder<'_> {
        CreateBuilder {
            queue: self,
            fields: Map::new(),
        }
    }

    /// `queue_send` of `payload` (any JSON); options on the builder.
    pub fn send(&self, payload: Value) -> SendBuilder<'_> {
        let mut fields = Map::new();
        fields.insert("message_payload".into(), payload);
        SendBuilder {
            queue: self,
            fields,
        }
    }

    /// `queue_send_batch`: up to 100 payloads, sent together (one commit); each answered.
    pub async fn send_batch(&self, payloads: Vec<Value>) -> Result<Vec<Sent>, ClientError> {
        let messages: Vec<Value> = payloads
            .into_iter()
            .map(|p| json!({ "message_payload": p }))
            .collect();
        let mut fields = Map::new();
        fields.insert("messages".into(), Value::Array(messages));
        let reply = self.call("queue_send_batch", fields).await?;
        #[derive(Deserialize)]
        struct Batch {
            results: Vec<Value>,
        }
        let batch: Batch = decode("queue_send_batch", reply)?;
        batch
            .results
            .into_iter()
            .map(|r| match r.get("error").and_then(Value::as_str) {
                Some(e) => Err(ClientError::Rpc {
                    code: crate::protocol::ErrorCode::ExecutionFailed.as_i64(),
                    message: e.to_owned(),
                    details: r.clone(),
                }),
                None => decode("queue_send_batch", r),
            })
            .collect()
    }

    /// `queue_receive`: up to `max` messages (default 1), waiting as set.
    pub fn receive(&self) -> ReceiveBuilder<'_> {
        ReceiveBuilder {
            queue: self,
            options: ReceiveOptions::default(),
        }
    }

    /// A consumer: receives (long polls) whenever its deliveries are used up, so it holds
    /// at most `max` unacknowledged deliveries it has not yet handed out.
    pub fn consumer(&self) -> Consumer {
        Consumer {
            queue: self.clone(),
            options: ReceiveOptions {
                max: 10,
                wait: Some(Duration::from_secs(20)),
                visibility: None,
                holder: None,
            },
            ready: VecDeque::new(),
            polling: None,
            ended: false,
        }
    }

    /// `queue_subscribe`: the node feeds this connection the queue's messages (push), at
    /// most `max_in_flight` unacknowledged at once; each arrives as a [`Delivery`] of the
    /// returned stream. Dropping the stream ends the subscription with the connection;
    /// [`QueueSubscription::unsubscribe`] ends it now.
    pub async fn subscribe(&self, max_in_flight: u64) -> Result<QueueSubscription, ClientError> {
        use super::pubsub::{BUFFERED, Route};
        let id = self.client.next_id("qsub");
        let (tx, rx) = tokio::sync::mpsc::channel(BUFFERED);
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        // Routed before the node can send anything for it.
        self.client
            .route_subscription(id.clone(), Route { tx, dropped });
        let mut f = Map::new();
        f.insert("subscription_id".into(), json!(id));
        f.insert("max_in_flight".into(), json!(max_in_flight));
        if let Err(e) = self.call("queue_subscribe", f).await {
            self.client.forget_subscription(&id);
            return Err(e);
        }
        Ok(QueueSubscription {
            id,
            rx,
            queue: self.clone(),
        })
    }

    /// `queue_ack`: the delivery `receipt` names is done. A receipt that is no longer
    /// current (redelivered since, or from the owner's earlier run) is refused.
    pub async fn ack(&self, receipt: &str) -> Result<(), ClientError> {
        let mut f = Map::new();
        f.insert("receipt_handle".into(), json!(receipt));
        self.call("queue_ack", f).await.map(drop)
    }

    /// `queue_ack` of up to 100 deliveries in one call: how many were acknowledged, and
    /// each receipt refused with the node's reason (a stale one fails alone).
    pub async fn ack_batch(&self, receipts: &[&str]) -> Result<AckBatch, ClientError> {
        let mut f = Map::new();
        f.insert("receipt_handles".into(), json!(receipts));
        decode("queue_ack", self.call("queue_ack", f).await?)
    }

    /// `queue_nack`: gives the delivery back, visible again after `delay`. Whether the
    /// message went to the dead letters (it had its `max_receives`).
    pub async fn nack(&self, receipt: &str, delay: Duration) -> Result<bool, ClientError> {
        let mut f = Map::new();
        f.insert("receipt_handle".into(), json!(receipt));
        f.insert("delay_seconds".into(), seconds(delay));
        let v = self.call("queue_nack", f).await?;
        Ok(v["dead_lettered"].as_bool().unwrap_or(false))
    }

    /// `queue_change_visibility`: the delivery stays invisible for `timeout` from now.
    pub async fn change_visibility(
        &self,
        receipt: &str,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let mut f = Map::new();
        f.insert("receipt_handle".into(), json!(receipt));
        f.insert("visibility_timeout_seconds".into(), seconds(timeout));
        self.call("queue_change_visibility", f).await.map(drop)
    }

    /// `queue_stats`.
    pub async fn stats(&self) -> Result<QueueStats, ClientError> {
        decode("queue_stats", self.call("queue_stats", Map::new()).await?)
    }

    /// `queue_purge`: drops every pending message; how many.
    pub async fn purge(&self) -> Result<u64, ClientError> {
        let v = self.call("queue_purge", Map::new()).await?;
        Ok(v["purged"].as_u64().unwrap_or(0))
    }

    /// `queue_dlq`: up to `max` dead-lettered messages (1 to 1000).
    pub async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, ClientError> {
        let mut f = Map::new();
        f.insert("max_messages".into(), json!(max));
        let v = self.call("queue_dlq", f).await?;
        #[derive(Deserialize)]
        struct Dlq {
            messages: Vec<DeadLetter>,
        }
        Ok(decode::<Dlq>("queue_dlq", v)?.messages)
    }

    /// `queue_redrive`: every dead letter back to pending; how many.
    pub async fn redrive(&self) -> Result<u64, ClientError> {
        let v = self.call("queue_redrive", Map::new()).await?;
        Ok(v["redriven"].as_u64().unwrap_or(0))
    }

    /// `queue_delete`: the queue and its messages.
    pub async fn delete(&self) -> Result<(), ClientError> {
        self.call("queue_delete", Map::new()).await.map(drop)
    }
}

/// A queue being created; `.await` creates it.
pub struct CreateBuilder<'q> {
    queue: &'q Queue,
    fields: Map<String, Value>,
}

impl CreateBuilder<'_> {
    fn set(mut self, k: &str, v: Value) -> Self {
        self.fields.insert(k.into(), v);
        self
    }
    /// `fifo` (the default), `priority` or `delay`.
    pub fn queue_type(self, t: &str) -> Self {
        self.set("queue_type", json!(t))
    }
    /// How many nodes keep the queue: 1 (the creating node's store), 3 or 5 (a Raft group;
    /// unset, 3 in a cluster of three or more nodes).
    pub fn replicas(self, n: u32) -> Self {
        self.set("replicas", json!(n))
    }
    /// Most messages the queue holds; a full queue refuses sends.
    pub fn max_size(self, n: u64) -> Self {
        self.set("max_size", json!(n))
    }
    pub fn visibility_timeout(self, d: Duration) -> Self {
        self.set("default_visibility_timeout_seconds", seconds(d))
    }
    /// Deliveries before a message is dead-lettered (0: never).
    pub fn max_receives(self, n: u32) -> Self {
        if n == 0 {
            self.set("enable_dead_letter_queue", json!(false))
        } else {
            self.set("dead_letter_max_receives", json!(n))
        }
    }
    /// How long a deduplication id is remembered (zero: no deduplication).
    pub fn dedup_window(self, d: Duration) -> Self {
        self.set("deduplication_window_seconds", seconds(d))
    }
    /// How long a message lives unacknowledged (zero: forever).
    pub fn message_ttl(self, d: Duration) -> Self {
        self.set("message_ttl_seconds", seconds(d))
    }
}

/// What `queue_create` answered.
#[derive(Debug, Clone, Deserialize)]
pub struct Created {
    /// False when the queue existed with these settings.
    pub created: bool,
    /// The node id of the queue's owner.
    pub owner: String,
}

impl<'q> IntoFuture for CreateBuilder<'q> {
    type Output = Result<Created, ClientError>;
    type IntoFuture = Boxed<'q, Created>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            decode(
                "queue_create",
                self.queue.call("queue_create", self.fields).await?,
            )
        })
    }
}

/// A message being sent; `.await` sends it and returns once the queue's owner stored it.
pub struct SendBuilder<'q> {
    queue: &'q Queue,
    fields: Map<String, Value>,
}

impl SendBuilder<'_> {
    fn set(mut self, k: &str, v: Value) -> Self {
        self.fields.insert(k.into(), v);
        self
    }
    /// A second send with this id within the queue's window is answered `duplicate`, not
    /// stored again.
    pub fn dedup_id(self, id: impl Into<String>) -> Self {
        self.set("deduplication_id", json!(id.into()))
    }
    /// Not received before `d` from now (up to 15 minutes).
    pub fn delay(self, d: Duration) -> Self {
        self.set("delay_seconds", seconds(d))
    }
    /// In a `priority` queue, higher first.
    pub fn priority(self, p: i64) -> Self {
        self.set("priority", json!(p))
    }
    /// Messages of one group are received in order, one in flight at a time.
    pub fn group(self, id: impl Into<String>) -> Self {
        self.set("message_group_id", json!(id.into()))
    }
    pub fn topic(self, topic: impl Into<String>) -> Self {
        self.set("topic", json!(topic.into()))
    }
    pub fn header(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        let headers = self
            .fields
            .entry("headers")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(h) = headers {
            h.insert(k.into(), json!(v.into()));
        }
        self
    }
    /// At most once: the message is gone once received (no ack, no redelivery).
    pub fn fire_and_forget(self) -> Self {
        self.set("delivery_guarantee", json!("fire_and_forget"))
    }
    /// A copy to every active named consumer (subscriptions, consumers with
    /// `max_in_flight`), each acked on its own; refused when none is active.
    pub fn broadcast(self) -> Self {
        self.set("delivery_guarantee", json!("broadcast"))
    }
    /// Copies to `n` distinct active named consumers; refused when fewer are active.
    pub fn quorum(self, n: u32) -> Self {
        self.set("delivery_guarantee", json!("quorum"))
            .set("required_acknowledgments", json!(n))
    }
}

/// What `queue_send` answered.
#[derive(Debug, Clone, Deserialize)]
pub struct Sent {
    pub message_id: String,
    /// The dedup id was seen within the window: nothing new was stored.
    pub duplicate: bool,
    /// Broadcast and quorum: how many copies were stored.
    #[serde(default)]
    pub copies: Option<u64>,
}

impl<'q> IntoFuture for SendBuilder<'q> {
    type Output = Result<Sent, ClientError>;
    type IntoFuture = Boxed<'q, Sent>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            decode(
                "queue_send",
                self.queue.call("queue_send", self.fields).await?,
            )
        })
    }
}

#[derive(Debug, Clone, Default)]
struct ReceiveOptions {
    max: u64,
    wait: Option<Duration>,
    visibility: Option<Duration>,
    /// A named consumer and the most it may hold in flight.
    holder: Option<(String, u64)>,
}

impl ReceiveOptions {
    fn fields(&self) -> Map<String, Value> {
        let mut f = Map::new();
        f.insert("max_messages".into(), json!(self.max.max(1)));
        if let Some(w) = self.wait {
            f.insert("wait_seconds".into(), seconds(w));
        }
        if let Some(v) = self.visibility {
            f.insert("visibility_timeout_seconds".into(), seconds(v));
        }
        if let Some((id, n)) = &self.holder {
            f.insert("consumer_id".into(), json!(id));
            f.insert("max_in_flight".into(), json!(n));
        }
        f
    }
}

/// The receive setters that a one-off receive and a consumer share.
macro_rules! receive_setters {
    () => {
        /// Most messages a receive returns (1 to 10).
        pub fn max(mut self, n: u64) -> Self {
            self.options.max = n;
            self
        }
        /// How long a receive waits for the first message (up to 20 s).
        pub fn wait(mut self, d: Duration) -> Self {
            self.options.wait = Some(d);
            self
        }
        /// This receive's visibility timeout, instead of the queue's.
        pub fn visibility(mut self, d: Duration) -> Self {
            self.options.visibility = Some(d);
            self
        }
    };
}

/// A receive being configured; `.await` receives.
pub struct ReceiveBuilder<'q> {
    queue: &'q Queue,
    options: ReceiveOptions,
}

impl ReceiveBuilder<'_> {
    receive_setters!();
}

async fn receive(queue: Queue, options: ReceiveOptions) -> Result<Vec<Delivery>, ClientError> {
    #[derive(Deserialize)]
    struct Received {
        messages: Vec<Wire>,
    }
    let v = queue.call("queue_receive", options.fields()).await?;
    let got: Received = decode("queue_receive", v)?;
    Ok(got
        .messages
        .into_iter()
        .map(|w| w.delivery(&queue))
        .collect())
}

impl<'q> IntoFuture for ReceiveBuilder<'q> {
    type Output = Result<Vec<Delivery>, ClientError>;
    type IntoFuture = Boxed<'q, Vec<Delivery>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(receive(self.queue.clone(), self.options))
    }
}

/// A received message as it travels.
#[derive(Deserialize)]
struct Wire {
    message_id: String,
    receipt_handle: String,
    #[serde(default)]
    message_payload: Value,
    topic: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    receive_count: u32,
    message_group_id: Option<String>,
}

impl Wire {
    fn delivery(self, queue: &Queue) -> Delivery {
        Delivery {
            message_id: self.message_id,
            receipt_handle: self.receipt_handle,
            payload: self.message_payload,
            topic: self.topic,
            headers: self.headers.unwrap_or_default(),
            receive_count: self.receive_count,
            group: self.message_group_id,
            queue: queue.clone(),
        }
    }
}

/// One delivery of a message: invisible to other consumers until its visibility timeout,
/// unless acked (done), nacked (given back) or extended first.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message_id: String,
    pub receipt_handle: String,
    pub payload: Value,
    pub topic: Option<String>,
    pub headers: BTreeMap<String, String>,
    /// 1 on the first delivery.
    pub receive_count: u32,
    pub group: Option<String>,
    queue: Queue,
}

impl Delivery {
    pub async fn ack(&self) -> Result<(), ClientError> {
        self.queue.ack(&self.receipt_handle).await
    }
    /// Gives it back, visible after `delay`; whether it went to the dead letters.
    pub async fn nack(&self, delay: Duration) -> Result<bool, ClientError> {
        self.queue.nack(&self.receipt_handle, delay).await
    }
    /// Keeps it invisible for `timeout` from now (work taking longer than planned).
    pub async fn extend(&self, timeout: Duration) -> Result<(), ClientError> {
        self.queue
            .change_visibility(&self.receipt_handle, timeout)
            .await
    }
}

/// A dead-lettered message, as `queue_dlq` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct DeadLetter {
    pub message_id: String,
    #[serde(rename = "message_payload", default)]
    pub payload: Value,
    pub topic: Option<String>,
    /// Deliveries it had.
    #[serde(default)]
    pub receive_count: u32,
}

/// `queue_stats`: a queue's counts now, and its totals since its owner started.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct QueueStats {
    pub queue_name: String,
    pub depth: u64,
    pub in_flight: u64,
    pub dead_lettered: u64,
    pub oldest_message_age_seconds: f64,
    pub total_messages_sent: u64,
    pub total_messages_received: u64,
    pub total_messages_acknowledged: u64,
    pub total_messages_nacked: u64,
    pub total_messages_redelivered: u64,
    pub total_messages_dead_lettered: u64,
    pub total_messages_expired: u64,
    pub duplicate_sends: u64,
    pub average_send_to_ack_ms: f64,
    /// Whether its owner fsyncs sends before answering (sqlite mode).
    pub durable: bool,
}

/// A queue's consumer: a [`Stream`] of deliveries, fetched by long polls of up to `max`
/// messages whenever the ones fetched are handed out. A failed receive is yielded as an
/// error and the next poll tries again; the stream ends when the connection has closed.
pub struct Consumer {
    queue: Queue,
    options: ReceiveOptions,
    ready: VecDeque<Delivery>,
    polling: Option<Boxed<'static, Vec<Delivery>>>,
    ended: bool,
}

impl Consumer {
    receive_setters!();

    /// At most `n` deliveries held at once (handed out and not yet acked, nacked or back
    /// at their deadline): the node answers this consumer's receives with no more than
    /// that (JetStream's `max_ack_pending`). The consumer is named for this connection.
    pub fn max_in_flight(mut self, n: u64) -> Self {
        let inner = &self.queue.client.inner;
        let seq = inner
            .next_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.options.holder = Some((format!("{}-consumer-{seq}", inner.prefix), n));
        self
    }
}

impl Stream for Consumer {
    type Item = Result<Delivery, ClientError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(d) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(d)));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            let polling = this
                .polling
                .get_or_insert_with(|| Box::pin(receive(this.queue.clone(), this.options.clone())));
            match polling.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(got) => {
                    this.polling = None;
                    match got {
                        Ok(got) => this.ready.extend(got),
                        Err(e) => {
                            this.ended = this.queue.client.is_closed();
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                }
            }
        }
    }
}

/// A queue subscription's deliveries, pushed by the node, as a `Stream`. It ends when the
/// connection does, or when the queue is deleted.
pub struct QueueSubscription {
    id: String,
    rx: tokio::sync::mpsc::Receiver<super::Notification>,
    queue: Queue,
}

impl std::fmt::Debug for QueueSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueSubscription")
            .field("id", &self.id)
            .field("queue", &self.queue.name)
            .finish()
    }
}

impl QueueSubscription {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Ends the subscription on the node (what it holds comes back at its visibility
    /// timeout, unless acked first).
    pub async fn unsubscribe(self) -> Result<(), ClientError> {
        let mut f = Map::new();
        f.insert("subscription_id".into(), json!(self.id));
        let r = self
            .queue
            .client
            .call("queue_unsubscribe", json!([f]))
            .await;
        self.queue.client.forget_subscription(&self.id);
        r.map(drop)
    }
}

impl Stream for QueueSubscription {
    type Item = Delivery;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        loop {
            let Some(n) = std::task::ready!(self.rx.poll_recv(cx)) else {
                return Poll::Ready(None);
            };
            if n.payload.get("subscription_ended").is_some() {
                return Poll::Ready(None);
            }
            let Ok(w) = serde_json::from_value::<Wire>(n.payload) else {
                continue; // not a delivery (nothing else is sent on this subscription)
            };
            return Poll::Ready(Some(w.delivery(&self.queue)));
        }
    }
}

/// What a batch `queue_ack` answered.
#[derive(Debug, Clone, Deserialize)]
pub struct AckBatch {
    pub acknowledged: u64,
    /// `{receipt_handle, error}` of each receipt refused.
    #[serde(default)]
    pub failed: Vec<Value>,
}
