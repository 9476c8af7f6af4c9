//! Queue groups' Raft RPCs on the peer fabric (`Plane::Groups`): each request names its
//! group, and the node's `GroupHost` hands it to its replica of that group. Every group of
//! a node pair shares the one link the pair already has (no connection per group).
//!
//! A request for a group this node holds no replica of (not started yet, or removed) is
//! answered `NoSuchGroup`, which the sender treats as unreachable: openraft backs off and
//! tries again, as for a node that is down. Votes pass the catalog's guard (`vote_guard`),
//! so every replica must know the group's members before an election can succeed: each is
//! initialized with them (the catalog's placement), not only the first.
//!
//! Trust: as on the catalog's plane, any peer that proves the cluster secret may speak for
//! any group (requests are not tied to the caller's node id); the secret is the boundary.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::group::QueueGroup;
use crate::fabric::frame::MAX_FRAME_BYTES;
use crate::fabric::{Answer, Fabric, Link, Plane, PlaneHandler, Work, codec};

/// One group's RPC to a peer's replica of it.
#[derive(Debug, Serialize, Deserialize)]
pub struct GroupRequest {
    pub group: u64,
    pub rpc: GroupRpc,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum GroupRpc {
    Append(AppendEntriesRequest<QueueGroup>),
    Vote(VoteRequest<u64>),
    Snapshot(InstallSnapshotRequest<QueueGroup>),
}

/// The answer to a [`GroupRpc`] of the same variant.
#[derive(Debug, Serialize, Deserialize)]
pub enum GroupReply {
    Append(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    Snapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    /// This node holds no replica of the group.
    NoSuchGroup(u64),
}

/// The replicas of queue groups this node holds, answering their peers' RPCs.
#[derive(Default)]
pub struct GroupHost {
    rafts: Mutex<BTreeMap<u64, Raft<QueueGroup>>>,
}

impl GroupHost {
    /// Serves `group` with `raft`; returns the replica it replaces (to shut down).
    pub fn insert(&self, group: u64, raft: Raft<QueueGroup>) -> Option<Raft<QueueGroup>> {
        self.rafts.lock().insert(group, raft)
    }

    /// Stops serving `group`; returns its replica (to shut down).
    pub fn remove(&self, group: u64) -> Option<Raft<QueueGroup>> {
        self.rafts.lock().remove(&group)
    }

    pub fn get(&self, group: u64) -> Option<Raft<QueueGroup>> {
        self.rafts.lock().get(&group).cloned()
    }

    async fn answer_request(&self, req: GroupRequest) -> GroupReply {
        let Some(raft) = self.get(req.group) else {
            return GroupReply::NoSuchGroup(req.group);
        };
        match req.rpc {
            GroupRpc::Append(r) => GroupReply::Append(raft.append_entries(r).await),
            GroupRpc::Vote(r) => GroupReply::Vote(vote(&raft, r).await),
            GroupRpc::Snapshot(r) => GroupReply::Snapshot(raft.install_snapshot(r).await),
        }
    }
}

/// Answers a vote request, refusing disruptive ones before openraft sees them, as the
/// catalog's plane does (`vote_guard`, Raft §6): a removed or partitioned replica's
/// campaign does not depose a leader that hears from its quorum.
async fn vote(
    raft: &Raft<QueueGroup>,
    req: VoteRequest<u64>,
) -> Result<VoteResponse<u64>, RaftError<u64>> {
    crate::control::raft::guarded_vote(raft, req).await
}

impl PlaneHandler for GroupHost {
    fn answer(self: Arc<Self>, body: Vec<u8>) -> Answer {
        let reply: crate::fabric::plane::BoxFuture<Result<Vec<u8>, String>> =
            match codec::decode::<GroupRequest>(&body, MAX_FRAME_BYTES) {
                Ok(req) => Box::pin(async move {
                    let reply = self.answer_request(req).await;
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

/// Where a node is reached now (`host:port`), by its id: the catalog's word, which
/// follows a member that came back at another address.
pub type AddrOf = Arc<dyn Fn(u64) -> Option<String> + Send + Sync>;

/// One group's network: its replicas' peers reached on the node's fabric.
#[derive(Clone)]
pub struct GroupNetwork {
    fabric: Fabric,
    group: u64,
    addr_of: Option<AddrOf>,
}

impl GroupNetwork {
    pub fn new(fabric: Fabric, group: u64) -> GroupNetwork {
        GroupNetwork {
            fabric,
            group,
            addr_of: None,
        }
    }

    /// Reaches each peer where `addr_of` says at each RPC, not at the address the group's
    /// membership recorded when the group began.
    pub fn resolving(mut self, addr_of: AddrOf) -> GroupNetwork {
        self.addr_of = Some(addr_of);
        self
    }
}

impl RaftNetworkFactory<QueueGroup> for GroupNetwork {
    type Network = GroupClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> GroupClient {
        GroupClient {
            target,
            group: self.group,
            fabric: self.fabric.clone(),
            recorded: node.addr.clone(),
            addr_of: self.addr_of.clone(),
        }
    }
}

/// A group's client of one peer's replica, on the link the two nodes share.
pub struct GroupClient {
    target: u64,
    group: u64,
    fabric: Fabric,
    /// The address in the group's membership.
    recorded: String,
    addr_of: Option<AddrOf>,
}

fn unreachable<E: std::error::Error>(e: io::Error) -> RPCError<u64, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&e))
}

impl GroupClient {
    /// One RPC within the option's deadline; `pick` takes the answer out of the reply.
    async fn rpc<T, E: std::error::Error>(
        &mut self,
        rpc: GroupRpc,
        option: RPCOption,
        pick: impl FnOnce(GroupReply) -> Option<Result<T, RaftError<u64, E>>>,
    ) -> Result<T, RPCError<u64, BasicNode, RaftError<u64, E>>> {
        let req = GroupRequest {
            group: self.group,
            rpc,
        };
        let body = codec::encode(&req).map_err(|e| unreachable(io::Error::other(e)))?;
        let addr = self
            .addr_of
            .as_ref()
            .and_then(|f| f(self.target))
            .unwrap_or_else(|| self.recorded.clone());
        let link: Link = self.fabric.link_to(self.target, &addr);
        let reply = link
            .call(Plane::Groups, body, option.hard_ttl())
            .await
            .map_err(|f| unreachable(f.error))?;
        let reply: GroupReply = codec::decode(&reply, MAX_FRAME_BYTES)
            .map_err(|e| unreachable(io::Error::new(io::ErrorKind::InvalidData, e)))?;
        if let GroupReply::NoSuchGroup(g) = reply {
            return Err(unreachable(io::Error::other(format!(
                "node {} holds no replica of queue group {g}",
                self.target
            ))));
        }
        match pick(reply) {
            Some(Ok(r)) => Ok(r),
            Some(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            None => Err(RPCError::Network(NetworkError::new(&io::Error::new(
                io::ErrorKind::InvalidData,
                "mismatched group reply",
            )))),
        }
    }
}

impl RaftNetwork<QueueGroup> for GroupClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<QueueGroup>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.rpc(GroupRpc::Append(rpc), option, |r| match r {
            GroupReply::Append(a) => Some(a),
            _ => None,
        })
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<QueueGroup>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.rpc(GroupRpc::Snapshot(rpc), option, |r| match r {
            GroupReply::Snapshot(s) => Some(s),
            _ => None,
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.rpc(GroupRpc::Vote(rpc), option, |r| match r {
            GroupReply::Vote(v) => Some(v),
            _ => None,
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use openraft::Config;

    use super::*;
    use crate::control::raft::SqliteLogStore;
    use crate::env::Env;
    use crate::fabric::{ClusterSecret, serve_peer};
    use crate::queue::engine::{QueueConfig, Send};
    use crate::queue::group::{GroupDisk, QueueStateMachine};
    use crate::queue::machine::{QueueCommand, QueueOp, QueueOutput};

    /// A node's peer side: a fabric serving `Plane::Groups` on a port of its own.
    struct Peer {
        fabric: Fabric,
        addr: String,
        host: Arc<GroupHost>,
        _handler: Arc<dyn PlaneHandler>,
        catalog: SqliteLogStore,
    }

    async fn peer(id: u64, dir: &std::path::Path) -> Peer {
        let env = Env::production();
        let mut listener = env.net.listen("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let secret = ClusterSecret::from_bytes(b"the group network test's secret").unwrap();
        let fabric = Fabric::new(env, Some("groups".into()), secret);
        fabric.introduce(id, addr.clone());
        let host = Arc::new(GroupHost::default());
        let handler: Arc<dyn PlaneHandler> = host.clone();
        fabric.serve(Plane::Groups, Arc::downgrade(&handler));
        let serving = fabric.clone();
        tokio::spawn(async move {
            while let Ok((stream, remote)) = listener.accept().await {
                let f = serving.clone();
                tokio::spawn(async move {
                    if let Ok(ws) = tokio_tungstenite::accept_async(stream).await {
                        serve_peer(f, ws, remote).await;
                    }
                });
            }
        });
        let catalog = SqliteLogStore::open(&dir.join(format!("n{id}.sqlite")))
            .await
            .unwrap();
        Peer {
            fabric,
            addr,
            host,
            _handler: handler,
            catalog,
        }
    }

    /// Two queue groups on the same three nodes, their RPCs on the nodes' shared links:
    /// each commits its own sends, and every replica of each applies exactly its group's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_groups_share_the_links_and_keep_apart() {
        let dir = std::env::temp_dir().join(format!("mpreg-group-net-{}", std::process::id()));
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
        let mut peers = Vec::new();
        for id in 1..=3u64 {
            peers.push(peer(id, &dir).await);
        }
        let members: BTreeMap<u64, BasicNode> = peers
            .iter()
            .zip(1u64..)
            .map(|(p, id)| (id, BasicNode::new(p.addr.clone())))
            .collect();
        let mut machines: BTreeMap<(u64, u64), QueueStateMachine> = BTreeMap::new();
        for group in [7u64, 8] {
            for (p, id) in peers.iter().zip(1u64..) {
                let log = p.catalog.in_group::<QueueGroup>(group as i64);
                let sm = QueueStateMachine::open(
                    GroupDisk::Sqlite(log.clone()),
                    QueueConfig::default(),
                    1 << 20,
                )
                .await
                .unwrap();
                let net = GroupNetwork::new(p.fabric.clone(), group);
                let raft = Raft::new(id, config.clone(), net, log, sm.clone())
                    .await
                    .unwrap();
                p.host.insert(group, raft);
                machines.insert((group, id), sm);
            }
        }
        // The first replica initializes each group, as `queue::groups` does; the others,
        // knowing no members yet, vote for it (the vote guard lets openraft decide) and
        // learn the membership from its log.
        for group in [7, 8] {
            let raft = peers[0].host.get(group).unwrap();
            raft.initialize(members.clone()).await.unwrap();
        }
        for (group, sends) in [(7u64, 20u32), (8, 5)] {
            let any = peers[0].host.get(group).unwrap();
            let m = any
                .wait(Some(Duration::from_secs(10)))
                .metrics(|m| m.current_leader.is_some(), "a leader")
                .await
                .unwrap();
            let leader = m.current_leader.unwrap();
            let raft = peers[leader as usize - 1].host.get(group).unwrap();
            for n in 0..sends {
                let out = raft
                    .client_write(QueueCommand {
                        at_ms: 1_000,
                        op: QueueOp::Send(Send {
                            payload: Arc::from(format!("g{group}-{n}").into_bytes()),
                            ..Send::default()
                        }),
                    })
                    .await
                    .expect("committed")
                    .data;
                assert!(matches!(out, QueueOutput::Sent(Ok(_))), "{out:?}");
            }
            let last = raft.metrics().borrow().last_log_index;
            for p in &peers {
                p.host
                    .get(group)
                    .unwrap()
                    .wait(Some(Duration::from_secs(10)))
                    .applied_index_at_least(last, "the group's sends")
                    .await
                    .unwrap();
            }
        }
        for ((group, id), sm) in &machines {
            let want = if *group == 7 { 20 } else { 5 };
            assert_eq!(
                sm.read(|m| m.queue().depth()),
                want,
                "group {group} on node {id}"
            );
        }
        // A group a node holds no replica of is answered as unreachable, not misrouted.
        let mut client = GroupNetwork::new(peers[0].fabric.clone(), 99)
            .new_client(2, &BasicNode::new(peers[1].addr.clone()))
            .await;
        let vote = VoteRequest::new(openraft::Vote::new(1, 1), None);
        let option = RPCOption::new(Duration::from_secs(5));
        match client.vote(vote, option).await {
            Err(RPCError::Unreachable(e)) => {
                assert!(
                    e.to_string().contains("no replica of queue group 99"),
                    "{e}"
                )
            }
            other => panic!("{other:?}"),
        }
        for p in &peers {
            for group in [7, 8] {
                if let Some(raft) = p.host.remove(group) {
                    raft.shutdown().await.unwrap();
                }
            }
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
