//! Who votes: the leader's side of joins and leaves, and what its supervisor (`supervisor`)
//! decides to change so as to keep the number of voters up and replace voters that stay
//! down.
//!
//! Up to `max_voters` members vote; the rest are learners that hold the whole catalog and
//! serve reads but do not count towards a quorum (so a big cluster does not pay for big
//! quorums). Every decision here is made by the current leader and committed through Raft.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use tokio::time::Instant;

use super::Raft;
use super::network::MembershipError;

/// How the leader shapes the membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MembershipPolicy {
    /// Most members that vote (`--voters`); at least 1.
    pub max_voters: usize,
    /// A voter unreachable this long is demoted to learner and a live learner promoted.
    pub replace_voter_after: Duration,
}

impl MembershipPolicy {
    /// How a node's settings (`voters`, `replace_voter_after_ms`) shape the membership
    /// when it leads.
    pub fn from_settings(s: &crate::config::Settings) -> MembershipPolicy {
        MembershipPolicy {
            max_voters: s.voters,
            replace_voter_after: Duration::from_millis(s.replace_voter_after_ms),
        }
    }
}

impl Default for MembershipPolicy {
    fn default() -> MembershipPolicy {
        MembershipPolicy {
            max_voters: 3,
            replace_voter_after: Duration::from_secs(30),
        }
    }
}

/// How often the supervisor probes the members, and the deadline of one probe.
pub(super) const PROBE_EVERY: Duration = Duration::from_millis(500);
pub(super) const PROBE_TIMEOUT: Duration = Duration::from_millis(400);

type ChangeError = RaftError<u64, ClientWriteError<u64, BasicNode>>;

fn membership_error(e: ChangeError) -> MembershipError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            MembershipError::ForwardToLeader {
                leader_id: f.leader_id,
                leader: f.leader_node,
            }
        }
        other => MembershipError::Failed(other.to_string()),
    }
}

/// The voters and learners of the effective membership.
pub(super) fn roles(raft: &Raft) -> (BTreeSet<u64>, BTreeSet<u64>) {
    let metrics = raft.metrics();
    let m = metrics.borrow();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let learners: BTreeSet<u64> = membership.learner_ids().collect();
    (voters, learners)
}

/// Adds `id` as a learner (returns once it has caught up), then makes it a voter if there
/// is room.
pub(crate) async fn join(
    raft: &Raft,
    policy: MembershipPolicy,
    id: u64,
    node: BasicNode,
) -> Result<(), MembershipError> {
    if roles(raft).0.is_empty() {
        // Nodes that all list each other as peers wait for each other forever: say so
        // (openraft would answer "not the leader; the leader is None").
        return Err(MembershipError::Failed(
            "this node is not in a cluster yet (it is joining one itself): start one node \
             without peers to bootstrap the cluster, then point the others at it"
                .into(),
        ));
    }
    raft.add_learner(id, node, true)
        .await
        .map_err(membership_error)?;
    let (voters, _) = roles(raft);
    if voters.len() < policy.max_voters.max(1) && !voters.contains(&id) {
        let mut next = voters;
        next.insert(id);
        raft.change_membership(next, true)
            .await
            .map_err(membership_error)?;
    }
    Ok(())
}

/// Removes `id` from the membership; a learner is promoted in a departed voter's place.
pub async fn leave(raft: &Raft, policy: MembershipPolicy, id: u64) -> Result<(), MembershipError> {
    let (voters, learners) = roles(raft);
    if voters.contains(&id) {
        let mut next = voters.clone();
        next.remove(&id);
        // Keep the number of voters: promote the lowest-numbered learner, if any.
        if next.len() < policy.max_voters
            && let Some(&l) = learners.iter().find(|l| **l != id)
        {
            next.insert(l);
        }
        if next.is_empty() {
            // The only member: the cluster ends with it; there is nobody to tell.
            return Ok(());
        }
        raft.change_membership(next, false)
            .await
            .map_err(membership_error)?;
    } else if learners.contains(&id) {
        raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
            .await
            .map_err(membership_error)?;
    } else {
        // Not a member (any more): leaving is done. Only the leader can know that.
        read_index(raft).await?;
    }
    // Its catalog entries go in the same leave: once the leaving node hears "done", no
    // replica that has caught up routes to it. (The supervisor would drop them on its next
    // round, racing the node's own shutdown: calls sent to it meanwhile were lost.)
    let gone = crate::control::CatalogCommand::RemoveMember(crate::control::NodeId(id));
    match raft.client_write(gone).await {
        // `Err` inside: it was not in the catalog (removed already): nothing to drop.
        Ok(_) => Ok(()),
        Err(e) => Err(membership_error(e)),
    }
}

/// The leader's read index (`ensure_linearizable`: it confirms its leadership with a
/// quorum); on a follower, where the leader is.
pub(crate) async fn read_index(
    raft: &Raft,
) -> Result<Option<openraft::LogId<u64>>, MembershipError> {
    raft.ensure_linearizable().await.map_err(|e| match e {
        RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f)) => {
            MembershipError::ForwardToLeader {
                leader_id: f.leader_id,
                leader: f.leader_node,
            }
        }
        other => MembershipError::Failed(other.to_string()),
    })
}

/// What the supervisor decides to change in one round (pure, so it is tested alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// The new voter set; voters left out stay on as learners.
    Voters(BTreeSet<u64>),
}

/// Decides the next membership change from the current voters and learners and the time
/// each member last answered (`None`: never). `me` is the leader, always alive.
pub(crate) fn next_change(
    policy: MembershipPolicy,
    me: u64,
    voters: &BTreeSet<u64>,
    learners: &BTreeSet<u64>,
    last_seen: &BTreeMap<u64, Instant>,
    now: Instant,
) -> Option<Change> {
    let alive = |id: &u64, within: Duration| {
        *id == me
            || last_seen
                .get(id)
                .is_some_and(|t| now.saturating_duration_since(*t) <= within)
    };
    // Learners that answered the last probes are fit to vote.
    let fit: Vec<u64> = learners
        .iter()
        .copied()
        .filter(|l| alive(l, PROBE_EVERY * 3))
        .collect();
    let max = policy.max_voters.max(1);
    // Room for more voters (one left, or the cluster grew): promote one.
    if voters.len() < max
        && let Some(&l) = fit.first()
    {
        let mut next = voters.clone();
        next.insert(l);
        return Some(Change::Voters(next));
    }
    // A voter down for too long: swap it with a fit learner (one swap per round).
    let down = voters
        .iter()
        .find(|v| !alive(v, policy.replace_voter_after));
    if let (Some(&down), Some(&l)) = (down, fit.first()) {
        let mut next = voters.clone();
        next.remove(&down);
        next.insert(l);
        return Some(Change::Voters(next));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    fn policy() -> MembershipPolicy {
        MembershipPolicy {
            max_voters: 3,
            replace_voter_after: Duration::from_secs(10),
        }
    }

    #[test]
    fn a_live_learner_fills_a_free_voter_seat() {
        let now = Instant::now();
        let seen = BTreeMap::from([(2, now), (4, now)]);
        let change = next_change(policy(), 1, &set(&[1, 2]), &set(&[4]), &seen, now);
        assert_eq!(change, Some(Change::Voters(set(&[1, 2, 4]))));
    }

    #[test]
    fn a_silent_learner_is_not_promoted() {
        let now = Instant::now();
        let seen = BTreeMap::from([(2, now)]);
        assert_eq!(
            next_change(policy(), 1, &set(&[1, 2]), &set(&[4]), &seen, now),
            None
        );
    }

    #[test]
    fn a_voter_down_too_long_is_swapped_for_a_live_learner() {
        let start = Instant::now();
        let now = start + Duration::from_secs(11);
        let seen = BTreeMap::from([(2, now), (3, start), (4, now)]);
        let change = next_change(policy(), 1, &set(&[1, 2, 3]), &set(&[4]), &seen, now);
        assert_eq!(change, Some(Change::Voters(set(&[1, 2, 4]))));
        // Not yet down for long enough: nothing changes.
        let early = start + Duration::from_secs(9);
        let seen = BTreeMap::from([(2, early), (3, start), (4, early)]);
        assert_eq!(
            next_change(policy(), 1, &set(&[1, 2, 3]), &set(&[4]), &seen, early),
            None
        );
    }

    #[test]
    fn no_learner_means_no_swap() {
        let start = Instant::now();
        let now = start + Duration::from_secs(60);
        let seen = BTreeMap::from([(2, now), (3, start)]);
        assert_eq!(
            next_change(policy(), 1, &set(&[1, 2, 3]), &set(&[]), &seen, now),
            None
        );
    }

    #[test]
    fn full_voter_seats_leave_learners_learning() {
        let now = Instant::now();
        let seen = BTreeMap::from([(2, now), (3, now), (4, now)]);
        assert_eq!(
            next_change(policy(), 1, &set(&[1, 2, 3]), &set(&[4]), &seen, now),
            None
        );
    }
}
