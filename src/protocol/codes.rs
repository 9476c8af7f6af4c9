//! Stable error codes. 1001/1003/1004 keep the original's meaning; the rest are mpreg's own,
//! one per condition, documented in docs/PROTOCOL.md.

use serde::{Deserialize, Serialize};

/// An error code as sent on the wire (`error.code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "i64", try_from = "i64")]
pub enum ErrorCode {
    /// No registered function matches name, function_id, version constraint and locs.
    CommandNotFound,
    /// A step raised an error while running.
    ExecutionFailed,
    /// The request ran past its deadline, or the message's `role` is unknown (the original
    /// uses 1004 for both; the message tells them apart).
    TimeoutOrBadRole,
    /// The frame is not a JSON object (invalid JSON, nesting too deep, not an object, not UTF-8).
    MalformedMessage,
    /// A field is missing or has the wrong type.
    InvalidRequest,
    /// The arguments do not fit the function's parameters.
    InvalidArguments,
    /// `version_constraint` cannot be parsed.
    InvalidVersionConstraint,
    /// `cmds` is empty.
    EmptyRequest,
    /// Two commands share a `name`.
    DuplicateCommandName,
    /// A command's arguments reference the command itself.
    SelfReference,
    /// The commands' references form a cycle.
    DependencyCycle,
    /// An explicit `{"$ref": ...}` names no command of the request.
    UnknownReference,
    /// More commands than the node's `max_commands_per_request`.
    TooManyCommands,
    /// A request grew past a node limit while running (resolved argument bytes, nesting
    /// depth of a value, size of the reply).
    LimitExceeded,
    /// The cluster could not serve the request: no leader confirmed a linearizable read (no
    /// quorum reachable), this replica did not catch up in time, or every node that offers
    /// a step's function is down or unreachable.
    ClusterUnavailable,
    /// A step's node failed after receiving it and the function is not idempotent: the
    /// step may have run, so it was not retried.
    StepLost,
    /// The node is shutting down and takes no new requests.
    ShuttingDown,
    /// The caller's token does not carry a role the function (or the action: registering
    /// a worker, writing the catalog, reading the cluster's layout) needs.
    Forbidden,
    /// A node-internal failure (a bug); the message says what.
    Internal,
}

impl ErrorCode {
    /// Every code, for documentation and tests.
    pub const ALL: [ErrorCode; 19] = [
        ErrorCode::CommandNotFound,
        ErrorCode::ExecutionFailed,
        ErrorCode::TimeoutOrBadRole,
        ErrorCode::MalformedMessage,
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidArguments,
        ErrorCode::InvalidVersionConstraint,
        ErrorCode::EmptyRequest,
        ErrorCode::DuplicateCommandName,
        ErrorCode::SelfReference,
        ErrorCode::DependencyCycle,
        ErrorCode::UnknownReference,
        ErrorCode::TooManyCommands,
        ErrorCode::LimitExceeded,
        ErrorCode::ClusterUnavailable,
        ErrorCode::StepLost,
        ErrorCode::ShuttingDown,
        ErrorCode::Forbidden,
        ErrorCode::Internal,
    ];

    pub const fn as_i64(self) -> i64 {
        match self {
            ErrorCode::CommandNotFound => 1001,
            ErrorCode::Internal => 1002,
            ErrorCode::ExecutionFailed => 1003,
            ErrorCode::TimeoutOrBadRole => 1004,
            ErrorCode::MalformedMessage => 1005,
            ErrorCode::InvalidRequest => 1006,
            ErrorCode::InvalidArguments => 1007,
            ErrorCode::InvalidVersionConstraint => 1008,
            ErrorCode::EmptyRequest => 1010,
            ErrorCode::DuplicateCommandName => 1011,
            ErrorCode::SelfReference => 1012,
            ErrorCode::DependencyCycle => 1013,
            ErrorCode::UnknownReference => 1014,
            ErrorCode::TooManyCommands => 1015,
            ErrorCode::LimitExceeded => 1016,
            ErrorCode::ClusterUnavailable => 1017,
            ErrorCode::StepLost => 1018,
            ErrorCode::ShuttingDown => 1020,
            ErrorCode::Forbidden => 1021,
        }
    }

    /// The short, stable message that accompanies the code.
    pub const fn title(self) -> &'static str {
        match self {
            ErrorCode::CommandNotFound => "Command not found",
            ErrorCode::Internal => "Internal server error",
            ErrorCode::ExecutionFailed => "RPC execution failed",
            ErrorCode::TimeoutOrBadRole => "RPC request rejected or timed out",
            ErrorCode::MalformedMessage => "Malformed message",
            ErrorCode::InvalidRequest => "Invalid request",
            ErrorCode::InvalidArguments => "Invalid arguments",
            ErrorCode::InvalidVersionConstraint => "Invalid version constraint",
            ErrorCode::EmptyRequest => "Empty request",
            ErrorCode::DuplicateCommandName => "Duplicate command name",
            ErrorCode::SelfReference => "Self reference",
            ErrorCode::DependencyCycle => "Dependency cycle",
            ErrorCode::UnknownReference => "Unknown reference",
            ErrorCode::TooManyCommands => "Too many commands",
            ErrorCode::LimitExceeded => "Limit exceeded",
            ErrorCode::ClusterUnavailable => "Cluster unavailable",
            ErrorCode::StepLost => "Step lost",
            ErrorCode::ShuttingDown => "Node shutting down",
            ErrorCode::Forbidden => "Forbidden",
        }
    }

    pub fn from_i64(code: i64) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_i64() == code)
    }
}

impl From<ErrorCode> for i64 {
    fn from(c: ErrorCode) -> i64 {
        c.as_i64()
    }
}

impl TryFrom<i64> for ErrorCode {
    type Error = String;
    fn try_from(code: i64) -> Result<Self, Self::Error> {
        ErrorCode::from_i64(code).ok_or_else(|| format!("unknown error code {code}"))
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.as_i64(), self.title())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_round_trip() {
        let mut seen = std::collections::BTreeSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.as_i64()), "duplicate code {}", c.as_i64());
            assert_eq!(ErrorCode::from_i64(c.as_i64()), Some(c));
        }
        assert_eq!(ErrorCode::CommandNotFound.as_i64(), 1001);
        assert_eq!(ErrorCode::ExecutionFailed.as_i64(), 1003);
        assert_eq!(ErrorCode::TimeoutOrBadRole.as_i64(), 1004);
    }
}
