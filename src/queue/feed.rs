//! Queue subscriptions (push): the node feeds a connection a queue's messages as
//! notifications, each a delivery to ack, nack or extend like a received one.
//!
//! A subscription is a named consumer of the queue (`consumer_id` = this node, connection
//! and subscription) that holds at most `max_in_flight` messages: its task long-polls the
//! queue (on its owner, here or forwarded, as `queue_receive` does) for no more than that,
//! and hands each delivery to the connection through a small bounded channel. A connection
//! that stops reading stops the task (the channel is full), and what it holds comes back to
//! the queue at its visibility timeout: the node never buffers more than `max_in_flight`
//! deliveries a subscription, whatever the queue holds. Unsubscribing, or the connection
//! ending, stops the task the same way.
//!
//! Two ways in, one feed: the `queue_subscribe {queue_name, subscription_id?,
//! max_in_flight?, visibility_timeout_seconds?}` call (the single command of its request,
//! answered on the connection it is to feed; `queue_unsubscribe {subscription_id}` ends
//! it), or a `pubsub-subscribe` to the topic `mpreg.queue.<queue>`. A notification is the
//! pub/sub one, topic `mpreg.queue.<queue>`, its payload the delivery as `queue_receive`
//! gives it (`message_id`, `receipt_handle`, `message_payload`, `topic`, `headers`,
//! `receive_count`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::service::{Op, QueueFail, Queues};

/// The topic prefix of queue subscriptions.
pub const TOPIC_PREFIX: &str = "mpreg.queue.";
/// Notifications waiting for one connection, all its queue subscriptions together.
const OUTBOX: usize = 16;
/// Queue subscriptions one connection may hold.
pub const MAX_FEEDS: usize = 32;
/// A feed that cannot reach its queue tries again after this, doubling up to 5 s.
const RETRY_FROM: Duration = Duration::from_millis(100);
const RETRY_MOST: Duration = Duration::from_secs(5);

/// The queue a subscription pattern names (`mpreg.queue.<queue>`), if it is one.
pub fn queue_topic(pattern: &str) -> Option<&str> {
    pattern.strip_prefix(TOPIC_PREFIX)
}

/// `queue_subscribe`'s request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeRequest {
    #[serde(default)]
    pub queue_name: String,
    pub subscription_id: Option<String>,
    pub max_in_flight: Option<u64>,
    pub visibility_timeout_seconds: Option<f64>,
}

/// `queue_unsubscribe`'s request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnsubscribeRequest {
    #[serde(default)]
    pub subscription_id: String,
}

/// One connection's queue subscriptions and the notifications waiting for it.
pub(crate) struct QueueFeeds {
    pub(crate) outbox: mpsc::Receiver<Message>,
    tx: mpsc::Sender<Message>,
    feeds: BTreeMap<String, tokio::task::JoinHandle<()>>,
    binary: bool,
}

impl Drop for QueueFeeds {
    fn drop(&mut self) {
        for task in self.feeds.values() {
            task.abort();
        }
    }
}

impl QueueFeeds {
    pub(crate) fn new(binary: bool) -> QueueFeeds {
        let (tx, outbox) = mpsc::channel(OUTBOX);
        QueueFeeds {
            outbox,
            tx,
            feeds: BTreeMap::new(),
            binary,
        }
    }

    /// Starts feeding subscription `req` (checked here: the queue's name, the bound, an id
    /// not in use on this connection), as consumer `holder_prefix/<id>`; its answer.
    pub(crate) fn subscribe(
        &mut self,
        queues: &Arc<Queues>,
        holder_prefix: &str,
        req: SubscribeRequest,
    ) -> Result<Value, QueueFail> {
        let queue = super::request::queue_name(&req.queue_name)?.to_owned();
        if !queues.exists(&queue) {
            return Err(QueueFail::NotFound(queue));
        }
        self.feeds.retain(|_, t| !t.is_finished());
        if self.feeds.len() >= MAX_FEEDS {
            return Err(QueueFail::Invalid(format!(
                "this connection holds {MAX_FEEDS} queue subscriptions already"
            )));
        }
        let id = match req.subscription_id {
            Some(id) if id.is_empty() || id.len() > 128 || id.chars().any(char::is_control) => {
                return Err(QueueFail::Invalid(
                    "subscription_id: 1 to 128 bytes, no control characters".into(),
                ));
            }
            Some(id) => id,
            None => format!("{queue}-{}", self.feeds.len() + 1),
        };
        if self.feeds.contains_key(&id) {
            return Err(QueueFail::Invalid(format!(
                "subscription_id: {id:?} is in use on this connection"
            )));
        }
        let max_in_flight = req
            .max_in_flight
            .unwrap_or(queues.limits().request.max_in_flight as u64);
        let receive = super::request::ReceiveRequest {
            queue_name: queue.clone(),
            max_messages: Some(super::request::MAX_RECEIVE_MESSAGES),
            wait_seconds: Some(super::request::MAX_WAIT_SECONDS),
            visibility_timeout_seconds: req.visibility_timeout_seconds,
            consumer_id: Some(format!("{holder_prefix}/{id}")),
            max_in_flight: Some(max_in_flight),
        };
        // The receive's own check: bad bounds are refused now, not by the task.
        super::request::receive(&receive, &queues.limits().request)?;
        let receive =
            serde_json::to_value(&receive).map_err(|e| QueueFail::Invalid(e.to_string()))?;
        let task = tokio::spawn(feed(
            queues.clone(),
            id.clone(),
            queue.clone(),
            receive,
            self.tx.clone(),
            self.binary,
        ));
        self.feeds.insert(id.clone(), task);
        Ok(json!({
            "success": true, "subscription_id": id, "queue_name": queue,
            "topic": format!("{TOPIC_PREFIX}{queue}"), "max_in_flight": max_in_flight,
        }))
    }

    /// Ends subscription `id`; whether it was this connection's.
    pub(crate) fn unsubscribe(&mut self, id: &str) -> bool {
        match self.feeds.remove(id) {
            Some(task) => {
                task.abort();
                true
            }
            None => false,
        }
    }
}

/// One subscription's task: long polls for what it may still hold, each delivery handed
/// to the connection (waiting while its channel is full). It ends when the connection is
/// gone, or with a last notification when the queue is (deleted, or never was).
async fn feed(
    queues: Arc<Queues>,
    id: String,
    queue: String,
    receive: Value,
    tx: mpsc::Sender<Message>,
    binary: bool,
) {
    let topic = format!("{TOPIC_PREFIX}{queue}");
    let note = |payload: Value, message_id: &str, event: &str| {
        let n = json!({
            "role": "pubsub-notification",
            "message": {
                "topic": topic, "payload": payload,
                "timestamp": queues.wall_ms() as f64 / 1000.0,
                "message_id": message_id, "publisher": format!("queue:{queue}"),
                "headers": {"event": event}, "routing_path": null, "current_hop": null,
            },
            "subscription_id": id,
            "u": format!("notification_{message_id}_{id}"),
        })
        .to_string();
        if binary {
            Message::binary(n.into_bytes())
        } else {
            Message::text(n)
        }
    };
    let mut retry = RETRY_FROM;
    loop {
        match queues.call(Op::Receive, receive.clone()).await {
            Ok(got) => {
                retry = RETRY_FROM;
                let messages = match got {
                    Value::Object(mut o) => o.remove("messages"),
                    _ => None,
                };
                for m in messages
                    .and_then(|m| match m {
                        Value::Array(a) => Some(a),
                        _ => None,
                    })
                    .into_iter()
                    .flatten()
                {
                    let message_id = m["message_id"].as_str().unwrap_or_default().to_owned();
                    if tx
                        .send(note(m, &message_id, "queue.message"))
                        .await
                        .is_err()
                    {
                        return; // the connection is gone
                    }
                }
            }
            Err(e @ (QueueFail::NotFound(_) | QueueFail::Invalid(_))) => {
                let why = json!({"subscription_ended": true, "error": e.to_string()});
                let _ = tx
                    .send(note(why, "ended", "queue.subscription_ended"))
                    .await;
                return;
            }
            // The owner out of reach, too many waiters, a store failure: later.
            Err(e) => {
                tracing::debug!(queue = %queue, error = %e, "queue subscription waits to retry");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MOST);
            }
        }
    }
}
