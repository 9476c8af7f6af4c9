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
