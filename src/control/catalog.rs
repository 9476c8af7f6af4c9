//! The catalog state machine: cluster members, the functions each node offers, queues and
//! their owners, DNS service records.
//!
//! Pure: [`Catalog::apply`] takes a state and a command and returns the next state and a
//! response, with no IO, no clock and no randomness, so every replica that applies the same
//! log reaches the same state. A rejected command (say, functions for a node that is not a
//! member) leaves the state untouched and answers an error: rejections are results, decided
//! the same way on every replica, never panics.

use std::collections::{BTreeMap, BTreeSet};

use semver::Version;
use serde::{Deserialize, Serialize};

use super::policy::NamespacePolicy;

/// A node's stable id (kept in its data directory across restarts).
pub use crate::ids::NodeId;

/// Whether a member votes in Raft or only replicates the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    Voter,
    Learner,
}

/// A member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: NodeId,
    pub name: String,
    pub cluster_id: String,
    /// Where clients and peers reach it (`ws://host:port`).
    pub advertised_urls: Vec<String>,
    pub resources: BTreeSet<String>,
    pub role: Role,
}

/// One function version offered by one node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FunctionEntry {
    pub name: String,
    pub function_id: String,
    pub version: Version,
    pub resources: BTreeSet<String>,
    /// Safe to run twice for one request (retried elsewhere if its node fails mid-call).
    pub idempotent: bool,
    /// Roles a caller needs one of, where tokens are required (none: anyone may call).
    /// Travels with the function: a registration of this name anywhere in the cluster must
    /// require at least these, or a worker could take its callers with an unprotected copy
    /// at a higher version. (Absent in peer frames of builds before it: none.)
    #[serde(default)]
    pub roles: BTreeSet<String>,
}

impl FunctionEntry {
    /// This entry as a [`crate::registry::Query`] sees it.
    pub fn offer(&self) -> crate::registry::Offer<'_> {
        crate::registry::Offer {
            name: &self.name,
            function_id: &self.function_id,
            version: &self.version,
            resources: &self.resources,
        }
    }
}

pub use super::queues::{
    MAX_QUEUES, QueueEntry, QueueEntryV4, QueueEntryV6, QueueKind, QueueSpec, check_replicas,
};

/// Identifies a DNS service registration, as the original keys them: registering the same
/// namespace, name, protocol and port again replaces it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
    pub protocol: String,
    pub port: u16,
}

/// A service registration (`dns_register`), with the original's fields. Checked against
/// `crate::dns::registry`'s bounds before it is proposed, and by [`Catalog::apply`] against
/// the cluster-wide counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsService {
    pub key: ServiceKey,
    /// Host names or IP addresses, sorted and without duplicates.
    pub targets: Vec<String>,
    pub scope: String,
    pub tags: BTreeSet<String>,
    pub capabilities: BTreeSet<String>,
    /// Values as JSON text (`"a"`, `1`, `2.5`, `true`): the original allows strings,
    /// numbers and booleans, and bincode cannot hold a `serde_json::Value`.
    pub metadata: BTreeMap<String, String>,
    pub priority: u16,
    pub weight: u16,
    pub ttl_seconds: u32,
    /// The member that accepted it; its records go when it leaves.
    pub registered_by: NodeId,
    /// The registering node's cluster.
    pub cluster_id: String,
    /// The `registration_id` the original answers with (a UUID from the node's seeded RNG).
    pub registration_id: String,
    /// Wall time of the registration at the node that accepted it (ms since the epoch).
    pub registered_at_ms: u64,
}

/// At most this many service registrations in the catalog, and per accepting node: the
/// catalog is replicated to every member and rebuilt into every DNS answer cache, so its
/// size is bounded whoever registers. Constants, not settings: every replica must refuse
/// the same command.
pub const MAX_SERVICES: usize = 10_000;
pub const MAX_SERVICES_PER_NODE: usize = 2_000;

/// A change to the catalog: the payload of a Raft log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CatalogCommand {
    /// Adds a member, or updates it (a node that rejoins with new URLs).
    UpsertMember(Member),
    /// Removes a member with everything it registered (functions, DNS records). Its queues
    /// stay: their messages live on its disk, and it may come back.
    RemoveMember(NodeId),
    SetRole {
        id: NodeId,
        role: Role,
    },
    /// Adds (or replaces, by name and version) functions offered by `node`.
    RegisterFunctions {
        node: NodeId,
        functions: Vec<FunctionEntry>,
    },
    /// Removes `node`'s functions by name and version (`None`: every version).
    UnregisterFunctions {
        node: NodeId,
        functions: Vec<(String, Option<Version>)>,
    },
    /// A queue as data formats up to 4 wrote it (read from older logs; converted).
    CreateQueueV4(QueueEntryV4),
    DeleteQueue {
        name: String,
    },
    RegisterService(DnsService),
    UnregisterService(ServiceKey),
    /// Replaces the namespace policy (who may discover what) as a whole.
    SetNamespacePolicy(NamespacePolicy),
    /// Creates a queue owned by `owner` (data formats 5 and 6, before replicas). Variants are
    /// numbered in order in stored entries: new ones go last.
    CreateQueueV6(QueueEntryV6),
    /// Several commands in one log entry (the leader's proposer groups concurrent writes),
    /// applied in order, each on its own: one refused leaves the others standing. A batch
    /// inside a batch is refused.
    Batch(Vec<CatalogCommand>),
    /// Creates a queue, with its replicas if it has any (data format 7; proposed only while
    /// every member speaks `REPLICAS_PROTOCOL`).
    CreateQueue(QueueEntry),
    /// Replaces the members of queue `name`'s group (a replica moved off a node gone too
    /// long), for the incarnation named: a later queue of the name is left alone.
    SetQueueReplicas {
        name: String,
        incarnation: u64,
        replicas: Vec<NodeId>,
    },
}

/// Why a command was rejected (the state is unchanged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CatalogError {
    #[error("node {0} is not a member")]
    UnknownMember(NodeId),
    #[error("function `{name}` has function_id `{existing}` in this cluster, not `{given}`")]
    FunctionIdConflict {
        name: String,
        existing: String,
        given: String,
    },
    #[error(
        "function `{name}` requires the roles {} in this cluster; a registration of it must require them too",
        .missing.join(", ")
    )]
    RolesMissing { name: String, missing: Vec<String> },
    #[error("queue `{0}` exists with another owner or configuration")]
    QueueExists(String),
    #[error("no queue `{0}`")]
    UnknownQueue(String),
    #[error("the catalog holds {MAX_QUEUES} queues, its most")]
    TooManyQueues,
    #[error("the catalog holds {MAX_SERVICES} service registrations, its most")]
    TooManyServices,
    #[error("node {0} accepted {MAX_SERVICES_PER_NODE} service registrations, the most per node")]
    TooManyServicesOfNode(NodeId),
    #[error("no service {}/{}/{}/{}", .0.namespace, .0.name, .0.protocol, .0.port)]
    UnknownService(ServiceKey),
    #[error("invalid namespace policy: {}", .0.join("; "))]
    InvalidPolicy(Vec<String>),
    #[error(
        "catalog commands are batched by the leader: a batch cannot be proposed, nor held in another"
    )]
    NestedBatch,
    #[error("internal error: {0}")]
    Internal(String),
    /// Replicas that cannot make a queue's group (new last variant: errors travel encoded).
    #[error("a queue's replicas are 3 or 5 distinct members: {0}")]
    BadReplicas(String),
}

/// What applying one log entry answered: one result, or one per command of a batch.
///
/// Its first two variants are shaped as `Result<(), CatalogError>`'s (`Ok(())`, not a unit
/// `Ok`: MessagePack, the peer codec, writes a unit variant as a bare name but `Ok(())` as a
/// one-entry map), so the answer to a single write reads the same to a node built before
/// batches, in the peer codec and in bincode; `Batch` never leaves the leader (its proposer
/// hands each writer its own result).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CatalogResponse {
    Ok(()),
    Err(CatalogError),
    Batch(Vec<Result<(), CatalogError>>),
}

impl CatalogResponse {
    pub fn is_ok(&self) -> bool {
        matches!(self, CatalogResponse::Ok(()))
    }

    /// The result of a single command (a batch's answer is not one).
    pub fn into_result(self) -> Result<(), CatalogError> {
        match self {
            CatalogResponse::Ok(()) => Ok(()),
            CatalogResponse::Err(e) => Err(e),
            CatalogResponse::Batch(_) => Err(CatalogError::Internal(
                "a batch's answer where one command's was expected".to_owned(),
            )),
        }
    }
}

impl From<Result<(), CatalogError>> for CatalogResponse {
    fn from(r: Result<(), CatalogError>) -> CatalogResponse {
        match r {
            Ok(()) => CatalogResponse::Ok(()),
            Err(e) => CatalogResponse::Err(e),
        }
    }
}

/// The whole replicated state. Ordered maps throughout: iteration order is part of what
/// replicas must agree on (listings, snapshots).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    members: BTreeMap<NodeId, Member>,
    /// Per node, its functions by (name, version).
    functions: BTreeMap<NodeId, BTreeMap<(String, Version), FunctionEntry>>,
    queues: BTreeMap<String, QueueEntry>,
    services: BTreeMap<ServiceKey, DnsService>,
    /// Who may discover what (data format 4; earlier catalogs read with the default: off).
    policy: NamespacePolicy,
}

impl Catalog {
    /// Applies one log entry's command: a batch command by command.
    pub fn apply_entry(&mut self, cmd: CatalogCommand) -> CatalogResponse {
        match cmd {
            CatalogCommand::Batch(cmds) => {
                CatalogResponse::Batch(cmds.into_iter().map(|c| self.apply(c)).collect())
            }
            cmd => self.apply(cmd).into(),
        }
    }

    /// Applies one command. On `Err` the state is exactly as before.
    pub fn apply(&mut self, cmd: CatalogCommand) -> Result<(), CatalogError> {
        match cmd {
            CatalogCommand::Batch(_) => Err(CatalogError::NestedBatch),
            CatalogCommand::UpsertMember(m) => {
                self.members.insert(m.id, m);
                Ok(())
            }
            CatalogCommand::RemoveMember(id) => {
                self.member(id)?;
                self.members.remove(&id);
                self.functions.remove(&id);
                self.services.retain(|_, s| s.registered_by != id);
                Ok(())
            }
            CatalogCommand::SetRole { id, role } => {
                self.member(id)?;
                if let Some(m) = self.members.get_mut(&id) {
                    m.role = role;
                }
                Ok(())
            }
            CatalogCommand::RegisterFunctions { node, functions } => {
                self.member(node)?;
                // Check everything first, so a rejected batch changes nothing.
                self.check_registration(node, &functions)?;
                let mine = self.functions.entry(node).or_default();
                for f in functions {
                    mine.insert((f.name.clone(), f.version.clone()), f);
                }
                Ok(())
            }
            CatalogCommand::UnregisterFunctions { node, functions } => {
                self.member(node)?;
                if let Some(mine) = self.functions.get_mut(&node) {
                    for (name, version) in &functions {
                        mine.retain(|(n, v), _| {
                            n != name || version.as_ref().is_some_and(|want| want != v)
                        });
                    }
                    if mine.is_empty() {
                        self.functions.remove(&node);
                    }
                }
                Ok(())
            }
            CatalogCommand::CreateQueueV4(q) => self.apply(CatalogCommand::CreateQueue(q.into())),
            CatalogCommand::CreateQueueV6(q) => self.apply(CatalogCommand::CreateQueue(q.into())),
            CatalogCommand::CreateQueue(q) => {
                self.member(q.owner)?;
                for r in &q.replicas {
                    self.member(*r)?;
                }
                check_replicas(&q.replicas)?;
                match self.queues.get(&q.name) {
                    Some(existing) if existing == &q => Ok(()), // idempotent retry
                    Some(_) => Err(CatalogError::QueueExists(q.name)),
                    None if self.queues.len() >= MAX_QUEUES => Err(CatalogError::TooManyQueues),
                    None => {
                        self.queues.insert(q.name.clone(), q);
                        Ok(())
                    }
                }
            }
            CatalogCommand::SetQueueReplicas {
                name,
                incarnation,
                replicas,
            } => {
                for r in &replicas {
                    self.member(*r)?;
                }
                check_replicas(&replicas)?;
                match self.queues.get_mut(&name) {
                    Some(q) if q.incarnation == incarnation && q.replicated() => {
                        q.replicas = replicas;
                        Ok(())
                    }
                    _ => Err(CatalogError::UnknownQueue(name)),
                }
            }
            CatalogCommand::DeleteQueue { name } => self
                .queues
                .remove(&name)
                .map(|_| ())
                .ok_or(CatalogError::UnknownQueue(name)),
            CatalogCommand::RegisterService(s) => {
                self.member(s.registered_by)?;
                self.check_service_room(&s)?;
                self.services.insert(s.key.clone(), s);
                Ok(())
            }
            CatalogCommand::UnregisterService(key) => self
                .services
                .remove(&key)
                .map(|_| ())
                .ok_or(CatalogError::UnknownService(key)),
            CatalogCommand::SetNamespacePolicy(p) => {
                // Checked again here: every replica must refuse the same command.
                let errors = super::policy::validate(&p.rules);
                if !errors.is_empty() {
                    return Err(CatalogError::InvalidPolicy(errors));
                }
                self.policy = p;
                Ok(())
            }
        }
    }

    /// A registration that replaces one (same key) always fits; a new one must fit under
    /// both bounds.
    fn check_service_room(&self, s: &DnsService) -> Result<(), CatalogError> {
        let replaced = self.services.get(&s.key);
        if replaced.is_none() && self.services.len() >= MAX_SERVICES {
            return Err(CatalogError::TooManyServices);
        }
        if replaced.is_some_and(|r| r.registered_by == s.registered_by) {
            return Ok(());
        }
        let mine = self
            .services
            .values()
            .filter(|x| x.registered_by == s.registered_by)
            .count();
        if mine >= MAX_SERVICES_PER_NODE {
            return Err(CatalogError::TooManyServicesOfNode(s.registered_by));
        }
        Ok(())
    }

    /// The service registered under `key`.
    pub fn service(&self, key: &ServiceKey) -> Option<&DnsService> {
        self.services.get(key)
    }

    fn member(&self, id: NodeId) -> Result<&Member, CatalogError> {
        self.members.get(&id).ok_or(CatalogError::UnknownMember(id))
    }

    /// One name has one function_id in the whole cluster (as in the original), counting the
    /// batch being registered.
    fn check_function_id(
        &self,
        node: NodeId,
        f: &FunctionEntry,
        batch: &[FunctionEntry],
    ) -> Result<(), CatalogError> {
        let conflict = |existing: &FunctionEntry| {
            (existing.name == f.name && existing.function_id != f.function_id).then(|| {
                CatalogError::FunctionIdConflict {
                    name: f.name.clone(),
                    existing: existing.function_id.clone(),
                    given: f.function_id.clone(),
                }
            })
        };
        let others = self
            .functions()
            // A node re-registering replaces its own entries of the same name and version.
            .filter(|(n, e)| !(*n == node && e.name == f.name && e.version == f.version))
            .map(|(_, e)| e);
        match others.chain(batch).find_map(conflict) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// `f`, registered by `node`, requires every role any other entry of its name requires
    /// (in the catalog, or in the same batch). A node re-registering replaces its own entry
    /// of the same name and version, which does not count.
    fn check_roles(
        &self,
        node: NodeId,
        f: &FunctionEntry,
        batch: &[FunctionEntry],
    ) -> Result<(), CatalogError> {
        let missing: BTreeSet<&String> = self
            .functions()
            .filter(|(n, e)| e.name == f.name && !(*n == node && e.version == f.version))
            .map(|(_, e)| e)
            .chain(batch.iter().filter(|e| e.name == f.name))
            .flat_map(|e| &e.roles)
            .filter(|r| !f.roles.contains(*r))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(CatalogError::RolesMissing {
            name: f.name.clone(),
            missing: missing.into_iter().cloned().collect(),
        })
    }

    /// Whether `node` may register `functions` now (what [`Catalog::apply`] would check),
    /// so that a registration can be refused before it is proposed.
    pub fn check_registration(
        &self,
        node: NodeId,
        functions: &[FunctionEntry],
    ) -> Result<(), CatalogError> {
        for f in functions {
            self.check_function_id(node, f, functions)?;
            self.check_roles(node, f, functions)?;
        }
        Ok(())
    }

    /// A catalog from its parts (the data directory's older formats are read into these;
    /// their queue entries are converted).
    pub(crate) fn from_parts<Q: Into<QueueEntry>>(
        members: BTreeMap<NodeId, Member>,
        functions: BTreeMap<NodeId, BTreeMap<(String, Version), FunctionEntry>>,
        queues: BTreeMap<String, Q>,
        services: BTreeMap<ServiceKey, DnsService>,
        policy: NamespacePolicy,
    ) -> Catalog {
        Catalog {
            members,
            functions,
            queues: queues.into_iter().map(|(k, q)| (k, q.into())).collect(),
            services,
            policy,
        }
    }

    /// The queue named `name`.
    pub fn queue(&self, name: &str) -> Option<&QueueEntry> {
        self.queues.get(name)
    }

    /// The namespace policy in force.
    pub fn policy(&self) -> &NamespacePolicy {
        &self.policy
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    pub fn member_by_id(&self, id: NodeId) -> Option<&Member> {
        self.members.get(&id)
    }

    /// A member's `node_id` (`crate::ids::node_id`; its name left empty if it is not a
    /// member).
    pub fn node_id_of(&self, id: NodeId) -> String {
        crate::ids::node_id(self.member_by_id(id).map_or("", |m| m.name.as_str()), id)
    }

    /// Every (node, function) pair, by node then name then version.
    pub fn functions(&self) -> impl Iterator<Item = (NodeId, &FunctionEntry)> {
        self.functions
            .iter()
            .flat_map(|(n, fs)| fs.values().map(move |f| (*n, f)))
    }

    pub fn queues(&self) -> impl Iterator<Item = &QueueEntry> {
        self.queues.values()
    }

    /// Per node: the queue replicas it holds, and the groups it is placed first in (whose
    /// first leader it usually is). Nodes holding none are absent.
    pub fn replica_load(&self) -> (BTreeMap<NodeId, usize>, BTreeMap<NodeId, usize>) {
        let mut load: BTreeMap<NodeId, usize> = BTreeMap::new();
        let mut firsts: BTreeMap<NodeId, usize> = BTreeMap::new();
        for q in self.queues.values() {
            for r in &q.replicas {
                *load.entry(*r).or_default() += 1;
            }
            if let Some(f) = q.replicas.first() {
                *firsts.entry(*f).or_default() += 1;
            }
        }
        (load, firsts)
    }

    pub fn services(&self) -> impl Iterator<Item = &DnsService> {
        self.services.values()
    }

    /// The state as bytes (bincode 2, standard config), for Raft snapshots.
    pub fn to_snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        bincode::serde::encode_to_vec(self, bincode::config::standard())
            .map_err(|e| SnapshotError(e.to_string()))
    }

    pub fn from_snapshot(bytes: &[u8]) -> Result<Catalog, SnapshotError> {
        // A snapshot may come from a peer (InstallSnapshot): decoded under the frame's limit.
        crate::fabric::codec::decode_stored(bytes).map_err(|e| SnapshotError(e.to_string()))
    }

    /// Checks the invariants every reachable state keeps (used by tests and checkers).
    pub fn check_invariants(&self) -> Result<(), String> {
        for (node, fs) in &self.functions {
            if !self.members.contains_key(node) {
                return Err(format!("functions of non-member {node}"));
            }
            if fs.is_empty() {
                return Err(format!("empty function table for {node}"));
            }
        }
        let mut ids: BTreeMap<&str, &str> = BTreeMap::new();
        for (_, f) in self.functions() {
            if let Some(prev) = ids.insert(&f.name, &f.function_id)
                && prev != f.function_id
            {
                return Err(format!(
                    "`{}` has function_ids `{prev}` and `{}`",
                    f.name, f.function_id
                ));
            }
        }
        for s in self.services.values() {
            if !self.members.contains_key(&s.registered_by) {
                return Err(format!(
                    "service {:?} of non-member {}",
                    s.key, s.registered_by
                ));
            }
        }
        for (id, m) in &self.members {
            if *id != m.id {
                return Err(format!("member {} stored under id {id}", m.id));
            }
        }
        Ok(())
    }
}

/// A snapshot that cannot be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("catalog snapshot: {0}")]
pub struct SnapshotError(pub String);
