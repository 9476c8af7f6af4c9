//! Every acknowledged send is delivered: a send a node answered is stored on the queue's
//! owner (synced to its disk before the answer), so it survives the owner's crashes and
//! reaches a consumer by the end of the drain after healing. (The workload's queue has no
//! dead-letter queue and no TTL: delivered is the only way out.) The drain itself must
//! finish: a queue that never empties fails too.

use std::collections::BTreeSet;

use crate::cluster::Observations;

pub fn check(obs: &Observations) -> Result<(), String> {
    let q = &obs.queue;
    if q.sends.is_empty() {
        return Ok(());
    }
    let delivered: BTreeSet<u64> = q.deliveries.iter().map(|d| d.k).collect();
    let lost: Vec<u64> = q
        .sends
        .iter()
        .filter(|s| s.acked && !delivered.contains(&s.k))
        .map(|s| s.k)
        .collect();
    if !lost.is_empty() {
        return Err(format!(
            "{} acknowledged sends were never delivered: {:?}",
            lost.len(),
            &lost[..lost.len().min(12)]
        ));
    }
    if q.final_from.is_some() && q.drained_at.is_none() {
        return Err(format!(
            "the queue was not drained within {:?} of the final phase",
            crate::cluster::queue::DRAIN_BOUND
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cluster::queue::{QueueDelivery, QueueSend};
    use std::time::Duration;

    pub fn send(k: u64, acked: bool) -> QueueSend {
        QueueSend {
            k,
            group: format!("g{}", k % 3),
            started: Duration::from_millis(k * 100),
            finished: Duration::from_millis(k * 100 + 10),
            acked,
            message_id: acked.then(|| format!("m{k}")),
        }
    }

    pub fn delivery(
        consumer: &str,
        k: u64,
        count: u64,
        asked_ms: u64,
        got_ms: u64,
    ) -> QueueDelivery {
        QueueDelivery {
            consumer: consumer.into(),
            k,
            message_id: format!("m{k}"),
            receive_count: count,
            asked: Duration::from_millis(asked_ms),
            got: Duration::from_millis(got_ms),
        }
    }

    #[test]
    fn an_acknowledged_send_never_delivered_fails() {
        let mut obs = Observations::default();
        obs.queue.sends = vec![send(0, true), send(1, false), send(2, true)];
        obs.queue.deliveries = vec![delivery("qc0", 0, 1, 0, 5), delivery("qc0", 2, 1, 0, 5)];
        assert!(check(&obs).is_ok(), "an unanswered send may be lost");
        obs.queue.deliveries.pop();
        let e = check(&obs).unwrap_err();
        assert!(e.contains("[2]"), "{e}");
        obs.queue.deliveries.push(delivery("qc1", 2, 1, 0, 5));
        obs.queue.final_from = Some(Duration::from_secs(10));
        assert!(check(&obs).unwrap_err().contains("not drained"));
        obs.queue.drained_at = Some(Duration::from_secs(11));
        assert!(check(&obs).is_ok());
    }
}
