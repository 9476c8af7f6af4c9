//! Convergence (liveness once the network is good again): within the scenario's bound
//! after every fault is healed (links repaired, crashed nodes restarted), every member's
//! replica has applied the same log to the same catalog.

use crate::cluster::Observations;

pub fn check(obs: &Observations) -> Result<(), String> {
    match obs.converged_at {
        Some(_) => Ok(()),
        None => Err(format!(
            "the replicas of {:?} did not agree within the bound after healing at {:?}",
            obs.final_members, obs.healed_at
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn replicas_that_never_agreed_fail() {
        let mut obs = Observations {
            final_members: vec!["n1".into(), "n2".into()],
            healed_at: Duration::from_secs(5),
            converged_at: Some(Duration::from_secs(7)),
            ..Observations::default()
        };
        assert!(check(&obs).is_ok());
        obs.converged_at = None;
        let err = check(&obs).unwrap_err();
        assert!(err.contains("did not agree") && err.contains("n2"), "{err}");
    }
}
