//! Committed entries are never lost (Raft's leader completeness, §5.4, seen from a client):
//! every write a client saw acknowledged is in the converged catalog. The oracle is
//! client-side and honest about uncertainty: a write that timed out is "unknown" and may be
//! present or absent; only acknowledged ones must be present. (Queues are never deleted by
//! the workload, and a member leaving keeps its queues, so nothing else removes them.)

use std::collections::BTreeSet;

use crate::cluster::{Observations, Outcome};

pub fn check(obs: &Observations) -> Result<(), String> {
    let Some(host) = obs.final_members.first() else {
        return Err("no node is left to hold the catalog".into());
    };
    let Some(boot) = obs.boots.iter().rev().find(|b| &b.host == host) else {
        return Err(format!("{host} never booted"));
    };
    let present: BTreeSet<String> = boot
        .machine
        .state()
        .catalog
        .queues()
        .map(|q| q.name.clone())
        .collect();
    let lost: Vec<&str> = obs
        .writes
        .iter()
        .filter(|w| w.outcome == Outcome::Acknowledged && !present.contains(&w.queue))
        .map(|w| w.queue.as_str())
        .collect();
    if lost.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "acknowledged writes missing from {host}'s catalog: {lost:?}"
        ))
    }
}
