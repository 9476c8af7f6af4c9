//! A notification only ever reaches a subscription whose patterns match its topic (the
//! topic matcher's definition: `*` one word, `#` any number; a pattern without wildcards is
//! exact, as the clients send it).

use crate::cluster::Observations;

pub fn check(obs: &Observations) -> Result<(), String> {
    for h in &obs.pubsub_heard {
        let patterns = obs
            .pubsub_patterns
            .get(&h.subscriber)
            .map_or(&[][..], Vec::as_slice);
        let matches = patterns.iter().any(|p| {
            let exact = !(p.contains('*') || p.contains('#'));
            mpreg::pubsub::matcher::pattern_matches(p, exact, &h.topic)
        });
        if !matches {
            return Err(format!(
                "{} heard {} ({}) at {:?}, which none of {patterns:?} matches",
                h.subscriber, h.topic, h.key, h.at
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
    fn a_topic_outside_the_patterns_fails() {
        let mut obs = Observations::default();
        obs.pubsub_patterns
            .insert("s0".into(), vec!["ps.*.even".into()]);
        let heard = |topic: &str| Heard {
            subscriber: "s0".into(),
            topic: topic.into(),
            key: "q0/1/0".into(),
            at: Duration::ZERO,
        };
        obs.pubsub_heard.push(heard("ps.p0.even"));
        assert!(check(&obs).is_ok());
        obs.pubsub_heard.push(heard("ps.p0.odd"));
        assert!(check(&obs).is_err());
    }
}
