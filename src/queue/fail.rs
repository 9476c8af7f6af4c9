//! Why a queue call failed: each kind has a stable name (first in its message) and a
//! client error code (`builtins/queue.rs`), and crosses the data plane as `to_wire`.

use super::engine::QueueError;
use super::request::Invalid;
use super::store::StoreError;

/// Why a queue call failed: each kind has a stable name (in the message, first) and a
/// client error code (`builtins/queue.rs`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueFail {
    /// The request is wrong (1007).
    #[error("[invalid_request] {0}")]
    Invalid(String),
    #[error("[queue_not_found] no queue `{0}`")]
    NotFound(String),
    #[error("[queue_exists] queue `{0}` exists with other settings")]
    Exists(String),
    /// Full, stale receipt, too many dedup ids or waiters: the queue said no (1003).
    #[error("[{code}] {message}")]
    Refused { code: String, message: String },
    /// The owner cannot be reached, or the catalog cannot commit (1017).
    #[error("[{code}] {message}")]
    Unavailable { code: String, message: String },
}

impl QueueFail {
    pub(crate) fn refused(code: &str, message: impl Into<String>) -> QueueFail {
        QueueFail::Refused {
            code: code.into(),
            message: message.into(),
        }
    }
    pub(crate) fn unavailable(code: &str, message: impl Into<String>) -> QueueFail {
        QueueFail::Unavailable {
            code: code.into(),
            message: message.into(),
        }
    }
    pub(crate) fn store(e: StoreError) -> QueueFail {
        QueueFail::unavailable("queue_store", e.to_string())
    }
    /// As it travels between nodes: (kind, code, message).
    pub fn to_wire(&self) -> (u8, String, String) {
        match self {
            QueueFail::Invalid(m) => (0, String::new(), m.clone()),
            QueueFail::NotFound(q) => (1, String::new(), q.clone()),
            QueueFail::Exists(q) => (2, String::new(), q.clone()),
            QueueFail::Refused { code, message } => (3, code.clone(), message.clone()),
            QueueFail::Unavailable { code, message } => (4, code.clone(), message.clone()),
        }
    }
    pub fn from_wire(kind: u8, code: String, message: String) -> QueueFail {
        match kind {
            0 => QueueFail::Invalid(message),
            1 => QueueFail::NotFound(message),
            2 => QueueFail::Exists(message),
            3 => QueueFail::Refused { code, message },
            _ => QueueFail::Unavailable { code, message },
        }
    }
}

impl From<Invalid> for QueueFail {
    fn from(e: Invalid) -> QueueFail {
        QueueFail::Invalid(e.to_string())
    }
}

impl From<QueueError> for QueueFail {
    fn from(e: QueueError) -> QueueFail {
        let code = match e {
            QueueError::Full(_) => "queue_full",
            QueueError::StaleReceipt(_) => "stale_receipt",
            QueueError::DedupFull(_) => "dedup_full",
        };
        QueueFail::refused(code, e.to_string())
    }
}
