//! Linearizable reads (`catalog_query(linearizable=true)`, openraft's `ensure_linearizable`
//! read index): a read that succeeded reflects every write acknowledged before the read
//! began, whichever node it asked. (Writes still in flight when it began may or may not be
//! visible; failed reads promise nothing.)

use crate::cluster::{Observations, Outcome};

pub fn check(obs: &Observations) -> Result<(), String> {
    for read in &obs.reads {
        let Ok(seen) = &read.result else { continue };
        if let Some(missed) = obs.writes.iter().find(|w| {
            w.outcome == Outcome::Acknowledged
                && w.finished < read.started
                && !seen.contains(&w.queue)
        }) {
            return Err(format!(
                "{} read via {} at {:?} missed {} (acknowledged at {:?})",
                read.client, read.node, read.started, missed.queue, missed.finished
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ReadRecord, WriteRecord};
    use std::collections::BTreeSet;
    use std::time::Duration;

    fn write(queue: &str, started: u64, finished: u64, outcome: Outcome) -> WriteRecord {
        WriteRecord {
            client: "c0".into(),
            queue: queue.into(),
            started: Duration::from_millis(started),
            finished: Duration::from_millis(finished),
            outcome,
        }
    }

    fn read(started: u64, result: Result<&[&str], &str>) -> ReadRecord {
        ReadRecord {
            client: "c1".into(),
            node: "n2".into(),
            started: Duration::from_millis(started),
            finished: Duration::from_millis(started + 10),
            result: result
                .map(|qs| qs.iter().map(|q| q.to_string()).collect::<BTreeSet<_>>())
                .map_err(str::to_owned),
        }
    }

    #[test]
    fn a_read_missing_an_earlier_acknowledged_write_fails() {
        let mut obs = Observations::default();
        obs.writes.extend([
            write("q-a", 0, 100, Outcome::Acknowledged),
            // Unknown, or still in flight when the read began: either way is allowed.
            write("q-b", 0, 100, Outcome::Unknown),
            write("q-c", 150, 300, Outcome::Acknowledged),
        ]);
        obs.reads.extend([
            read(200, Ok(&["q-a"])),
            read(210, Err("timed out")), // a failed read promises nothing
        ]);
        assert!(check(&obs).is_ok());
        // A read that began after q-a was acknowledged and did not see it.
        obs.reads.push(read(400, Ok(&["q-c"])));
        let err = check(&obs).unwrap_err();
        assert!(err.contains("missed q-a"), "{err}");
    }
}
