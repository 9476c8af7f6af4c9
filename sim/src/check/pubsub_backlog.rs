//! A subscription that asks for the backlog hears what the cluster kept for it: every
//! matching message published before it subscribed and still within its window and the
//! nodes' retention (`pubsub::backlog`, `pubsub::service`'s `backlog`), before any message
//! published after its backlog was gathered.
//!
//! How a node does it: it acknowledges the subscription and asks every member (itself last)
//! for what it kept; each member answers what it kept up to then (its *cut*), and sends what
//! it keeps later live. A member has [`ANSWER_TIMEOUT`] to answer, then adds nothing. The
//! whole backlog goes to the subscriber's connection at once, before any live message.
//!
//! The property, for the late subscriber's subscription with a backlog (`BacklogSub`: asked
//! for at `asked`, acknowledged by node S at `acked`, ended at `ended` if it did): every
//! workload message M on a topic its patterns match, acknowledged to its publisher by node
//! X before `asked`, is heard by the subscriber on that subscription, and before any
//! message L *surely live*: sent after L's node's cut can have been taken (S's own: after
//! the others answered or timed out, by `acked` + [`GATHER_BOUND`]; a member that answers
//! promptly, see below: by `acked` + [`ANSWER_BOUND`]; any other: by `acked` +
//! [`GATHER_BOUND`]). (A node may acknowledge a publish just before keeping it, when its
//! publishing task hands it out: kept after the cut, M reaches the subscriber live, held
//! back until the backlog is in, so the property holds either way.)
//!
//! Scoped to what a correct node must deliver under the faults:
//!
//! - The backlog must have reached the subscriber: the subscription lasted past `acked` +
//!   [`GATHER_BOUND`], or it heard a surely-live message (which the whole backlog precedes).
//! - X keeps M in memory only. X = S: S must not crash between sending M and `asked`
//!   (a crash after ends the subscription: the point above). X ≠ S must *answer promptly*:
//!   up, not asked to leave, and its link with S neither cut nor degraded, from
//!   [`LINK_LOOKBACK`] before `asked` to `acked` + [`ANSWER_BOUND`] (after a repair or a
//!   restart, a connection broken meanwhile is found dead only by missed heartbeats, and a
//!   peer's sender may wait out its timeout on one); and not crash from M's sending to then.
//! - Window and retention: M must have been kept (no earlier than it was sent) within the
//!   window and the retention's age of `acked` + [`GATHER_BOUND`]. Count and bytes are not
//!   modelled message by message: a node and topic with more publishes than the count
//!   bound, or more than their bytes bounds allow at [`COST_BOUND`] each (any outcome: a
//!   publish whose ack was lost may still have been kept), is left out; and when all
//!   matching publishes could exceed the backlog answer's `max_bytes`, the whole
//!   subscription is (the answer keeps only the newest that fit). The workload stays far
//!   below these bounds, so they leave nothing out in the shipped scenarios.
//!
//! Probes and the final phase's messages come after healing and are not backlog material.
//! [`checked`] says how many messages were in scope, so that a scenario can tell this
//! property was tested, not vacuously true.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::cluster::Observations;
use crate::cluster::pubsub::{Heard, Published};

/// How long a member has to answer a backlog question (`pubsub::service`'s `BACKLOG_TIMEOUT`).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long after acknowledging the subscription its node may take to gather the backlog:
/// every member is asked at once, so [`ANSWER_TIMEOUT`] and some room.
pub const GATHER_BOUND: Duration = ANSWER_TIMEOUT.saturating_add(Duration::from_millis(500));
/// How long a member on a sound link takes to answer: the question leaves before the
/// subscription's ack, and a round trip is 2 to 10 ms (1 to 5 ms each way); twenty times
/// that.
pub const ANSWER_BOUND: Duration = Duration::from_millis(100);
/// How long before the subscription the link between its node and a member must have been
/// sound, and the member up: beyond heartbeats' four missed beats (1 s) and a peer sender's
/// timeout (5 s, `pubsub::service`'s `SEND_TIMEOUT`).
pub const LINK_LOOKBACK: Duration = Duration::from_secs(6);
/// Most bytes one workload message costs to keep (`pubsub::backlog::cost`: 224, the topic,
/// the payload `{"pub":…,"e":…,"k":…}`, a client-made id, the publisher's URL: about 300).
pub const COST_BOUND: usize = 1024;

pub fn check(obs: &Observations) -> Result<(), String> {
    checked(obs).map(|_| ())
}

/// The property; `Ok` with how many messages were in its scope (all heard).
pub fn checked(obs: &Observations) -> Result<usize, String> {
    let Some(b) = &obs.pubsub_backlog else {
        return Ok(0); // no pub/sub workload, or its late subscriber never got through
    };
    let gathered = b.acked + GATHER_BOUND;
    let answered = b.acked + ANSWER_BOUND;
    let matches = |topic: &str| {
        b.patterns.iter().any(|p| {
            let exact = !(p.contains('*') || p.contains('#'));
            mpreg::pubsub::matcher::pattern_matches(p, exact, topic)
        })
    };
    let crashed = |node: &str, from: Duration, to: Duration| {
        obs.node_faults
            .iter()
            .any(|f| f.node == node && !f.leave && f.at >= from && f.at <= to)
    };
    let left = |node: &str, by: Duration| {
        obs.node_faults
            .iter()
            .any(|f| f.node == node && f.leave && f.at <= by)
    };
    let since = b.asked.saturating_sub(LINK_LOOKBACK);
    // A member other than S that answered within ANSWER_BOUND of the ack.
    let prompt = |node: &str| {
        node != b.node
            && !crashed(node, since, answered)
            && !left(node, answered)
            && !obs
                .link_faults
                .iter()
                .any(|f| f.hits(&b.node, node, since, answered))
    };
    // By when `node` took its cut, if it took one.
    let cut_by = |node: &str| if prompt(node) { answered } else { gathered };

    // What the subscriber heard on this subscription, in order, and the first message
    // surely kept after its node's cut.
    let heard: Vec<(usize, &Heard)> = obs
        .pubsub_heard
        .iter()
        .filter(|h| {
            h.subscriber == b.subscriber && h.at >= b.asked && b.ended.is_none_or(|e| h.at <= e)
        })
        .enumerate()
        .collect();
    let first_live = heard.iter().find(|(_, h)| {
        obs.pubsub_published
            .iter()
            .any(|l| l.key == h.key && l.sent > cut_by(&l.node))
    });
    if b.ended.is_some_and(|e| e <= gathered) && first_live.is_none() {
        return Ok(0); // it may have ended before its backlog came
    }

    // Every publish that may have been kept by the time the backlog was gathered.
    let kept_by_then: Vec<&Published> = obs
        .pubsub_published
        .iter()
        .filter(|p| p.sent <= gathered)
        .collect();
    let matching = kept_by_then.iter().filter(|p| matches(&p.topic)).count();
    if matching * COST_BOUND > b.max_bytes {
        return Ok(0); // the answer may have had to leave the oldest out
    }
    let mut per_topic: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &kept_by_then {
        *per_topic.entry((&p.node, &p.topic)).or_default() += 1;
        *per_node.entry(&p.node).or_default() += 1;
    }
    let r = b.retention;
    let within_retention = |p: &Published| {
        let on_topic = per_topic[&(p.node.as_str(), p.topic.as_str())];
        on_topic <= r.topic_messages
            && on_topic * COST_BOUND <= r.topic_bytes
            && per_node[p.node.as_str()] * COST_BOUND <= r.total_bytes
    };
    let horizon = b.window.min(Duration::from_millis(r.max_age_ms));
    let still_kept = |p: &Published| {
        if p.node == b.node {
            !crashed(&p.node, p.sent, b.asked)
        } else {
            prompt(&p.node) && !crashed(&p.node, p.sent, answered)
        }
    };
    let in_scope: Vec<&Published> = kept_by_then
        .iter()
        .copied()
        .filter(|p| {
            p.acked
                && !p.fin
                && p.at < b.asked
                && matches(&p.topic)
                && p.sent + horizon >= gathered
                && within_retention(p)
                && still_kept(p)
        })
        .collect();
    for p in &in_scope {
        let Some((i, h)) = heard.iter().find(|(_, h)| h.key == p.key) else {
            return Err(format!(
                "{} subscribed on {} at {:?} asking for the backlog, and never heard {} ({}), \
                 published on {} at {:?}",
                b.subscriber, b.node, b.asked, p.key, p.topic, p.node, p.at
            ));
        };
        if let Some((j, live)) = first_live
            && j < i
        {
            return Err(format!(
                "{} heard {} ({}, published on {} at {:?}, before it subscribed at {:?}) at \
                 {:?}, after {}, published live after its backlog",
                b.subscriber, p.key, p.topic, p.node, p.at, b.asked, h.at, live.key
            ));
        }
    }
    Ok(in_scope.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::pubsub::{BacklogSub, patterns};
    use crate::cluster::{LinkFault, NodeFault};
    use mpreg::pubsub::backlog::Retention;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn published(key: &str, topic: &str, node: &str, at: u64) -> Published {
        Published {
            publisher: key.split('/').next().unwrap_or("?").into(),
            topic: topic.into(),
            key: key.into(),
            node: node.into(),
            sent: ms(at - 5),
            at: ms(at),
            acked: true,
            fin: false,
        }
    }

    fn heard(key: &str, topic: &str, at: u64) -> Heard {
        Heard {
            subscriber: "s3".into(),
            topic: topic.into(),
            key: key.into(),
            at: ms(at),
        }
    }

    /// s3 (`ps.p1.*`, `ps.p0.even`) subscribes on n1 at 8 s; q0 published on n1 and q1 on
    /// n2 before (q0/1/1 it does not match), q0/1/20 on n1 long after.
    fn history() -> Observations {
        let mut obs = Observations {
            pubsub_backlog: Some(BacklogSub {
                subscriber: "s3".into(),
                node: "n1".into(),
                patterns: patterns(3),
                window: Duration::from_secs(300),
                asked: ms(8000),
                acked: ms(8005),
                ended: None,
                retention: Retention {
                    topic_messages: 1000,
                    topic_bytes: 1 << 20,
                    max_age_ms: 3_600_000,
                    total_bytes: 64 << 20,
                },
                max_bytes: 512 << 10,
            }),
            ..Observations::default()
        };
        obs.pubsub_published.extend([
            published("q0/1/0", "ps.p0.even", "n1", 1200),
            published("q0/1/1", "ps.p0.odd", "n1", 1320),
            published("q1/1/1", "ps.p1.odd", "n2", 1330),
            published("q0/1/20", "ps.p0.even", "n1", 12_010),
        ]);
        obs.pubsub_heard.extend([
            heard("q0/1/0", "ps.p0.even", 8010),
            heard("q1/1/1", "ps.p1.odd", 8011),
            heard("q0/1/20", "ps.p0.even", 12_011),
        ]);
        obs
    }

    /// The history with q1/1/1 (n2's) never heard.
    fn missed() -> Observations {
        let mut obs = history();
        obs.pubsub_heard.retain(|h| h.key != "q1/1/1");
        obs
    }

    #[test]
    fn a_kept_message_the_late_subscriber_missed_fails() {
        assert_eq!(checked(&history()), Ok(2));
        let err = check(&missed()).unwrap_err();
        assert!(
            err.contains("never heard q1/1/1") && err.contains("on n2"),
            "{err}"
        );
        // Heard before the subscription (by another of its subscriptions): not this one's.
        let mut early = history();
        early.pubsub_heard[0].at = ms(7000);
        assert!(check(&early).unwrap_err().contains("never heard q0/1/0"));
    }

    #[test]
    fn a_backlog_message_after_a_live_one_fails() {
        let mut obs = history();
        let live = obs.pubsub_heard.remove(2);
        obs.pubsub_heard.insert(1, live);
        let err = check(&obs).unwrap_err();
        assert!(
            err.contains("heard q1/1/1") && err.contains("after q0/1/20"),
            "{err}"
        );
    }

    #[test]
    fn a_subscription_that_ended_early_counts_once_it_heard_a_live_message() {
        let mut ended = missed();
        ended.pubsub_backlog.as_mut().unwrap().ended = Some(ms(10_000));
        assert_eq!(
            checked(&ended),
            Ok(0),
            "it may have ended before its backlog"
        );
        // n2 answered promptly, so q1/1/30, sent after that, was live: the backlog was in.
        ended
            .pubsub_published
            .push(published("q1/1/30", "ps.p1.even", "n2", 8205));
        ended
            .pubsub_heard
            .push(heard("q1/1/30", "ps.p1.even", 8210));
        assert!(check(&ended).unwrap_err().contains("never heard q1/1/1"));
        // Sent before n2's answer was surely in: no evidence.
        ended.pubsub_published.last_mut().unwrap().sent = ms(8050);
        assert_eq!(checked(&ended), Ok(0));
    }

    #[test]
    fn what_the_faults_or_the_bounds_took_is_out_of_scope_but_only_that() {
        let crash = |at: u64, leave: bool| NodeFault {
            node: "n2".into(),
            at: ms(at),
            leave,
        };
        // n2 crashed after publishing q1/1/1 (at 1330 ms): its memory went with it.
        let mut crashed = missed();
        crashed.node_faults.push(crash(1500, false));
        assert_eq!(checked(&crashed), Ok(1));
        // ... or shortly before the subscription: a connection may be stale.
        crashed.node_faults[0].at = ms(7000);
        assert_eq!(checked(&crashed), Ok(1));
        // A crash (and a restart) before the publish is a new boot that kept it.
        crashed.node_faults[0].at = ms(200);
        assert!(check(&crashed).is_err());
        // n2 was asked to leave.
        let mut left = missed();
        left.node_faults.push(crash(200, true));
        assert_eq!(checked(&left), Ok(1));
        // n1 and n2 were cut off from each other about when the backlog was gathered; a
        // cut long before, or between other nodes, changes nothing.
        let cut = |from: u64, until: Option<u64>, b: &str| LinkFault {
            a: "n1".into(),
            b: b.into(),
            cut: true,
            from: ms(from),
            until: until.map(ms),
        };
        for (from, until) in [(800, Some(2400)), (0, None), (8050, Some(9000))] {
            let mut partitioned = missed();
            partitioned.link_faults.push(cut(from, until, "n2"));
            assert_eq!(checked(&partitioned), Ok(1), "cut {from}..{until:?}");
        }
        for (from, until, b) in [(800, Some(1500), "n2"), (8050, Some(9000), "n3")] {
            let mut sound = missed();
            sound.link_faults.push(cut(from, until, b));
            assert!(check(&sound).is_err(), "cut {from}..{until:?} with {b}");
        }
        // Beyond the window.
        let mut old = missed();
        old.pubsub_backlog.as_mut().unwrap().window = Duration::from_millis(1000);
        assert_eq!(checked(&old), Ok(0));
        // More publishes on a topic than a node keeps.
        let mut crowded = missed();
        crowded
            .pubsub_backlog
            .as_mut()
            .unwrap()
            .retention
            .topic_messages = 0;
        assert_eq!(checked(&crowded), Ok(0));
    }
}
