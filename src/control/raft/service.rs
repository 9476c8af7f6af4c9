//! How a node answers its peers' control-plane requests: the Raft plane's handler on the
//! fabric.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::{VoteRequest, VoteResponse};

use super::Raft;
use super::membership::{self, MembershipPolicy};
use super::network::{NetworkFactory, RaftReply, RaftRequest, WriteResult};
use crate::control::catalog::CatalogCommand;
use crate::env::Env;
use crate::fabric::frame::MAX_FRAME_BYTES;
use crate::fabric::{Answer, PlaneHandler, Work, codec};

/// What a node's control plane serves with: its replica, its environment (to forward
/// writes), the membership policy it applies when it leads, and its links to its peers
/// (writes it forwards to the leader use them).
#[derive(Clone)]
pub struct PeerService {
    pub id: u64,
    pub raft: Raft,
    pub env: Env,
    pub policy: MembershipPolicy,
    pub network: NetworkFactory,
    /// Writes go through it: concurrent ones share a log entry (`propose`).
    pub proposer: super::Proposer,
}

impl PlaneHandler for PeerService {
    fn answer(self: Arc<Self>, body: Vec<u8>) -> Answer {
        let reply: crate::fabric::plane::BoxFuture<Result<Vec<u8>, String>> =
            match codec::decode::<RaftRequest>(&body, MAX_FRAME_BYTES) {
                Ok(req) => Box::pin(async move {
                    let reply = answer(&self, req).await;
                    codec::encode(&reply).map_err(|e| e.to_string())
                }),
                Err(e) => Box::pin(std::future::ready(Err(e.to_string()))),
            };
        Answer {
            work: Work::Other,
            reply,
        }
    }
}

/// Deadline of a write this node forwards to the leader.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);

/// Answers one control-plane request.
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
        RaftRequest::ReadIndex => RaftReply::ReadIndex(membership::read_index(raft).await),
    }
}

/// Answers a vote request, refusing disruptive ones before openraft sees them
/// (`vote_guard`: Raft §6).
async fn vote(raft: &Raft, req: VoteRequest<u64>) -> Result<VoteResponse<u64>, RaftError<u64>> {
    super::vote_guard::guarded_vote(raft, req).await
}

/// Commits `cmd` here if this node leads, else (once) on the leader it knows.
async fn write(service: &PeerService, cmd: CatalogCommand, forward: bool) -> WriteResult {
    let result = service.proposer.write(cmd.clone()).await;
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
