//! The control plane: the replicated catalog. This module holds its pure state machine; the
//! openraft wiring (log storage, network, membership) builds on it.

pub mod catalog;
pub mod metrics;
pub mod policy;
pub mod queues;
pub mod raft;
pub mod replica;

pub use catalog::{
    Catalog, CatalogCommand, CatalogError, CatalogResponse, DnsService, FunctionEntry, Member,
    NodeId, QueueEntry, QueueKind, QueueSpec, Role, ServiceKey,
};
