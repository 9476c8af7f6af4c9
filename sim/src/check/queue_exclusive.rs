//! No message is held by two consumers within its visibility timeout: once delivered, a
//! message is invisible until its deadline (delivery + the queue's visibility timeout),
//! unless it is given back (nacked) or its owner crashed (a receive's new deadline is
//! written without waiting for the disk: a crash may lose it, and the message comes back
//! early; at least once). The owner delivered it between the receive's ask and answer, so
//! a second delivery answered before the first was even asked for plus the timeout was
//! certainly inside the first's invisibility.

use std::collections::BTreeMap;

use crate::cluster::Observations;
use crate::cluster::queue::{QueueDelivery, VISIBILITY};

pub fn check(obs: &Observations) -> Result<(), String> {
    let q = &obs.queue;
    let owner_crashes: Vec<_> = obs
        .node_faults
        .iter()
        .filter(|f| Some(&f.node) == q.owner.as_ref())
        .map(|f| f.at)
        .collect();
    let mut by_message: BTreeMap<&str, Vec<&QueueDelivery>> = BTreeMap::new();
    for d in &q.deliveries {
        by_message.entry(&d.message_id).or_default().push(d);
    }
    for (id, mut ds) in by_message {
        ds.sort_by_key(|d| (d.got, d.receive_count));
        for pair in ds.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let invisible_until = a.asked + VISIBILITY;
            if b.got >= invisible_until {
                continue;
            }
            let given_back = q.acks.iter().any(|x| {
                x.nack
                    && x.message_id == id
                    && x.receive_count == a.receive_count
                    && x.asked < b.got
            });
            let crashed = owner_crashes.iter().any(|t| a.asked <= *t && *t <= b.got);
            if !given_back && !crashed {
                return Err(format!(
                    "message {id} (k={}) was held by {} (delivery {}, asked at {:?}) and \
                     delivered again to {} (delivery {}) at {:?}, inside its visibility \
                     timeout of {VISIBILITY:?}",
                    a.k, a.consumer, a.receive_count, a.asked, b.consumer, b.receive_count, b.got
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::queue_no_loss::tests::delivery;
    use crate::cluster::NodeFault;
    use crate::cluster::queue::QueueAck;
    use std::time::Duration;

    #[test]
    fn a_second_holder_within_the_timeout_fails_unless_given_back_or_crashed() {
        let mut obs = Observations::default();
        obs.queue.owner = Some("n1".into());
        obs.queue.deliveries = vec![
            delivery("qc0", 4, 1, 100, 105),
            // After the timeout: fine.
            delivery("qc1", 4, 2, 1200, 1205),
        ];
        assert!(check(&obs).is_ok());
        obs.queue.deliveries[1] = delivery("qc1", 4, 2, 500, 505);
        let e = check(&obs).unwrap_err();
        assert!(e.contains("inside its visibility"), "{e}");
        // Given back first: fine.
        obs.queue.acks.push(QueueAck {
            consumer: "qc0".into(),
            message_id: "m4".into(),
            receive_count: 1,
            nack: true,
            asked: Duration::from_millis(300),
            done: Duration::from_millis(302),
            ok: true,
        });
        assert!(check(&obs).is_ok());
        obs.queue.acks.clear();
        // The owner crashed in between: fine.
        obs.node_faults.push(NodeFault {
            node: "n1".into(),
            at: Duration::from_millis(300),
            leave: false,
        });
        assert!(check(&obs).is_ok());
        obs.node_faults[0].node = "n2".into();
        assert!(check(&obs).is_err(), "another node's crash excuses nothing");
    }
}
