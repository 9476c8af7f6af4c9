//! `queue_create` and `queue_send` requests, with the original's field names (its
//! `create_queue` and `send_message` payloads) and SQS's for what it lacks, checked under
//! their bounds into the engine's types. Pure; every refusal says which field and why.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::engine::{QueueConfig, QueueType, Send};

/// Longest queue name (it is a DNS name's labels too: `_queue._tcp.<queue>.<zone>`).
pub const MAX_QUEUE_NAME: usize = 128;
/// SQS's bounds: visibility up to 12 hours, delay up to 15 minutes, retention 14 days.
pub const MAX_VISIBILITY_SECONDS: f64 = 43_200.0;
pub const MAX_DELAY_SECONDS: f64 = 900.0;
pub const MAX_TTL_SECONDS: f64 = 1_209_600.0;
/// Longest deduplication window: a day (its ids are kept that long).
pub const MAX_DEDUP_WINDOW_SECONDS: f64 = 86_400.0;
pub const MAX_RECEIVES: u32 = 1_000;
/// Deduplication and group ids, topics, and headers.
pub const MAX_ID: usize = 128;
pub const MAX_TOPIC: usize = 255;
pub const MAX_HEADERS: usize = 64;
pub const MAX_HEADER_BYTES: usize = 4096;

/// The node's bounds a request is checked under (from its settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most messages one queue may hold (a request's `max_size` at most this).
    pub max_messages: usize,
    /// Most payload bytes one queue may hold.
    pub max_queue_bytes: usize,
    /// Largest message payload (its JSON text).
    pub max_message_bytes: usize,
    /// Most deduplication ids one queue remembers.
    pub max_dedup_ids: usize,
    /// Most messages one named consumer may hold in flight (its `max_in_flight` at most
    /// this; the default when it names none).
    pub max_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_messages: 100_000,
            max_queue_bytes: 256 << 20,
            max_message_bytes: 256 << 10,
            max_dedup_ids: 100_000,
            max_in_flight: 1000,
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {why}")]
pub struct Invalid {
    pub field: &'static str,
    pub why: String,
}

fn invalid(field: &'static str, why: impl Into<String>) -> Invalid {
    Invalid {
        field,
        why: why.into(),
    }
}

/// `queue_create`'s request.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CreateRequest {
    pub queue_name: String,
    pub queue_type: Option<String>,
    pub max_size: Option<u64>,
    pub default_visibility_timeout_seconds: Option<f64>,
    pub dead_letter_max_receives: Option<u32>,
    pub enable_dead_letter_queue: Option<bool>,
    /// The original's retries after the first delivery (`dead_letter_max_receives` wins).
    pub max_retries: Option<u32>,
    pub enable_deduplication: Option<bool>,
    pub deduplication_window_seconds: Option<f64>,
    pub message_ttl_seconds: Option<f64>,
    /// How many nodes keep the queue: 1 (its creating node's store), 3 or 5 (a Raft group;
    /// the default in a cluster of three or more nodes is 3).
    pub replicas: Option<u32>,
}

/// A queue name: 1 to 128 bytes of letters, digits, `.`, `_` and `-`, starting with a
/// letter or digit (so that it is a DNS name's labels and a metrics label as it is).
pub fn queue_name(name: &str) -> Result<&str, Invalid> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > MAX_QUEUE_NAME {
        return Err(invalid(
            "queue_name",
            format!("must be 1 to {MAX_QUEUE_NAME} bytes"),
        ));
    }
    if !name.chars().all(ok_char) || !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(invalid(
            "queue_name",
            format!("{name:?}: letters, digits, `.`, `_` and `-`, starting with a letter or digit"),
        ));
    }
    if name.split('.').any(|l| l.is_empty() || l.len() > 63) {
        return Err(invalid(
            "queue_name",
            format!("{name:?}: each dot-separated part 1 to 63 bytes (it is a DNS name)"),
        ));
    }
    Ok(name)
}

/// Whole milliseconds of `seconds`, which must lie in `0..=max`.
fn millis(field: &'static str, seconds: f64, max: f64) -> Result<u64, Invalid> {
    if !seconds.is_finite() || !(0.0..=max).contains(&seconds) {
        return Err(invalid(field, format!("must be 0 to {max} seconds")));
    }
    Ok((seconds * 1000.0).round() as u64)
}

/// A `queue_create` request as a queue's name and configuration.
pub fn create(req: &CreateRequest, limits: &Limits) -> Result<(String, QueueConfig), Invalid> {
    let name = queue_name(&req.queue_name)?.to_owned();
    // The catalog's defaults: one source for every queue created.
    let defaults = config_of(&crate::control::QueueSpec::default());
    let queue_type = match req
        .queue_type
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("fifo") => QueueType::Fifo,
        Some("priority") => QueueType::Priority,
        Some("delay") => QueueType::Delay,
        Some(other) => {
            return Err(invalid(
                "queue_type",
                format!("{other:?}: one of fifo, priority, delay"),
            ));
        }
    };
    let max_size = match req.max_size {
        None => defaults.max_size.min(limits.max_messages),
        Some(n) if n >= 1 && n <= limits.max_messages as u64 => n as usize,
        Some(_) => {
            return Err(invalid(
                "max_size",
                format!("must be 1 to {} (this node's bound)", limits.max_messages),
            ));
        }
    };
    let visibility_timeout_ms = match req.default_visibility_timeout_seconds {
        None => defaults.visibility_timeout_ms,
        Some(s) => millis(
            "default_visibility_timeout_seconds",
            s,
            MAX_VISIBILITY_SECONDS,
        )?,
    };
    let max_receives = if req.enable_dead_letter_queue == Some(false) {
        0
    } else {
        let receives = req
            .dead_letter_max_receives
            .or(req.max_retries.map(|r| r.saturating_add(1)))
            .unwrap_or(defaults.max_receives);
        if !(1..=MAX_RECEIVES).contains(&receives) {
            return Err(invalid(
                "dead_letter_max_receives",
                format!("must be 1 to {MAX_RECEIVES}"),
            ));
        }
        receives
    };
    let dedup_window_ms = if req.enable_deduplication == Some(false) {
        0
    } else {
        match req.deduplication_window_seconds {
            None => defaults.dedup_window_ms,
            Some(s) => millis("deduplication_window_seconds", s, MAX_DEDUP_WINDOW_SECONDS)?,
        }
    };
    let message_ttl_ms = match req.message_ttl_seconds {
        None => 0,
        Some(s) => match millis("message_ttl_seconds", s, MAX_TTL_SECONDS)? {
            0 => return Err(invalid("message_ttl_seconds", "must be more than 0")),
            ms => ms,
        },
    };
    Ok((
        name,
        QueueConfig {
            queue_type,
            max_size,
            max_bytes: limits.max_queue_bytes,
            visibility_timeout_ms,
            max_receives,
            dedup_window_ms,
            max_dedup_ids: limits.max_dedup_ids,
            message_ttl_ms,
        },
    ))
}

/// The `delivery_guarantee`s a send may ask for (the original's names).
pub const SERVED_GUARANTEES: [&str; 4] =
    ["fire_and_forget", "at_least_once", "broadcast", "quorum"];
/// Most acknowledgements a quorum send may require (one copy each).
pub const MAX_QUORUM: u32 = 100;

/// How a message is delivered (the original's `delivery_guarantee`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarantee {
    FireAndForget,
    AtLeastOnce,
    /// A copy to every active named consumer, each acked on its own.
    Broadcast,
    /// Copies to this many distinct active named consumers.
    Quorum(u32),
}

/// `queue_send`'s request (one message of `queue_send_batch` too).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SendRequest {
    #[serde(default)]
    pub queue_name: String,
    #[serde(default)]
    pub message_payload: Value,
    pub topic: Option<String>,
    pub delivery_guarantee: Option<String>,
    #[serde(default)]
    pub priority: i64,
    pub delay_seconds: Option<f64>,
    pub deduplication_id: Option<String>,
    pub message_group_id: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// With `quorum`: how many distinct consumers must acknowledge (the original's name).
    pub required_acknowledgments: Option<u32>,
}

/// A checked send: the engine's part, and what travels with the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedSend {
    pub send: Send,
    pub guarantee: Guarantee,
    pub topic: Option<String>,
    pub headers: BTreeMap<String, String>,
}

fn id(field: &'static str, v: &Option<String>) -> Result<Option<String>, Invalid> {
    match v.as_deref() {
        None | Some("") => Ok(None),
        Some(s) if s.len() <= MAX_ID && !s.chars().any(char::is_control) => Ok(Some(s.to_owned())),
        Some(_) => Err(invalid(
            field,
            format!("at most {MAX_ID} bytes, no control characters"),
        )),
    }
}

/// A `queue_send` request checked: its payload (the JSON text of `message_payload`) under
/// the node's message bound, its delay, ids, topic and headers under theirs.
pub fn send(req: &SendRequest, limits: &Limits) -> Result<CheckedSend, Invalid> {
    let guarantee = match req.delivery_guarantee.as_deref() {
        None | Some("at_least_once") => Guarantee::AtLeastOnce,
        Some("fire_and_forget") => Guarantee::FireAndForget,
        Some("broadcast") => Guarantee::Broadcast,
        Some("quorum") => match req.required_acknowledgments {
            Some(n) if (1..=MAX_QUORUM).contains(&n) => Guarantee::Quorum(n),
            _ => {
                return Err(invalid(
                    "required_acknowledgments",
                    format!("a quorum send needs 1 to {MAX_QUORUM}"),
                ));
            }
        },
        Some(other) => {
            return Err(invalid(
                "delivery_guarantee",
                format!("{other:?}: one of fire_and_forget, at_least_once, broadcast, quorum"),
            ));
        }
    };
    if matches!(guarantee, Guarantee::Broadcast | Guarantee::Quorum(_))
        && req
            .message_group_id
            .as_deref()
            .is_some_and(|g| !g.is_empty())
    {
        // Its copies go to different consumers; a group is one ordered stream.
        return Err(invalid(
            "message_group_id",
            "a broadcast or quorum send has no group (its copies go to several consumers)",
        ));
    }
    let payload = serde_json::to_vec(&req.message_payload)
        .map_err(|e| invalid("message_payload", e.to_string()))?;
    if payload.len() > limits.max_message_bytes {
        return Err(invalid(
            "message_payload",
            format!(
                "{} bytes as JSON; at most {} (max_message_bytes)",
                payload.len(),
                limits.max_message_bytes
            ),
        ));
    }
    let delay_ms = match req.delay_seconds {
        None => 0,
        Some(s) => millis("delay_seconds", s, MAX_DELAY_SECONDS)?,
    };
    let topic = match req.topic.as_deref() {
        None | Some("") => None,
        Some(t) if t.len() <= MAX_TOPIC => Some(t.to_owned()),
        Some(_) => return Err(invalid("topic", format!("at most {MAX_TOPIC} bytes"))),
    };
    let header_bytes: usize = req.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    if req.headers.len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
        return Err(invalid(
            "headers",
            format!("at most {MAX_HEADERS} headers of {MAX_HEADER_BYTES} bytes in all"),
        ));
    }
    Ok(CheckedSend {
        send: Send {
            payload: Arc::from(payload),
            priority: req.priority,
            delay_ms,
            dedup_id: id("deduplication_id", &req.deduplication_id)?,
            group: id("message_group_id", &req.message_group_id)?,
            fire_and_forget: guarantee == Guarantee::FireAndForget,
            meta: meta(topic.as_deref(), &req.headers),
            to: None,
        },
        guarantee,
        topic,
        headers: req.headers.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn create_from(v: Value) -> Result<(String, QueueConfig), Invalid> {
        let req: CreateRequest = serde_json::from_value(v).expect("a request");
        create(&req, &Limits::default())
    }

    fn send_from(v: Value) -> Result<CheckedSend, Invalid> {
        let req: SendRequest = serde_json::from_value(v).expect("a request");
        send(&req, &Limits::default())
    }

    #[test]
    fn a_queue_as_the_original_creates_it() {
        let (name, c) = create_from(json!({"queue_name": "orders", "queue_type": "priority",
            "max_size": 500, "default_visibility_timeout_seconds": 2.5,
            "dead_letter_max_receives": 5, "deduplication_window_seconds": 60,
            "message_ttl_seconds": 3600}))
        .unwrap();
        assert_eq!(name, "orders");
        assert_eq!(c.queue_type, QueueType::Priority);
        assert_eq!((c.max_size, c.visibility_timeout_ms), (500, 2500));
        assert_eq!((c.max_receives, c.dedup_window_ms), (5, 60_000));
        assert_eq!(c.message_ttl_ms, 3_600_000);
        let (_, d) = create_from(json!({"queue_name": "a.b-c_d"})).unwrap();
        assert_eq!(d.queue_type, QueueType::Fifo);
        assert_eq!(
            (d.max_receives, d.dedup_window_ms, d.message_ttl_ms),
            (3, 300_000, 0)
        );
        // The original's retries: attempts are one more.
        let (_, r) = create_from(json!({"queue_name": "r", "max_retries": 3})).unwrap();
        assert_eq!(r.max_receives, 4);
        let (_, off) = create_from(json!({"queue_name": "o", "enable_dead_letter_queue": false,
            "enable_deduplication": false}))
        .unwrap();
        assert_eq!((off.max_receives, off.dedup_window_ms), (0, 0));
    }

    #[test]
    fn bad_queues_are_refused_with_the_field() {
        for (req, field) in [
            (json!({"queue_name": ""}), "queue_name"),
            (json!({"queue_name": "has space"}), "queue_name"),
            (json!({"queue_name": ".dot"}), "queue_name"),
            (json!({"queue_name": "a..b"}), "queue_name"),
            (json!({"queue_name": "x".repeat(129)}), "queue_name"),
            (
                json!({"queue_name": "q", "queue_type": "lifo"}),
                "queue_type",
            ),
            (json!({"queue_name": "q", "max_size": 0}), "max_size"),
            (json!({"queue_name": "q", "max_size": 100_001}), "max_size"),
            (
                json!({"queue_name": "q", "default_visibility_timeout_seconds": -1}),
                "default_visibility_timeout_seconds",
            ),
            (
                json!({"queue_name": "q", "default_visibility_timeout_seconds": 50_000}),
                "default_visibility_timeout_seconds",
            ),
            (
                json!({"queue_name": "q", "dead_letter_max_receives": 0}),
                "dead_letter_max_receives",
            ),
            (
                json!({"queue_name": "q", "deduplication_window_seconds": 1e9}),
                "deduplication_window_seconds",
            ),
            (
                json!({"queue_name": "q", "message_ttl_seconds": 0}),
                "message_ttl_seconds",
            ),
        ] {
            let e = create_from(req.clone()).expect_err(&req.to_string());
            assert_eq!(e.field, field, "{req}: {e}");
        }
    }

    #[test]
    fn sends_as_the_original_sends_them() {
        let s = send_from(json!({"queue_name": "orders", "message_payload": {"id": 1},
            "topic": "orders.created", "priority": 5, "delay_seconds": 10,
            "deduplication_id": "order-1", "message_group_id": "customer-7",
            "headers": {"trace": "t1"}}))
        .unwrap();
        assert_eq!(&*s.send.payload, br#"{"id":1}"#);
        assert_eq!((s.send.priority, s.send.delay_ms), (5, 10_000));
        assert_eq!(s.send.dedup_id.as_deref(), Some("order-1"));
        assert_eq!(s.send.group.as_deref(), Some("customer-7"));
        assert_eq!(s.guarantee, Guarantee::AtLeastOnce);
        assert!(!s.send.fire_and_forget);
        let f =
            send_from(json!({"queue_name": "q", "delivery_guarantee": "fire_and_forget"})).unwrap();
        assert!(f.send.fire_and_forget);
        assert_eq!(&*f.send.payload, b"null");
    }

    #[test]
    fn bad_sends_are_refused_with_the_field() {
        let big = "x".repeat(256 << 10);
        let headers: BTreeMap<String, String> =
            (0..65).map(|i| (format!("h{i}"), "v".into())).collect();
        for (req, field) in [
            (
                json!({"delivery_guarantee": "exactly_twice"}),
                "delivery_guarantee",
            ),
            // A quorum names its size; copies to several consumers have no group.
            (
                json!({"delivery_guarantee": "quorum"}),
                "required_acknowledgments",
            ),
            (
                json!({"delivery_guarantee": "quorum", "required_acknowledgments": 101}),
                "required_acknowledgments",
            ),
            (
                json!({"delivery_guarantee": "broadcast", "message_group_id": "g"}),
                "message_group_id",
            ),
            (json!({"message_payload": big}), "message_payload"),
            (json!({"delay_seconds": 901}), "delay_seconds"),
            (json!({"delay_seconds": -0.5}), "delay_seconds"),
            (
                json!({"deduplication_id": "d".repeat(129)}),
                "deduplication_id",
            ),
            (json!({"message_group_id": "a\u{0}b"}), "message_group_id"),
            (json!({"topic": "t".repeat(256)}), "topic"),
            (json!({"headers": headers}), "headers"),
        ] {
            let e = send_from(req.clone()).expect_err(&req.to_string());
            assert_eq!(e.field, field, "{req}: {e}");
        }
    }
}

/// What travels with a message beside its payload, as the engine carries it (opaque to
/// it): the topic and headers as a JSON object, or nothing when there are neither.
#[derive(Debug, Default, serde::Serialize, Deserialize, PartialEq, Eq)]
pub struct Meta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

fn meta(topic: Option<&str>, headers: &BTreeMap<String, String>) -> Option<Arc<[u8]>> {
    if topic.is_none() && headers.is_empty() {
        return None;
    }
    let m = Meta {
        topic: topic.map(str::to_owned),
        headers: headers.clone(),
    };
    serde_json::to_vec(&m).ok().map(Arc::from)
}

/// A message's topic and headers back from what the engine carried.
pub fn meta_of(bytes: Option<&[u8]>) -> Meta {
    bytes
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or_default()
}

/// A catalog queue's settings as the engine runs them.
pub fn config_of(spec: &crate::control::QueueSpec) -> QueueConfig {
    use crate::control::QueueKind;
    QueueConfig {
        queue_type: match spec.queue_type {
            QueueKind::Fifo => QueueType::Fifo,
            QueueKind::Priority => QueueType::Priority,
            QueueKind::Delay => QueueType::Delay,
        },
        max_size: usize::try_from(spec.max_size).unwrap_or(usize::MAX),
        max_bytes: usize::try_from(spec.max_bytes).unwrap_or(usize::MAX),
        visibility_timeout_ms: spec.visibility_timeout_ms,
        max_receives: spec.max_receives,
        dedup_window_ms: spec.dedup_window_ms,
        max_dedup_ids: usize::try_from(spec.max_dedup_ids).unwrap_or(usize::MAX),
        message_ttl_ms: spec.message_ttl_ms,
    }
}

/// An engine configuration as the catalog holds it.
pub fn spec_of(c: &QueueConfig) -> crate::control::QueueSpec {
    use crate::control::QueueKind;
    crate::control::QueueSpec {
        queue_type: match c.queue_type {
            QueueType::Fifo => QueueKind::Fifo,
            QueueType::Priority => QueueKind::Priority,
            QueueType::Delay => QueueKind::Delay,
        },
        max_size: c.max_size as u64,
        max_bytes: c.max_bytes as u64,
        visibility_timeout_ms: c.visibility_timeout_ms,
        max_receives: c.max_receives,
        dedup_window_ms: c.dedup_window_ms,
        max_dedup_ids: c.max_dedup_ids as u64,
        message_ttl_ms: c.message_ttl_ms,
    }
}

/// `queue_receive`'s request (a subscription's feed writes one too).
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
pub struct ReceiveRequest {
    #[serde(default)]
    pub queue_name: String,
    pub max_messages: Option<u64>,
    pub wait_seconds: Option<f64>,
    pub visibility_timeout_seconds: Option<f64>,
    /// A consumer naming itself holds at most `max_in_flight` messages at once: a
    /// receive beyond that waits (or answers fewer) until it acks or nacks some.
    pub consumer_id: Option<String>,
    pub max_in_flight: Option<u64>,
}

/// SQS's bounds: up to 10 messages a receive, a wait up to 20 s.
pub const MAX_RECEIVE_MESSAGES: u64 = 10;
pub const MAX_WAIT_SECONDS: f64 = 20.0;
/// Most messages one `queue_send_batch` carries (SQS: 10; more here, each bounded).
pub const MAX_SEND_BATCH: usize = 100;

/// A checked receive: how many, how long to wait, and the visibility (ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedReceive {
    pub max: usize,
    pub wait_ms: u64,
    pub visibility_ms: Option<u64>,
    pub holder: Option<super::engine::Holder>,
}

pub fn receive(req: &ReceiveRequest, limits: &Limits) -> Result<CheckedReceive, Invalid> {
    let max = match req.max_messages {
        None => 1,
        Some(n) if (1..=MAX_RECEIVE_MESSAGES).contains(&n) => n as usize,
        Some(_) => {
            return Err(invalid(
                "max_messages",
                format!("must be 1 to {MAX_RECEIVE_MESSAGES}"),
            ));
        }
    };
    let wait_ms = match req.wait_seconds {
        None => 0,
        Some(s) => millis("wait_seconds", s, MAX_WAIT_SECONDS)?,
    };
    let visibility_ms = req
        .visibility_timeout_seconds
        .map(|s| millis("visibility_timeout_seconds", s, MAX_VISIBILITY_SECONDS))
        .transpose()?;
    let holder = match (id("consumer_id", &req.consumer_id)?, req.max_in_flight) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(invalid(
                "max_in_flight",
                "bounds a named consumer: give consumer_id too",
            ));
        }
        (Some(c), n) => {
            let max_in_flight = match n {
                None => limits.max_in_flight,
                Some(n) if (1..=limits.max_in_flight as u64).contains(&n) => n as usize,
                Some(_) => {
                    return Err(invalid(
                        "max_in_flight",
                        format!(
                            "must be 1 to {} (queue_max_in_flight)",
                            limits.max_in_flight
                        ),
                    ));
                }
            };
            Some(super::engine::Holder {
                id: Arc::from(c),
                max_in_flight,
            })
        }
    };
    Ok(CheckedReceive {
        max,
        wait_ms,
        visibility_ms,
        holder,
    })
}

/// `queue_ack`, `queue_nack` and `queue_change_visibility`'s request.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ReceiptRequest {
    #[serde(default)]
    pub queue_name: String,
    #[serde(default)]
    pub receipt_handle: String,
    pub delay_seconds: Option<f64>,
    pub visibility_timeout_seconds: Option<f64>,
    /// `queue_ack` only: several deliveries at once (SQS's DeleteMessageBatch), instead of
    /// `receipt_handle`.
    pub receipt_handles: Option<Vec<String>>,
}

/// Most receipts one `queue_ack` takes.
pub const MAX_ACK_BATCH: usize = 100;

/// A receipt handle names the queue's run (`boot`: a restart or a new queue under the name
/// makes every earlier handle stale), the message and its delivery.
pub fn receipt_handle(boot: u64, r: super::engine::Receipt) -> String {
    format!("{boot:016x}-{:x}-{:x}", r.id, r.delivery)
}

/// A receipt handle back: its run and receipt.
pub fn parse_receipt(handle: &str) -> Result<(u64, super::engine::Receipt), Invalid> {
    let bad = || {
        invalid(
            "receipt_handle",
            format!("{handle:.80?} is not a receipt handle"),
        )
    };
    let mut parts = handle.splitn(3, '-');
    let mut next = || {
        parts
            .next()
            .filter(|p| !p.is_empty() && p.len() <= 16)
            .and_then(|p| u64::from_str_radix(p, 16).ok())
            .ok_or_else(bad)
    };
    let boot = next()?;
    let id = next()?;
    let delivery = u32::try_from(next()?).map_err(|_| bad())?;
    Ok((boot, super::engine::Receipt { id, delivery }))
}

/// Whole milliseconds of an optional seconds field (nack delays: SQS's 15 minutes).
pub fn delay_ms(field: &'static str, seconds: Option<f64>) -> Result<u64, Invalid> {
    seconds.map_or(Ok(0), |s| millis(field, s, MAX_DELAY_SECONDS))
}

/// A visibility in seconds, required.
pub fn visibility_ms(seconds: Option<f64>) -> Result<u64, Invalid> {
    match seconds {
        None => Err(invalid("visibility_timeout_seconds", "required")),
        Some(s) => millis("visibility_timeout_seconds", s, MAX_VISIBILITY_SECONDS),
    }
}
