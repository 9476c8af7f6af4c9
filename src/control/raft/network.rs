//! The control plane's messages on the peer fabric: Raft RPCs and the other requests of the
//! control plane (client writes, joins, leaves, liveness probes, read indexes), and the
//! client that sends them over the link a node shares with each peer (`fabric::link`).
//! How a node answers them is `service.rs`.

use std::io;
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

use super::TypeConfig;
use crate::control::catalog::CatalogCommand;
use crate::env::Env;
use crate::fabric::frame::MAX_FRAME_BYTES;
use crate::fabric::{CallFailure, ClusterSecret, Fabric, Link, Plane, codec};

/// A request to a node's control plane.
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
}

/// Builds the client of each peer on the node's fabric: all clients of one peer share one
/// link, and the peer uses the same connection for its calls to this node.
#[derive(Clone)]
pub struct NetworkFactory {
    fabric: Fabric,
}

impl NetworkFactory {
    pub fn new(fabric: Fabric) -> NetworkFactory {
        NetworkFactory { fabric }
    }

    /// The fabric under it (the data plane shares its links).
    pub fn fabric(&self) -> &Fabric {
        &self.fabric
    }

    /// Peer connections open now (dialled or accepted; one per peer once settled).
    pub fn open_connections(&self) -> usize {
        self.fabric.open_connections()
    }

    /// The client of the peer at `addr` (`host:port`), on the link every caller shares.
    pub fn peer(&self, target: u64, addr: &str) -> PeerClient {
        PeerClient {
            target,
            link: self.fabric.link_to(target, addr),
        }
    }

    /// A client with a link of its own to whichever node is at `addr` (joins, a leave
    /// through a configured peer): its hello says this cluster, so that a node of another
    /// cluster refuses it instead of taking this node into its membership.
    pub fn dial(&self, addr: impl Into<String>) -> PeerClient {
        PeerClient {
            target: 0,
            link: self.fabric.dial(addr),
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

/// A client of one peer's control plane (calls are multiplexed on the shared link and each
/// has a deadline).
pub struct PeerClient {
    target: u64,
    link: Link,
}

fn decoded(body: Result<Vec<u8>, CallFailure>) -> io::Result<RaftReply> {
    let body = body.map_err(|f| f.error)?;
    codec::decode(&body, MAX_FRAME_BYTES).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

impl PeerClient {
    /// One RPC within `ttl`; a missed deadline retires the connection.
    pub async fn call(&mut self, req: RaftRequest, ttl: Duration) -> io::Result<RaftReply> {
        let body = codec::encode(&req).map_err(io::Error::other)?;
        decoded(self.link.call(Plane::Raft, body, ttl).await)
    }

    /// As [`PeerClient::call`], but a missed deadline leaves the link up: the peer may just
    /// be slow to answer (a commit waiting for a quorum), and the link is shared with
    /// forwarded steps, which breaking it would lose. Heartbeats judge the link instead.
    async fn call_patiently(&self, req: RaftRequest, ttl: Duration) -> io::Result<RaftReply> {
        let body = codec::encode(&req).map_err(io::Error::other)?;
        decoded(self.link.call_patiently(Plane::Raft, body, ttl).await)
    }

    /// Asks the node to commit `cmd` (it forwards to the leader if it knows one).
    pub async fn write(&mut self, cmd: CatalogCommand, ttl: Duration) -> io::Result<WriteResult> {
        let req = RaftRequest::Write { cmd, forward: true };
        picked(self.call_patiently(req, ttl).await?, |r| match r {
            RaftReply::Write(w) => Some(w),
            _ => None,
        })
    }

    /// Commits `cmd` on this node only if it leads (a forwarded write).
    pub(crate) async fn write_here(
        &mut self,
        cmd: CatalogCommand,
        ttl: Duration,
    ) -> io::Result<WriteResult> {
        let req = RaftRequest::Write {
            cmd,
            forward: false,
        };
        picked(self.call_patiently(req, ttl).await?, |r| match r {
            RaftReply::Write(w) => Some(w),
            _ => None,
        })
    }

    pub async fn join(
        &mut self,
        id: u64,
        node: BasicNode,
        ttl: Duration,
    ) -> io::Result<Result<(), MembershipError>> {
        picked(
            self.call(RaftRequest::Join { id, node }, ttl).await?,
            |r| match r {
                RaftReply::Join(j) => Some(j),
                _ => None,
            },
        )
    }

    pub async fn leave(
        &mut self,
        id: u64,
        ttl: Duration,
    ) -> io::Result<Result<(), MembershipError>> {
        picked(
            self.call(RaftRequest::Leave { id }, ttl).await?,
            |r| match r {
                RaftReply::Leave(l) => Some(l),
                _ => None,
            },
        )
    }

    pub async fn ping(&mut self, ttl: Duration) -> io::Result<()> {
        picked(self.call(RaftRequest::Ping, ttl).await?, |r| match r {
            RaftReply::Pong => Some(()),
            _ => None,
        })
    }

    pub async fn read_index(
        &mut self,
        ttl: Duration,
    ) -> io::Result<Result<Option<LogId<u64>>, MembershipError>> {
        picked(
            self.call_patiently(RaftRequest::ReadIndex, ttl).await?,
            |r| match r {
                RaftReply::ReadIndex(i) => Some(i),
                _ => None,
            },
        )
    }

    /// Drops the connection to the peer; the next call opens a new one.
    pub fn reset(&self) {
        self.link.reset();
    }

    /// The `host:port` this client talks to.
    pub fn addr(&self) -> &str {
        self.link.addr()
    }

    /// A client with a link of its own to `addr`, whichever node of whichever cluster is
    /// there, proving `secret` (tools).
    pub fn to_addr(env: Env, addr: impl Into<String>, secret: ClusterSecret) -> PeerClient {
        PeerClient {
            target: 0,
            link: Fabric::tool(env, addr, secret),
        }
    }

    /// [`PeerClient::to_addr`] over TLS (see [`Fabric::tool_over_tls`]).
    pub fn to_addr_over_tls(
        env: Env,
        addr: impl Into<String>,
        secret: ClusterSecret,
        tls: crate::tls::NodeTls,
    ) -> PeerClient {
        PeerClient {
            target: 0,
            link: Fabric::tool_over_tls(env, addr, secret, tls),
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
