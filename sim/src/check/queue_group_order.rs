//! Per-group order holds: within a message group the messages are delivered in the order
//! they were stored, one at a time (SQS FIFO). The producer sends each message after the
//! previous one was answered, so for acknowledged `j < k` of one group, `j` was stored
//! first, and `k` must not be delivered before `j` was: `k`'s first delivery may not be
//! answered before `j`'s first delivery was asked for. (Redeliveries of `j` after `k` are
//! allowed: an ack lost with a crash of the owner gives `j` back.)

use std::collections::BTreeMap;
use std::time::Duration;

use crate::cluster::Observations;

pub fn check(obs: &Observations) -> Result<(), String> {
    let q = &obs.queue;
    // First delivery of each message: (asked, got).
    let mut first: BTreeMap<u64, (Duration, Duration)> = BTreeMap::new();
    for d in &q.deliveries {
        let e = first.entry(d.k).or_insert((d.asked, d.got));
        if d.got < e.1 {
            *e = (d.asked, d.got);
        }
    }
    let mut groups: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for s in q.sends.iter().filter(|s| s.acked) {
        groups.entry(&s.group).or_default().push(s.k);
    }
    for (group, mut ks) in groups {
        ks.sort_unstable();
        for pair in ks.windows(2) {
            let (j, k) = (pair[0], pair[1]);
            if let (Some(fj), Some(fk)) = (first.get(&j), first.get(&k))
                && fk.1 < fj.0
            {
                return Err(format!(
                    "group {group}: message {k} was delivered (answered at {:?}) before \
                     message {j}, stored before it (first asked for at {:?})",
                    fk.1, fj.0
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::queue_no_loss::tests::{delivery, send};

    #[test]
    fn a_later_message_of_a_group_delivered_first_fails() {
        let mut obs = Observations::default();
        // 0 and 3 are group g0; 1 is g1.
        obs.queue.sends = vec![send(0, true), send(1, true), send(3, true)];
        obs.queue.deliveries = vec![
            delivery("qc0", 1, 1, 0, 5),
            delivery("qc0", 0, 1, 10, 15),
            delivery("qc1", 3, 1, 20, 25),
            // 0 again after 3: a lost ack, allowed.
            delivery("qc1", 0, 2, 30, 35),
        ];
        assert!(check(&obs).is_ok());
        obs.queue.deliveries[2] = delivery("qc1", 3, 1, 1, 4);
        let e = check(&obs).unwrap_err();
        assert!(e.contains("group g0") && e.contains("message 3"), "{e}");
    }
}
