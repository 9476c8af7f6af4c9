//! What a node keeps of the messages published on it, for subscribers that ask for a
//! backlog (`get_backlog`). Each message is kept once, on the node it was published on,
//! under a sequence number of that node's (which also orders what it forwards), for as
//! long as the [`Retention`] allows: per topic a count and bytes, an age, and bytes in all.
//! Pure: the caller says what time it is.
//!
//! A backlog is cut at a sequence number ([`Backlog::since`] answers the highest one it
//! had seen): the subscriber takes what is at or below it from the backlog and what is above
//! it live, so it gets nothing twice (`exchange` holds the live ones back meanwhile).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use super::matcher::TopicMatcher;
use crate::protocol::pubsub::{PubSubMessage, TopicPattern};

/// How much the node keeps (`pubsub_backlog_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub topic_messages: usize,
    pub topic_bytes: usize,
    pub max_age_ms: u64,
    pub total_bytes: usize,
}

impl Retention {
    /// What a node's settings (`pubsub_backlog_*`) keep.
    pub fn from_settings(s: &crate::config::Settings) -> Retention {
        Retention {
            topic_messages: s.pubsub_backlog_messages,
            topic_bytes: s.pubsub_backlog_bytes,
            max_age_ms: s.pubsub_backlog_seconds.saturating_mul(1000),
            total_bytes: s.pubsub_backlog_total_bytes,
        }
    }
}

/// A kept message: its sequence number here, when it was kept (ms), its size as counted.
#[derive(Debug, Clone)]
pub struct Kept {
    pub seq: u64,
    pub at_ms: u64,
    pub bytes: usize,
    pub message: Arc<PubSubMessage>,
}

/// What a message costs to keep: its text and what holding it takes besides (the message's
/// allocations, its place in its topic's queue and in the order of numbers: about 224
/// bytes), so that the bound in bytes is one on memory.
pub fn cost(m: &PubSubMessage) -> usize {
    224 + m.topic.len()
        + m.payload.get().len()
        + m.message_id.len()
        + m.publisher.len()
        + m.headers.get().len()
}

#[derive(Debug)]
pub struct Backlog {
    retention: Retention,
    topics: BTreeMap<Arc<str>, Topic>,
    /// Every kept message by sequence number, with when it was kept and its topic: the
    /// oldest go first, and age is judged here without looking up the topic.
    by_seq: BTreeMap<u64, (u64, Arc<str>)>,
    /// The last sequence number handed out (every publish takes one, kept or not).
    seq: u64,
    bytes: usize,
    /// Messages that went for want of room or age.
    pub evicted: u64,
}

#[derive(Debug)]
struct Topic {
    name: Arc<str>,
    kept: VecDeque<Kept>,
    bytes: usize,
}

impl Topic {
    /// Lets go of this topic's oldest message; its number and size.
    fn pop(&mut self) -> Option<(u64, usize)> {
        let k = self.kept.pop_front()?;
        self.bytes -= k.bytes;
        Some((k.seq, k.bytes))
    }
}

impl Backlog {
    pub fn new(retention: Retention) -> Backlog {
        Backlog {
            retention,
            topics: BTreeMap::new(),
            by_seq: BTreeMap::new(),
            seq: 0,
            bytes: 0,
            evicted: 0,
        }
    }

    /// Takes `message`, published now (`now_ms`), under the next sequence number, which it
    /// answers; keeps it if the retention allows.
    pub fn keep(&mut self, message: &Arc<PubSubMessage>, now_ms: u64) -> u64 {
        self.seq += 1;
        let seq = self.seq;
        self.expire(now_ms);
        let r = self.retention;
        let bytes = cost(message);
        if r.topic_messages == 0 || bytes > r.topic_bytes || bytes > r.total_bytes {
            return seq;
        }
        let topic = match self.topics.get_mut(message.topic.as_str()) {
            Some(t) => t,
            None => {
                let name: Arc<str> = Arc::from(message.topic.as_str());
                self.topics.entry(name.clone()).or_insert(Topic {
                    name,
                    kept: VecDeque::new(),
                    bytes: 0,
                })
            }
        };
        topic.kept.push_back(Kept {
            seq,
            at_ms: now_ms,
            bytes,
            message: message.clone(),
        });
        topic.bytes += bytes;
        self.bytes += bytes;
        self.by_seq.insert(seq, (now_ms, topic.name.clone()));
        // This topic's own bounds (it keeps the message just taken: it fits them alone),
        // then everyone's.
        while topic.kept.len() > r.topic_messages || topic.bytes > r.topic_bytes {
            let Some((old, size)) = topic.pop() else {
                break;
            };
            self.bytes -= size;
            self.by_seq.remove(&old);
            self.evicted += 1;
        }
        while self.bytes > r.total_bytes {
            let Some((_, (_, oldest))) = self.by_seq.first_key_value() else {
                break;
            };
            let oldest = oldest.clone();
            self.evict_oldest_of(&oldest);
        }
        seq
    }

    fn evict_oldest_of(&mut self, name: &str) {
        let Some(topic) = self.topics.get_mut(name) else {
            return;
        };
        if let Some((seq, size)) = topic.pop() {
            self.bytes -= size;
            self.by_seq.remove(&seq);
            self.evicted += 1;
        }
        if topic.kept.is_empty() {
            self.topics.remove(name);
        }
    }

    /// Lets go of what is older than the retention's age.
    pub fn expire(&mut self, now_ms: u64) {
        let horizon = now_ms.saturating_sub(self.retention.max_age_ms);
        // Oldest first by sequence number; kept times only grow with it on a clock that
        // does not step back, and one that does keeps a message a little longer.
        while let Some((_, (at_ms, name))) = self.by_seq.first_key_value() {
            if *at_ms >= horizon {
                break;
            }
            let name = name.clone();
            self.evict_oldest_of(&name);
        }
    }

    /// The kept messages matching `patterns`, kept at or after `from_ms`, oldest first, at
    /// most `max_bytes` of them (the newest that fit); and the last sequence number handed
    /// out, where this backlog is cut.
    pub fn since(
        &mut self,
        patterns: &[TopicPattern],
        from_ms: u64,
        now_ms: u64,
        max_bytes: usize,
    ) -> (Vec<Kept>, u64) {
        self.expire(now_ms);
        let mut matcher = TopicMatcher::default();
        for p in patterns {
            matcher.insert(&p.pattern, p.exact_match, ());
        }
        let mut found: Vec<&Kept> = self
            .topics
            .iter()
            .filter(|(name, _)| !matcher.matches(name).is_empty())
            .flat_map(|(_, t)| t.kept.iter().filter(|k| k.at_ms >= from_ms))
            .collect();
        found.sort_by_key(|k| k.seq);
        let mut budget = max_bytes;
        let mut newest: Vec<Kept> = Vec::new();
        for k in found.into_iter().rev() {
            if k.bytes > budget {
                break;
            }
            budget -= k.bytes;
            newest.push(k.clone());
        }
        newest.reverse();
        (newest, self.seq)
    }

    /// Messages and bytes kept.
    pub fn size(&self) -> (usize, usize) {
        (self.by_seq.len(), self.bytes)
    }
}

/// A kept message as answered: when kept (ms), its number, the message.
pub type Entry = (u64, u64, Arc<PubSubMessage>);

/// One node's answer to a backlog question: its messages (when kept, number, message),
/// oldest first.
pub struct Answer {
    pub origin: u64,
    pub kept: Vec<Entry>,
}

/// The nodes' answers as one backlog: by when they were kept, each node's in its own
/// order (a merge: no node's messages are reordered, whatever the clocks say), cut to the
/// newest that fit `max_bytes`. Each as (node, number, message).
pub fn merge(answers: Vec<Answer>, max_bytes: usize) -> Vec<(u64, u64, Arc<PubSubMessage>)> {
    let mut heads: Vec<(u64, std::iter::Peekable<std::vec::IntoIter<Entry>>)> = answers
        .into_iter()
        .map(|a| (a.origin, a.kept.into_iter().peekable()))
        .collect();
    let mut merged = Vec::new();
    loop {
        // The earliest head, ties to the lower node id.
        let next = heads
            .iter_mut()
            .filter_map(|(origin, it)| it.peek().map(|(at, _, _)| (*at, *origin)))
            .min();
        let Some((_, origin)) = next else { break };
        let Some((_, it)) = heads.iter_mut().find(|(o, _)| *o == origin) else {
            break;
        };
        if let Some((_, seq, m)) = it.next() {
            merged.push((origin, seq, m));
        }
    }
    let mut budget = max_bytes;
    let mut start = merged.len();
    while start > 0 {
        let c = cost(&merged[start - 1].2);
        if c > budget {
            break;
        }
        budget -= c;
        start -= 1;
    }
    merged.split_off(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(topic: &str, id: &str) -> Arc<PubSubMessage> {
        Arc::new(PubSubMessage {
            topic: topic.into(),
            payload: crate::protocol::json::Json::from_text("1".into()).unwrap(),
            timestamp: 0.0,
            message_id: id.into(),
            publisher: "p".into(),
            headers: crate::protocol::json::Json::empty_object(),
        })
    }

    fn all() -> Vec<TopicPattern> {
        vec![TopicPattern {
            pattern: "#".into(),
            exact_match: false,
        }]
    }

    fn ids(kept: &[Kept]) -> Vec<&str> {
        kept.iter().map(|k| k.message.message_id.as_str()).collect()
    }

    const LOTS: Retention = Retention {
        topic_messages: 1000,
        topic_bytes: 1 << 20,
        max_age_ms: 60_000,
        total_bytes: 1 << 20,
    };

    #[test]
    fn keeps_per_topic_count_and_answers_in_order_matching_only() {
        let mut b = Backlog::new(Retention {
            topic_messages: 2,
            ..LOTS
        });
        for (i, t) in ["a.1", "b.1", "a.1", "a.1", "b.2"].iter().enumerate() {
            assert_eq!(b.keep(&msg(t, &format!("m{i}")), 10), i as u64 + 1);
        }
        let (kept, cut) = b.since(&all(), 0, 10, usize::MAX);
        assert_eq!(ids(&kept), ["m1", "m2", "m3", "m4"], "m0 went: a.1 keeps 2");
        assert_eq!(cut, 5);
        let a = [TopicPattern {
            pattern: "a.*".into(),
            exact_match: false,
        }];
        assert_eq!(ids(&b.since(&a, 0, 10, usize::MAX).0), ["m2", "m3"]);
        assert_eq!(b.evicted, 1);
    }

    #[test]
    fn age_and_bytes_bound_what_is_kept_and_answered() {
        let one = cost(&msg("t", "m0"));
        let mut b = Backlog::new(Retention {
            total_bytes: 3 * one,
            max_age_ms: 100,
            ..LOTS
        });
        for i in 0..5 {
            b.keep(&msg("t", &format!("m{i}")), i * 30);
        }
        // Bytes in all: the newest three; at 120, m2 (kept at 60) is still within 100 ms.
        assert_eq!(
            ids(&b.since(&all(), 0, 120, usize::MAX).0),
            ["m2", "m3", "m4"]
        );
        assert_eq!(ids(&b.since(&all(), 0, 200, usize::MAX).0), ["m4"]);
        assert_eq!(b.size(), (1, one));
        // Asked from a time, and within bytes: the newest that fit.
        b.keep(&msg("t", "m5"), 200);
        b.keep(&msg("t", "m6"), 200);
        assert_eq!(ids(&b.since(&all(), 150, 200, 2 * one).0), ["m5", "m6"]);
        assert_eq!(ids(&b.since(&all(), 0, 200, one).0), ["m6"]);
    }

    #[test]
    fn merging_keeps_each_nodes_order_and_the_newest() {
        let a = |at: u64, seq: u64, id: &str| (at, seq, msg("t", id));
        let answers = vec![
            Answer {
                origin: 2,
                // A clock that stepped back: still in this node's order.
                kept: vec![a(10, 1, "b1"), a(5, 2, "b2"), a(30, 3, "b3")],
            },
            Answer {
                origin: 1,
                kept: vec![a(10, 7, "a7"), a(20, 8, "a8")],
            },
        ];
        let order = |m: &[(u64, u64, Arc<PubSubMessage>)]| {
            m.iter()
                .map(|(_, _, m)| m.message_id.clone())
                .collect::<Vec<_>>()
        };
        let all = merge(answers, usize::MAX);
        assert_eq!(order(&all), ["a7", "b1", "b2", "a8", "b3"]);
        let answers = vec![Answer {
            origin: 1,
            kept: vec![a(1, 1, "x"), a(2, 2, "y"), a(3, 3, "z")],
        }];
        assert_eq!(order(&merge(answers, 2 * cost(&msg("t", "x")))), ["y", "z"]);
    }

    #[test]
    fn nothing_is_kept_when_retention_is_off_but_numbers_still_advance() {
        let mut b = Backlog::new(Retention {
            total_bytes: 0,
            topic_bytes: 0,
            ..LOTS
        });
        assert_eq!(b.keep(&msg("t", "a"), 0), 1);
        assert_eq!(b.keep(&msg("t", "b"), 0), 2);
        let (kept, cut) = b.since(&all(), 0, 0, usize::MAX);
        assert!(kept.is_empty());
        assert_eq!(cut, 2);
    }
}
