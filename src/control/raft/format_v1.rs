//! The data directory's format 1 (and 0, the same layout), as stored before function entries
//! carried their roles: read here and converted, so that a node upgraded in place keeps
//! its log and snapshot (`SqliteLogStore::open` rewrites them as format 2), and a snapshot
//! from a leader of the older build still installs.
//!
//! Stored values are bincode: positional, so an entry without `roles` cannot be read as
//! one with them. These types mirror the old layout field for field and variant for
//! variant; only `FunctionEntry` differs, and everything that holds one.

use std::collections::BTreeMap;

use openraft::{BasicNode, EntryPayload, LogId, Membership, StoredMembership};
use semver::Version;
use serde::{Deserialize, Serialize};

use super::TypeConfig;
use super::stored_state::StoredState;
use crate::control::catalog::{
    Catalog, CatalogCommand, DnsService, FunctionEntry, Member, NodeId, QueueEntryV4, Role,
    ServiceKey,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct FunctionEntryV1 {
    pub name: String,
    pub function_id: String,
    pub version: Version,
    pub resources: std::collections::BTreeSet<String>,
    pub idempotent: bool,
}

impl From<FunctionEntryV1> for FunctionEntry {
    fn from(f: FunctionEntryV1) -> FunctionEntry {
        FunctionEntry {
            name: f.name,
            function_id: f.function_id,
            version: f.version,
            resources: f.resources,
            idempotent: f.idempotent,
            // Format 1 kept no roles: a function's roles were checked only where it ran.
            // The node that registered it registers it again, with them, when it restarts.
            roles: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum CatalogCommandV1 {
    UpsertMember(Member),
    RemoveMember(NodeId),
    SetRole {
        id: NodeId,
        role: Role,
    },
    RegisterFunctions {
        node: NodeId,
        functions: Vec<FunctionEntryV1>,
    },
    UnregisterFunctions {
        node: NodeId,
        functions: Vec<(String, Option<Version>)>,
    },
    CreateQueue(QueueEntryV4),
    DeleteQueue {
        name: String,
    },
    RegisterService(DnsService),
    UnregisterService(ServiceKey),
}

impl From<CatalogCommandV1> for CatalogCommand {
    fn from(c: CatalogCommandV1) -> CatalogCommand {
        use CatalogCommandV1 as V1;
        match c {
            V1::UpsertMember(m) => CatalogCommand::UpsertMember(m),
            V1::RemoveMember(id) => CatalogCommand::RemoveMember(id),
            V1::SetRole { id, role } => CatalogCommand::SetRole { id, role },
            V1::RegisterFunctions { node, functions } => CatalogCommand::RegisterFunctions {
                node,
                functions: functions.into_iter().map(Into::into).collect(),
            },
            V1::UnregisterFunctions { node, functions } => {
                CatalogCommand::UnregisterFunctions { node, functions }
            }
            V1::CreateQueue(q) => CatalogCommand::CreateQueueV4(q),
            V1::DeleteQueue { name } => CatalogCommand::DeleteQueue { name },
            V1::RegisterService(s) => CatalogCommand::RegisterService(s),
            V1::UnregisterService(k) => CatalogCommand::UnregisterService(k),
        }
    }
}

/// openraft's `EntryPayload` over the old command.
#[derive(Debug, Clone, Serialize, Deserialize)]
// Mirrors openraft's `EntryPayload` field for field, so it is as lopsided as that is: the
// mirror only reads old rows and must keep their shape.
#[allow(clippy::large_enum_variant)]
pub(crate) enum EntryPayloadV1 {
    Blank,
    Normal(CatalogCommandV1),
    Membership(Membership<u64, BasicNode>),
}

/// openraft's `Entry` over the old command: a row of `raft_log` in format 1.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct EntryV1 {
    pub log_id: LogId<u64>,
    pub payload: EntryPayloadV1,
}

impl From<EntryV1> for openraft::Entry<TypeConfig> {
    fn from(e: EntryV1) -> openraft::Entry<TypeConfig> {
        openraft::Entry {
            log_id: e.log_id,
            payload: match e.payload {
                EntryPayloadV1::Blank => EntryPayload::Blank,
                EntryPayloadV1::Normal(c) => EntryPayload::Normal(c.into()),
                EntryPayloadV1::Membership(m) => EntryPayload::Membership(m),
            },
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct CatalogV1 {
    pub members: BTreeMap<NodeId, Member>,
    pub functions: BTreeMap<NodeId, BTreeMap<(String, Version), FunctionEntryV1>>,
    pub queues: BTreeMap<String, QueueEntryV4>,
    pub services: BTreeMap<ServiceKey, DnsService>,
}

/// A snapshot's state in format 1.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct StoredStateV1 {
    pub last_applied: Option<LogId<u64>>,
    pub membership: StoredMembership<u64, BasicNode>,
    pub catalog: CatalogV1,
}

impl From<StoredStateV1> for StoredState {
    fn from(s: StoredStateV1) -> StoredState {
        let functions = s
            .catalog
            .functions
            .into_iter()
            .map(|(node, fs)| (node, fs.into_iter().map(|(k, f)| (k, f.into())).collect()))
            .collect();
        StoredState {
            last_applied: s.last_applied,
            membership: s.membership,
            catalog: Catalog::from_parts(
                s.catalog.members,
                functions,
                s.catalog.queues,
                s.catalog.services,
                Default::default(),
            ),
        }
    }
}
