//! What a replica stores of the catalog: the state machine's state ([`StoredState`]), which
//! a snapshot carries, and a snapshot as kept on disk ([`StoredSnapshot`]).

use openraft::{BasicNode, LogId, SnapshotMeta, StoredMembership};
use serde::{Deserialize, Serialize};

use crate::control::catalog::Catalog;

/// A snapshot as stored: its metadata and the encoded [`StoredState`].
pub type StoredSnapshot = (SnapshotMeta<u64, BasicNode>, Vec<u8>);

/// The metadata of a snapshot taken at `last` with `membership` (the catalog's or a queue
/// group's): its id is `<term>-<index>`, or `empty` before any entry.
pub fn snapshot_meta(
    last: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
) -> SnapshotMeta<u64, BasicNode> {
    SnapshotMeta {
        last_log_id: last,
        last_membership: membership,
        snapshot_id: match last {
            Some(id) => format!("{}-{}", id.leader_id.term, id.index),
            None => "empty".to_owned(),
        },
    }
}

/// What the state machine holds, and what a snapshot carries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredState {
    pub last_applied: Option<LogId<u64>>,
    pub membership: StoredMembership<u64, BasicNode>,
    pub catalog: Catalog,
}
