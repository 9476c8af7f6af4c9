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

use serde::Deserialize;
use serde_json::{Value, json};

/// `role: "pubsub-subscribe"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SubscribeRequest {
    pub u: String,
    pub subscription: Subscription,
}

/// What a client subscribes to (the original's other fields, such as `subscriber`,
/// `created_at` and `get_backlog`, are accepted and not used).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Subscription {
    pub subscription_id: String,
    pub patterns: Vec<TopicPattern>,
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

/// The acknowledgement of a subscribe or unsubscribe whose `u` was `u`.
pub fn ack(u: &str, success: bool, error: Option<&str>) -> Value {
    json!({"role": "pubsub-ack", "operation_id": u, "success": success, "error": error,
           "u": format!("ack_{u}")})
}

impl TopicPattern {
    /// Whether `topic` is one this pattern names. A pattern without wildcards matches only
    /// its own text, `exact_match` or not.
    pub fn matches(&self, topic: &str) -> bool {
        let exact = self.exact_match || !(self.pattern.contains('*') || self.pattern.contains('#'));
        crate::pubsub::matcher::pattern_matches(&self.pattern, exact, topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
