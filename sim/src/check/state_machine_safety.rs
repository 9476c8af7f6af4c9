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
