//! Log matching and state-machine safety (Raft §5.3–5.4, Figure 3): if two logs contain an
//! entry with the same index and term, the logs are identical up to it; and no two servers
//! apply different entries at the same index. It holds per Raft group: the catalog's and each
//! queue's. So, group by group, every run of every replica (what one state machine applied
//! in a row, with a digest of each entry's payload) must be a piece of one history.

use std::collections::BTreeMap;

use mpreg::control::raft::Applied;

use crate::cluster::Observations;

pub fn check(obs: &Observations) -> Result<(), String> {
    // Per group, the one history as far as any replica applied it: index → (entry, who).
    let mut histories: BTreeMap<i64, BTreeMap<u64, (Applied, String)>> = BTreeMap::new();
    let mut runs_of: BTreeMap<&str, usize> = BTreeMap::new();
    for (host, run) in &obs.applied {
        let n = runs_of.entry(host).or_default();
        *n += 1;
        let group = match run.group {
            0 => "the catalog".to_string(),
            g => format!("queue group {g}"),
        };
        let who = format!("{host} (run {n})");
        // A replica applies consecutive indices (after a snapshot, from the snapshot on).
        for pair in run.entries.windows(2) {
            if pair[1].log_id.index != pair[0].log_id.index + 1 {
                return Err(format!(
                    "in {group}, {who} applied index {} right after {}",
                    pair[1].log_id.index, pair[0].log_id.index
                ));
            }
        }
        let history = histories.entry(run.group).or_default();
        for a in &run.entries {
            match history.get(&a.log_id.index) {
                Some((seen, by)) if seen != a => {
                    return Err(format!(
                        "in {group} at index {}: {by} applied {} (digest {:016x}) but {who} \
                         applied {} (digest {:016x})",
                        a.log_id.index, seen.log_id, seen.digest, a.log_id, a.digest
                    ));
                }
                Some(_) => {}
                None => {
                    history.insert(a.log_id.index, (*a, who.clone()));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::testing::{member, queue, replica};

    #[test]
    fn a_different_entry_at_an_index_or_a_skipped_index_fails() {
        let mut obs = Observations::default();
        obs.applied.extend([
            replica(
                "n1",
                0,
                vec![
                    (1, 1, Some(member())),
                    (2, 1, Some(queue("q-a"))),
                    (3, 2, None),
                    (4, 2, Some(queue("q-b"))),
                ],
            ),
            // A prefix of it, and a run that resumed after a snapshot at index 2.
            replica(
                "n2",
                0,
                vec![(1, 1, Some(member())), (2, 1, Some(queue("q-a")))],
            ),
            replica("n2", 0, vec![(3, 2, None), (4, 2, Some(queue("q-b")))]),
            // Another group's index 4 is another entry, and that is fine.
            replica("n3", 7, vec![(4, 1, Some(queue("q-c")))]),
        ]);
        assert!(check(&obs).is_ok());

        // Same index and term, another payload (q-c instead of q-b).
        let mut diverged = Observations::default();
        diverged.applied.extend([
            replica("n1", 7, vec![(3, 2, None), (4, 2, Some(queue("q-b")))]),
            replica("n3", 7, vec![(3, 2, None), (4, 2, Some(queue("q-c")))]),
        ]);
        let err = check(&diverged).unwrap_err();
        assert!(
            err.contains("in queue group 7 at index 4") && err.contains("n3 (run 1)"),
            "{err}"
        );

        // Same payload, another term: a different entry too.
        let mut other_term = Observations::default();
        other_term.applied.extend([
            replica("n1", 0, vec![(4, 2, Some(queue("q-b")))]),
            replica("n2", 0, vec![(4, 3, Some(queue("q-b")))]),
        ]);
        assert!(
            check(&other_term)
                .unwrap_err()
                .contains("in the catalog at index 4")
        );

        // A replica that skipped an index.
        let mut skipped = Observations::default();
        skipped
            .applied
            .push(replica("n1", 0, vec![(1, 1, Some(member())), (3, 2, None)]));
        let err = check(&skipped).unwrap_err();
        assert!(err.contains("applied index 3 right after 1"), "{err}");
    }
}
