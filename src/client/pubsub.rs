//! Topic pub/sub on a [`Client`]'s connection: [`Client::subscribe`] returns a
//! [`Subscription`], a `Stream` of the [`Notification`]s its patterns match;
//! [`Client::publish`] publishes. The node's messages are the original's
//! (`pubsub-subscribe`, `pubsub-publish`, `pubsub-ack`, `pubsub-notification`).
//!
//! Each subscription buffers [`BUFFERED`] notifications; one arriving while the buffer is
//! full is dropped (the connection's reader never waits for a slow consumer, which would
//! hold up every reply on the connection), and [`Subscription::dropped`] counts them.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{Client, ClientError};

/// Notifications one subscription holds for its consumer.
pub const BUFFERED: usize = 1024;

/// A message a subscription heard.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub subscription_id: String,
    pub topic: String,
    pub payload: Value,
    pub message_id: String,
    pub publisher: String,
    pub timestamp: f64,
    pub headers: Value,
}

impl Notification {
    /// A `pubsub-notification` frame's notification (`None`: not one).
    pub(super) fn from_frame(frame: &Value) -> Option<Notification> {
        let m = &frame["message"];
        let text = |v: &Value| v.as_str().map(str::to_owned);
        Some(Notification {
            subscription_id: text(&frame["subscription_id"])?,
            topic: text(&m["topic"])?,
            payload: m["payload"].clone(),
            message_id: text(&m["message_id"]).unwrap_or_default(),
            publisher: text(&m["publisher"]).unwrap_or_default(),
            timestamp: m["timestamp"].as_f64().unwrap_or(0.0),
            headers: m["headers"].clone(),
        })
    }
}

/// Where a subscription's notifications go, as the connection's reader holds it.
pub(super) struct Route {
    pub(super) tx: mpsc::Sender<Notification>,
    pub(super) dropped: Arc<AtomicU64>,
}

impl Route {
    pub(super) fn deliver(&self, n: Notification) {
        if self.tx.try_send(n).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The notifications of one subscription, as a `Stream`; it ends when the connection does.
/// Dropping it leaves the subscription on the node until the connection closes; call
/// [`Subscription::unsubscribe`] to end it there.
pub struct Subscription {
    id: String,
    rx: mpsc::Receiver<Notification>,
    dropped: Arc<AtomicU64>,
    client: Client,
}

impl Subscription {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Notifications dropped because this subscription's buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Ends the subscription on the node.
    pub async fn unsubscribe(self) -> Result<(), ClientError> {
        let id = self.id.clone();
        let result = self
            .client
            .pubsub_request(
                |u| json!({"role": "pubsub-unsubscribe", "u": u, "subscription_id": id}),
            )
            .await;
        self.client.forget_subscription(&self.id);
        result
    }
}

impl futures_util::Stream for Subscription {
    type Item = Notification;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Notification>> {
        self.rx.poll_recv(cx)
    }
}

impl Client {
    /// Subscribes to `patterns` (`.`-separated words; `*` one word, `#` any number); a
    /// pattern without wildcards matches only itself.
    pub async fn subscribe<I, S>(&self, patterns: I) -> Result<Subscription, ClientError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.subscribe_inner(patterns, None).await
    }

    /// Subscribes as [`Client::subscribe`] does, hearing first what the cluster kept for
    /// `patterns` over the last `seconds` (each node's own publishes, merged), then live
    /// messages; none twice.
    pub async fn subscribe_with_backlog<I, S>(
        &self,
        patterns: I,
        seconds: f64,
    ) -> Result<Subscription, ClientError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.subscribe_inner(patterns, Some(seconds)).await
    }

    async fn subscribe_inner<I, S>(
        &self,
        patterns: I,
        backlog: Option<f64>,
    ) -> Result<Subscription, ClientError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let patterns: Vec<Value> = patterns
            .into_iter()
            .map(Into::into)
            .map(|p: String| {
                let exact = !(p.contains('*') || p.contains('#'));
                json!({"pattern": p, "exact_match": exact})
            })
            .collect();
        let id = self.next_id("sub");
        let (tx, rx) = mpsc::channel(BUFFERED);
        let dropped = Arc::new(AtomicU64::new(0));
        // Routed before the node can send anything for it.
        self.route_subscription(
            id.clone(),
            Route {
                tx,
                dropped: dropped.clone(),
            },
        );
        let sub = json!({"subscription_id": id, "patterns": patterns, "subscriber": self.url(),
            "created_at": 0.0, "get_backlog": backlog.is_some(),
            "backlog_seconds": backlog.unwrap_or(0.0)});
        let acked = self
            .pubsub_request(|u| json!({"role": "pubsub-subscribe", "u": u, "subscription": sub}))
            .await;
        if let Err(e) = acked {
            self.forget_subscription(&id);
            return Err(e);
        }
        Ok(Subscription {
            id,
            rx,
            dropped,
            client: self.clone(),
        })
    }

    /// Publishes `payload` on `topic`. `Ok` means the node took it (and queued it for the
    /// matching subscribers it knows, on it and on other nodes), not that anyone read it.
    pub async fn publish(&self, topic: &str, payload: Value) -> Result<(), ClientError> {
        let message_id = self.next_id("msg");
        let publisher = self.url().to_owned();
        self.pubsub_request(|u| {
            json!({"role": "pubsub-publish", "u": u, "message": {"topic": topic,
                "payload": payload, "timestamp": 0.0, "message_id": message_id,
                "publisher": publisher, "headers": {}}})
        })
        .await
    }
}
