//! Disruptive servers (Raft §6): a server outside the configuration that keeps campaigning
//! must not disrupt the cluster. In a run with a campaign (`Action::Campaign`), no vote it
//! asked for was granted, it did reach the nodes, and no leader was elected in a term
//! above the one in force when it began: the leader kept leading.

use crate::cluster::Observations;

pub fn check(obs: &Observations) -> Result<(), String> {
    let Some(c) = &obs.campaign else {
        return Ok(());
    };
    if c.answered == 0 {
        return Err(format!(
            "the campaign reached no node ({} requests): nothing was tested",
            c.requests
        ));
    }
    if c.granted > 0 {
        return Err(format!(
            "{} of {} votes were granted to a removed member",
            c.granted, c.answered
        ));
    }
    match obs.leaders.keys().max() {
        Some(&term) if term > c.start_term => Err(format!(
            "a leader was elected in term {term}, after the campaign began in term {} \
             (it asked up to term {})",
            c.start_term, c.highest_term_asked
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Campaign;

    #[test]
    fn a_granted_vote_or_a_new_term_fails_and_an_untested_campaign_fails_too() {
        let mut obs = Observations::default();
        assert!(check(&obs).is_ok(), "no campaign, nothing to check");
        obs.leaders.entry(2).or_default().insert("n1".into());
        let campaign = Campaign {
            start_term: 2,
            requests: 30,
            answered: 30,
            granted: 0,
            highest_term_asked: 102,
        };
        obs.campaign = Some(campaign.clone());
        assert!(check(&obs).is_ok());
        obs.leaders.entry(12).or_default().insert("n2".into());
        assert!(check(&obs).is_err(), "the leader changed");
        obs.leaders.remove(&12);
        obs.campaign = Some(Campaign {
            granted: 1,
            ..campaign.clone()
        });
        assert!(check(&obs).is_err(), "a vote was granted");
        obs.campaign = Some(Campaign {
            answered: 0,
            ..campaign
        });
        assert!(check(&obs).is_err(), "nothing answered");
    }
}
