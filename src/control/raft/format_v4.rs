//! The snapshot layout of data format 4, before queue entries carried a queue's whole
//! settings: read here and converted (`QueueEntryV4`), so that a node upgraded in place
//! keeps its snapshot (`SqliteLogStore::open` rewrites it as format 5) and a snapshot from
//! a leader of the older build still installs. Log entries need no mirror: the old queue
//! command keeps its place (`CatalogCommand::CreateQueueV4`), the new one is a new last
//! variant.

use std::collections::BTreeMap;

use openraft::{BasicNode, LogId, StoredMembership};
use semver::Version;
use serde::{Deserialize, Serialize};

use super::stored_state::StoredState;
use crate::control::catalog::{
    Catalog, DnsService, FunctionEntry, Member, NodeId, QueueEntryV4, ServiceKey,
};
use crate::control::policy::NamespacePolicy;

/// The catalog of format 4, field for field.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct CatalogV4 {
    pub members: BTreeMap<NodeId, Member>,
    pub functions: BTreeMap<NodeId, BTreeMap<(String, Version), FunctionEntry>>,
    pub queues: BTreeMap<String, QueueEntryV4>,
    pub services: BTreeMap<ServiceKey, DnsService>,
    pub policy: NamespacePolicy,
}

/// A snapshot's state in format 4.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct StoredStateV4 {
    pub last_applied: Option<LogId<u64>>,
    pub membership: StoredMembership<u64, BasicNode>,
    pub catalog: CatalogV4,
}

impl From<StoredStateV4> for StoredState {
    fn from(s: StoredStateV4) -> StoredState {
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
