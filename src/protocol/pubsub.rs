//! The original's pub/sub messages on a client connection (its `model.py`): a client
//! subscribes to topic patterns under an id it chooses, the node acknowledges, and pushes a
//! notification for each message on a matching topic until the client unsubscribes.
//!
//! ```text
//! client → node  {"role":"pubsub-subscribe","u":"r1","subscription":{"subscription_id":"s1",
//!                  "patterns":[{"pattern":"mpreg.discovery.delta","exact_match":true}],…}}
//! node → client  {"role":"pubsub-ack","operation_id":"r1","success":true,"error":null,"u":"ack_r1"}
//! node → client  {"role":"pubsub-notification","message":{"topic":…,"payload":…,…},
//!                  "subscription_id":"s1","u":"notification_<message id>_s1"}
//! client → node  {"role":"pubsub-unsubscribe","u":"r2","subscription_id":"s1"}
//! ```
//!
//! Patterns are AMQP-style: topics are dot-separated words, `*` matches one word and `#`
//! any number (zero included).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::json::Json;

/// `role: "pubsub-subscribe"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SubscribeRequest {
    pub u: String,
    pub subscription: Subscription,
}

/// What a client subscribes to (the original's other fields, `subscriber` and
/// `created_at`, are accepted and not used). With `get_backlog` (the original's default),
/// the subscription first hears the messages of the last `backlog_seconds` (300 by
/// default) that the cluster kept.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Subscription {
    pub subscription_id: String,
    pub patterns: Vec<TopicPattern>,
    #[serde(default = "yes")]
    pub get_backlog: bool,
    #[serde(default = "five_minutes")]
    pub backlog_seconds: f64,
}

fn yes() -> bool {
    true
}

fn five_minutes() -> f64 {
    300.0
}

impl Subscription {
    /// How far back its backlog reaches, in ms (none without `get_backlog`; negative and
    /// non-numbers are none; at most a week, beyond any retention).
    pub fn backlog_ms(&self) -> Option<u64> {
        let s = self.backlog_seconds;
        (self.get_backlog && s.is_finite() && s > 0.0)
            .then(|| (s.min(7.0 * 24.0 * 3600.0) * 1000.0) as u64)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TopicPattern {
    pub pattern: String,
    #[serde(default)]
    pub exact_match: bool,
}

/// `role: "pubsub-unsubscribe"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct UnsubscribeRequest {
    pub u: String,
    pub subscription_id: String,
}

/// `role: "pubsub-publish"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PublishRequest {
    pub u: String,
    pub message: PubSubMessage,
}

/// A published message, as the original's `PubSubMessage` (its `routing_path` and
/// `current_hop`, accepted from clients, are the fabric's business and not kept).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct PubSubMessage {
    pub topic: String,
    pub payload: Json,
    pub timestamp: f64,
    pub message_id: String,
    pub publisher: String,
    #[serde(default = "Json::empty_object")]
    pub headers: Json,
}

/// A [`PubSubMessage`] between nodes: the JSON parts as text (peer frames are MessagePack,
/// which carries no raw JSON), and the node it was published on with its number there
/// (`pubsub::backlog`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct PeerMessage {
    pub topic: String,
    pub payload: String,
    pub timestamp: f64,
    pub message_id: String,
    pub publisher: String,
    pub headers: String,
    #[serde(default)]
    pub origin: u64,
    #[serde(default)]
    pub seq: u64,
    /// The version of the receiver's interest the sender forwarded it by
    /// (`pubsub::exchange::Exchange::publish`); `None`: unknown, every match hears it.
    #[serde(default)]
    pub known_version: Option<u64>,
}

impl PeerMessage {
    /// `m`, published on node `origin` as its number `seq`.
    pub fn of(m: &PubSubMessage, origin: u64, seq: u64) -> PeerMessage {
        PeerMessage {
            origin,
            seq,
            ..PeerMessage::from(m)
        }
    }

    /// The same, forwarded by the receiver's interest as of `version`.
    pub fn known(self, version: u64) -> PeerMessage {
        PeerMessage {
            known_version: Some(version),
            ..self
        }
    }
}

impl From<&PubSubMessage> for PeerMessage {
    fn from(m: &PubSubMessage) -> PeerMessage {
        PeerMessage {
            origin: 0,
            seq: 0,
            known_version: None,
            topic: m.topic.clone(),
            payload: m.payload.get().to_owned(),
            timestamp: m.timestamp,
            message_id: m.message_id.clone(),
            publisher: m.publisher.clone(),
            headers: m.headers.get().to_owned(),
        }
    }
}

impl PeerMessage {
    /// The message again; `Err` when a part is not JSON (a peer's bytes are checked too).
    pub fn into_message(self) -> Result<PubSubMessage, String> {
        let json = |t: String| Json::from_text(t).map_err(|e| e.to_string());
        Ok(PubSubMessage {
            topic: self.topic,
            payload: json(self.payload)?,
            timestamp: self.timestamp,
            message_id: self.message_id,
            publisher: self.publisher,
            headers: json(self.headers)?,
        })
    }
}

/// Bounds on what a client subscribes to and publishes.
pub const MAX_SUBSCRIPTIONS: usize = 64;
pub const MAX_PATTERNS: usize = 16;
/// The longest topic, pattern or subscription id, and the most words in a topic or pattern
/// (matching a `#` costs up to the topic's words per `#`).
pub const MAX_TOPIC_BYTES: usize = 256;
pub const MAX_TOPIC_WORDS: usize = 32;
/// Topics the node publishes on itself; clients may subscribe to them, not publish.
pub const RESERVED_PREFIX: &str = "mpreg.";

fn check_topic(what: &str, t: &str) -> Result<(), String> {
    if t.is_empty() || t.len() > MAX_TOPIC_BYTES {
        return Err(format!(
            "{what} must be 1 to {MAX_TOPIC_BYTES} bytes, got {}",
            t.len()
        ));
    }
    if t.split('.').count() > MAX_TOPIC_WORDS {
        return Err(format!("{what} has more than {MAX_TOPIC_WORDS} words"));
    }
    Ok(())
}

impl Subscription {
    /// Why a subscription is refused, for a connection already holding `held`.
    pub fn check(&self, held: usize) -> Result<(), String> {
        check_topic("subscription_id", &self.subscription_id)?;
        if held >= MAX_SUBSCRIPTIONS {
            return Err(format!(
                "a connection may hold at most {MAX_SUBSCRIPTIONS} subscriptions"
            ));
        }
        if self.patterns.is_empty() || self.patterns.len() > MAX_PATTERNS {
            return Err(format!("1 to {MAX_PATTERNS} patterns per subscription"));
        }
        self.patterns
            .iter()
            .try_for_each(|p| check_topic("a pattern", &p.pattern))
    }
}

impl PubSubMessage {
    /// Why a message is refused.
    pub fn check(&self) -> Result<(), String> {
        check_topic("topic", &self.topic)?;
        if self.topic.starts_with(RESERVED_PREFIX) {
            return Err(format!(
                "topics beginning with `{RESERVED_PREFIX}` are the node's: {:?}",
                self.topic
            ));
        }
        if self.message_id.len() > MAX_TOPIC_BYTES || self.publisher.len() > MAX_TOPIC_BYTES {
            return Err(format!(
                "message_id and publisher are at most {MAX_TOPIC_BYTES} bytes"
            ));
        }
        if self.headers.kind() != crate::protocol::json::Kind::Object {
            return Err("headers must be an object".into());
        }
        Ok(())
    }

    /// The message as notifications carry it (`routing_path` and `current_hop` null),
    /// serde_json's text exactly (a test holds them equal), written by hand: this is
    /// encoded once per published message, and serde's path through the raw payload costs
    /// as much as the rest of the publish.
    pub fn notified_json(&self) -> String {
        let mut s = String::with_capacity(
            self.topic.len()
                + self.payload.get().len()
                + self.message_id.len()
                + self.publisher.len()
                + self.headers.get().len()
                + 128,
        );
        s.push_str(r#"{"topic":"#);
        push_json_str(&mut s, &self.topic);
        s.push_str(r#","payload":"#);
        s.push_str(self.payload.get());
        s.push_str(r#","timestamp":"#);
        s.push_str(&serde_json::to_string(&self.timestamp).unwrap_or_else(|_| "null".into()));
        s.push_str(r#","message_id":"#);
        push_json_str(&mut s, &self.message_id);
        s.push_str(r#","publisher":"#);
        push_json_str(&mut s, &self.publisher);
        s.push_str(r#","headers":"#);
        s.push_str(self.headers.get());
        s.push_str(r#","routing_path":null,"current_hop":null}"#);
        s
    }
}

/// Appends `v` as a JSON string (quoted, escaped as serde_json escapes).
fn push_json_str(s: &mut String, v: &str) {
    if v.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        s.push('"');
        s.push_str(v);
        s.push('"');
    } else {
        s.push_str(&serde_json::to_string(v).unwrap_or_else(|_| "\"\"".into()));
    }
}

/// A message's notifications: what every subscription's shares (the message's JSON, its id
/// escaped for the `u`), encoded once; then one text per subscription.
pub struct Notifier {
    head: String,
    message_id: String,
}

/// `s` as a JSON string's contents (escaped, without the quotes).
fn escaped(s: &str) -> String {
    let mut quoted = String::with_capacity(s.len() + 2);
    push_json_str(&mut quoted, s);
    quoted[1..quoted.len() - 1].to_owned()
}

impl Notifier {
    pub fn new(message: &PubSubMessage) -> Notifier {
        Notifier::with_body(&message.notified_json(), message)
    }

    /// With the message's JSON already encoded (`body`).
    pub fn with_body(body: &str, message: &PubSubMessage) -> Notifier {
        let mut head = String::with_capacity(body.len() + 64);
        head.push_str(r#"{"role":"pubsub-notification","message":"#);
        head.push_str(body);
        head.push_str(r#","subscription_id":"#);
        Notifier {
            head,
            message_id: escaped(&message.message_id),
        }
    }

    /// The notification for the subscription whose id, as JSON, is `id_json`, with the
    /// original's `u` (`notification_<message_id>_<subscription_id>`).
    pub fn for_subscription(&self, id_json: &str) -> String {
        let id = id_json
            .strip_prefix('"')
            .and_then(|i| i.strip_suffix('"'))
            .unwrap_or(id_json);
        let mut s = String::with_capacity(
            self.head.len() + id_json.len() + id.len() + self.message_id.len() + 24,
        );
        s.push_str(&self.head);
        s.push_str(id_json);
        s.push_str(r#","u":"notification_"#);
        s.push_str(&self.message_id);
        s.push('_');
        s.push_str(id);
        s.push_str("\"}");
        s
    }
}

/// A `pubsub-notification` of `message` (encoded as `body`) for subscription `id`.
pub fn notification(body: &str, message: &PubSubMessage, id: &str) -> String {
    let id_json = serde_json::to_string(id).unwrap_or_default();
    Notifier::with_body(body, message).for_subscription(&id_json)
}

/// The acknowledgement of a subscribe, unsubscribe or publish whose `u` was `u`.
pub fn ack(u: &str, success: bool, error: Option<&str>) -> Value {
    json!({"role": "pubsub-ack", "operation_id": u, "success": success, "error": error,
           "u": format!("ack_{u}")})
}

/// [`ack`] as text, in the original's order of fields (a publish is acked every time: this
/// is the cheap way).
pub fn ack_text(u: &str, success: bool, error: Option<&str>) -> String {
    let mut s = String::with_capacity(2 * u.len() + 96);
    s.push_str(r#"{"role":"pubsub-ack","operation_id":"#);
    let from = s.len();
    push_json_str(&mut s, u);
    let u_json = s[from..].to_owned();
    s.push_str(if success {
        r#","success":true,"error":"#
    } else {
        r#","success":false,"error":"#
    });
    match error {
        Some(e) => push_json_str(&mut s, e),
        None => s.push_str("null"),
    }
    s.push_str(r#","u":"ack_"#);
    s.push_str(&u_json[1..]);
    s.push('}');
    s
}

impl TopicPattern {
    /// Whether `topic` is one this pattern names (a pattern without wildcards matches only
    /// its own text, `exact_match` or not).
    pub fn matches(&self, topic: &str) -> bool {
        pattern_matches(&self.pattern, self.exact_match, topic)
    }
}

/// The definition the trie must agree with: one pattern against one topic, word by word.
pub fn pattern_matches(pattern: &str, exact: bool, topic: &str) -> bool {
    if exact {
        return pattern == topic;
    }
    fn words(p: &[&str], t: &[&str]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some((&"#", rest)) => (0..=t.len()).any(|skip| words(rest, &t[skip..])),
            Some((&w, rest)) => match t.split_first() {
                Some((tw, trest)) if w == "*" || w == *tw => words(rest, trest),
                _ => false,
            },
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let t: Vec<&str> = topic.split('.').collect();
    words(&p, &t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_are_the_originals() {
        let m: PublishRequest = serde_json::from_str(
            r#"{"role":"pubsub-publish","u":"pub-1","message":{"topic":"t.a.x","payload":{"v":1},
                "timestamp":0,"message_id":"m1","publisher":"raw","headers":{}}}"#,
        )
        .unwrap();
        assert!(m.message.check().is_ok());
        let n = notification(&m.message.notified_json(), &m.message, "s1");
        #[derive(Serialize)]
        struct Notified<'a> {
            #[serde(flatten)]
            message: &'a PubSubMessage,
            routing_path: Option<()>,
            current_hop: Option<()>,
        }
        let mut odd = m.message.clone();
        odd.topic = "t.\"q\".\u{1}\u{e9}".into();
        odd.publisher = "back\\slash".into();
        odd.timestamp = 1_234_567.125e3;
        for msg in [&m.message, &odd] {
            let by_serde = serde_json::to_string(&Notified {
                message: msg,
                routing_path: None,
                current_hop: None,
            })
            .unwrap();
            assert_eq!(msg.notified_json(), by_serde);
        }
        let tricky = notification(&m.message.notified_json(), &m.message, "s\"1\u{e9}");
        let v: Value = serde_json::from_str(&tricky).unwrap();
        assert_eq!(v["u"], "notification_m1_s\"1\u{e9}");
        assert_eq!(v["subscription_id"], "s\"1\u{e9}");
        for (success, error) in [(true, None), (false, Some("no \"way\""))] {
            let text: Value = serde_json::from_str(&ack_text("p\"1", success, error)).unwrap();
            assert_eq!(text, ack("p\"1", success, error));
        }
        assert_eq!(
            n,
            r#"{"role":"pubsub-notification","message":{"topic":"t.a.x","payload":{"v":1},"timestamp":0.0,"message_id":"m1","publisher":"raw","headers":{},"routing_path":null,"current_hop":null},"subscription_id":"s1","u":"notification_m1_s1"}"#
        );
    }

    fn p(pattern: &str) -> TopicPattern {
        TopicPattern {
            pattern: pattern.into(),
            exact_match: false,
        }
    }

    #[test]
    fn patterns_match_as_amqp_topics() {
        let base = "mpreg.discovery.delta";
        assert!(p(base).matches(base));
        assert!(!p(base).matches("mpreg.discovery.delta.svc"));
        assert!(p("mpreg.discovery.delta.#").matches(base));
        assert!(p("mpreg.discovery.delta.#").matches("mpreg.discovery.delta.svc.market"));
        assert!(p("mpreg.discovery.delta.*").matches("mpreg.discovery.delta.svc"));
        assert!(!p("mpreg.discovery.delta.*").matches("mpreg.discovery.delta.svc.market"));
        assert!(p("mpreg.#.delta").matches(base));
        assert!(!p("mpreg.*").matches(base));
        let exact = TopicPattern {
            pattern: "mpreg.*".into(),
            exact_match: true,
        };
        assert!(!exact.matches("mpreg.discovery") && exact.matches("mpreg.*"));
    }
}
