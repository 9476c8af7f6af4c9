//! Log matching and state-machine safety (Raft §5.3–5.4, Figure 3): if two logs contain an
//! entry with the same index and term, the logs are identical up to it; and no two servers
//! apply different entries at the same index. So every replica's applied history (each boot
//! of each node, with a digest of each entry's payload) must be a prefix of one history.

use std::collections::BTreeMap;

use mpreg::control::raft::Applied;

use crate::cluster::Observations;

pub fn check(obs: &Observations) -> Result<(), String> {
    // The one history, as far as any replica applied it: index → (entry, who applied it).
    let mut history: BTreeMap<u64, (Applied, String)> = BTreeMap::new();
    for boot in &obs.boots {
        let who = format!("{} (boot {})", boot.host, boot.boot);
        let applied = boot.machine.history();
        // A replica applies consecutive indices (after a snapshot, from the snapshot on).
        for pair in applied.windows(2) {
            if pair[1].log_id.index != pair[0].log_id.index + 1 {
                return Err(format!(
                    "{who} applied index {} right after {}",
                    pair[1].log_id.index, pair[0].log_id.index
                ));
            }
        }
        for a in applied {
            match history.get(&a.log_id.index) {
                Some((seen, by)) if seen != &a => {
                    return Err(format!(
                        "at index {}: {by} applied {} (digest {:016x}) but {who} applied {} \
                         (digest {:016x})",
                        a.log_id.index, seen.log_id, seen.digest, a.log_id, a.digest
                    ));
                }
                Some(_) => {}
                None => {
                    history.insert(a.log_id.index, (a, who.clone()));
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
        obs.boots.extend([
            replica(
                "n1",
                1,
                vec![
                    (1, 1, Some(member())),
                    (2, 1, Some(queue("q-a"))),
                    (3, 2, None),
                    (4, 2, Some(queue("q-b"))),
                ],
            ),
            // A prefix of it, and a boot that resumed after a snapshot at index 2.
            replica(
                "n2",
                1,
                vec![(1, 1, Some(member())), (2, 1, Some(queue("q-a")))],
            ),
            replica("n2", 2, vec![(3, 2, None), (4, 2, Some(queue("q-b")))]),
        ]);
        assert!(check(&obs).is_ok());

        // Same index and term, another payload (q-c instead of q-b).
        let mut diverged = Observations::default();
        diverged.boots.extend([
            replica("n1", 1, vec![(3, 2, None), (4, 2, Some(queue("q-b")))]),
            replica("n3", 1, vec![(3, 2, None), (4, 2, Some(queue("q-c")))]),
        ]);
        let err = check(&diverged).unwrap_err();
        assert!(
            err.contains("at index 4") && err.contains("n3 (boot 1)"),
            "{err}"
        );

        // Same payload, another term: a different entry too.
        let mut other_term = Observations::default();
        other_term.boots.extend([
            replica("n1", 1, vec![(4, 2, Some(queue("q-b")))]),
            replica("n2", 1, vec![(4, 3, Some(queue("q-b")))]),
        ]);
        assert!(check(&other_term).unwrap_err().contains("at index 4"));

        // A replica that skipped an index.
        let mut skipped = Observations::default();
        skipped
            .boots
            .push(replica("n1", 1, vec![(1, 1, Some(member())), (3, 2, None)]));
        let err = check(&skipped).unwrap_err();
        assert!(err.contains("applied index 3 right after 1"), "{err}");
    }
}
