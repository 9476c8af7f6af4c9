//! No subscriber hears a message twice: through any path (the publisher's node, a peer's
//! forward, a backlog, a subscription that moved to another node). Probes repeat by design
//! and are not counted.

use std::collections::BTreeSet;

use crate::cluster::Observations;

pub fn check(obs: &Observations) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for h in obs
        .pubsub_heard
        .iter()
        .filter(|h| !h.key.starts_with("probe/"))
    {
        if !seen.insert((&h.subscriber, &h.key)) {
            return Err(format!(
                "{} heard {} ({}) twice, again at {:?}",
                h.subscriber, h.key, h.topic, h.at
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::pubsub::Heard;
    use std::time::Duration;

    #[test]
    fn a_second_hearing_fails_and_repeated_probes_do_not() {
        let heard = |key: &str| Heard {
            subscriber: "s0".into(),
            topic: "ps.p0.even".into(),
            key: key.into(),
            at: Duration::ZERO,
        };
        let mut obs = Observations::default();
        obs.pubsub_heard
            .extend([heard("probe/n1"), heard("probe/n1"), heard("q0/1/0")]);
        assert!(check(&obs).is_ok());
        obs.pubsub_heard.push(heard("q0/1/0"));
        assert!(check(&obs).is_err());
    }
}
