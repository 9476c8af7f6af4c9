//! The leader's membership supervisor: while the node runs and leads, it probes every
//! member, applies what `membership::next_change` decides, and keeps the catalog's member
//! roles (and departures) in step with the Raft membership.

use std::collections::BTreeMap;

use openraft::{BasicNode, ServerState};
use tokio::sync::watch;
use tokio::time::Instant;

use super::Raft;
use super::membership::{Change, PROBE_EVERY, PROBE_TIMEOUT, next_change, roles};
use super::service::PeerService;
use super::store::CatalogStateMachine;
use crate::control::catalog::{CatalogCommand, Role};

/// Runs while the node runs: when it leads, probes every member, applies [`next_change`],
/// and keeps the catalog's member roles (and departures) in step with the membership.
pub async fn supervise(
    service: PeerService,
    catalog: CatalogStateMachine,
    mut stop: watch::Receiver<bool>,
) {
    let me = service.raft.metrics().borrow().id;
    let mut last_seen: BTreeMap<u64, Instant> = BTreeMap::new();
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(PROBE_EVERY) => {}
        }
        let (state, nodes) = {
            let metrics = service.raft.metrics();
            let m = metrics.borrow();
            let nodes: BTreeMap<u64, BasicNode> = m
                .membership_config
                .membership()
                .nodes()
                .map(|(id, n)| (*id, n.clone()))
                .collect();
            (m.state, nodes)
        };
        if state != ServerState::Leader {
            last_seen.clear();
            continue;
        }
        last_seen.retain(|id, _| nodes.contains_key(id));
        let start = service.env.clock.now();
        for (id, node) in nodes.iter().filter(|(id, _)| **id != me) {
            // On the link Raft shares with the data plane (one per peer pair): it names the
            // member, so another node restarted at its address refuses it; a probe that
            // misses its deadline breaks it, and the next call reconnects.
            let mut peer = service.network.peer(*id, &node.addr);
            match peer.ping(PROBE_TIMEOUT).await {
                Ok(()) => {
                    last_seen.insert(*id, service.env.clock.now());
                }
                Err(_) => {
                    // A first miss counts from now.
                    last_seen.entry(*id).or_insert(start);
                }
            }
        }
        let (voters, learners) = roles(&service.raft);
        if let Some(Change::Voters(next)) = next_change(
            service.policy,
            me,
            &voters,
            &learners,
            &last_seen,
            service.env.clock.now(),
        ) {
            tracing::info!(?voters, ?next, "changing the voters");
            if let Err(e) = service.raft.change_membership(next, true).await {
                tracing::debug!(error = %e, "membership change failed");
            }
        }
        sync_catalog_roles(&service.raft, &catalog).await;
    }
}

/// Makes the catalog's member records agree with the Raft membership: roles follow it, and
/// members that left it leave the catalog. Idempotent; runs every round on the leader.
async fn sync_catalog_roles(raft: &Raft, catalog: &CatalogStateMachine) {
    let (voters, learners) = roles(raft);
    let fixes: Vec<CatalogCommand> = catalog.read(|state| {
        state
            .catalog
            .members()
            .filter_map(|m| {
                let role = if voters.contains(&m.id.0) {
                    Role::Voter
                } else if learners.contains(&m.id.0) {
                    Role::Learner
                } else {
                    return Some(CatalogCommand::RemoveMember(m.id));
                };
                (m.role != role).then_some(CatalogCommand::SetRole { id: m.id, role })
            })
            .collect()
    });
    for cmd in fixes {
        if let Err(e) = raft.client_write(cmd).await {
            tracing::debug!(error = %e, "catalog role update failed");
            return;
        }
    }
}
