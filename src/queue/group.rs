//! A queue's Raft group: its type configuration and its state machine, the queue machine
//! (`queue::machine`) behind openraft's storage traits. The group's log is a group of the
//! node's log engine (`SqliteLogStore::in_group`), so its appends share the engine's
//! commits with every other group's; its snapshot (the whole queue, exactly, with the last
//! applied id and the membership) is kept beside its log, before openraft may purge the
//! log behind it.
//!
//! openraft types otherwise stay in `control::raft`; a queue group is the second Raft of a
//! node, built from that room's parts (the log engine's store, the seeded runtime, the
//! bounded snapshot buffer). Its RPCs travel on the fabric (`group_network`).
//!
//! The replicas run where the catalog places them (`queue::groups`), and the queue service
//! proposes to the group this node leads (`queue/service/replicated.rs`).

use std::fmt::Debug;
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::control::raft::{
    Applied, AppliedRecorder, LogStore, SeededRuntime, SnapshotBuf, SnapshotState, SqliteLogStore,
    StoreStats, StoredSnapshot,
};
use crate::fabric::codec;
use crate::queue::engine::QueueConfig;
use crate::queue::machine::{QueueCommand, QueueMachine, QueueOutput};

openraft::declare_raft_types!(
    /// A queue's Raft group: entries are queue commands carrying the leader's time.
    pub QueueGroup:
        D = QueueCommand,
        R = QueueOutput,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<QueueGroup>,
        SnapshotData = SnapshotBuf<GroupState>,
        AsyncRuntime = SeededRuntime,
);

impl crate::control::raft::Batching for QueueGroup {
    fn is_batch(cmd: &QueueCommand) -> bool {
        matches!(cmd.op, crate::queue::machine::QueueOp::Batch(_))
    }
    fn nested_refused() -> QueueOutput {
        QueueOutput::Noop
    }
    fn batch(cmds: Vec<QueueCommand>) -> QueueCommand {
        // One time for the entry: the latest of its commands' (time never goes back).
        let at_ms = cmds.iter().map(|c| c.at_ms).max().unwrap_or(0);
        QueueCommand {
            at_ms,
            op: crate::queue::machine::QueueOp::Batch(cmds.into_iter().map(|c| c.op).collect()),
        }
    }
    fn split(answer: QueueOutput, n: usize) -> Result<Vec<QueueOutput>, String> {
        match answer {
            QueueOutput::Batch(outs) if outs.len() == n => Ok(outs),
            other => Err(format!(
                "a batch of {n} queue commands was answered with {other:?}"
            )),
        }
    }
    fn internal(_why: String) -> QueueOutput {
        QueueOutput::Noop
    }
}

/// What a queue group's snapshot holds: the queue and where in the log it stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupState {
    pub last_applied: Option<LogId<u64>>,
    pub membership: StoredMembership<u64, BasicNode>,
    pub machine: QueueMachine,
}

impl SnapshotState for GroupState {
    fn decode_snapshot(bytes: &[u8], limit: usize) -> Result<Self, String> {
        codec::decode_stored_within(bytes, limit).map_err(|e| e.to_string())
    }
}

fn io_error(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::write_state_machine(openraft::AnyError::error(e.to_string())).into()
}

struct Data {
    state: GroupState,
    snapshot: Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)>,
    /// Where what this replica applies is recorded, if its disk records (the simulator's
    /// state-machine-safety checker).
    recorder: Option<AppliedRecorder>,
}

/// One replica of a queue's group.
#[derive(Clone)]
pub struct QueueStateMachine {
    data: Arc<Mutex<Data>>,
    /// Woken after every applied batch of entries (and installed snapshot): receives
    /// waiting on the leader look again.
    applied: Arc<tokio::sync::Notify>,
    store: GroupDisk,
    stats: Arc<StoreStats>,
    max_snapshot_bytes: usize,
}

impl Debug for QueueStateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueStateMachine")
            .field("last_applied", &self.data.lock().state.last_applied)
            .finish()
    }
}

/// Where a queue group's replica keeps its log and snapshots: a group of the node's log
/// engine (SQLite), or the simulator's memory disk (its crash semantics: appends durable
/// only after their sync).
#[derive(Clone)]
pub enum GroupDisk {
    Sqlite(SqliteLogStore<QueueGroup>),
    Memory(LogStore<QueueGroup>),
}

impl GroupDisk {
    async fn save_snapshot(&self, snapshot: StoredSnapshot) -> Result<(), StorageError<u64>> {
        match self {
            GroupDisk::Sqlite(db) => db.save_snapshot(snapshot).await,
            GroupDisk::Memory(disk) => {
                disk.save_snapshot(snapshot);
                Ok(())
            }
        }
    }

    async fn load_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageError<u64>> {
        match self {
            GroupDisk::Sqlite(db) => db.load_snapshot().await,
            GroupDisk::Memory(disk) => Ok(disk.load_snapshot()),
        }
    }

    fn stats(&self) -> Arc<StoreStats> {
        match self {
            GroupDisk::Sqlite(db) => db.stats(),
            GroupDisk::Memory(disk) => disk.stats(),
        }
    }

    fn applied_recorder(&self) -> Option<AppliedRecorder> {
        match self {
            GroupDisk::Sqlite(_) => None,
            GroupDisk::Memory(disk) => disk.applied_recorder(),
        }
    }
}

impl QueueStateMachine {
    /// The replica of a queue created with `config`, starting from the snapshot `store`
    /// keeps (if any). Snapshots over `max_snapshot_bytes` are refused.
    pub async fn open(
        store: GroupDisk,
        config: QueueConfig,
        max_snapshot_bytes: usize,
    ) -> Result<QueueStateMachine, StorageError<u64>> {
        let (state, snapshot) = match store.load_snapshot().await? {
            Some((meta, bytes)) => {
                let state =
                    GroupState::decode_snapshot(&bytes, max_snapshot_bytes).map_err(io_error)?;
                (state, Some((meta, bytes)))
            }
            None => (
                GroupState {
                    last_applied: None,
                    membership: StoredMembership::default(),
                    machine: QueueMachine::new(config),
                },
                None,
            ),
        };
        Ok(QueueStateMachine {
            data: Arc::new(Mutex::new(Data {
                state,
                snapshot,
                recorder: store.applied_recorder(),
            })),
            applied: Arc::default(),
            stats: store.stats(),
            store,
            max_snapshot_bytes,
        })
    }

    /// Reads the queue in place; `f` must not block.
    pub fn read<R>(&self, f: impl FnOnce(&QueueMachine) -> R) -> R {
        f(&self.data.lock().state.machine)
    }

    /// Notified after entries are applied or a snapshot installed.
    pub fn applied(&self) -> &tokio::sync::Notify {
        &self.applied
    }
}

impl RaftSnapshotBuilder<QueueGroup> for QueueStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<QueueGroup>, StorageError<u64>> {
        let (meta, bytes) = {
            let d = self.data.lock();
            let bytes = codec::encode_stored(&d.state).map_err(io_error)?;
            let meta = crate::control::raft::snapshot_meta(
                d.state.last_applied,
                d.state.membership.clone(),
            );
            (meta, bytes)
        };
        // Durable before openraft may purge the log it replaces.
        self.store
            .save_snapshot((meta.clone(), bytes.clone()))
            .await?;
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

impl RaftStateMachine<QueueGroup> for QueueStateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        let d = self.data.lock();
        Ok((d.state.last_applied, d.state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<QueueOutput>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<QueueGroup>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut d = self.data.lock();
        let mut out = Vec::new();
        for e in entries {
            if let Some(recorder) = &d.recorder {
                let bytes = codec::encode_stored(&e.payload).map_err(io_error)?;
                recorder.push(Applied::of(e.log_id, &bytes));
            }
            d.state.last_applied = Some(e.log_id);
            out.push(match e.payload {
                EntryPayload::Blank => QueueOutput::Noop,
                EntryPayload::Normal(cmd) => d.state.machine.apply(cmd),
                EntryPayload::Membership(m) => {
                    d.state.membership = StoredMembership::new(Some(e.log_id), m);
                    QueueOutput::Noop
                }
            });
        }
        drop(d);
        self.applied.notify_waiters();
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<SnapshotBuf<GroupState>>, StorageError<u64>> {
        Ok(Box::new(SnapshotBuf::receiving(self.max_snapshot_bytes)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<SnapshotBuf<GroupState>>,
    ) -> Result<(), StorageError<u64>> {
        // Decoded when its last chunk arrived (`SnapshotBuf`), where a bad one fails the
        // transfer; here an error would stop the group's Raft core.
        let (bytes, decoded) = snapshot.into_parts();
        let state = match decoded {
            Some(state) => state,
            None => {
                GroupState::decode_snapshot(&bytes, self.max_snapshot_bytes).map_err(io_error)?
            }
        };
        self.store
            .save_snapshot((meta.clone(), bytes.clone()))
            .await?;
        self.stats
            .snapshots_installed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut d = self.data.lock();
        d.state = state;
        d.snapshot = Some((meta.clone(), bytes));
        d.recorder = d.recorder.as_ref().map(AppliedRecorder::restart);
        drop(d);
        self.applied.notify_waiters();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<QueueGroup>>, StorageError<u64>> {
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
    use std::sync::atomic::{AtomicU64, Ordering};

    use openraft::testing::{StoreBuilder, Suite};

    use super::*;
    use crate::config::DEFAULT_MAX_SNAPSHOT_BYTES;

    /// Each store the suite asks for is a new queue group of one engine, beside the
    /// catalog's group and the groups before it.
    struct QueueGroups {
        catalog: SqliteLogStore,
        next: AtomicU64,
    }

    impl StoreBuilder<QueueGroup, SqliteLogStore<QueueGroup>, QueueStateMachine> for QueueGroups {
        async fn build(
            &self,
        ) -> Result<((), SqliteLogStore<QueueGroup>, QueueStateMachine), StorageError<u64>>
        {
            let group = 100 + self.next.fetch_add(1, Ordering::Relaxed) as i64;
            let store = self.catalog.in_group::<QueueGroup>(group);
            let sm = QueueStateMachine::open(
                GroupDisk::Sqlite(store.clone()),
                QueueConfig::default(),
                DEFAULT_MAX_SNAPSHOT_BYTES,
            )
            .await?;
            Ok(((), store, sm))
        }
    }

    /// openraft's conformance suite for a queue group's storage: its log in the shared
    /// engine, its state machine the queue machine.
    #[test]
    fn openraft_storage_suite_for_queue_groups() {
        let dir = std::env::temp_dir().join(format!("mpreg-queue-group-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let catalog = rt
            .block_on(SqliteLogStore::open(&dir.join("mpreg.sqlite")))
            .unwrap();
        Suite::test_all(QueueGroups {
            catalog,
            next: AtomicU64::new(0),
        })
        .expect("a queue group's storage conforms");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The same suite on the simulator's memory disk.
    struct MemoryGroups;

    impl StoreBuilder<QueueGroup, LogStore<QueueGroup>, QueueStateMachine> for MemoryGroups {
        async fn build(
            &self,
        ) -> Result<((), LogStore<QueueGroup>, QueueStateMachine), StorageError<u64>> {
            let disk = LogStore::<QueueGroup>::default();
            let sm = QueueStateMachine::open(
                GroupDisk::Memory(disk.clone()),
                QueueConfig::default(),
                DEFAULT_MAX_SNAPSHOT_BYTES,
            )
            .await?;
            Ok(((), disk, sm))
        }
    }

    #[test]
    fn openraft_storage_suite_for_queue_groups_in_memory() {
        Suite::test_all(MemoryGroups).expect("a queue group's memory storage conforms");
    }

    /// A queue's messages survive in its group's snapshot, in flight as they were, and a
    /// machine opened on the store starts from it.
    #[tokio::test]
    async fn a_queue_group_restarts_from_its_snapshot() {
        use crate::queue::engine::Send;
        use crate::queue::machine::QueueOp;
        let dir = std::env::temp_dir().join(format!("mpreg-queue-snap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let catalog = SqliteLogStore::open(&dir.join("mpreg.sqlite"))
            .await
            .unwrap();
        let store = catalog.in_group::<QueueGroup>(7);
        let mut sm = QueueStateMachine::open(
            GroupDisk::Sqlite(store.clone()),
            QueueConfig::default(),
            1 << 20,
        )
        .await
        .unwrap();
        let entry = |index: u64, op: QueueOp| Entry::<QueueGroup> {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(QueueCommand { at_ms: 1_000, op }),
        };
        let out = sm
            .apply([
                entry(
                    1,
                    QueueOp::Send(Send {
                        payload: Arc::from(&b"a"[..]),
                        ..Send::default()
                    }),
                ),
                entry(
                    2,
                    QueueOp::Receive {
                        max: 1,
                        visibility_ms: None,
                        holder: None,
                    },
                ),
            ])
            .await
            .unwrap();
        let QueueOutput::Received(got) = &out[1] else {
            panic!("{out:?}")
        };
        let receipt = got[0].receipt;
        sm.build_snapshot().await.unwrap();
        drop(sm);
        let mut again =
            QueueStateMachine::open(GroupDisk::Sqlite(store), QueueConfig::default(), 1 << 20)
                .await
                .unwrap();
        assert_eq!(
            again.applied_state().await.unwrap().0.map(|l| l.index),
            Some(2)
        );
        assert_eq!(again.read(|m| m.queue().in_flight()), 1);
        // The receipt of the delivery in flight still acks on the restored replica.
        let out = again
            .apply([entry(3, QueueOp::Ack(receipt))])
            .await
            .unwrap();
        assert_eq!(out, vec![QueueOutput::Acked(Ok(()))]);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Three replicas of one queue group over an in-process network (the fabric's transport
    /// for groups is still to come): acknowledged sends, a message in flight and a dedup id
    /// survive the leader's loss, and the in-flight message comes back after its visibility
    /// timeout on the new leader.
    mod failover {
        use std::collections::{BTreeMap, BTreeSet};

        use openraft::error::{
            InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable,
        };
        use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
        use openraft::raft::{
            AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
            InstallSnapshotResponse, VoteRequest, VoteResponse,
        };
        use openraft::{Config, Raft};

        use super::*;
        use crate::queue::engine::Send;
        use crate::queue::machine::QueueOp;

        type GroupRaft = Raft<QueueGroup>;

        #[derive(Clone, Default)]
        struct Router(Arc<Mutex<BTreeMap<u64, GroupRaft>>>);

        struct Link {
            router: Router,
            target: u64,
        }

        impl Link {
            // openraft's own error type, as its network trait returns it.
            #[allow(clippy::result_large_err)]
            fn raft<E: std::error::Error>(
                &self,
            ) -> Result<GroupRaft, RPCError<u64, BasicNode, RaftError<u64, E>>> {
                self.router
                    .0
                    .lock()
                    .get(&self.target)
                    .cloned()
                    .ok_or_else(|| {
                        RPCError::Unreachable(Unreachable::new(&std::io::Error::other("down")))
                    })
            }
        }

        impl RaftNetworkFactory<QueueGroup> for Router {
            type Network = Link;
            async fn new_client(&mut self, target: u64, _: &BasicNode) -> Link {
                Link {
                    router: self.clone(),
                    target,
                }
            }
        }

        impl RaftNetwork<QueueGroup> for Link {
            async fn append_entries(
                &mut self,
                rpc: AppendEntriesRequest<QueueGroup>,
                _: RPCOption,
            ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>>
            {
                let raft = self.raft()?;
                raft.append_entries(rpc)
                    .await
                    .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }

            async fn install_snapshot(
                &mut self,
                rpc: InstallSnapshotRequest<QueueGroup>,
                _: RPCOption,
            ) -> Result<
                InstallSnapshotResponse<u64>,
                RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
            > {
                let raft = self.raft()?;
                raft.install_snapshot(rpc)
                    .await
                    .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }

            async fn vote(
                &mut self,
                rpc: VoteRequest<u64>,
                _: RPCOption,
            ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
                let raft = self.raft()?;
                raft.vote(rpc)
                    .await
                    .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
        }

        async fn leader_among(rafts: &BTreeMap<u64, GroupRaft>, not: Option<u64>) -> u64 {
            let any = rafts.values().next().unwrap();
            let m = any
                .wait(Some(std::time::Duration::from_secs(10)))
                .metrics(
                    |m| m.current_leader.is_some() && m.current_leader != not,
                    "a leader",
                )
                .await
                .expect("a leader within 10 s");
            m.current_leader.unwrap()
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn acknowledged_sends_survive_the_leaders_loss() {
            let dir =
                std::env::temp_dir().join(format!("mpreg-queue-failover-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let config = Arc::new(
                Config {
                    heartbeat_interval: 50,
                    election_timeout_min: 300,
                    election_timeout_max: 600,
                    ..Config::default()
                }
                .validate()
                .unwrap(),
            );
            let router = Router::default();
            let mut rafts = BTreeMap::new();
            let queue = QueueConfig {
                visibility_timeout_ms: 1_000,
                ..QueueConfig::default()
            };
            for id in 1..=3u64 {
                // Each replica on its own node's engine, in a group beside its catalog's.
                let catalog = SqliteLogStore::open(&dir.join(format!("n{id}.sqlite")))
                    .await
                    .unwrap();
                let log = catalog.in_group::<QueueGroup>(42);
                let sm =
                    QueueStateMachine::open(GroupDisk::Sqlite(log.clone()), queue.clone(), 1 << 20)
                        .await
                        .unwrap();
                let raft = Raft::new(id, config.clone(), router.clone(), log, sm)
                    .await
                    .unwrap();
                router.0.lock().insert(id, raft.clone());
                rafts.insert(id, raft);
            }
            let members: BTreeMap<u64, BasicNode> = (1..=3)
                .map(|id| (id, BasicNode::new(format!("n{id}"))))
                .collect();
            rafts[&1].initialize(members).await.unwrap();
            let leader = leader_among(&rafts, None).await;
            let write = |raft: GroupRaft, at_ms: u64, op: QueueOp| async move {
                raft.client_write(QueueCommand { at_ms, op })
                    .await
                    .expect("committed")
                    .data
            };
            let send = |n: u32, dedup: Option<&str>| {
                QueueOp::Send(Send {
                    payload: Arc::from(format!("m{n}").into_bytes()),
                    dedup_id: dedup.map(str::to_owned),
                    ..Send::default()
                })
            };
            let t0 = 1_000_000;
            let mut acked = BTreeSet::new();
            for n in 0..50 {
                match write(rafts[&leader].clone(), t0, send(n, None)).await {
                    QueueOutput::Sent(Ok(s)) => assert!(acked.insert(s.id)),
                    other => panic!("send {n}: {other:?}"),
                }
            }
            let QueueOutput::Sent(Ok(first)) =
                write(rafts[&leader].clone(), t0, send(99, Some("d1"))).await
            else {
                panic!("the dedup send")
            };
            acked.insert(first.id);
            let QueueOutput::Received(taken) = write(
                rafts[&leader].clone(),
                t0,
                QueueOp::Receive {
                    max: 5,
                    visibility_ms: None,
                    holder: None,
                },
            )
            .await
            else {
                panic!("the receive")
            };
            assert_eq!(taken.len(), 5);

            // The leader is lost.
            router.0.lock().remove(&leader);
            rafts.remove(&leader).unwrap().shutdown().await.unwrap();
            let next = leader_among(&rafts, Some(leader)).await;
            assert_ne!(next, leader);

            // Its dedup id holds on the new leader: the same id again is a duplicate.
            match write(rafts[&next].clone(), t0 + 10, send(99, Some("d1"))).await {
                QueueOutput::Sent(Ok(s)) => {
                    assert!(s.duplicate, "{s:?}");
                    assert_eq!(s.id, first.id);
                }
                other => panic!("{other:?}"),
            }
            // Past the visibility timeout every acknowledged message is there to take,
            // the five that were in flight again.
            let QueueOutput::Received(all) = write(
                rafts[&next].clone(),
                t0 + 2_000,
                QueueOp::Receive {
                    max: 1_000,
                    visibility_ms: None,
                    holder: None,
                },
            )
            .await
            else {
                panic!("the receive after failover")
            };
            let got: BTreeSet<u64> = all.iter().map(|d| d.receipt.id).collect();
            assert_eq!(got, acked);
            let again: BTreeSet<u64> = taken.iter().map(|d| d.receipt.id).collect();
            for d in &all {
                assert_eq!(
                    d.receive_count,
                    if again.contains(&d.receipt.id) { 2 } else { 1 }
                );
            }
            for (_, raft) in rafts {
                raft.shutdown().await.unwrap();
            }
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
