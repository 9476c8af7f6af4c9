//! Raft RPCs between nodes: length-prefixed bincode frames over a connection from the
//! node's [`Env`], one request and one reply at a time per connection.
//!
//! turmoil's TCP never retransmits, and openraft drops an RPC's future when its deadline
//! passes, so a connection is taken out of the client for the duration of one RPC and only
//! put back after a complete reply: a timed-out or failed RPC takes its connection with it,
//! and the next RPC connects afresh.

use std::io;
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{
    ClientWriteError, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, ClientWriteResponse, InstallSnapshotRequest,
    InstallSnapshotResponse, VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Raft, TypeConfig};
use crate::control::catalog::CatalogCommand;
use crate::env::{BoxStream, Env, Listener};

/// Largest frame accepted (snapshots included).
const MAX_FRAME_BYTES: usize = 64 << 20;

/// A request to a node's Raft.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRequest {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<u64>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// A catalog change to commit; only the leader accepts it (others answer
    /// `ForwardToLeader`).
    Write(CatalogCommand),
}

type WriteResult =
    Result<ClientWriteResponse<TypeConfig>, RaftError<u64, ClientWriteError<u64, BasicNode>>>;

/// The answer to a [`RaftRequest`] of the same variant.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftReply {
    Append(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    Snapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    Write(WriteResult),
}

async fn write_frame<T: Serialize>(stream: &mut BoxStream, value: &T) -> io::Result<()> {
    let bytes = bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map_err(io::Error::other)?;
    let len = u32::try_from(bytes.len()).map_err(io::Error::other)?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(&bytes).await?;
    stream.flush().await
}

async fn read_frame<T: DeserializeOwned>(stream: &mut BoxStream) -> io::Result<T> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("raft frame of {len} bytes exceeds {MAX_FRAME_BYTES}"),
        ));
    }
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await?;
    let (value, _) = bincode::serde::decode_from_slice(&buf, bincode::config::standard())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(value)
}

/// Builds a client per peer.
#[derive(Clone)]
pub struct NetworkFactory {
    env: Env,
}

impl NetworkFactory {
    pub fn new(env: Env) -> NetworkFactory {
        NetworkFactory { env }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        PeerClient {
            env: self.env.clone(),
            target,
            addr: node.addr.clone(),
            stream: None,
        }
    }
}

/// The connection to one peer.
pub struct PeerClient {
    env: Env,
    target: u64,
    addr: String,
    /// Present between RPCs; taken out during one (see the module comment).
    stream: Option<BoxStream>,
}

impl PeerClient {
    /// One RPC within `ttl`.
    pub async fn call(&mut self, req: &RaftRequest, ttl: Duration) -> io::Result<RaftReply> {
        let exchange = async {
            let mut stream = match self.stream.take() {
                Some(s) => s,
                None => self.env.net.connect(&self.addr).await?,
            };
            write_frame(&mut stream, req).await?;
            let reply = read_frame(&mut stream).await?;
            Ok::<_, io::Error>((stream, reply))
        };
        match tokio::time::timeout(ttl, exchange).await {
            Ok(Ok((stream, reply))) => {
                self.stream = Some(stream);
                Ok(reply)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "raft rpc timed out",
            )),
        }
    }

    /// Sends a client write to this peer (the test harness and write forwarding use it).
    pub async fn write(&mut self, cmd: CatalogCommand, ttl: Duration) -> io::Result<WriteResult> {
        match self.call(&RaftRequest::Write(cmd), ttl).await? {
            RaftReply::Write(r) => Ok(r),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "mismatched raft reply",
            )),
        }
    }

    /// A client for `addr` outside openraft (no target id needed).
    pub fn to_addr(env: Env, addr: impl Into<String>) -> PeerClient {
        PeerClient {
            env,
            target: 0,
            addr: addr.into(),
            stream: None,
        }
    }
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

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        match self
            .call(&RaftRequest::Append(rpc), option.hard_ttl())
            .await
        {
            Ok(RaftReply::Append(Ok(r))) => Ok(r),
            Ok(RaftReply::Append(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(mismatched()),
            Err(e) => Err(unreachable(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        match self
            .call(&RaftRequest::Snapshot(rpc), option.hard_ttl())
            .await
        {
            Ok(RaftReply::Snapshot(Ok(r))) => Ok(r),
            Ok(RaftReply::Snapshot(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(mismatched()),
            Err(e) => Err(unreachable(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        match self.call(&RaftRequest::Vote(rpc), option.hard_ttl()).await {
            Ok(RaftReply::Vote(Ok(r))) => Ok(r),
            Ok(RaftReply::Vote(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(mismatched()),
            Err(e) => Err(unreachable(e)),
        }
    }
}

/// Serves Raft RPCs accepted on `listener` until the listener fails.
pub async fn serve_raft(raft: Raft, mut listener: Box<dyn Listener>) {
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            return;
        };
        tokio::spawn(serve_peer(raft.clone(), stream));
    }
}

/// Answers one peer's RPCs in order until it disconnects or sends a bad frame.
async fn serve_peer(raft: Raft, mut stream: BoxStream) {
    while let Ok(req) = read_frame::<RaftRequest>(&mut stream).await {
        let reply = match req {
            RaftRequest::Append(r) => RaftReply::Append(raft.append_entries(r).await),
            RaftRequest::Vote(r) => RaftReply::Vote(raft.vote(r).await),
            RaftRequest::Snapshot(r) => RaftReply::Snapshot(raft.install_snapshot(r).await),
            RaftRequest::Write(cmd) => RaftReply::Write(raft.client_write(cmd).await),
        };
        if write_frame(&mut stream, &reply).await.is_err() {
            return;
        }
    }
}
