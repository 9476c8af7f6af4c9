//! Which vote requests a node refuses before openraft sees them: Raft's rule against
//! disruptive servers (§6), completed for the leader.
//!
//! A server removed from the configuration (or an outsider holding the secret) stops
//! hearing heartbeats, times out and campaigns at ever higher terms; each request that
//! reaches the leader would make it step down. Raft §6: servers disregard vote requests
//! while they believe a current leader exists. openraft 0.9 does this on followers (its
//! *leader lease*: a follower that heard from its leader within `election_timeout_max`
//! refuses every vote request), and pre-vote is not in 0.9, but its leader only refuses by
//! log: once its lease from its own election has run out, a request with a higher term and
//! a log that looks as long (a forged one) deposes it. So this node also refuses:
//!
//! * a candidate that is not a voter of its effective membership (a removed member, or a
//!   stranger): nobody outside the configuration can be elected anyway, so refusing costs
//!   no liveness;
//! * any candidate while it leads with a quorum that acknowledged it within the minimum
//!   election timeout (the leader's side of §6's rule: it is the current leader it knows).
//!
//! A node that knows no members yet (a queue group's replica waiting for its group's
//! first leader, `queue::groups`) refuses nothing: it has no leader to protect, and its
//! vote is how the group's first leader is elected.
//!
//! Refusing a vote is always safe (safety never depends on a vote being granted); it only
//! delays an election, and both rules lapse as soon as the leader loses its quorum.

/// What the rule looks at, from the node's Raft metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VoteView {
    /// The candidate is a voter of this node's effective membership.
    pub candidate_is_voter: bool,
    /// This node's membership has no voter at all (not initialized).
    pub knows_no_members: bool,
    /// This node leads.
    pub leading: bool,
    /// Since a quorum last acknowledged this leader, in ms (`None`: never, or not leader).
    pub quorum_ack_ms: Option<u64>,
    /// The minimum election timeout, in ms.
    pub election_timeout_min_ms: u64,
}

/// Why the request is refused, or `None` to let openraft decide.
pub(crate) fn refusal(v: VoteView) -> Option<&'static str> {
    if v.knows_no_members {
        None
    } else if !v.candidate_is_voter {
        Some("the candidate is not a voter of this cluster")
    } else if v.leading
        && v.quorum_ack_ms
            .is_some_and(|ms| ms < v.election_timeout_min_ms)
    {
        Some("this node leads with a live quorum")
    } else {
        None
    }
}

/// Answers `req` on `raft` (the catalog's or a queue group's), refusing it by [`refusal`]
/// before openraft sees it.
pub(crate) async fn guarded_vote<C>(
    raft: &openraft::Raft<C>,
    req: openraft::raft::VoteRequest<u64>,
) -> Result<openraft::raft::VoteResponse<u64>, openraft::error::RaftError<u64>>
where
    C: openraft::RaftTypeConfig<NodeId = u64>,
{
    let refused = {
        let m = raft.metrics().borrow().clone();
        let candidate = req.vote.leader_id().voted_for();
        let view = VoteView {
            candidate_is_voter: candidate
                .is_some_and(|c| m.membership_config.membership().voter_ids().any(|v| v == c)),
            knows_no_members: m
                .membership_config
                .membership()
                .voter_ids()
                .next()
                .is_none(),
            leading: m.state == openraft::ServerState::Leader,
            quorum_ack_ms: m.millis_since_quorum_ack,
            election_timeout_min_ms: raft.config().election_timeout_min,
        };
        refusal(view).map(|why| (why, m.vote, m.last_applied))
    };
    match refused {
        Some((why, vote, last)) => {
            tracing::debug!(%why, candidate = ?req.vote, "refused a vote request");
            Ok(openraft::raft::VoteResponse::new(vote, last, false))
        }
        None => raft.vote(req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn votes_are_refused_from_strangers_and_while_the_leader_has_its_quorum() {
        let view = |voter, leading, ack| VoteView {
            candidate_is_voter: voter,
            knows_no_members: false,
            leading,
            quorum_ack_ms: ack,
            election_timeout_min_ms: 1000,
        };
        // (candidate is a voter, this node leads, quorum ack age) -> refused?
        let table = [
            (false, false, None, true),      // a removed member, at a follower
            (false, true, Some(10), true),   // a removed member, at the leader
            (true, true, Some(10), true),    // a voter, while the leader is fresh
            (true, true, Some(999), true),   // still within the election timeout
            (true, true, Some(1000), false), // the leader lost its quorum: elect
            (true, true, None, false),       // a leader that never heard a quorum
            (true, false, None, false),      // followers: openraft's lease decides
        ];
        let blank = VoteView {
            candidate_is_voter: false,
            knows_no_members: true,
            leading: false,
            quorum_ack_ms: None,
            election_timeout_min_ms: 1000,
        };
        assert_eq!(
            refusal(blank),
            None,
            "a node that knows no members lets openraft decide"
        );
        for (i, (voter, leading, ack, refused)) in table.into_iter().enumerate() {
            assert_eq!(
                refusal(view(voter, leading, ack)).is_some(),
                refused,
                "row {i}"
            );
        }
    }
}
