//! The snapshot layout of data formats 5 and 6, before queue entries named their replicas:
//! read here and converted (every queue kept by its owner, R = 1), so that a node upgraded
//! in place keeps its snapshot (`SqliteLogStore::open` rewrites it as format 7) and a
//! snapshot from a leader of the older build still installs. Log entries need no mirror:
//! the old queue command keeps its place (`CatalogCommand::CreateQueueV6`), the new one is
//! a new last variant.

use std::collections::BTreeMap;

use openraft::{BasicNode, LogId, StoredMembership};
use semver::Version;
use serde::{Deserialize, Serialize};

use super::stored_state::StoredState;
use crate::control::catalog::{
    Catalog, DnsService, FunctionEntry, Member, NodeId, QueueEntryV6, ServiceKey,
};
use crate::control::policy::NamespacePolicy;

/// The catalog of formats 5 and 6, field for field.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct CatalogV6 {
    pub members: BTreeMap<NodeId, Member>,
    pub functions: BTreeMap<NodeId, BTreeMap<(String, Version), FunctionEntry>>,
    pub queues: BTreeMap<String, QueueEntryV6>,
    pub services: BTreeMap<ServiceKey, DnsService>,
    pub policy: NamespacePolicy,
}

/// A snapshot's state in formats 5 and 6.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct StoredStateV6 {
    pub last_applied: Option<LogId<u64>>,
    pub membership: StoredMembership<u64, BasicNode>,
    pub catalog: CatalogV6,
}

impl From<StoredStateV6> for StoredState {
    fn from(s: StoredStateV6) -> StoredState {
        StoredState {
            last_applied: s.last_applied,
            membership: s.membership,
            catalog: Catalog::from_parts(
                s.catalog.members,
                s.catalog.functions,
                s.catalog.queues,
                s.catalog.services,
                s.catalog.policy,
            ),
        }
    }
}
