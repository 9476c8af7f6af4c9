//! After healing, every queue takes sends again within a bound: the send made when the
//! final phase began is acknowledged within [`SEND_AFTER_HEAL_BOUND`] of it (a replicated
//! queue's group has elected a leader, and moved a replica off a lost node if it had to).
//! That it is then delivered is `queue_no_loss`'s part.

use crate::cluster::Observations;
use crate::cluster::queue::SEND_AFTER_HEAL_BOUND;

pub fn check(obs: &Observations) -> Result<(), String> {
    let q = &obs.queue;
    // No queue (the workload's create never landed), or no final phase (never converged:
    // other checkers fail that run).
    let Some(from) = q.final_from.filter(|_| q.owner.is_some()) else {
        return Ok(());
    };
    match &q.after_heal {
        None => Err("no send was made after healing".into()),
        Some(s) if !s.acked => Err(format!(
            "the send after healing was not acknowledged within {SEND_AFTER_HEAL_BOUND:?}"
        )),
        Some(s) if s.finished > from + SEND_AFTER_HEAL_BOUND => Err(format!(
            "the send after healing took {:?}, over {SEND_AFTER_HEAL_BOUND:?}",
            s.finished - from
        )),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cluster::queue::QueueSend;

    fn sent(acked: bool, after: Duration) -> QueueSend {
        QueueSend {
            k: 60,
            group: "g0".into(),
            started: Duration::from_secs(10),
            finished: Duration::from_secs(10) + after,
            acked,
            message_id: acked.then(|| "m".into()),
        }
    }

    #[test]
    fn a_send_after_healing_must_be_acknowledged_within_the_bound() {
        let mut obs = Observations::default();
        assert!(check(&obs).is_ok(), "no queue, nothing to check");
        obs.queue.owner = Some("n1".into());
        obs.queue.final_from = Some(Duration::from_secs(10));
        assert!(check(&obs).unwrap_err().contains("no send"));
        obs.queue.after_heal = Some(sent(false, SEND_AFTER_HEAL_BOUND));
        assert!(check(&obs).unwrap_err().contains("not acknowledged"));
        obs.queue.after_heal = Some(sent(true, SEND_AFTER_HEAL_BOUND * 2));
        assert!(check(&obs).unwrap_err().contains("took"));
        obs.queue.after_heal = Some(sent(true, Duration::from_millis(300)));
        assert_eq!(check(&obs), Ok(()));
    }
}
