//! The words for a node that every room shares: its [`NodeId`] and its [`NodeUrl`].

use std::fmt;

/// A node's id in the cluster: its Raft id (nonzero, drawn once and kept with its data).
/// Shown as 16 hex digits wherever it is shown: logs, metric labels, `node_id`s, errors.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<u64> for NodeId {
    fn from(id: u64) -> NodeId {
        NodeId(id)
    }
}

/// A node's `node_id` as clients see it: its name and its [`NodeId`] (`name-0123456789abcdef`).
pub fn node_id(name: &str, id: u64) -> String {
    format!("{name}-{}", NodeId(id))
}
