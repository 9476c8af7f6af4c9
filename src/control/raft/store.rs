//! In-memory Raft storage: the log (with vote and committed id) and the catalog state
//! machine. Handles are cheap clones of shared state, so a simulated node that crashes and
//! restarts finds its "disk" where it left it. Writes are complete when the call returns,
//! so the callback is answered at once: nothing acknowledged is ever unsynced.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};

use super::{CatalogResponse, TypeConfig};
use crate::control::catalog::Catalog;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every mutation below completes under the lock; a poisoned lock still guards whole state.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Default)]
struct LogData {
    vote: Option<Vote<u64>>,
    committed: Option<LogId<u64>>,
    last_purged: Option<LogId<u64>>,
    entries: BTreeMap<u64, Entry<TypeConfig>>,
}

/// The Raft log of one node.
#[derive(Debug, Clone, Default)]
pub struct LogStore(Arc<Mutex<LogData>>);

impl LogStore {
    /// Whether this node has ever voted (so it must not bootstrap a new cluster).
    pub fn has_vote(&self) -> bool {
        lock(&self.0).vote.is_some()
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        Ok(lock(&self.0)
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let d = lock(&self.0);
        let last = d.entries.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: d.last_purged,
            last_log_id: last.or(d.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        lock(&self.0).vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        Ok(lock(&self.0).vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        lock(&self.0).committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        Ok(lock(&self.0).committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        {
            let mut d = lock(&self.0);
            for e in entries {
                d.entries.insert(e.log_id.index, e);
            }
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        lock(&self.0).entries.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let mut d = lock(&self.0);
        d.last_purged = Some(log_id);
        d.entries = d.entries.split_off(&(log_id.index + 1));
        Ok(())
    }
}

/// What the state machine holds, and what a snapshot carries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredState {
    pub last_applied: Option<LogId<u64>>,
    pub membership: StoredMembership<u64, BasicNode>,
    pub catalog: Catalog,
}

#[derive(Debug, Default)]
struct MachineData {
    state: StoredState,
    /// Every applied log id, in order: the checkers compare these across nodes.
    history: Vec<LogId<u64>>,
    snapshot: Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)>,
}

/// The catalog as a Raft state machine.
#[derive(Debug, Clone, Default)]
pub struct CatalogStateMachine(Arc<Mutex<MachineData>>);

impl CatalogStateMachine {
    /// A copy of the applied state (catalog, last applied id, membership).
    pub fn state(&self) -> StoredState {
        lock(&self.0).state.clone()
    }

    /// Log ids applied since this machine was created or last installed a snapshot.
    pub fn history(&self) -> Vec<LogId<u64>> {
        lock(&self.0).history.clone()
    }
}

fn io_error(e: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::read_state_machine(&e).into()
}

impl RaftSnapshotBuilder<TypeConfig> for CatalogStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let mut d = lock(&self.0);
        let bytes = bincode::serde::encode_to_vec(&d.state, bincode::config::standard())
            .map_err(io_error)?;
        let last = d.state.last_applied;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: d.state.membership.clone(),
            snapshot_id: match last {
                Some(id) => format!("{}-{}", id.leader_id.term, id.index),
                None => "empty".to_owned(),
            },
        };
        d.snapshot = Some((meta.clone(), bytes.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for CatalogStateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        let d = lock(&self.0);
        Ok((d.state.last_applied, d.state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CatalogResponse>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut d = lock(&self.0);
        let mut out = Vec::new();
        for e in entries {
            d.state.last_applied = Some(e.log_id);
            d.history.push(e.log_id);
            out.push(match e.payload {
                EntryPayload::Blank => Ok(()),
                EntryPayload::Normal(cmd) => d.state.catalog.apply(cmd),
                EntryPayload::Membership(m) => {
                    d.state.membership = StoredMembership::new(Some(e.log_id), m);
                    Ok(())
                }
            });
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let bytes = snapshot.into_inner();
        let (state, _): (StoredState, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard())
                .map_err(io_error)?;
        let mut d = lock(&self.0);
        d.state = state;
        d.history.clear();
        d.snapshot = Some((meta.clone(), bytes));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        Ok(lock(&self.0)
            .snapshot
            .as_ref()
            .map(|(meta, bytes)| Snapshot {
                meta: meta.clone(),
                snapshot: Box::new(Cursor::new(bytes.clone())),
            }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::{StoreBuilder, Suite};

    use super::*;

    struct Fresh;

    impl StoreBuilder<TypeConfig, LogStore, CatalogStateMachine> for Fresh {
        async fn build(&self) -> Result<((), LogStore, CatalogStateMachine), StorageError<u64>> {
            Ok(((), LogStore::default(), CatalogStateMachine::default()))
        }
    }

    /// openraft's own conformance suite for storage implementations.
    #[test]
    fn openraft_storage_suite() {
        Suite::test_all(Fresh).expect("memory storage conforms");
    }
}
