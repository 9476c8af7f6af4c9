use std::time::Duration;

use serde_json::Value;

use crate::protocol::ErrorCode;

/// Everything a client call can fail with. [`ClientError::code`] gives the node's code.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid URL `{url}`: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot connect to {url}: {source}")]
    Connect { url: String, source: std::io::Error },
    #[error("WebSocket handshake with {url} failed: {message}")]
    Handshake { url: String, message: String },
    /// The node refused the upgrade: 401 (no valid token) or 403 (not allowed).
    #[error("{url} refused the connection (HTTP {status}): {reason}")]
    Refused {
        url: String,
        status: u16,
        reason: String,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("error {code} ({message}): {}", details_text(.details))]
    Rpc {
        code: i64,
        message: String,
        details: Value,
    },
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("connection closed")]
    Closed,
    #[error("unexpected reply: {0}")]
    Protocol(String),
    /// The node refused a subscribe, unsubscribe or publish (its `pubsub-ack` said why).
    #[error("the node refused: {0}")]
    PubSub(String),
    /// A `cache-response` with status `error`: its `error_message`.
    #[error("cache: {0}")]
    Cache(String),
}

fn details_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl ClientError {
    /// The node's error code, when the node answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Rpc { code, .. } => ErrorCode::from_i64(*code),
            _ => None,
        }
    }
}
