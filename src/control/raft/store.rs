//! In-memory Raft storage: the log (with vote, committed id and the last snapshot) and the
//! catalog state machine.
//!
//! [`LogStore`] is a simulated disk with crash semantics. Every write lands in a *live* copy
//! (what a running node reads, like the OS page cache) and reaches the *durable* copy only
//! when synced: votes and snapshots at once (openraft needs them durable on return), log
//! appends after the store's sync delay, and only then does openraft hear the entries are
//! flushed. [`LogStore::crash`] throws away everything not yet synced, as losing power does.
//! Handles are cheap clones of shared state, so a simulated node that crashes and restarts
//! finds its disk where it left it. In production memory mode the delay is zero: appends
//! are synced (and acknowledged) at once.
//!
//! [`CatalogStateMachine`] is volatile: a restarted node rebuilds it from the last durable
//! snapshot and then re-applies the committed log.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    RaftTypeConfig, SnapshotMeta, StorageError, StoredMembership, Vote,
};
use parking_lot::Mutex;

use super::applied_log::{Applied, AppliedLog, AppliedRecorder};
use super::snapshot_buf::SnapshotBuf;
use super::snapshot_decode::{decode_state, io_error};
use super::sqlite_store::SqliteLogStore;
use super::store_stats::StoreStats;
use super::stored_state::{StoredSnapshot, StoredState};
use super::{CatalogResponse, TypeConfig};

/// What one copy of the disk holds.
#[derive(Debug, Default)]
struct DiskCopy<C: RaftTypeConfig> {
    vote: Option<Vote<u64>>,
    committed: Option<LogId<u64>>,
    last_purged: Option<LogId<u64>>,
    entries: BTreeMap<u64, Entry<C>>,
    snapshot: Option<StoredSnapshot>,
}

impl<C: RaftTypeConfig> Clone for DiskCopy<C>
where
    Entry<C>: Clone,
{
    fn clone(&self) -> Self {
        DiskCopy {
            vote: self.vote,
            committed: self.committed,
            last_purged: self.last_purged,
            entries: self.entries.clone(),
            snapshot: self.snapshot.clone(),
        }
    }
}

struct DiskState<C: RaftTypeConfig> {
    live: DiskCopy<C>,
    durable: DiskCopy<C>,
    /// How long an append takes to reach the durable copy (`None`: at once).
    sync_delay: Option<Duration>,
    /// Appends written but not yet synced, answered in order by the next sync.
    waiting: Vec<LogFlushed<C>>,
    sync_scheduled: bool,
    /// Bumped by every crash, so a sync scheduled before it does nothing after it.
    epoch: u64,
    /// The lowest log index written or truncated since the last sync: a sync copies the
    /// live log from there (not the whole log: appends stay O(batch)).
    dirty_from: Option<u64>,
    /// The node's id, written (durably) the first time it starts on this disk.
    node_id: Option<u64>,
    stats: Arc<StoreStats>,
    /// Other Raft groups' logs on this disk (queue groups, `in_group`): one disk, so a
    /// crash cuts each back to what it had synced.
    groups: BTreeMap<i64, Arc<dyn GroupLog>>,
    /// This log's Raft group (0: the catalog's).
    group: i64,
    /// Where this disk's state machines record what they apply (`record_applied`; the
    /// simulator's), shared with every group's log on it.
    applied: Option<AppliedLog>,
}

/// A group's log kept beside another's on one memory disk.
trait GroupLog: Send + Sync {
    fn crash(&self);
    fn forget(&self);
    fn as_any(&self) -> &dyn std::any::Any;
}

impl<C> GroupLog for LogStore<C>
where
    C: RaftTypeConfig<NodeId = u64, Entry = Entry<C>>,
    C::D: Clone,
{
    fn crash(&self) {
        LogStore::crash(self);
    }
    fn forget(&self) {
        self.forget_membership();
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl<C: RaftTypeConfig> DiskState<C> {
    /// The live log changed from index `i` on: the next sync copies from there.
    fn mark_dirty(&mut self, i: u64) {
        self.dirty_from = Some(self.dirty_from.map_or(i, |f| f.min(i)));
    }
}

/// The Raft log of one node (a simulated disk; see the module comment): the catalog's by
/// default, a queue group's with `C = QueueGroup`.
pub struct LogStore<C: RaftTypeConfig = TypeConfig>(Arc<Mutex<DiskState<C>>>);

impl<C: RaftTypeConfig> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        LogStore(self.0.clone())
    }
}

impl<C: RaftTypeConfig> Default for LogStore<C> {
    fn default() -> Self {
        LogStore(Arc::new(Mutex::new(DiskState {
            live: DiskCopy::default(),
            durable: DiskCopy::default(),
            sync_delay: None,
            waiting: Vec::new(),
            sync_scheduled: false,
            epoch: 0,
            dirty_from: None,
            node_id: None,
            stats: Arc::default(),
            groups: BTreeMap::new(),
            group: 0,
            applied: None,
        })))
    }
}

impl<C: RaftTypeConfig> Debug for LogStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.0.lock();
        f.debug_struct("LogStore")
            .field("live_entries", &d.live.entries.len())
            .field("durable_entries", &d.durable.entries.len())
            .finish()
    }
}

impl<C: RaftTypeConfig> LogStore<C>
where
    C: RaftTypeConfig<NodeId = u64, Entry = Entry<C>>,
    C::D: Clone,
{
    /// What this disk's appends did.
    pub fn stats(&self) -> Arc<StoreStats> {
        self.0.lock().stats.clone()
    }

    /// A disk whose appends become durable (and are acknowledged to openraft) only `delay`
    /// after they were written: a crash in between loses them.
    pub fn with_sync_delay(delay: Duration) -> LogStore<C> {
        let store = LogStore::default();
        store.0.lock().sync_delay = Some(delay);
        store
    }

    /// Makes the state machines on this disk (the catalog's and every group's) record what
    /// they apply, for checkers ([`LogStore::applied_log`]). Off by default: the record
    /// grows with every entry applied.
    pub fn record_applied(&self) {
        self.0
            .lock()
            .applied
            .get_or_insert_with(AppliedLog::default);
    }

    /// What this disk's state machines applied, if it records ([`LogStore::record_applied`]).
    pub fn applied_log(&self) -> Option<AppliedLog> {
        self.0.lock().applied.clone()
    }

    /// A new run of this log's group in the record, if this disk records.
    pub fn applied_recorder(&self) -> Option<AppliedRecorder> {
        let d = self.0.lock();
        d.applied.as_ref().map(|log| log.start(d.group))
    }

    /// Whether this node has ever voted (so it must not bootstrap a new cluster).
    pub fn has_vote(&self) -> bool {
        self.0.lock().durable.vote.is_some()
    }

    /// The id of the node on this disk, storing `fresh` the first time.
    pub fn node_id_or_insert(&self, fresh: u64) -> u64 {
        *self.0.lock().node_id.get_or_insert(fresh)
    }

    /// Forgets vote, log and snapshot (after the node left the cluster); keeps the id.
    /// Every group's log on this disk goes too (the node's replicas were of that cluster).
    pub fn forget_membership(&self) {
        let groups: Vec<Arc<dyn GroupLog>> = {
            let mut d = self.0.lock();
            d.live = DiskCopy::default();
            d.durable = DiskCopy::default();
            d.dirty_from = None;
            d.waiting.clear();
            d.epoch += 1;
            d.sync_scheduled = false;
            std::mem::take(&mut d.groups).into_values().collect()
        };
        for g in groups {
            g.forget();
        }
    }

    /// Power loss: whatever was not synced is gone, and pending acknowledgements with it
    /// (in every group's log on this disk too).
    pub fn crash(&self) {
        let groups: Vec<Arc<dyn GroupLog>> = {
            let mut d = self.0.lock();
            d.live = d.durable.clone();
            d.dirty_from = None;
            d.waiting.clear();
            d.sync_scheduled = false;
            d.epoch += 1;
            d.groups.values().cloned().collect()
        };
        for g in groups {
            g.crash();
        }
    }

    /// Group `group`'s log on this disk (created empty the first time), with this disk's
    /// sync delay: as `SqliteLogStore::in_group` is for the log engine, for the simulator.
    pub fn in_group<D>(&self, group: i64) -> LogStore<D>
    where
        D: RaftTypeConfig<NodeId = u64, Entry = Entry<D>> + 'static,
        D::D: Clone,
    {
        let mut d = self.0.lock();
        if let Some(found) = d
            .groups
            .get(&group)
            .and_then(|g| g.as_any().downcast_ref::<LogStore<D>>())
        {
            return found.clone();
        }
        let log = match d.sync_delay {
            Some(delay) => LogStore::<D>::with_sync_delay(delay),
            None => LogStore::<D>::default(),
        };
        {
            let mut g = log.0.lock();
            g.group = group;
            g.applied = d.applied.clone();
        }
        d.groups.insert(group, Arc::new(log.clone()));
        log
    }

    /// Erases group `group`'s log from this disk (its queue was deleted); the catalog's
    /// (0) is never erased here.
    pub fn erase_group(&self, group: i64) {
        if group != 0 {
            self.0.lock().groups.remove(&group);
        }
    }

    /// The groups whose logs this disk keeps beside this one.
    pub fn groups(&self) -> Vec<i64> {
        self.0.lock().groups.keys().copied().collect()
    }

    /// Entries that were written but not synced (for tests of the crash semantics).
    pub fn unsynced_entries(&self) -> usize {
        let d = self.0.lock();
        d.live
            .entries
            .keys()
            .filter(|i| !d.durable.entries.contains_key(i))
            .count()
    }

    /// Writes everything live to the durable copy and answers the waiting appends.
    fn sync(&self, epoch: u64) {
        let waiting = {
            let mut d = self.0.lock();
            if d.epoch != epoch {
                return;
            }
            let d = &mut *d;
            if let Some(from) = d.dirty_from.take() {
                d.durable.entries.split_off(&from);
                d.durable
                    .entries
                    .extend(d.live.entries.range(from..).map(|(i, e)| (*i, e.clone())));
            }
            if d.durable.last_purged != d.live.last_purged {
                d.durable.last_purged = d.live.last_purged;
                if let Some(p) = d.live.last_purged {
                    d.durable.entries = d.durable.entries.split_off(&(p.index + 1));
                }
            }
            d.durable.committed = d.live.committed;
            d.sync_scheduled = false;
            std::mem::take(&mut d.waiting)
        };
        for callback in waiting {
            callback.log_io_completed(Ok(()));
        }
    }

    pub(crate) fn save_snapshot(&self, snapshot: StoredSnapshot) {
        let mut d = self.0.lock();
        d.live.snapshot = Some(snapshot.clone());
        d.durable.snapshot = Some(snapshot);
    }

    pub(crate) fn load_snapshot(&self) -> Option<StoredSnapshot> {
        self.0.lock().live.snapshot.clone()
    }
}

impl<C> RaftLogReader<C> for LogStore<C>
where
    C: RaftTypeConfig<NodeId = u64, Entry = Entry<C>>,
    C::D: Clone,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<C>>, StorageError<u64>> {
        Ok(self
            .0
            .lock()
            .live
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl<C> RaftLogStorage<C> for LogStore<C>
where
    C: RaftTypeConfig<NodeId = u64, Entry = Entry<C>>,
    C::D: Clone,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<u64>> {
        let d = self.0.lock();
        let last = d.live.entries.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: d.live.last_purged,
            last_log_id: last.or(d.live.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        let mut d = self.0.lock();
        d.live.vote = Some(*vote);
        d.durable.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        Ok(self.0.lock().live.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        // Not synced on its own: losing it only means re-applying from an older point.
        let mut d = self.0.lock();
        d.stats.committed(committed.map(|c| c.index));
        d.live.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        Ok(self.0.lock().live.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let (delay, epoch, schedule) = {
            let mut d = self.0.lock();
            let mut n = 0;
            for e in entries {
                let i = e.log_id.index;
                d.mark_dirty(i);
                d.live.entries.insert(i, e);
                n += 1;
            }
            d.stats.append_entries.record(n);
            d.waiting.push(callback);
            let schedule = !d.sync_scheduled;
            d.sync_scheduled = true;
            (d.sync_delay, d.epoch, schedule)
        };
        match delay {
            None => self.sync(epoch),
            Some(delay) if schedule => {
                let disk = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    disk.sync(epoch);
                });
            }
            Some(_) => {} // the scheduled sync answers this append too
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let mut d = self.0.lock();
        let i = log_id.index;
        d.mark_dirty(i);
        d.live.entries.split_off(&i);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let mut d = self.0.lock();
        d.live.last_purged = Some(log_id);
        d.live.entries = d.live.entries.split_off(&(log_id.index + 1));
        Ok(())
    }
}

/// The control plane's disk: where the Raft log, the vote, the node's id and the catalog's
/// snapshots are kept (snapshots must survive a restart: openraft purges the log behind
/// one, so losing it would lose the catalog). The one seam between the control plane and
/// storage: SQLite on the data directory, or a [`LogStore`] in memory.
#[derive(Clone, Default)]
pub enum Disk {
    /// Nowhere (tests of the state machine alone).
    #[default]
    None,
    Memory(LogStore),
    Sqlite(SqliteLogStore),
}

impl Disk {
    /// The disk the settings name: SQLite in `data_dir` (its append times measured by
    /// `clock`), else a fresh in-memory disk that nobody else keeps.
    pub async fn open(
        persistence: &crate::config::PersistenceConfig,
        clock: Arc<dyn crate::env::Clock>,
    ) -> Result<Disk, String> {
        if persistence.mode != crate::config::PersistenceMode::Sqlite {
            return Ok(Disk::Memory(LogStore::default()));
        }
        let path = persistence.sqlite_path();
        let store = SqliteLogStore::open(&path)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Disk::Sqlite(store.timed_by(clock)))
    }

    /// This node's id (`fresh` the first time, kept after), and whether the disk holds a
    /// vote (the node was a member before and rejoins as itself).
    pub async fn identity(&self, fresh: u64) -> Result<(u64, bool), String> {
        match self {
            Disk::None => Ok((fresh, false)),
            Disk::Memory(disk) => Ok((disk.node_id_or_insert(fresh), disk.has_vote())),
            Disk::Sqlite(db) => {
                let id = db
                    .node_id_or_insert(fresh)
                    .await
                    .map_err(|e| e.to_string())?;
                let voted = db.has_vote().await.map_err(|e| e.to_string())?;
                Ok((id, voted))
            }
        }
    }

    /// Forgets the membership (after leaving; the node id is kept), so that a later start
    /// joins as a newcomer.
    pub async fn forget_membership(&self) -> Result<(), String> {
        match self {
            Disk::None => Ok(()),
            Disk::Memory(disk) => {
                disk.forget_membership();
                Ok(())
            }
            Disk::Sqlite(db) => db.forget_membership().await.map_err(|e| e.to_string()),
        }
    }

    /// Erases queue group `group`'s log, meta and snapshot (its queue was deleted).
    pub async fn erase_group(&self, group: i64) -> Result<(), String> {
        match self {
            Disk::None => Ok(()),
            Disk::Memory(disk) => {
                disk.erase_group(group);
                Ok(())
            }
            Disk::Sqlite(db) => db
                .in_group::<TypeConfig>(group)
                .erase()
                .await
                .map_err(|e| e.to_string()),
        }
    }

    async fn save(&self, snapshot: StoredSnapshot) -> Result<(), StorageError<u64>> {
        match self {
            Disk::None => Ok(()),
            Disk::Memory(disk) => {
                disk.save_snapshot(snapshot);
                Ok(())
            }
            Disk::Sqlite(db) => db.save_snapshot(snapshot).await,
        }
    }

    async fn load(&self) -> Result<Option<StoredSnapshot>, StorageError<u64>> {
        match self {
            Disk::None => Ok(None),
            Disk::Memory(disk) => Ok(disk.load_snapshot()),
            Disk::Sqlite(db) => db.load_snapshot().await,
        }
    }

    /// The stats of the store this disk is (a fresh set for none).
    pub fn stats(&self) -> Arc<StoreStats> {
        match self {
            Disk::None => Arc::default(),
            Disk::Memory(disk) => disk.stats(),
            Disk::Sqlite(db) => db.stats(),
        }
    }
}

#[derive(Default)]
struct MachineData {
    state: StoredState,
    /// Where what this machine applies is recorded, if its disk records
    /// ([`LogStore::record_applied`]).
    recorder: Option<AppliedRecorder>,
    snapshot: Option<StoredSnapshot>,
}

/// The catalog as a Raft state machine.
#[derive(Clone, Default)]
pub struct CatalogStateMachine {
    data: Arc<Mutex<MachineData>>,
    disk: Disk,
    stats: Arc<StoreStats>,
    /// Most bytes a snapshot may have, received or loaded (`max_snapshot_bytes`).
    max_snapshot_bytes: usize,
}

impl Debug for CatalogStateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogStateMachine")
            .field("last_applied", &self.data.lock().state.last_applied)
            .finish()
    }
}

/// The default of `max_snapshot_bytes`, declared with the setting.
pub use crate::config::DEFAULT_MAX_SNAPSHOT_BYTES;

impl CatalogStateMachine {
    /// A state machine that keeps its snapshots on `disk`, starting from the last one there.
    /// Snapshots over `max_snapshot_bytes` are refused, from a peer or from the disk.
    pub async fn open(
        disk: Disk,
        max_snapshot_bytes: usize,
    ) -> Result<CatalogStateMachine, StorageError<u64>> {
        let mut data = MachineData {
            recorder: match &disk {
                Disk::Memory(log) => log.applied_recorder(),
                _ => None,
            },
            ..MachineData::default()
        };
        if let Some((meta, bytes)) = disk.load().await? {
            data.state = decode_state(&bytes, max_snapshot_bytes)?;
            data.snapshot = Some((meta, bytes));
        }
        Ok(CatalogStateMachine {
            data: Arc::new(Mutex::new(data)),
            stats: disk.stats(),
            disk,
            max_snapshot_bytes,
        })
    }

    /// A copy of the applied state (catalog, last applied id, membership).
    pub fn state(&self) -> StoredState {
        self.data.lock().state.clone()
    }

    /// Reads the applied state in place (no copy of the catalog); `f` must not block.
    pub fn read<R>(&self, f: impl FnOnce(&StoredState) -> R) -> R {
        f(&self.data.lock().state)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for CatalogStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let (meta, bytes) = {
            let d = self.data.lock();
            let bytes = bincode::serde::encode_to_vec(&d.state, bincode::config::standard())
                .map_err(io_error)?;
            let meta = super::stored_state::snapshot_meta(
                d.state.last_applied,
                d.state.membership.clone(),
            );
            (meta, bytes)
        };
        // Durable before openraft may purge the log it replaces.
        self.disk.save((meta.clone(), bytes.clone())).await?;
        self.stats
            .snapshots_built
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.data.lock().snapshot = Some((meta.clone(), bytes.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(SnapshotBuf::of(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for CatalogStateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        let d = self.data.lock();
        Ok((d.state.last_applied, d.state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CatalogResponse>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut d = self.data.lock();
        let mut out = Vec::new();
        for e in entries {
            if let Some(recorder) = &d.recorder {
                let bytes = bincode::serde::encode_to_vec(&e.payload, bincode::config::standard())
                    .map_err(io_error)?;
                recorder.push(Applied::of(e.log_id, &bytes));
            }
            d.state.last_applied = Some(e.log_id);
            out.push(match e.payload {
                EntryPayload::Blank => CatalogResponse::Ok(()),
                EntryPayload::Normal(cmd) => d.state.catalog.apply_entry(cmd),
                EntryPayload::Membership(m) => {
                    d.state.membership = StoredMembership::new(Some(e.log_id), m);
                    CatalogResponse::Ok(())
                }
            });
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotBuf>, StorageError<u64>> {
        Ok(Box::new(SnapshotBuf::receiving(self.max_snapshot_bytes)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<SnapshotBuf>,
    ) -> Result<(), StorageError<u64>> {
        // A received snapshot was decoded when its last chunk arrived (`SnapshotBuf`), where
        // a bad one fails the transfer; here an error would stop the Raft core.
        let (bytes, decoded) = snapshot.into_parts();
        let state = match decoded {
            Some(state) => state,
            None => decode_state(&bytes, self.max_snapshot_bytes)?,
        };
        self.disk.save((meta.clone(), bytes.clone())).await?;
        self.stats
            .snapshots_installed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut d = self.data.lock();
        d.state = state;
        d.recorder = d.recorder.as_ref().map(AppliedRecorder::restart);
        d.snapshot = Some((meta.clone(), bytes));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        Ok(self
            .data
            .lock()
            .snapshot
            .as_ref()
            .map(|(meta, bytes)| Snapshot {
                meta: meta.clone(),
                snapshot: Box::new(SnapshotBuf::of(bytes.clone())),
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
            let disk = LogStore::default();
            let sm =
                CatalogStateMachine::open(Disk::Memory(disk.clone()), DEFAULT_MAX_SNAPSHOT_BYTES)
                    .await?;
            Ok(((), disk, sm))
        }
    }

    /// openraft's own conformance suite for storage implementations.
    #[test]
    fn openraft_storage_suite() {
        Suite::test_all(Fresh).expect("memory storage conforms");
    }

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    /// A deleted queue's group leaves the memory disk; the others and the catalog stay, and
    /// leaving forgets every group.
    #[test]
    fn erasing_a_group_keeps_the_others_and_leaving_forgets_all() {
        let disk: LogStore = LogStore::default();
        let _ = disk.in_group::<TypeConfig>(1);
        let _ = disk.in_group::<TypeConfig>(2);
        disk.erase_group(1);
        disk.erase_group(0);
        assert_eq!(disk.groups(), vec![2]);
        disk.forget_membership();
        assert!(disk.groups().is_empty());
    }

    /// A snapshot survives the state machine: a new one opened on the disk starts from it.
    #[tokio::test]
    async fn a_new_state_machine_starts_from_the_durable_snapshot() {
        let disk = LogStore::default();
        let mut sm =
            CatalogStateMachine::open(Disk::Memory(disk.clone()), DEFAULT_MAX_SNAPSHOT_BYTES)
                .await
                .unwrap();
        sm.apply([entry(1), entry(2)]).await.unwrap();
        sm.build_snapshot().await.unwrap();
        disk.crash();
        let reopened = CatalogStateMachine::open(Disk::Memory(disk), DEFAULT_MAX_SNAPSHOT_BYTES)
            .await
            .unwrap();
        assert_eq!(reopened.state().last_applied.map(|l| l.index), Some(2));
    }

    /// The same suite over the durable log and a state machine that keeps its snapshots
    /// in the same database: here, above both stores, rather than in `sqlite_store`, whose
    /// tests would otherwise reach up for the state machine.
    mod sqlite {
        use std::sync::atomic::{AtomicU64, Ordering};

        use openraft::{ErrorSubject, ErrorVerb};

        use super::*;
        use crate::control::raft::sqlite_store::storage_error;

        /// A fresh database file per store the suite asks for.
        struct FreshDb(std::path::PathBuf);

        static NEXT: AtomicU64 = AtomicU64::new(0);

        impl FreshDb {
            fn new() -> FreshDb {
                let dir =
                    std::env::temp_dir().join(format!("mpreg-raftlog-{}", std::process::id()));
                std::fs::create_dir_all(&dir).expect("temp dir");
                FreshDb(dir)
            }
        }

        impl StoreBuilder<TypeConfig, SqliteLogStore, CatalogStateMachine> for FreshDb {
            async fn build(
                &self,
            ) -> Result<((), SqliteLogStore, CatalogStateMachine), StorageError<u64>> {
                let path = self.0.join(format!(
                    "log-{}.sqlite",
                    NEXT.fetch_add(1, Ordering::Relaxed)
                ));
                let store = SqliteLogStore::open(&path)
                    .await
                    .map_err(|e| storage_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
                let sm = CatalogStateMachine::open(
                    Disk::Sqlite(store.clone()),
                    DEFAULT_MAX_SNAPSHOT_BYTES,
                )
                .await?;
                Ok(((), store, sm))
            }
        }

        /// openraft's own conformance suite for storage implementations.
        #[test]
        fn openraft_storage_suite() {
            let db = FreshDb::new();
            let dir = db.0.clone();
            Suite::test_all(db).expect("sqlite storage conforms");
            let _ = std::fs::remove_dir_all(dir);
        }

        /// Every store the suite asks for is a new group of one engine, beside the groups
        /// of the stores before it (which keep what the suite left in them): a group that
        /// saw or changed another's rows would fail it.
        struct GroupsOfOneEngine {
            first: SqliteLogStore,
            next: AtomicU64,
        }

        impl StoreBuilder<TypeConfig, SqliteLogStore, CatalogStateMachine> for GroupsOfOneEngine {
            async fn build(
                &self,
            ) -> Result<((), SqliteLogStore, CatalogStateMachine), StorageError<u64>> {
                let group = 1 + self.next.fetch_add(1, Ordering::Relaxed) as i64;
                let store = self.first.in_group(group);
                let sm = CatalogStateMachine::open(
                    Disk::Sqlite(store.clone()),
                    DEFAULT_MAX_SNAPSHOT_BYTES,
                )
                .await?;
                Ok(((), store, sm))
            }
        }

        #[test]
        fn openraft_storage_suite_on_groups_of_one_engine() {
            let db = FreshDb::new();
            let dir = db.0.clone();
            let path = dir.join(format!(
                "groups-{}.sqlite",
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let first = rt.block_on(SqliteLogStore::open(&path)).unwrap();
            // Group 0 (the catalog's) holds a vote and entries the other groups must not see.
            rt.block_on(async {
                let mut g0 = first.clone();
                g0.save_vote(&Vote::new(9, 9)).await.unwrap();
                g0.engine()
                    .write(|c| {
                        c.execute(
                            "INSERT INTO log_entries (grp, idx, entry) VALUES (0, 1, x'00')",
                            [],
                        )
                        .map(|_| ())
                    })
                    .await
                    .unwrap();
            });
            let builder = GroupsOfOneEngine {
                first: first.clone(),
                next: AtomicU64::new(0),
            };
            Suite::test_all(builder).expect("every group conforms");
            let groups = rt.block_on(async {
                let mut g0 = first.clone();
                assert_eq!(g0.read_vote().await.unwrap(), Some(Vote::new(9, 9)));
                first
                    .engine()
                    .read(|c| {
                        c.query_row("SELECT count(DISTINCT grp) FROM log_meta", [], |r| {
                            r.get::<_, i64>(0)
                        })
                    })
                    .await
                    .unwrap()
            });
            assert!(groups > 2, "the suite's stores left {groups} groups");
            drop(first);
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
