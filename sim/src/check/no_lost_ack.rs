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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::testing::{boot, member, queue};
    use crate::cluster::WriteRecord;
    use std::time::Duration;

    fn write(queue: &str, outcome: Outcome) -> WriteRecord {
        WriteRecord {
            client: "c0".into(),
            queue: queue.into(),
            started: Duration::ZERO,
            finished: Duration::from_millis(20),
            outcome,
        }
    }

    #[test]
    fn an_acknowledged_write_missing_from_the_final_catalog_fails() {
        let mut obs = Observations::default();
        assert!(check(&obs).is_err(), "no final member holds the catalog");
        obs.final_members = vec!["n2".into(), "n3".into()];
        obs.writes.extend([
            write("q-a", Outcome::Acknowledged),
            write("q-b", Outcome::Unknown), // may be absent
            write("q-c", Outcome::Rejected),
        ]);
        // n2's first boot never saw q-a; its last boot, the one that counts, did.
        obs.boots.push(boot("n2", 1, vec![(1, 1, Some(member()))]));
        obs.boots.push(boot(
            "n2",
            2,
            vec![(1, 1, Some(member())), (2, 1, Some(queue("q-a")))],
        ));
        assert!(check(&obs).is_ok());
        // A later boot of n2 that lost q-a.
        obs.boots.push(boot(
            "n2",
            3,
            vec![(1, 1, Some(member())), (2, 2, Some(queue("q-b")))],
        ));
        let err = check(&obs).unwrap_err();
        assert!(err.contains("q-a") && err.contains("n2"), "{err}");
    }
}
