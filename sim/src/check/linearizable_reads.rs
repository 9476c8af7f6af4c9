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
