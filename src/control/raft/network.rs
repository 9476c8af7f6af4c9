//! Raft RPCs between nodes, and the other peer requests (client writes, joins, leaves,
//! liveness probes, read indexes): what they are, how a node answers them, and the client
//! that sends them over a multiplexed peer link (`link.rs`).

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::error::{
    ClientWriteError, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, ClientWriteResponse, InstallSnapshotRequest,
    InstallSnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, LogId};
use serde::{Deserialize, Serialize};

use super::frame::{Caller, MAX_FRAME_BYTES};
use super::link::Outbound;
use super::link::{Endpoint, Link, LinkTo};
use super::membership::{self, MembershipPolicy};
use super::next::{NextRequest, UpgradeStats};
use super::{Raft, TypeConfig};
use crate::control::catalog::CatalogCommand;
use crate::env::{Env, Listener};
use crate::fabric::ClusterSecret;
use crate::routing::liveness::Load;
use crate::rpc::{ForwardError, Step, StepOutcome};
use crate::transport::websocket_config;

/// A request to a node's Raft.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRequest {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<u64>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// A catalog change to commit. A follower that knows the leader forwards it there once
    /// (`forward: true`); a forwarded write is not forwarded again, so a stale hint cannot
    /// make a loop: the caller gets `ForwardToLeader` and tries again.
    Write {
        cmd: CatalogCommand,
        forward: bool,
    },
    /// A node asks to join the cluster; only the leader accepts it.
    Join {
        id: u64,
        node: BasicNode,
    },
    /// A node leaves the cluster (graceful shutdown); only the leader accepts it.
    Leave {
        id: u64,
    },
    /// Liveness probe from the leader's membership supervisor.
    Ping,
    /// The leader confirms it still leads and says up to which log id a read must wait.
    ReadIndex,
    /// Data-plane heartbeat: the sender's load; the answer carries the receiver's.
    Heartbeat {
        load: Load,
    },
    /// A command to run here, forwarded by the node coordinating its request.
    Step(Step),
}

/// Why a membership change (join or leave) or a linearizable read was not done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MembershipError {
    #[error("not the leader; the leader is {leader:?}")]
    ForwardToLeader {
        leader_id: Option<u64>,
        leader: Option<BasicNode>,
    },
    #[error("{0}")]
    Failed(String),
}

/// Kept for callers that only join.
pub type JoinError = MembershipError;

pub(crate) type WriteResult =
    Result<ClientWriteResponse<TypeConfig>, RaftError<u64, ClientWriteError<u64, BasicNode>>>;

/// The answer to a [`RaftRequest`] of the same variant.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftReply {
    Append(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    Snapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    Write(WriteResult),
    Join(Result<(), MembershipError>),
    Leave(Result<(), MembershipError>),
    Pong,
    ReadIndex(Result<Option<LogId<u64>>, MembershipError>),
    Heartbeat {
        load: Load,
    },
    Step(StepOutcome),
    /// The peer does not know the request (a build older than this one's request kind).
    Unsupported(String),
}

/// Builds the client for each peer; all clients of one peer share one multiplexed link,
/// and the peer uses the same connection for its calls to this node.
#[derive(Clone)]
pub struct NetworkFactory {
    env: Env,
    cluster: Option<String>,
    /// By node and address: a node restarted at an address with a new id is a new link.
    links: Arc<Mutex<BTreeMap<(u64, String), Link>>>,
    endpoint: Arc<Endpoint>,
}

impl NetworkFactory {
    pub fn new(env: Env) -> NetworkFactory {
        NetworkFactory {
            env,
            cluster: None,
            links: Arc::default(),
            endpoint: Arc::default(),
        }
    }

    /// Proves `secret` in every hello and asks peers to prove it (`fabric::handshake`).
    /// Called before any link exists (the links share the endpoint it replaces).
    pub fn secret(mut self, secret: ClusterSecret) -> NetworkFactory {
        self.endpoint = Arc::new(Endpoint::new(secret, self.endpoint.speaks_next()));
        self
    }

    /// Behaves as the next build would (`next`: tests of rolling upgrades). Called before
    /// any link exists.
    #[doc(hidden)]
    pub fn speak_next_protocol(mut self) -> NetworkFactory {
        self.endpoint = Arc::new(Endpoint::new(self.endpoint.secret().clone(), true));
        self
    }

    /// What this node saw of the other build, when it speaks the next one.
    #[doc(hidden)]
    pub fn upgrade_stats(&self) -> [u64; 5] {
        self.endpoint.upgrade.read()
    }

    /// Says `cluster_id` in every hello, so that peers of another cluster refuse the link.
    pub fn cluster(mut self, cluster_id: impl Into<String>) -> NetworkFactory {
        self.cluster = Some(cluster_id.into());
        self
    }

    /// Says in every hello that this is node `id`, reached at `addr`, so that each peer
    /// uses the connection for its own calls here instead of dialling another; and answers
    /// the requests that arrive on the connections this node dialled with `service`.
    pub(crate) fn serve_as(&self, id: u64, addr: impl Into<String>, service: &Arc<PeerService>) {
        self.endpoint.introduce(Caller {
            id,
            addr: addr.into(),
        });
        self.endpoint.serve_with(Arc::downgrade(service));
    }

    /// Peer connections open now (dialled or accepted; one per peer once settled).
    pub fn open_connections(&self) -> usize {
        self.endpoint.open_connections()
    }

    /// Ends every peer connection of this node and dials no more: it has stopped.
    pub(crate) fn close(&self) {
        self.endpoint.close();
    }

    pub(crate) fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// The link to node `target` at `addr` (`host:port`) that every caller shares.
    pub(crate) fn link_to(&self, target: u64, addr: &str) -> Link {
        self.links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((target, addr.to_owned()))
            .or_insert_with(|| {
                Link::new(
                    self.env.clone(),
                    addr.to_owned(),
                    LinkTo {
                        cluster: self.cluster.clone(),
                        node: Some(target),
                        introduce: true,
                        endpoint: self.endpoint.clone(),
                    },
                )
            })
            .clone()
    }

    /// The client of the peer at `addr` (`host:port`), on the link every caller shares.
    pub fn peer(&self, target: u64, addr: &str) -> PeerClient {
        PeerClient {
            target,
            link: self.link_to(target, addr),
        }
    }

    /// A client with a link of its own to whichever node is at `addr` (joins, a leave
    /// through a configured peer): its hello says this cluster, so that a node of another
    /// cluster refuses it instead of taking this node into its membership.
    pub fn dial(&self, addr: impl Into<String>) -> PeerClient {
        PeerClient {
            target: 0,
            link: Link::new(
                self.env.clone(),
                addr.into(),
                LinkTo {
                    cluster: self.cluster.clone(),
                    node: None,
                    introduce: false,
                    endpoint: self.endpoint.clone(),
                },
            ),
        }
    }

    /// The client of a leader a node pointed to (`ForwardToLeader`): on the link every
    /// caller shares when its id is known, so forwarded writes and reads open no
    /// connection of their own.
    pub fn leader(&self, id: Option<u64>, node: BasicNode) -> PeerClient {
        match id {
            Some(id) => self.peer(id, &node.addr),
            None => self.dial(node.addr),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        self.peer(target, &node.addr)
    }
}

/// A client of one peer (see `link.rs`: calls are multiplexed and each has a deadline).
pub struct PeerClient {
    target: u64,
    link: Link,
}

impl PeerClient {
    /// One RPC within `ttl`.
    pub async fn call(&mut self, req: RaftRequest, ttl: Duration) -> io::Result<RaftReply> {
        self.link.call(req, ttl).await
    }

    /// Sends a client write to this peer (the test harness and write forwarding use it).
    /// Asks the node to commit `cmd` (it forwards to the leader if it knows one).
    pub async fn write(&mut self, cmd: CatalogCommand, ttl: Duration) -> io::Result<WriteResult> {
        self.expect_patiently(
            RaftRequest::Write { cmd, forward: true },
            ttl,
            |r| match r {
                RaftReply::Write(w) => Some(w),
                _ => None,
            },
        )
        .await
    }

    /// Commits `cmd` on this node only if it leads (a forwarded write).
    pub(crate) async fn write_here(
        &mut self,
        cmd: CatalogCommand,
        ttl: Duration,
    ) -> io::Result<WriteResult> {
        self.expect_patiently(
            RaftRequest::Write {
                cmd,
                forward: false,
            },
            ttl,
            |r| match r {
                RaftReply::Write(w) => Some(w),
                _ => None,
            },
        )
        .await
    }

    pub async fn join(
        &mut self,
        id: u64,
        node: BasicNode,
        ttl: Duration,
    ) -> io::Result<Result<(), MembershipError>> {
        self.expect(RaftRequest::Join { id, node }, ttl, |r| match r {
            RaftReply::Join(j) => Some(j),
            _ => None,
        })
        .await
    }

    pub async fn leave(
        &mut self,
        id: u64,
        ttl: Duration,
    ) -> io::Result<Result<(), MembershipError>> {
        self.expect(RaftRequest::Leave { id }, ttl, |r| match r {
            RaftReply::Leave(l) => Some(l),
            _ => None,
        })
        .await
    }

    pub async fn ping(&mut self, ttl: Duration) -> io::Result<()> {
        self.expect(RaftRequest::Ping, ttl, |r| match r {
            RaftReply::Pong => Some(()),
            _ => None,
        })
        .await
    }

    /// A heartbeat carrying this node's `load`; answers the peer's. A missed deadline
    /// does not break the link (it is shared with forwarded steps, which would be lost):
    /// the caller decides when silence means the link is dead ([`PeerClient::reset`]).
    pub async fn heartbeat(&mut self, load: Load, ttl: Duration) -> io::Result<Load> {
        let req = if self.link.speaks_next() {
            self.gossip(ttl).await;
            let build = Some(format!("protocol {}", super::PEER_PROTOCOL + 1));
            Outbound::Next(NextRequest::Heartbeat { load, build })
        } else {
            Outbound::Raft(RaftRequest::Heartbeat { load })
        };
        match self.link.call_step(req, ttl).await {
            Ok(RaftReply::Heartbeat { load }) => Ok(load),
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "mismatched peer reply",
            )),
            Err(f) => Err(f.error),
        }
    }

    /// The next build's new message kind (a node speaking it, `next`): a peer of this build
    /// answers it `Unsupported`, one of the next answers it; each is counted.
    async fn gossip(&self, ttl: Duration) {
        let note = "hello from the next build".to_owned();
        let stats = self.link.upgrade_stats();
        match self
            .link
            .call_step(Outbound::Next(NextRequest::Gossip { note }), ttl)
            .await
        {
            Ok(RaftReply::Unsupported(_)) => UpgradeStats::count(&stats.gossip_unsupported),
            Ok(RaftReply::Pong) => UpgradeStats::count(&stats.gossip_served),
            _ => {}
        }
    }

    /// Drops the connection to the peer; the next call opens a new one.
    pub async fn reset(&self) {
        self.link.reset().await;
    }

    pub async fn read_index(
        &mut self,
        ttl: Duration,
    ) -> io::Result<Result<Option<LogId<u64>>, MembershipError>> {
        self.expect_patiently(RaftRequest::ReadIndex, ttl, |r| match r {
            RaftReply::ReadIndex(i) => Some(i),
            _ => None,
        })
        .await
    }

    async fn expect<T>(
        &mut self,
        req: RaftRequest,
        ttl: Duration,
        pick: impl FnOnce(RaftReply) -> Option<T>,
    ) -> io::Result<T> {
        picked(self.call(req, ttl).await?, pick)
    }

    /// As [`PeerClient::expect`], but a missed deadline leaves the link up: the peer may
    /// just be slow to answer (a commit waiting for a quorum), and the link is shared with
    /// forwarded steps, which breaking it would lose. Heartbeats judge the link instead.
    async fn expect_patiently<T>(
        &self,
        req: RaftRequest,
        ttl: Duration,
        pick: impl FnOnce(RaftReply) -> Option<T>,
    ) -> io::Result<T> {
        let reply = self.link.call_step(req, ttl).await.map_err(|f| f.error)?;
        picked(reply, pick)
    }

    /// Runs `step` on the peer within `ttl`; a missed deadline does not break the link.
    pub async fn step(&self, step: Step, ttl: Duration) -> Result<StepOutcome, ForwardError> {
        match self.link.call_step(RaftRequest::Step(step), ttl).await {
            Ok(RaftReply::Step(outcome)) => Ok(outcome),
            Ok(_) => Err(ForwardError::Lost("mismatched peer reply".into())),
            Err(f) if f.sent => Err(ForwardError::Lost(f.error.to_string())),
            Err(f) => Err(ForwardError::NotSent(f.error.to_string())),
        }
    }

    /// The `host:port` this client talks to.
    pub fn addr(&self) -> &str {
        self.link.addr()
    }

    /// A client with a link of its own to `addr`, whichever node of whichever cluster is
    /// there, proving `secret` (tools).
    pub fn to_addr(env: Env, addr: impl Into<String>, secret: ClusterSecret) -> PeerClient {
        let to = LinkTo {
            cluster: None,
            node: None,
            introduce: false,
            endpoint: Arc::new(Endpoint::new(secret, false)),
        };
        PeerClient {
            target: 0,
            link: Link::new(env, addr.into(), to),
        }
    }
}

/// The answer `pick` takes out of `reply`; `None` (another variant) is an error.
fn picked<T>(reply: RaftReply, pick: impl FnOnce(RaftReply) -> Option<T>) -> io::Result<T> {
    pick(reply).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "mismatched raft reply"))
}

fn unreachable<E: std::error::Error>(e: io::Error) -> RPCError<u64, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&e))
}

fn mismatched<E: std::error::Error>() -> RPCError<u64, BasicNode, E> {
    RPCError::Network(NetworkError::new(&io::Error::new(
        io::ErrorKind::InvalidData,
        "mismatched raft reply",
    )))
}

impl PeerClient {
    /// One openraft RPC: `pick` takes its answer out of the reply (`None`: wrong variant).
    async fn rpc<T, E: std::error::Error>(
        &mut self,
        req: RaftRequest,
        option: RPCOption,
        pick: impl FnOnce(RaftReply) -> Option<Result<T, RaftError<u64, E>>>,
    ) -> Result<T, RPCError<u64, BasicNode, RaftError<u64, E>>> {
        match self.call(req, option.hard_ttl()).await.map(pick) {
            Ok(Some(Ok(r))) => Ok(r),
            Ok(Some(Err(e))) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Ok(None) => Err(mismatched()),
            Err(e) => Err(unreachable(e)),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.rpc(RaftRequest::Append(rpc), option, |r| match r {
            RaftReply::Append(a) => Some(a),
            _ => None,
        })
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.rpc(RaftRequest::Snapshot(rpc), option, |r| match r {
            RaftReply::Snapshot(s) => Some(s),
            _ => None,
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.rpc(RaftRequest::Vote(rpc), option, |r| match r {
            RaftReply::Vote(v) => Some(v),
            _ => None,
        })
        .await
    }
}

/// What a node's peer endpoint serves with: its replica, its environment (to forward
/// writes) and the membership policy it applies when it leads.
#[derive(Clone)]
pub struct PeerService {
    /// This node's id: a hello naming another node is refused.
    pub id: u64,
    pub raft: Raft,
    pub env: Env,
    pub policy: MembershipPolicy,
    /// Links whose hello names another cluster are refused.
    pub cluster_id: String,
    /// This node's load (requests in flight), sent back with heartbeats.
    pub load: Arc<dyn Fn() -> Load + Send + Sync>,
    /// Runs forwarded steps (set once the node's functions exist).
    pub steps: Arc<std::sync::OnceLock<StepRunner>>,
    /// This node's links to its peers: writes it forwards to the leader use them.
    pub network: NetworkFactory,
}

/// How a node runs a step another node forwarded to it.
pub type StepRunner = Box<dyn Fn(Step) -> crate::registry::BoxFuture<StepOutcome> + Send + Sync>;

/// Deadline of a write this node forwards to the leader.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);

/// Answers one peer request.
pub async fn answer(service: &PeerService, req: RaftRequest) -> RaftReply {
    let raft = &service.raft;
    match req {
        RaftRequest::Append(r) => RaftReply::Append(raft.append_entries(r).await),
        RaftRequest::Vote(r) => RaftReply::Vote(vote(raft, r).await),
        RaftRequest::Snapshot(r) => RaftReply::Snapshot(raft.install_snapshot(r).await),
        RaftRequest::Write { cmd, forward } => RaftReply::Write(write(service, cmd, forward).await),
        RaftRequest::Join { id, node } => {
            RaftReply::Join(membership::join(raft, service.policy, id, node).await)
        }
        RaftRequest::Leave { id } => {
            RaftReply::Leave(membership::leave(raft, service.policy, id).await)
        }
        RaftRequest::Ping => RaftReply::Pong,
        RaftRequest::Heartbeat { load: _ } => RaftReply::Heartbeat {
            load: (service.load)(),
        },
        RaftRequest::ReadIndex => RaftReply::ReadIndex(membership::read_index(raft).await),
        RaftRequest::Step(step) => RaftReply::Step(match service.steps.get() {
            Some(run) => run(step).await,
            None => StepOutcome::NotHere("the node is starting".into()),
        }),
    }
}

/// Answers a vote request, refusing disruptive ones before openraft sees them
/// (`vote_guard`: Raft §6).
async fn vote(raft: &Raft, req: VoteRequest<u64>) -> Result<VoteResponse<u64>, RaftError<u64>> {
    let refused = {
        let m = raft.metrics().borrow().clone();
        let candidate = req.vote.leader_id().voted_for();
        let view = super::vote_guard::VoteView {
            candidate_is_voter: candidate
                .is_some_and(|c| m.membership_config.membership().voter_ids().any(|v| v == c)),
            leading: m.state == openraft::ServerState::Leader,
            quorum_ack_ms: m.millis_since_quorum_ack,
            election_timeout_min_ms: raft.config().election_timeout_min,
        };
        super::vote_guard::refusal(view).map(|why| (why, m.vote, m.last_applied))
    };
    match refused {
        Some((why, vote, last)) => {
            tracing::debug!(%why, candidate = ?req.vote, "refused a vote request");
            Ok(VoteResponse::new(vote, last, false))
        }
        None => raft.vote(req).await,
    }
}

/// Commits `cmd` here if this node leads, else (once) on the leader it knows.
async fn write(service: &PeerService, cmd: CatalogCommand, forward: bool) -> WriteResult {
    let result = service.raft.client_write(cmd.clone()).await;
    let leader = match &result {
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) if forward => {
            f.leader_node.clone().map(|node| (f.leader_id, node))
        }
        _ => return result,
    };
    let Some((id, node)) = leader else {
        return result;
    };
    let mut peer = service.network.leader(id, node);
    match peer.write_here(cmd, FORWARD_TIMEOUT).await {
        Ok(forwarded) => forwarded,
        // The leader did not answer: the caller learns who it was and decides.
        Err(_) => result,
    }
}

/// Serves Raft alone on `listener` (the simulator's replicas; a node serves Raft on its
/// client port instead, see `node::conn`).
pub async fn serve_raft(service: Arc<PeerService>, mut listener: Box<dyn Listener>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            return;
        };
        let service = service.clone();
        tokio::spawn(async move {
            let config = websocket_config(MAX_FRAME_BYTES);
            if let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await
            {
                super::link::serve_peer(service, ws, peer).await;
            }
        });
    }
}
