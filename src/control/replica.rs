//! The node's part in the control plane: its Raft replica of the catalog, joining the
//! cluster, and putting itself and its functions into the catalog.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Config};
use tokio::sync::watch;

use crate::control::raft::{
    CatalogStateMachine, Disk, MembershipError, MembershipPolicy, NetworkFactory, PeerClient,
    PeerService, Raft, read_index,
};
use crate::control::{CatalogCommand, FunctionEntry, Member, NodeId, Role};
use crate::env::Env;
use crate::fabric::{Fabric, Plane, PlaneHandler};

/// Deadline of one control-plane RPC made by the node itself.
const RPC_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between attempts to join or to commit while no leader is reachable.
const RETRY_BACKOFF: Duration = Duration::from_millis(200);

/// A node's replica of the catalog.
pub(crate) struct Control {
    pub(crate) id: NodeId,
    /// The storage held a vote: this node was a member before and rejoins as itself.
    restored: bool,
    /// This node is (or was taken into) the membership: it bootstrapped, was restored, or a
    /// join was accepted. A node that never got in has nothing to leave when it stops.
    joined: std::sync::atomic::AtomicBool,
    pub(crate) raft: Raft,
    pub(crate) catalog: CatalogStateMachine,
    pub(crate) policy: MembershipPolicy,
    /// The control plane's clients on the node's fabric (whose links Raft, heartbeats and
    /// forwarded steps share: one per peer).
    pub(crate) network: NetworkFactory,
    /// What answers peers' control-plane requests (the fabric holds it weakly).
    pub(crate) service: Arc<PeerService>,
    /// The store that outlives the process (or the simulated crash), to forget the
    /// membership after leaving.
    disk: Disk,
    /// Members' `host:port`, parsed from their URLs once.
    addrs: Addrs,
    /// What the Raft storage did (appends, snapshots), for `/metrics`.
    pub(crate) store_stats: Arc<crate::control::raft::StoreStats>,
}

/// Why a catalog command did not take effect.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CommitError {
    /// Committed, and refused by the catalog on every replica alike (the state is as it
    /// was): the command was wrong, and retrying it will not help.
    #[error(transparent)]
    Refused(#[from] crate::control::CatalogError),
    /// Not committed (no leader, no quorum, the node stopping).
    #[error("{0}")]
    Unavailable(String),
}

/// Members' `host:port`, by id, with the URL each was read from: a member that changes its
/// URL is parsed again. Bounded by the membership (one entry per member ever asked about;
/// a member removed from the catalog is never asked about again).
#[derive(Default)]
struct Addrs(parking_lot::Mutex<BTreeMap<NodeId, (String, String)>>);

impl Addrs {
    fn authority(&self, id: NodeId, url: &str) -> Option<String> {
        let mut known = self.0.lock();
        if let Some((seen, authority)) = known.get(&id)
            && seen == url
        {
            return Some(authority.clone());
        }
        let authority = crate::ids::NodeUrl::peer(url).ok()?.authority();
        known.insert(id, (url.to_owned(), authority.clone()));
        Some(authority)
    }
}

/// Why a linearizable read could not be served.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("no leader confirmed the read: {0}")]
    NoLeader(String),
    #[error("this replica did not catch up with the leader in time")]
    Lagging,
}

/// Whether every other member of the catalog's membership speaks a peer protocol that
/// reads batched entries with this node, on a connection open now: a member of an older
/// build (or one not connected, whose build is unknown) means writes go one per entry.
fn members_read_batches(raft: Raft, fabric: Fabric, me: u64) -> impl Fn() -> bool + Send {
    move || {
        let m = raft.metrics();
        let m = m.borrow();
        let others: Vec<u64> = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .filter(|id| *id != me)
            .collect();
        drop(m);
        batching_allowed(&others, |id| fabric.protocol_of(id))
    }
}

/// The rule of [`members_read_batches`], apart from where its facts come from.
pub(crate) fn batching_allowed(others: &[u64], protocol_of: impl Fn(u64) -> Option<u32>) -> bool {
    others
        .iter()
        .all(|id| protocol_of(*id).is_some_and(|p| p >= crate::fabric::frame::BATCH_PROTOCOL))
}

impl Control {
    /// Where the member `id` is reached (`host:port`), per this node's catalog replica.
    /// Every forwarded step asks this, so a URL is parsed once, not per step.
    pub(crate) fn member_addr(&self, id: NodeId) -> Option<String> {
        self.catalog.read(|s| {
            let url = s.catalog.member_by_id(id)?.advertised_urls.first()?;
            self.addrs.authority(id, url)
        })
    }

    /// Every other member and where it is reached (`host:port`).
    pub(crate) fn peer_addrs(&self) -> std::collections::BTreeMap<NodeId, String> {
        self.catalog.read(|s| {
            s.catalog
                .members()
                .filter(|m| m.id != self.id)
                .filter_map(|m| {
                    let url = m.advertised_urls.first()?;
                    Some((m.id, self.addrs.authority(m.id, url)?))
                })
                .collect()
        })
    }

    /// Starts the replica on `storage`; with SQLite the node also keeps its id there
    /// (`fresh_id` is used the first time only). `addr` (`host:port`) is where peers reach
    /// this node.
    /// Raft's messages travel on `fabric`, the node's one set of peer links.
    pub(crate) async fn start(
        env: &Env,
        disk: Disk,
        settings: &crate::config::Settings,
        fresh_id: u64,
        addr: &str,
        fabric: Fabric,
    ) -> Result<Control, String> {
        let policy = crate::control::raft::MembershipPolicy::from_settings(settings);
        let config = Arc::new(
            Config {
                cluster_name: "mpreg".to_owned(),
                heartbeat_interval: settings.raft_heartbeat_ms,
                election_timeout_min: settings.raft_election_timeout_ms,
                election_timeout_max: settings.raft_election_timeout_ms * 2,
                // Entries may be batches of up to ~1 MiB (`propose`): 16 of them keep an
                // append well inside a peer frame (64 MiB), where openraft's 300 would not,
                // and a follower catching up would be sent the same oversized append forever.
                max_payload_entries: 16,
                ..Config::default()
            }
            .validate()
            .map_err(|e| e.to_string())?,
        );
        // Election timeouts are drawn from a generator seeded here, from this process's
        // environment: distinct per process in production, the run's seed in simulation.
        crate::control::raft::seed_raft_rng_from(env);
        let network = NetworkFactory::new(fabric);
        let (id, restored) = disk.identity(fresh_id).await?;
        let catalog = CatalogStateMachine::open(disk.clone(), settings.max_snapshot_bytes)
            .await
            .map_err(|e| e.to_string())?;
        let raft = match &disk {
            Disk::Sqlite(log) => {
                Raft::new(id, config, network.clone(), log.clone(), catalog.clone()).await
            }
            Disk::Memory(log) => {
                Raft::new(id, config, network.clone(), log.clone(), catalog.clone()).await
            }
            Disk::None => return Err("the control plane needs a disk for its log".to_owned()),
        }
        .map_err(|e| e.to_string())?;
        let service = Arc::new(PeerService {
            id,
            raft: raft.clone(),
            env: env.clone(),
            policy,
            network: network.clone(),
            proposer: crate::control::raft::Proposer::start(
                raft.clone(),
                disk.stats(),
                members_read_batches(raft.clone(), network.fabric().clone(), id),
            ),
        });
        network.fabric().introduce(id, addr);
        let handler: Arc<dyn PlaneHandler> = service.clone();
        network
            .fabric()
            .serve(Plane::Raft, Arc::downgrade(&handler));
        let store_stats = disk.stats();
        Ok(Control {
            addrs: Addrs::default(),
            store_stats,
            id: NodeId(id),
            raft,
            catalog,
            restored,
            joined: std::sync::atomic::AtomicBool::new(false),
            policy,
            network,
            service,
            disk,
        })
    }

    /// The store the catalog's log is kept on (queue groups keep theirs beside it).
    pub(crate) fn disk(&self) -> &Disk {
        &self.disk
    }

    /// Whether every other member speaks at least peer protocol `p` with this node on a
    /// connection open now (a member not connected counts as older).
    pub(crate) fn members_speak(&self, p: u32) -> bool {
        let fabric = self.network.fabric();
        self.catalog.read(|s| {
            s.catalog
                .members()
                .filter(|m| m.id != self.id)
                .all(|m| fabric.protocol_of(m.id.0).is_some_and(|v| v >= p))
        })
    }

    /// What the peer endpoint serves with (the membership supervisor's copy).
    pub(crate) fn peer_service(&self) -> PeerService {
        (*self.service).clone()
    }

    /// Waits until this replica has applied everything the leader had committed when the
    /// read began (a linearizable read).
    pub(crate) async fn linearizable(&self, timeout: Duration) -> Result<(), ReadError> {
        let read_at = match read_index(&self.raft).await {
            Ok(at) => at,
            Err(MembershipError::ForwardToLeader {
                leader_id,
                leader: Some(leader),
            }) => {
                let mut peer = self.network.leader(leader_id, leader);
                match peer.read_index(timeout).await {
                    Ok(Ok(at)) => at,
                    Ok(Err(e)) => return Err(ReadError::NoLeader(e.to_string())),
                    Err(e) => return Err(ReadError::NoLeader(e.to_string())),
                }
            }
            Err(MembershipError::ForwardToLeader { leader: None, .. }) => {
                return Err(ReadError::NoLeader("no leader is known".into()));
            }
            Err(e) => return Err(ReadError::NoLeader(e.to_string())),
        };
        let Some(at) = read_at else { return Ok(()) };
        self.raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(at.index), "linearizable read")
            .await
            .map(|_| ())
            .map_err(|_| ReadError::Lagging)
    }

    /// Leaves the cluster (graceful shutdown): asks the leader to take this node out of the
    /// membership, which also drops its catalog entries. With SQLite, the Raft state is
    /// then forgotten (the id is kept), so a later start joins afresh.
    pub(crate) async fn leave(&self, peers: &[String], deadline: Duration) {
        if !self.joined.load(std::sync::atomic::Ordering::Acquire) {
            // Refused (another cluster or build) or stopped before its join was accepted:
            // there is no membership to leave, only a deadline to wait out.
            tracing::info!(id = %self.id, "never joined the cluster: nothing to leave");
            return;
        }
        let attempt = async {
            // The leader, wherever it is: this node, a hint, or any configured peer.
            loop {
                let leader = self.raft.metrics().borrow().current_leader;
                if leader == Some(self.id.0) {
                    match crate::control::raft::leave_here(&self.raft, self.policy, self.id.0).await
                    {
                        Ok(()) => return true,
                        Err(e) => tracing::debug!(error = %e, "leave failed"),
                    }
                } else {
                    let hint = leader.and_then(|l| {
                        let m = self.raft.metrics().borrow().membership_config.clone();
                        m.membership().get_node(&l).map(|n| (l, n.clone()))
                    });
                    // The leader it knows, on the shared link; then any configured peer.
                    let mut clients: Vec<PeerClient> = Vec::new();
                    clients.extend(hint.map(|(id, node)| self.network.leader(Some(id), node)));
                    clients.extend(peers.iter().map(|addr| self.network.dial(addr.clone())));
                    for mut peer in clients {
                        match peer.leave(self.id.0, RPC_TIMEOUT).await {
                            Ok(Ok(())) => return true,
                            Ok(Err(MembershipError::ForwardToLeader {
                                leader_id,
                                leader: Some(l),
                            })) => {
                                let mut peer = self.network.leader(leader_id, l);
                                if let Ok(Ok(())) = peer.leave(self.id.0, RPC_TIMEOUT).await {
                                    return true;
                                }
                            }
                            _ => {}
                        }
                    }
                }
                tokio::time::sleep(RETRY_BACKOFF).await;
            }
        };
        match tokio::time::timeout(deadline, attempt).await {
            Ok(_) => {
                tracing::info!(id = %self.id, "left the cluster");
                // Stop Raft first so that nothing writes behind the wipe.
                let _ = self.raft.shutdown().await;
                if let Err(e) = self.disk.forget_membership().await {
                    tracing::warn!(error = %e, "could not forget the membership");
                }
            }
            Err(_) => tracing::warn!(
                "could not leave the cluster before the deadline; the others will replace \
                 this node if it stays away"
            ),
        }
    }

    /// Commits `cmd` through the leader, wherever it is; retries while no leader answers.
    /// A command the catalog rejects is reported, not retried. Returns once this replica
    /// has applied it too (see [`Control::applied`]).
    /// [`Control::propose`] that gives up after `within`, retrying with backoff and jitter
    /// meanwhile: for writes a client waits on (a worker's `register`), which must be
    /// answered (1017) when no quorum can commit them. A write that timed out may still
    /// commit later.
    pub(crate) async fn propose_within(
        &self,
        cmd: CatalogCommand,
        within: Duration,
    ) -> Result<(), CommitError> {
        let rng = &self.service.env.rng;
        let jittered = |tries| retry_backoff(tries, rng.next_u64());
        match tokio::time::timeout(within, self.commit(cmd, jittered)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(CommitError::Unavailable(format!(
                "no leader committed it within {:.1} s (no quorum reachable?)",
                within.as_secs_f64()
            ))),
        }
    }

    pub(crate) async fn propose(&self, cmd: CatalogCommand) -> Result<(), CommitError> {
        self.commit(cmd, |_| RETRY_BACKOFF).await
    }

    /// Commits `cmd` here when this node leads, else through the leader, pausing
    /// `pause(tries)` between attempts, until it commits or fails for good.
    async fn commit(
        &self,
        cmd: CatalogCommand,
        pause: impl Fn(u32) -> Duration,
    ) -> Result<(), CommitError> {
        let mut tries = 0u32;
        let resp = loop {
            let leader = match self.service.proposer.write(cmd.clone()).await {
                Ok(resp) => break resp,
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    f.leader_node.map(|node| (f.leader_id, node))
                }
                Err(e) => return Err(CommitError::Unavailable(e.to_string())),
            };
            if let Some((id, node)) = leader {
                let mut peer = self.network.leader(id, node);
                if let Ok(Ok(resp)) = peer.write(cmd.clone(), RPC_TIMEOUT).await {
                    break resp;
                }
            }
            tokio::time::sleep(pause(tries)).await;
            tries += 1;
        };
        self.applied(resp.log_id.index).await;
        Ok(resp.data.into_result()?)
    }

    /// Waits (at most [`RPC_TIMEOUT`]) until this replica has applied log entry `index`:
    /// read your writes. A follower learns of a commit only with the leader's next append,
    /// and until then its catalog still shows the old state: a function unregistered here
    /// would still be routed to (and refused as down) instead of being unknown. A replica
    /// that lags longer is left to catch up; the write itself is committed.
    async fn applied(&self, index: u64) {
        let caught_up = self
            .raft
            .wait(Some(RPC_TIMEOUT))
            .applied_index_at_least(Some(index), "read your catalog write")
            .await;
        if let Err(e) = caught_up {
            tracing::debug!(index, error = %e, "this replica has not applied its write yet");
        }
    }

    /// Joins through `peers` (`host:port`), following the leader, until it is accepted.
    async fn join(&self, me: &BasicNode, peers: &[String]) {
        let mut targets: Vec<String> = peers.to_vec();
        let mut k = 0usize;
        // Each new reason a join fails is logged once as a warning (a peer of another
        // cluster or build refuses every attempt; an operator needs to see why), repeats
        // only at debug level.
        let mut reported: BTreeSet<String> = BTreeSet::new();
        loop {
            let addr = targets[k % targets.len()].clone();
            let mut peer = self.network.dial(addr.clone());
            let failed = |error: String, reported: &mut BTreeSet<String>| {
                if reported.insert(error.clone()) {
                    tracing::warn!(peer = %addr, %error, "join attempt failed; retrying");
                } else {
                    tracing::debug!(peer = %addr, %error, "join attempt failed");
                }
            };
            match peer.join(self.id.0, me.clone(), RPC_TIMEOUT * 5).await {
                Ok(Ok(())) => return,
                Ok(Err(MembershipError::ForwardToLeader {
                    leader: Some(l), ..
                })) => {
                    // Follow the hint; a stale hint that points back here waits a little.
                    let next = match targets.iter().position(|t| *t == l.addr) {
                        Some(i) => i,
                        None => {
                            targets.push(l.addr);
                            targets.len() - 1
                        }
                    };
                    if next == k % targets.len() {
                        tokio::time::sleep(RETRY_BACKOFF).await;
                    }
                    k = next;
                    continue;
                }
                Ok(Err(e)) => failed(e.to_string(), &mut reported),
                Err(e) => failed(e.to_string(), &mut reported),
            }
            k += 1;
            tokio::time::sleep(RETRY_BACKOFF).await;
        }
    }
}

/// What the node puts into the catalog about itself.
pub(crate) struct Registration {
    pub(crate) member: Member,
    pub(crate) functions: Vec<FunctionEntry>,
    /// Other nodes to join through (`host:port`); none: bootstrap a new cluster.
    pub(crate) peers: Vec<String>,
}

/// Bootstraps or joins, then registers the node and its functions. Ends early on shutdown.
pub(crate) async fn join_and_register(
    control: Arc<Control>,
    reg: Registration,
    mut shutdown: watch::Receiver<bool>,
    registered: watch::Sender<bool>,
) {
    let me = BasicNode::new(
        reg.member
            .advertised_urls
            .first()
            .and_then(|u| crate::ids::NodeUrl::peer(u).ok())
            .map_or_else(String::new, |u| u.authority()),
    );
    let work = async {
        if control.restored {
            // A member already: its log says so; the cluster catches it up.
        } else if reg.peers.is_empty() {
            let members = BTreeMap::from([(control.id.0, me.clone())]);
            // Fails harmlessly when already initialized.
            let _ = control.raft.initialize(members).await;
        } else {
            control.join(&me, &reg.peers).await;
        }
        control
            .joined
            .store(true, std::sync::atomic::Ordering::Release);
        if let Err(e) = control
            .propose(CatalogCommand::UpsertMember(reg.member))
            .await
        {
            tracing::warn!(error = %e, "could not register this node in the catalog");
            return false;
        }
        let functions = CatalogCommand::RegisterFunctions {
            node: control.id,
            functions: reg.functions,
        };
        if let Err(e) = control.propose(functions).await {
            tracing::warn!(error = %e, "the catalog refused this node's functions");
            return false;
        }
        true
    };
    tokio::select! {
        biased;
        _ = crate::shutdown::stopping(&mut shutdown) => {}
        done = work => if done {
            tracing::info!(id = %control.id, "registered in the cluster catalog");
            let _ = registered.send(true);
        }
    }
}

/// A member with what it offers, for `cluster_map` and `list_peers`.
pub(crate) struct MemberView {
    pub(crate) member: Member,
    /// The member's own resources and those of its functions.
    pub(crate) resources: BTreeSet<String>,
    pub(crate) functions: BTreeSet<String>,
}

/// The catalog's view of the cluster (`None` before this node is in it).
pub(crate) fn members_view(control: &Control) -> Option<Vec<MemberView>> {
    control.catalog.read(|state| {
        let catalog = &state.catalog;
        catalog.member_by_id(control.id)?;
        Some(
            catalog
                .members()
                .map(|m| {
                    let mut resources = m.resources.clone();
                    let mut functions = BTreeSet::new();
                    for (node, f) in catalog.functions() {
                        if node == m.id {
                            resources.extend(f.resources.iter().cloned());
                            functions.insert(f.name.clone());
                        }
                    }
                    MemberView {
                        member: m.clone(),
                        resources,
                        functions,
                    }
                })
                .collect(),
        )
    })
}

/// A member record for this node.
pub(crate) fn member(
    id: NodeId,
    name: &str,
    cluster_id: &str,
    url: &str,
    resources: &BTreeSet<String>,
) -> Member {
    Member {
        id,
        name: name.to_owned(),
        cluster_id: cluster_id.to_owned(),
        advertised_urls: vec![url.to_owned()],
        resources: resources.clone(),
        role: Role::Voter,
    }
}

/// The pause before retry `tries` (from 0) of a catalog write: 50 ms doubling up to 1 s,
/// each drawn uniformly from its upper half (`random` is 64 random bits), so that
/// writers refused together do not retry together. Pure.
fn retry_backoff(tries: u32, random: u64) -> Duration {
    let ceiling = (50u64 << tries.min(5)).min(1_000);
    let floor = ceiling / 2;
    Duration::from_millis(floor + random % (ceiling - floor + 1))
}

#[cfg(test)]
mod backoff_tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_ceiling_with_jitter() {
        assert_eq!(retry_backoff(0, 0), Duration::from_millis(25));
        assert_eq!(retry_backoff(0, 25), Duration::from_millis(50));
        assert_eq!(retry_backoff(1, 0), Duration::from_millis(50));
        assert_eq!(retry_backoff(9, u64::MAX), retry_backoff(9, u64::MAX % 501));
        assert!(retry_backoff(40, 7) <= Duration::from_secs(1));
        assert!(retry_backoff(40, 7) >= Duration::from_millis(500));
    }
}

#[cfg(test)]
mod batching_tests {
    use super::batching_allowed;
    use crate::fabric::frame::BATCH_PROTOCOL;

    /// Batches only when every other member is connected with a protocol that reads them:
    /// one older build, or one whose build is unknown (not connected), and each write goes
    /// alone (a rolling upgrade keeps working while old followers remain).
    #[test]
    fn batches_wait_for_every_member_to_read_them() {
        let new = BATCH_PROTOCOL;
        let old = BATCH_PROTOCOL - 1;
        assert!(batching_allowed(&[], |_| None), "alone: nobody to wait for");
        assert!(batching_allowed(&[2, 3], |_| Some(new)));
        assert!(!batching_allowed(&[2, 3], |id| Some(if id == 3 {
            old
        } else {
            new
        })));
        assert!(!batching_allowed(&[2, 3], |id| (id == 2).then_some(new)));
    }
}
