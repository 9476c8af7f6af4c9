//! A request's trace id: the one its client gave (`trace_id`), or one the entry node makes
//! from its id, the connection and the request's place on it. It travels with every step
//! the request forwards, and log lines about the request carry it as `trace_id`. Made ids
//! are only formatted when something reads them, so a request that nobody logs, forwards
//! or summarises costs nothing for having one.

use std::fmt;

/// The longest trace id a client may give, and what it may be made of (what fits in a
/// log line and a header unquoted: W3C trace ids, UUIDs, ULIDs).
pub const MAX_TRACE_ID_BYTES: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trace {
    /// The client's own.
    Given(String),
    /// `node-connection-sequence`, in hex.
    Made { node: u64, conn: u64, seq: u64 },
}

impl Default for Trace {
    fn default() -> Trace {
        Trace::Made {
            node: 0,
            conn: 0,
            seq: 0,
        }
    }
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trace::Given(s) => f.write_str(s),
            Trace::Made { node, conn, seq } => {
                write!(f, "{}-{conn:x}-{seq:x}", crate::ids::NodeId(*node))
            }
        }
    }
}

/// Why a client's trace id is refused.
pub fn check(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_TRACE_ID_BYTES {
        return Err(format!(
            "trace_id must be 1 to {MAX_TRACE_ID_BYTES} bytes, got {}",
            id.len()
        ));
    }
    match id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/')))
    {
        Some(c) => Err(format!(
            "trace_id may hold letters, digits and - _ . : / only, not {c:?}"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_ids_are_distinct_per_connection_and_request() {
        let id = |conn, seq| {
            Trace::Made {
                node: 0xab,
                conn,
                seq,
            }
            .to_string()
        };
        assert_eq!(id(1, 2), "00000000000000ab-1-2");
        assert_ne!(id(1, 2), id(2, 1));
        assert_eq!(Trace::Given("t-1".into()).to_string(), "t-1");
    }

    #[test]
    fn given_ids_are_bounded_and_plain() {
        assert!(check("4bf92f3577b34da6a3ce929d0e0e4736").is_ok());
        assert!(check("01J0000000000000000000000").is_ok());
        assert!(check("").is_err());
        assert!(check(&"a".repeat(MAX_TRACE_ID_BYTES + 1)).is_err());
        assert!(check("a b").is_err());
        assert!(check("a\"b").is_err());
        assert!(check("a\nb").is_err());
    }
}
