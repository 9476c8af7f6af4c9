//! The replicated queues' groups a node holds a replica of: started from the catalog's
//! placement (a queue entry's `replicas`), stopped when the queue is deleted or moved off
//! this node, served to peers on `Plane::Groups` (`group_network`).
//!
//! Groups are quiescent: openraft's own heartbeats and election timers are off, so an idle
//! group sends nothing, and a node with a thousand idle queues costs what it costs with
//! none. Failure detection is the node's, once per peer: the fabric's heartbeat detector
//! (`fabric::heartbeat`) says when a peer is down, and a replica whose leader is down (or
//! that knows no leader) turns openraft's election timer on until a leader is known again
//! (the first live replica in placement order campaigns at once). A write commits as in any
//! Raft group; only the timers are the node's.
//!
//! Every replica is initialized with the group's members (the vote guard needs them, see
//! `group_network`); a replica restarted from its log is initialized already, and openraft
//! says so, which is not an error.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use openraft::{BasicNode, Config, Raft};
use parking_lot::Mutex;

use super::group::{GroupDisk, QueueGroup, QueueStateMachine};
use super::group_network::{GroupHost, GroupNetwork};
use crate::control::raft::Disk;
use crate::control::replica::Control;
use crate::control::{NodeId, QueueEntry};
use crate::env::Env;
use crate::fabric::heartbeat::SharedDetector;
use crate::fabric::liveness::Liveness;
use crate::fabric::{Fabric, Plane, PlaneHandler};

/// How long one step of a repair (a catalog commit, a learner catching up, a membership
/// change) may take before the next look tries again.
const REPAIR_STEP: Duration = Duration::from_secs(30);

/// The most payload bytes one call may put in a queue group's entry (a send, or a send
/// batch in all): with `max_payload_entries` 8, an append stays far below a peer frame.
pub const MAX_ENTRY_BYTES: usize = 4 << 20;

/// One replica of a queue's group on this node.
pub struct Replica {
    pub entry: QueueEntry,
    pub raft: Raft<QueueGroup>,
    /// Concurrent calls' commands go to the group together (one entry, one fsync).
    pub proposer: crate::control::raft::Proposer<QueueGroup>,
    pub sm: QueueStateMachine,
    /// Counted where calls ran: on the leader of the moment.
    pub counters: super::counters::Counters,
    /// Named consumers and when each last asked for messages (the leader's, for broadcast
    /// and quorum sends; a new leader learns them again within a long poll).
    pub active: Mutex<BTreeMap<Arc<str>, u64>>,
    /// Since when this replica has known no live leader (the node's clock).
    leaderless_since: Mutex<Option<tokio::time::Instant>>,
    /// A repair of the group runs (at most one at a time).
    repairing: AtomicBool,
}

impl Replica {
    /// The group's leader as this replica knows it.
    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    pub fn is_leader(&self, me: NodeId) -> bool {
        self.leader() == Some(me.0)
    }

    /// The group's voters, as this replica knows them.
    pub fn voters(&self) -> BTreeSet<u64> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    /// How long this replica has known no live leader (zero while it knows one).
    pub fn leaderless_for(&self, now: tokio::time::Instant) -> Duration {
        self.leaderless_since
            .lock()
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
    }

    /// The queue's counts at this replica (the leader's are the queue's).
    pub fn snapshot(&self) -> super::counters::Snapshot {
        self.sm.read(|m| {
            let q = m.queue();
            super::counters::Snapshot {
                depth: q.depth(),
                in_flight: q.in_flight(),
                dead_lettered: q.dead_lettered(),
                oldest_age_ms: 0,
            }
        })
    }
}

/// Why a replica could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("queue `{0}`: this node has no disk for a replica's log")]
    NoDisk(String),
    #[error("queue `{queue}`: its replica did not start: {why}")]
    Raft { queue: String, why: String },
}

/// The queue groups of this node.
pub struct Groups {
    env: Env,
    control: Arc<Control>,
    fabric: Fabric,
    detector: SharedDetector,
    host: Arc<GroupHost>,
    config: Arc<Config>,
    max_snapshot_bytes: usize,
    replicas: Mutex<BTreeMap<String, Arc<Replica>>>,
    /// How long a replica's node may be down before the replica moves elsewhere.
    replace_after: Duration,
    /// Since when each member has been down, by the detector.
    down_since: Mutex<BTreeMap<NodeId, tokio::time::Instant>>,
    /// The catalog's applied index at the last reconcile: nothing to do until it moves.
    seen: Mutex<Option<u64>>,
}

impl Groups {
    /// The groups of this node, served to peers on the fabric from now on (none yet: the
    /// queue task reconciles them with the catalog).
    pub(crate) fn new(
        env: Env,
        control: Arc<Control>,
        fabric: Fabric,
        detector: SharedDetector,
        settings: &crate::config::Settings,
    ) -> Arc<Groups> {
        // openraft's leader lease is `election_timeout_max`: a follower that heard its
        // leader within it refuses to vote. Under the detector's `down_after`, every
        // follower's lease has run out by the time the detector calls a dead leader down,
        // so the first campaign wins: failover takes about `down_after` and one round,
        // where a 2 s lease made the first campaign fail and the next wait a timeout more
        // (2.5-3.5 s). The timeout itself only paces campaigns while a group has no
        // leader (elections are off otherwise: quiescent). Safety does not rest on it.
        let down_after = detector.lock().thresholds().down_after;
        let lease_ms = u64::try_from(down_after.as_millis() * 2 / 3)
            .unwrap_or(u64::MAX)
            .max(settings.raft_heartbeat_ms.saturating_mul(4))
            .min(settings.raft_election_timeout_ms.saturating_mul(2));
        let config = Config {
            cluster_name: "mpreg-queue".to_owned(),
            heartbeat_interval: settings.raft_heartbeat_ms,
            election_timeout_min: (lease_ms / 2).max(settings.raft_heartbeat_ms + 1),
            election_timeout_max: lease_ms,
            // Quiescent: the node's detector, not each group, watches peers (module note).
            enable_heartbeat: false,
            enable_elect: false,
            // An entry is at most MAX_ENTRY_BYTES (the proposer's batches stop at 1 MiB; a
            // larger call goes alone, and none is larger than that): 8 of them keep an
            // append well inside a peer frame (64 MiB).
            max_payload_entries: 8,
            ..Config::default()
        }
        .validate()
        // The settings were checked (an election timeout above the heartbeat), so this
        // holds; were it not to, openraft's defaults still make a working group.
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "queue groups run on openraft's default timing");
            Config {
                enable_heartbeat: false,
                enable_elect: false,
                ..Config::default()
            }
        });
        let host = Arc::new(GroupHost::default());
        let handler: Arc<dyn PlaneHandler> = host.clone();
        fabric.serve(Plane::Groups, Arc::downgrade(&handler));
        Arc::new(Groups {
            env,
            control,
            fabric,
            detector,
            host,
            config: Arc::new(config),
            // A queue holds at most its byte bound of payloads, plus per-message overhead.
            max_snapshot_bytes: settings
                .max_snapshot_bytes
                .max(settings.queue_max_bytes.saturating_mul(2) + (16 << 20)),
            replicas: Mutex::default(),
            replace_after: Duration::from_millis(settings.replace_voter_after_ms),
            down_since: Mutex::default(),
            seen: Mutex::default(),
        })
    }

    /// This node's replica of queue `entry`'s group, if it runs one of this incarnation.
    pub fn get(&self, entry: &QueueEntry) -> Option<Arc<Replica>> {
        self.replicas
            .lock()
            .get(&entry.name)
            .filter(|r| r.entry.incarnation == entry.incarnation)
            .cloned()
    }

    /// Every replica this node runs.
    pub fn all(&self) -> Vec<Arc<Replica>> {
        self.replicas.lock().values().cloned().collect()
    }

    /// Starts the replicas the catalog places here and stops those it no longer does.
    /// Cheap when the catalog has not moved since the last call.
    pub(crate) async fn reconcile(&self) {
        let applied = self
            .control
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map(|l| l.index);
        if *self.seen.lock() == applied && applied.is_some() {
            return;
        }
        let me = self.control.id;
        let wanted: BTreeMap<String, QueueEntry> = self.control.catalog.read(|s| {
            s.catalog
                .queues()
                .filter(|q| q.replicas.contains(&me))
                .map(|q| (q.name.clone(), q.clone()))
                .collect()
        });
        let stale: Vec<Arc<Replica>> = {
            let mut running = self.replicas.lock();
            let gone: Vec<String> = running
                .iter()
                .filter(|(name, r)| {
                    wanted
                        .get(*name)
                        .is_none_or(|w| w.incarnation != r.entry.incarnation)
                })
                .map(|(name, _)| name.clone())
                .collect();
            gone.iter().filter_map(|n| running.remove(n)).collect()
        };
        for r in stale {
            self.host.remove(r.entry.group());
            if let Err(e) = r.raft.shutdown().await {
                tracing::warn!(queue = %r.entry.name, error = %e, "a queue replica stopped badly");
            }
            // A deleted queue's group is gone for good: its rows go too. A replica that
            // only moved off this node keeps them: until the group's membership change
            // commits, this node may still be counted as a voter, and one placed back here
            // must come back with its vote and log, never empty (an empty voter could
            // elect a leader missing committed entries).
            let deleted = self.control.catalog.read(|s| {
                s.catalog
                    .queue(&r.entry.name)
                    .is_none_or(|q| q.incarnation != r.entry.incarnation)
            });
            if deleted
                && let Err(e) = self
                    .control
                    .disk()
                    .erase_group(r.entry.group() as i64)
                    .await
            {
                tracing::warn!(queue = %r.entry.name, error = %e, "a deleted queue's log was not erased");
            }
        }
        let mut all_started = true;
        for (name, entry) in wanted {
            let running = self.replicas.lock().get(&name).cloned();
            match running {
                Some(r) => {
                    // Placement changed (a replica moved): the group's membership follows
                    // on its leader (`repair`); the entry kept here is the latest.
                    if r.entry.replicas != entry.replicas {
                        tracing::debug!(queue = %name, replicas = ?entry.replicas, "a queue's placement changed");
                        let updated = Arc::new(Replica {
                            entry,
                            raft: r.raft.clone(),
                            proposer: r.proposer.clone(),
                            sm: r.sm.clone(),
                            counters: Default::default(),
                            active: Mutex::new(r.active.lock().clone()),
                            leaderless_since: Mutex::new(*r.leaderless_since.lock()),
                            repairing: AtomicBool::new(false),
                        });
                        self.replicas.lock().insert(name, updated);
                    }
                }
                None => match self.start(entry).await {
                    Ok(r) => {
                        self.replicas.lock().insert(name, r);
                    }
                    Err(e) => {
                        all_started = false;
                        tracing::warn!(error = %e, "a queue replica could not start");
                    }
                },
            }
        }
        if all_started {
            *self.seen.lock() = applied;
        }
    }

    async fn start(&self, entry: QueueEntry) -> Result<Arc<Replica>, StartError> {
        let group = entry.group();
        let raft_err = |why: String| StartError::Raft {
            queue: entry.name.clone(),
            why,
        };
        let disk = match self.control.disk() {
            // `group()` is at most i64::MAX, never the catalog's 0.
            Disk::Sqlite(log) => GroupDisk::Sqlite(log.in_group::<QueueGroup>(group as i64)),
            // The memory disk (the simulator's, or a memory-mode node's): the group's log
            // beside the catalog's, crashing with it.
            Disk::Memory(log) => GroupDisk::Memory(log.in_group::<QueueGroup>(group as i64)),
            Disk::None => return Err(StartError::NoDisk(entry.name.clone())),
        };
        let config = super::request::config_of(&entry.spec);
        let sm = QueueStateMachine::open(disk.clone(), config, self.max_snapshot_bytes)
            .await
            .map_err(|e| raft_err(e.to_string()))?;
        let control = self.control.clone();
        let net = GroupNetwork::new(self.fabric.clone(), group)
            .resolving(Arc::new(move |id| control.member_addr(NodeId(id))));
        let me = self.control.id.0;
        let raft = match disk {
            GroupDisk::Sqlite(log) => {
                Raft::new(me, self.config.clone(), net, log, sm.clone()).await
            }
            GroupDisk::Memory(log) => {
                Raft::new(me, self.config.clone(), net, log, sm.clone()).await
            }
        }
        .map_err(|e| raft_err(e.to_string()))?;
        if let Some(old) = self.host.insert(group, raft.clone()) {
            let _ = old.shutdown().await;
        }
        let members = self.nodes(&entry.replicas);
        // Only the first replica of the placement initializes the group (and campaigns, see
        // `watch_leaders`): the others learn the membership from its log, so a replica
        // that joins later (a repair appends it last) never starts from a membership of
        // its own. A replica restarted from its log was initialized before: openraft
        // refuses the second, harmlessly.
        if entry.replicas.first() == Some(&self.control.id)
            && let Err(e) = raft.initialize(members).await
        {
            tracing::debug!(queue = %entry.name, error = %e, "queue replica initialized before");
        }
        tracing::debug!(queue = %entry.name, group, "queue replica started");
        let proposer = crate::control::raft::Proposer::start(raft.clone(), Arc::default(), || true);
        Ok(Arc::new(Replica {
            entry,
            proposer,
            raft,
            sm,
            counters: Default::default(),
            active: Mutex::default(),
            leaderless_since: Mutex::default(),
            repairing: AtomicBool::new(false),
        }))
    }

    /// Starts elections where a group has no live leader (see the module's note). The
    /// queue task calls it every tick.
    pub(crate) async fn watch_leaders(&self) {
        let now = self.env.clock.now();
        let me = self.control.id;
        let members: BTreeSet<NodeId> = self
            .control
            .catalog
            .read(|s| s.catalog.members().map(|m| m.id).collect());
        // Gone: down by the detector, or no longer a member (it left: the detector forgot it).
        let gone: BTreeSet<u64> = {
            let d = self.detector.lock();
            self.all()
                .iter()
                .flat_map(|r| r.entry.replicas.iter().copied())
                .filter(|id| {
                    *id != me && (!members.contains(id) || d.status(*id, now) == Liveness::Down)
                })
                .map(|id| id.0)
                .collect()
        };
        for r in self.all() {
            let leader = r.leader();
            let led = leader.is_some_and(|l| l == me.0 || !gone.contains(&l));
            // openraft's own election timer runs only while the group has no live leader:
            // its randomized timeouts settle split votes, and a replica whose log is behind
            // loses to one that is not. Its tick, which drives nothing else here (heartbeats
            // are off), stops too: an idle group wakes no task.
            r.raft.runtime_config().elect(!led);
            r.raft.runtime_config().tick(!led);
            if led {
                *r.leaderless_since.lock() = None;
                continue;
            }
            let first = r.leaderless_since.lock().is_none();
            r.leaderless_since.lock().get_or_insert(now);
            // The first live replica in placement order campaigns at once rather than
            // after a timeout (a new group, a leader that just went).
            let rank0 = r
                .entry
                .replicas
                .iter()
                .find(|id| !gone.contains(&id.0) && Some(id.0) != leader)
                == Some(&me);
            if first && rank0 {
                tracing::debug!(queue = %r.entry.name, ?leader, "queue replica campaigns");
                if let Err(e) = r.raft.trigger().elect().await {
                    tracing::warn!(queue = %r.entry.name, error = %e, "queue replica cannot campaign");
                }
            }
        }
    }

    /// The group members `ids` as openraft records them (the address is a hint: the
    /// network asks the catalog at each RPC).
    fn nodes(&self, ids: &[NodeId]) -> BTreeMap<u64, BasicNode> {
        ids.iter()
            .map(|id| {
                let addr = self.control.member_addr(*id).unwrap_or_default();
                (id.0, BasicNode::new(addr))
            })
            .collect()
    }

    /// On the groups this node leads, moves replicas off nodes gone longer than
    /// `replace_voter_after_ms` (or no longer members) to live nodes, and brings the
    /// group's membership to the catalog's placement: first the catalog (so the new node
    /// starts its replica), then the group (the new replica as a learner until it caught
    /// up, then one membership change). Each step is idempotent: a leader that fails half
    /// way, or its successor, finishes from what the catalog and the group say.
    pub(crate) async fn repair(self: &Arc<Self>) {
        let now = self.env.clock.now();
        let me = self.control.id;
        let members: BTreeSet<NodeId> = self
            .control
            .catalog
            .read(|s| s.catalog.members().map(|m| m.id).collect());
        // How long each member has been down, by the detector (forgotten once it is up).
        let down: BTreeSet<NodeId> = {
            let d = self.detector.lock();
            let mut since = self.down_since.lock();
            since.retain(|id, _| members.contains(id));
            for id in &members {
                if *id != me && d.status(*id, now) == Liveness::Down {
                    since.entry(*id).or_insert(now);
                } else {
                    since.remove(id);
                }
            }
            since
                .iter()
                .filter(|(_, t)| now.duration_since(**t) >= self.replace_after)
                .map(|(id, _)| *id)
                .collect()
        };
        // Replicas per node, read once and only if some group has a replica to move.
        let mut load: Option<BTreeMap<NodeId, usize>> = None;
        for r in self.all() {
            if !r.is_leader(me) {
                continue;
            }
            let gone: Vec<NodeId> = r
                .entry
                .replicas
                .iter()
                .copied()
                .filter(|id| !members.contains(id) || down.contains(id))
                .collect();
            // Nothing to move and the voters are the placement: no task (the common case,
            // every tick, for every group this node leads).
            if gone.is_empty() && r.voters() == r.entry.replicas.iter().map(|id| id.0).collect() {
                continue;
            }
            if r.repairing.swap(true, Ordering::AcqRel) {
                continue;
            }
            let spare: Vec<NodeId> = if gone.is_empty() {
                Vec::new()
            } else {
                let load = load.get_or_insert_with(|| {
                    self.control.catalog.read(|s| s.catalog.replica_load().0)
                });
                let d = self.detector.lock();
                let mut spare: Vec<(usize, NodeId)> = members
                    .iter()
                    .filter(|id| !r.entry.replicas.contains(id))
                    .filter(|id| **id == me || d.status(**id, now) == Liveness::Alive)
                    .map(|id| (load.get(id).copied().unwrap_or(0), *id))
                    .collect();
                spare.sort();
                spare.into_iter().map(|(_, id)| id).collect()
            };
            let groups = self.clone();
            tokio::spawn(async move {
                groups.repair_one(&r, gone, spare).await;
                r.repairing.store(false, Ordering::Release);
            });
        }
    }

    async fn repair_one(&self, r: &Replica, gone: Vec<NodeId>, spare: Vec<NodeId>) {
        let name = &r.entry.name;
        if !gone.is_empty() {
            // The catalog first: each gone replica's place to a spare node, appended last.
            let mut replicas: Vec<NodeId> = r
                .entry
                .replicas
                .iter()
                .copied()
                .filter(|id| !gone.contains(id))
                .collect();
            let added: Vec<NodeId> = spare.into_iter().take(gone.len()).collect();
            if added.len() < gone.len() {
                tracing::debug!(queue = %name, ?gone, "no live node to move a queue replica to");
                return;
            }
            replicas.extend(&added);
            tracing::info!(queue = %name, ?gone, ?added, "moving queue replicas off nodes gone");
            let cmd = crate::control::CatalogCommand::SetQueueReplicas {
                name: name.clone(),
                incarnation: r.entry.incarnation,
                replicas,
            };
            if let Err(e) = self.control.propose_within(cmd, REPAIR_STEP).await {
                tracing::warn!(queue = %name, error = %e, "the catalog did not take a queue's new replicas");
            }
            return; // the next look finds the catalog changed and moves the group
        }
        let want: BTreeSet<u64> = r.entry.replicas.iter().map(|id| id.0).collect();
        let voters = r.voters();
        if voters == want {
            return;
        }
        tracing::debug!(queue = %name, ?voters, ?want, "a queue group's voters differ from its placement");
        let nodes = self.nodes(&r.entry.replicas);
        for (id, node) in &nodes {
            if voters.contains(id) {
                continue;
            }
            // Blocking: answered once the learner caught up with the leader's log.
            tracing::debug!(queue = %name, node = id, "adding a queue replica as a learner");
            match tokio::time::timeout(REPAIR_STEP, r.raft.add_learner(*id, node.clone(), true))
                .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(queue = %name, node = id, error = %e, "a new queue replica was not added");
                    return;
                }
                Err(_) => {
                    tracing::debug!(queue = %name, node = id, "a new queue replica is still catching up");
                    return;
                }
            }
        }
        tracing::debug!(queue = %name, replicas = ?want, "changing a queue group's voters");
        match tokio::time::timeout(REPAIR_STEP, r.raft.change_membership(want.clone(), false)).await
        {
            Ok(Ok(_)) => tracing::info!(queue = %name, replicas = ?want, "queue group moved"),
            Ok(Err(e)) => {
                tracing::warn!(queue = %name, error = %e, "queue group membership unchanged")
            }
            Err(_) => tracing::warn!(queue = %name, "queue group membership change timed out"),
        }
    }

    /// Stops every replica (the node is stopping).
    pub(crate) async fn shutdown(&self) {
        let all: Vec<Arc<Replica>> = std::mem::take(&mut *self.replicas.lock())
            .into_values()
            .collect();
        for r in all {
            self.host.remove(r.entry.group());
            let _ = r.raft.shutdown().await;
        }
    }
}
