//! The node's part in the control plane: its Raft replica of the catalog, joining the
//! cluster, and putting itself and its functions into the catalog.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Config};
use tokio::sync::watch;

use crate::config::{PersistenceConfig, PersistenceMode};
use crate::control::raft::{
    CatalogStateMachine, JoinError, LogStore, NetworkFactory, PeerClient, Raft, SqliteLogStore,
};
use crate::control::{CatalogCommand, FunctionEntry, Member, Role};
use crate::env::Env;

/// Deadline of one control-plane RPC made by the node itself.
const RPC_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between attempts to join or to commit while no leader is reachable.
const RETRY_BACKOFF: Duration = Duration::from_millis(200);

/// A node's replica of the catalog.
pub(crate) struct Control {
    pub(crate) id: u64,
    /// The storage held a vote: this node was a member before and rejoins as itself.
    restored: bool,
    pub(crate) raft: Raft,
    pub(crate) catalog: CatalogStateMachine,
    env: Env,
}

impl Control {
    /// Starts the replica: in memory, or on the SQLite log in the data directory, where the
    /// node also keeps its id (`fresh_id` is used the first time only).
    pub(crate) async fn start(
        env: &Env,
        persistence: &PersistenceConfig,
        fresh_id: u64,
    ) -> Result<Control, String> {
        let config = Arc::new(
            Config {
                cluster_name: "mpreg".to_owned(),
                heartbeat_interval: 50,
                election_timeout_min: 150,
                election_timeout_max: 300,
                ..Config::default()
            }
            .validate()
            .map_err(|e| e.to_string())?,
        );
        let catalog = CatalogStateMachine::default();
        let network = NetworkFactory::new(env.clone());
        let (id, raft, restored) = match persistence.mode {
            PersistenceMode::Memory => {
                let raft = Raft::new(
                    fresh_id,
                    config,
                    network,
                    LogStore::default(),
                    catalog.clone(),
                )
                .await
                .map_err(|e| e.to_string())?;
                (fresh_id, raft, false)
            }
            PersistenceMode::Sqlite => {
                let path = persistence.sqlite_path();
                let store = SqliteLogStore::open(&path)
                    .await
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let id = store
                    .node_id_or_insert(fresh_id)
                    .await
                    .map_err(|e| e.to_string())?;
                let restored = store.has_vote().await.map_err(|e| e.to_string())?;
                let raft = Raft::new(id, config, network, store, catalog.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                (id, raft, restored)
            }
        };
        Ok(Control {
            id,
            raft,
            catalog,
            restored,
            env: env.clone(),
        })
    }

    /// Commits `cmd` through the leader, wherever it is; retries while no leader answers.
    /// A command the catalog rejects is reported, not retried.
    async fn propose(&self, cmd: CatalogCommand) -> Result<(), String> {
        loop {
            let leader = match self.raft.client_write(cmd.clone()).await {
                Ok(resp) => return resp.data.map_err(|e| e.to_string()),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => f.leader_node,
                Err(e) => return Err(e.to_string()),
            };
            if let Some(leader) = leader {
                let mut peer = PeerClient::to_addr(self.env.clone(), leader.addr);
                if let Ok(Ok(resp)) = peer.write(cmd.clone(), RPC_TIMEOUT).await {
                    return resp.data.map_err(|e| e.to_string());
                }
            }
            tokio::time::sleep(RETRY_BACKOFF).await;
        }
    }

    /// Joins through `peers` (`host:port`), following the leader, until it is accepted.
    async fn join(&self, me: &BasicNode, peers: &[String]) {
        let mut targets: Vec<String> = peers.to_vec();
        let mut k = 0usize;
        loop {
            let addr = targets[k % targets.len()].clone();
            let mut peer = PeerClient::to_addr(self.env.clone(), addr);
            match peer.join(self.id, me.clone(), RPC_TIMEOUT * 5).await {
                Ok(Ok(())) => return,
                Ok(Err(JoinError::ForwardToLeader { leader: Some(l) })) => {
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
                Ok(Err(e)) => tracing::debug!(error = %e, "join attempt failed"),
                Err(e) => tracing::debug!(error = %e, "join attempt failed"),
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
            .map_or("", |u| u.trim_start_matches("ws://")),
    );
    let work = async {
        if control.restored {
            // A member already: its log says so; the cluster catches it up.
        } else if reg.peers.is_empty() {
            let members = BTreeMap::from([(control.id, me.clone())]);
            // Fails harmlessly when already initialized.
            let _ = control.raft.initialize(members).await;
        } else {
            control.join(&me, &reg.peers).await;
        }
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
        _ = super::stopping(&mut shutdown) => {}
        done = work => if done {
            tracing::info!(id = control.id, "registered in the cluster catalog");
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
    let state = control.catalog.state();
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
}

/// A member record for this node.
pub(crate) fn member(
    id: u64,
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
