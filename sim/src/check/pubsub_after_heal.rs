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
