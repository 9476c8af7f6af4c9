//! After healing, pub/sub works everywhere: every subscriber hears a probe published through
//! every live node within `READY_BOUND` of the final phase's start, and then every final
//! message a node took reaches every subscriber it matches within `FINAL_BOUND`.

use crate::cluster::Observations;
use crate::cluster::pubsub::FINAL_BOUND;

pub fn check(obs: &Observations) -> Result<(), String> {
    let Some(fin) = &obs.pubsub_final else {
        return Ok(()); // no pub/sub workload, or never converged (another checker's)
    };
    if fin.ready_at.is_none() {
        let missing: Vec<String> = obs
            .pubsub_patterns
            .keys()
            .flat_map(|s| fin.nodes.iter().map(move |n| (s, n)))
            .filter(|(s, n)| {
                let key = format!("probe/{n}");
                !obs.pubsub_heard
                    .iter()
                    .any(|h| h.subscriber == **s && h.key == key && h.at >= fin.started)
            })
            .map(|(s, n)| format!("{s} from {n}"))
            .collect();
        return Err(format!(
            "after healing, subscribers never heard every live node's probe: {missing:?}"
        ));
    }
    for p in obs.pubsub_published.iter().filter(|p| p.fin) {
        if !p.acked {
            return Err(format!(
                "after healing, {} refused {} ({})",
                p.publisher, p.key, p.topic
            ));
        }
        for (s, patterns) in &obs.pubsub_patterns {
            let matches = patterns.iter().any(|pat| {
                let exact = !(pat.contains('*') || pat.contains('#'));
                mpreg::pubsub::matcher::pattern_matches(pat, exact, &p.topic)
            });
            if !matches {
                continue;
            }
            let heard = obs
                .pubsub_heard
                .iter()
                .find(|h| h.subscriber == *s && h.key == p.key);
            match heard {
                Some(h) if h.at <= p.at + FINAL_BOUND => {}
                Some(h) => {
                    return Err(format!(
                        "{s} heard {} {:?} after it was published, beyond {FINAL_BOUND:?}",
                        p.key,
                        h.at - p.at
                    ));
                }
                None => return Err(format!("{s} never heard {} ({})", p.key, p.topic)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::pubsub::{FinalPhase, Heard, Published};
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn heard(subscriber: &str, key: &str, topic: &str, at: u64) -> Heard {
        Heard {
            subscriber: subscriber.into(),
            topic: topic.into(),
            key: key.into(),
            at: ms(at),
        }
    }

    fn fin(key: &str, topic: &str, at: u64) -> Published {
        Published {
            publisher: "final-n1".into(),
            topic: topic.into(),
            key: key.into(),
            node: "n1".into(),
            sent: ms(at - 5),
            at: ms(at),
            acked: true,
            fin: true,
        }
    }

    /// s0 (`ps.#`) and s1 (`ps.*.even`) heard both nodes' probes after the final phase
    /// began at 10 s, then the final messages they match: s1 does not match the odd one.
    fn history() -> Observations {
        let mut obs = Observations {
            pubsub_final: Some(FinalPhase {
                started: ms(10_000),
                ready_at: Some(ms(10_500)),
                nodes: vec!["n1".into(), "n2".into()],
            }),
            ..Observations::default()
        };
        obs.pubsub_patterns
            .insert("s0".into(), vec!["ps.#".into(), "probe.#".into()]);
        obs.pubsub_patterns
            .insert("s1".into(), vec!["ps.*.even".into(), "probe.#".into()]);
        for s in ["s0", "s1"] {
            for n in ["n1", "n2"] {
                obs.pubsub_heard.push(heard(
                    s,
                    &format!("probe/{n}"),
                    &format!("probe.{n}"),
                    10_100,
                ));
            }
        }
        obs.pubsub_published.extend([
            fin("final-n1/1/0", "ps.p0.even", 11_000),
            fin("final-n1/1/1", "ps.p1.odd", 11_010),
        ]);
        obs.pubsub_heard.extend([
            heard("s0", "final-n1/1/0", "ps.p0.even", 11_005),
            heard("s1", "final-n1/1/0", "ps.p0.even", 11_006),
            heard("s0", "final-n1/1/1", "ps.p1.odd", 11_015),
        ]);
        obs
    }

    #[test]
    fn a_final_message_missed_late_or_refused_or_a_probe_never_heard_fails() {
        assert!(check(&Observations::default()).is_ok(), "no final phase");
        assert!(check(&history()).is_ok());

        let mut missed = history();
        missed
            .pubsub_heard
            .retain(|h| !(h.subscriber == "s1" && h.key == "final-n1/1/0"));
        let err = check(&missed).unwrap_err();
        assert!(err.contains("s1 never heard final-n1/1/0"), "{err}");

        let mut late = history();
        for h in &mut late.pubsub_heard {
            if h.key == "final-n1/1/1" {
                h.at = ms(11_010) + FINAL_BOUND + ms(1);
            }
        }
        let err = check(&late).unwrap_err();
        assert!(
            err.contains("s0 heard final-n1/1/1") && err.contains("beyond"),
            "{err}"
        );

        let mut refused = history();
        refused.pubsub_published[1].acked = false;
        assert!(
            check(&refused)
                .unwrap_err()
                .contains("refused final-n1/1/1")
        );

        // Never ready: s1 heard n2's probe only before the final phase began.
        let mut not_ready = history();
        not_ready.pubsub_final.as_mut().unwrap().ready_at = None;
        for h in &mut not_ready.pubsub_heard {
            if h.subscriber == "s1" && h.key == "probe/n2" {
                h.at = ms(9_000);
            }
        }
        let err = check(&not_ready).unwrap_err();
        assert!(err.contains("[\"s1 from n2\"]"), "{err}");
    }
}
