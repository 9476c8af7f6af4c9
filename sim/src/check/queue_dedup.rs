//! A deduplication id is delivered at most once within its window: the producer sends
//! message `k` again under id `d{k}` whenever an answer did not come (the first attempt may
//! have been stored, and the owner may have crashed since), and every attempt lies within
//! the queue's window (10 minutes), so all deliveries of `k` are of one message id.

use std::collections::{BTreeMap, BTreeSet};

use crate::cluster::Observations;

pub fn check(obs: &Observations) -> Result<(), String> {
    let mut ids: BTreeMap<u64, BTreeSet<&str>> = BTreeMap::new();
    for d in &obs.queue.deliveries {
        ids.entry(d.k).or_default().insert(&d.message_id);
    }
    for (k, ids) in ids {
        if ids.len() > 1 {
            return Err(format!(
                "dedup id d{k} was delivered as {} messages: {ids:?}",
                ids.len()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::queue_no_loss::tests::delivery;

    #[test]
    fn a_dedup_id_delivered_as_two_messages_fails() {
        let mut obs = Observations::default();
        obs.queue.deliveries = vec![
            delivery("qc0", 1, 1, 0, 5),
            // The same message again (a redelivery): fine.
            delivery("qc1", 1, 2, 2000, 2005),
        ];
        assert!(check(&obs).is_ok());
        let mut twice = delivery("qc1", 1, 1, 3000, 3005);
        twice.message_id = "m1-again".into();
        obs.queue.deliveries.push(twice);
        assert!(check(&obs).unwrap_err().contains("d1"));
    }
}
