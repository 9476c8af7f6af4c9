//! Each publisher connection's order holds for every subscriber: the messages of one
//! connection (`pub/e`) are heard in the order they were published (their `k` rises),
//! gaps allowed (a message can be lost to a fault).

use std::collections::BTreeMap;

use crate::cluster::Observations;

pub fn check(obs: &Observations) -> Result<(), String> {
    let mut last: BTreeMap<(&str, String), (u64, &str)> = BTreeMap::new();
    for h in obs
        .pubsub_heard
        .iter()
        .filter(|h| !h.key.starts_with("probe/"))
    {
        let Some((connection, k)) = h.key.rsplit_once('/') else {
            return Err(format!(
                "{} heard a message without a number: {}",
                h.subscriber, h.key
            ));
        };
        let Ok(k) = k.parse::<u64>() else {
            return Err(format!(
                "{} heard a message without a number: {}",
                h.subscriber, h.key
            ));
        };
        let slot = (h.subscriber.as_str(), connection.to_owned());
        if let Some((before, key)) = last.get(&slot)
            && *before >= k
        {
            return Err(format!(
                "{} heard {} after {key}, out of the publisher's order (at {:?})",
                h.subscriber, h.key, h.at
            ));
        }
        last.insert(slot, (k, &h.key));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::pubsub::Heard;
    use std::time::Duration;

    #[test]
    fn a_message_before_an_earlier_one_fails_a_gap_does_not() {
        let heard = |subscriber: &str, key: &str| Heard {
            subscriber: subscriber.into(),
            topic: "ps.p0.even".into(),
            key: key.into(),
            at: Duration::ZERO,
        };
        let mut obs = Observations::default();
        obs.pubsub_heard.extend([
            heard("s0", "q0/1/0"),
            heard("s0", "q0/1/3"),
            heard("s0", "q0/2/1"), // another connection: its own order
            heard("s1", "q0/1/1"),
        ]);
        assert!(check(&obs).is_ok());
        obs.pubsub_heard.push(heard("s0", "q0/1/2"));
        assert!(check(&obs).is_err());
    }
}
