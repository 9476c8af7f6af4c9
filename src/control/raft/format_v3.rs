//! The snapshot layout of data formats 2 and 3, before the catalog held a namespace
//! policy: read here and converted (the policy off, its default), so that a node upgraded in
//! place keeps its snapshot (`SqliteLogStore::open` rewrites it as format 4) and a snapshot
//! from a leader of the older build still installs. Log entries need no mirror: the new
//! command is a new last variant, and older entries read unchanged.

use std::collections::BTreeMap;

use openraft::{BasicNode, LogId, StoredMembership};
use semver::Version;
use serde::{Deserialize, Serialize};

use super::stored_state::StoredState;
use crate::control::catalog::{
    Catalog, DnsService, FunctionEntry, Member, NodeId, QueueEntryV4, ServiceKey,
};

/// The catalog without its policy, field for field.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct CatalogV3 {
    pub members: BTreeMap<NodeId, Member>,
    pub functions: BTreeMap<NodeId, BTreeMap<(String, Version), FunctionEntry>>,
    pub queues: BTreeMap<String, QueueEntryV4>,
    pub services: BTreeMap<ServiceKey, DnsService>,
}

/// A snapshot's state in formats 2 and 3.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct StoredStateV3 {
    pub last_applied: Option<LogId<u64>>,
    pub membership: StoredMembership<u64, BasicNode>,
    pub catalog: CatalogV3,
}

impl From<StoredStateV3> for StoredState {
    fn from(s: StoredStateV3) -> StoredState {
        StoredState {
            last_applied: s.last_applied,
            membership: s.membership,
            catalog: Catalog::from_parts(
                s.catalog.members,
                s.catalog.functions,
                s.catalog.queues,
                s.catalog.services,
                Default::default(),
            ),
        }
    }
}
