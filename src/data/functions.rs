//! The node's function set: what calls run against here, and what the catalog says this
//! node offers. The set is swapped whole on every change, so a request keeps the set it
//! started with; additions are callable here at once and routable cluster-wide once their
//! catalog entries commit.

use std::collections::BTreeSet;
use std::sync::Arc;

use parking_lot::RwLock;

use semver::Version;
use tokio::sync::watch;

use crate::control::replica::{CommitError, Control};
use crate::control::{CatalogCommand, FunctionEntry};
use crate::registry::{Function, FunctionSpec, RegisterError, Registry};

/// Why this node's functions did not get into (or out of) the cluster catalog.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PublishError {
    #[error(transparent)]
    Register(#[from] RegisterError),
    /// The catalog refused it (the same on every replica); taken off this node again.
    #[error("the cluster catalog refused it: {0}")]
    Refused(crate::control::CatalogError),
    /// Not committed: no leader, not joined, the node stopping.
    #[error("{0}")]
    Unavailable(String),
}

pub(crate) struct Functions {
    slot: RwLock<Arc<Registry>>,
    /// Added to every function registered at run time.
    node_resources: BTreeSet<String>,
    control: Arc<Control>,
    /// True once this node is in the catalog (its entries can be committed then).
    registered: watch::Receiver<bool>,
}

pub(crate) fn entry(spec: &FunctionSpec) -> FunctionEntry {
    FunctionEntry {
        name: spec.name.clone(),
        function_id: spec.function_id.clone(),
        version: spec.version.clone(),
        resources: spec.resources.clone(),
        idempotent: spec.idempotent,
        roles: spec.roles.clone(),
    }
}

impl Functions {
    pub(crate) fn new(
        registry: Registry,
        node_resources: BTreeSet<String>,
        control: Arc<Control>,
        registered: watch::Receiver<bool>,
    ) -> Functions {
        Functions {
            slot: RwLock::new(Arc::new(registry)),
            node_resources,
            control,
            registered,
        }
    }

    /// The current set.
    pub(crate) fn current(&self) -> Arc<Registry> {
        // Only whole sets are swapped in; a poisoned lock still holds a whole set.
        self.slot.read().clone()
    }

    /// Drops every function, built-ins included. The built-ins hold the node's view, which
    /// holds this set: without this the node (its catalog, logs and links) outlives its
    /// last task, a cycle (the simulator kept about 2 MB per run of every node it booted).
    pub(crate) fn clear(&self) {
        *self.slot.write() = Arc::new(Registry::default());
    }

    /// Adds the node's built-in functions, whose names are reserved (no user function can
    /// take them); they offer the node's resources like every function.
    pub(crate) fn install_builtins(&self, fs: Vec<Function>) {
        let mut slot = self.slot.write();
        let mut next = Registry::clone(&slot);
        for f in fs {
            let _ = next.register_builtin(f.add_resources(self.node_resources.iter().cloned()));
        }
        *slot = Arc::new(next);
    }

    /// Adds every one of `fs` here, or none of them (the first error); returns their
    /// catalog entries. Calls on this node find them at once.
    pub(crate) fn add(&self, fs: Vec<Function>) -> Result<Vec<FunctionEntry>, RegisterError> {
        let mut slot = self.slot.write();
        let mut next = Registry::clone(&slot);
        let mut entries = Vec::with_capacity(fs.len());
        for f in fs {
            let f = f.add_resources(self.node_resources.iter().cloned());
            entries.push(entry(&next.register(f)?.spec));
        }
        *slot = Arc::new(next);
        Ok(entries)
    }

    /// [`Functions::add`], then refused (and removed again) if this replica's catalog would
    /// refuse them as this node's (`Catalog::check_registration`: a function_id taken, or
    /// roles another entry of the name requires): the caller hears why at once. The
    /// leader's check when the entries commit is the one that counts ([`Functions::publish`]).
    pub(crate) fn add_checked(
        &self,
        fs: Vec<Function>,
    ) -> Result<Vec<FunctionEntry>, PublishError> {
        let entries = self.add(fs)?;
        let id = self.control.id;
        let verdict = self
            .control
            .catalog
            .read(|s| s.catalog.check_registration(id, &entries));
        verdict.map_err(|e| self.refused(&entries, e))?;
        Ok(entries)
    }

    /// Takes `entries` off this node again, refused by the catalog for `why`.
    fn refused(
        &self,
        entries: &[FunctionEntry],
        why: crate::control::CatalogError,
    ) -> PublishError {
        let which: Vec<_> = entries
            .iter()
            .map(|e| (e.name.clone(), Some(e.version.clone())))
            .collect();
        self.remove(&which);
        PublishError::Refused(why)
    }

    /// A commit's failure as the node reports it; a refusal takes `entries` off this node.
    fn failed(&self, entries: &[FunctionEntry], e: CommitError) -> PublishError {
        match e {
            CommitError::Refused(why) => self.refused(entries, why),
            CommitError::Unavailable(why) => PublishError::Unavailable(why),
        }
    }

    /// Removes each `(name, version)` here (every version when `None`); returns how many.
    pub(crate) fn remove(&self, which: &[(String, Option<Version>)]) -> usize {
        let mut slot = self.slot.write();
        let mut next = Registry::clone(&slot);
        let removed = which
            .iter()
            .map(|(name, version)| next.unregister(name, version.as_ref()))
            .sum();
        *slot = Arc::new(next);
        removed
    }

    /// Commits `entries` to the catalog as this node's, once the node has joined.
    pub(crate) async fn publish(&self, entries: Vec<FunctionEntry>) -> Result<(), PublishError> {
        self.joined().await?;
        self.control
            .propose(CatalogCommand::RegisterFunctions {
                node: self.control.id,
                functions: entries.clone(),
            })
            .await
            .map_err(|e| self.failed(&entries, e))
    }

    /// [`Functions::publish`] within `within` (joining included), for a client waiting on
    /// the answer.
    pub(crate) async fn publish_within(
        &self,
        entries: Vec<FunctionEntry>,
        within: std::time::Duration,
    ) -> Result<(), PublishError> {
        let commit = async {
            self.joined().await?;
            let cmd = CatalogCommand::RegisterFunctions {
                node: self.control.id,
                functions: entries.clone(),
            };
            self.control
                .propose_within(cmd, within)
                .await
                .map_err(|e| self.failed(&entries, e))
        };
        tokio::time::timeout(within, commit).await.map_err(|_| {
            PublishError::Unavailable(format!(
                "not committed within {:.1} s: this node has not joined a cluster",
                within.as_secs_f64()
            ))
        })?
    }

    /// Removes `which` from this node's catalog entries.
    pub(crate) async fn unpublish(
        &self,
        which: Vec<(String, Option<Version>)>,
    ) -> Result<(), PublishError> {
        self.joined().await?;
        self.control
            .propose(CatalogCommand::UnregisterFunctions {
                node: self.control.id,
                functions: which,
            })
            .await
            .map_err(|e| PublishError::Unavailable(e.to_string()))
    }

    async fn joined(&self) -> Result<(), PublishError> {
        let mut r = self.registered.clone();
        match r.wait_for(|done| *done).await {
            Ok(_) => Ok(()),
            Err(_) => Err(PublishError::Unavailable(
                "the node stopped before joining".into(),
            )),
        }
    }
}
