//! One node's topic exchange: its clients' subscriptions (in a [`TopicMatcher`]) and each
//! subscribing connection's [`Mailbox`]. A publish on this node goes to every matching
//! subscription here, once per subscription, in the order publishes arrive; it never waits
//! for a subscriber.
//!
//! A subscription that asks for a backlog is *pending* until its backlog is in
//! ([`Exchange::finish_backlog`]): the live messages it matches meanwhile are held back, and
//! then those the backlog already had (at or below its cut on their node) are let go, so
//! the subscriber hears the backlog, then live messages, and nothing twice. The backlog of
//! what was published here lives here too ([`Backlog`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::backlog::{Backlog, Kept, Retention};
use super::mailbox::Mailbox;
use super::matcher::TopicMatcher;
use crate::protocol::pubsub::{PubSubMessage, TopicPattern};

/// A subscription: its connection and the id its client chose.
type Key = (u64, String);

#[derive(Debug)]
struct Sub {
    /// Where its notifications go, and its id as JSON (for the notifications' text).
    mailbox: Arc<Mailbox>,
    /// The exchange's version once it was made: a message a peer forwarded knowing only an
    /// older version of this node's interest was not forwarded for it.
    version: u64,
    id_json: String,
    patterns: Vec<TopicPattern>,
    pending: Option<Pending>,
    /// After its backlog: per node, the cut that backlog was taken at and the sequence
    /// numbers it delivered. A message of that node still on its way here that the backlog
    /// had is not heard again; the first above the cut ends the check (a node's messages
    /// arrive in order).
    cuts: BTreeMap<u64, (u64, BTreeSet<u64>)>,
}

/// Live notifications held back while a subscription's backlog is fetched: each with its
/// message's node and sequence number there, at most `max_bytes` of them (the oldest go).
#[derive(Debug)]
struct Pending {
    token: u64,
    held: VecDeque<(u64, u64, String)>,
    bytes: usize,
    max_bytes: usize,
}

/// The subscriptions by a number of the exchange's (the matcher holds numbers: matching
/// copies no ids), and the numbers by connection and id.
#[derive(Debug, Default)]
struct Inner {
    matcher: TopicMatcher<u64>,
    subscriptions: BTreeMap<u64, Sub>,
    handles: BTreeMap<Key, u64>,
    mailboxes: BTreeMap<u64, Arc<Mailbox>>,
    next: u64,
}

impl Inner {
    /// Removes subscription `key` (its number, if it had one).
    fn remove(&mut self, key: &Key) -> Option<Sub> {
        let handle = self.handles.remove(key)?;
        let sub = self.subscriptions.remove(&handle)?;
        for p in &sub.patterns {
            self.matcher.remove(&p.pattern, p.exact_match, &handle);
        }
        Some(sub)
    }

    fn get_mut(&mut self, key: &Key) -> Option<&mut Sub> {
        let handle = self.handles.get(key)?;
        self.subscriptions.get_mut(handle)
    }
}

#[derive(Debug)]
pub struct Exchange {
    inner: Mutex<Inner>,
    backlog: Mutex<Backlog>,
    /// Messages published on this node.
    pub published: AtomicU64,
    /// Notifications queued for subscribers here.
    pub queued: AtomicU64,
    /// Messages published here queued for interested peers, and those dropped because a
    /// peer's queue was full (`pubsub::service`).
    pub forwarded: AtomicU64,
    pub forward_dropped: AtomicU64,
    /// Bumped by every change of the subscriptions (peers learn the interest anew); it
    /// starts from a base a restarted node's exceeds (`Exchange::new`).
    version: AtomicU64,
    /// What the mailboxes of connections that closed delivered and dropped.
    closed_delivered: AtomicU64,
    closed_dropped: AtomicU64,
    /// Backlog messages delivered to subscribers.
    pub backlog_delivered: AtomicU64,
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExchangeStats {
    pub published: u64,
    pub queued: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub subscriptions: usize,
    pub waiting_bytes: usize,
    /// Messages and bytes kept for backlogs, messages let go of, backlog messages delivered.
    pub backlog_messages: usize,
    pub backlog_bytes: usize,
    pub backlog_evicted: u64,
    pub backlog_delivered: u64,
}

impl Exchange {
    /// An exchange keeping what `retention` allows of what is published here, whose
    /// versions start from `version_base` (the node's boot time in ms times 1024: a node's
    /// next boot starts above this one's versions unless it changed its subscriptions more
    /// than 1024 times a millisecond, so peers take the new boot's interest as newer).
    pub fn new(retention: Retention, version_base: u64) -> Exchange {
        Exchange {
            inner: Mutex::default(),
            backlog: Mutex::new(Backlog::new(retention)),
            published: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            forward_dropped: AtomicU64::new(0),
            version: AtomicU64::new(version_base),
            closed_delivered: AtomicU64::new(0),
            closed_dropped: AtomicU64::new(0),
            backlog_delivered: AtomicU64::new(0),
        }
    }

    /// Publishes a message of this node's (`me`) clients, at `now_ms`: numbered, kept as
    /// the retention allows, queued for the subscribers here and handed with its number to
    /// `forward` (for the peers), all under the backlog's lock: so this node's messages
    /// reach its subscribers and its peers' queues in the order of their numbers, which
    /// is what cutting a backlog by number needs. How many subscriptions here get it.
    pub fn publish_here(
        &self,
        message: &Arc<PubSubMessage>,
        me: u64,
        now_ms: u64,
        forward: impl FnOnce(u64),
    ) -> usize {
        let mut backlog = self.backlog.lock();
        let seq = backlog.keep(message, now_ms);
        let n = self.publish(message, me, seq, None);
        forward(seq);
        n
    }

    /// What the backlog here holds for `patterns` since `from_ms` (at most `max_bytes`),
    /// and where it is cut. Called after the subscription (here or on the asking peer) can
    /// hear live messages, so that what is above the cut reaches it live.
    pub fn backlog_since(
        &self,
        patterns: &[TopicPattern],
        from_ms: u64,
        now_ms: u64,
        max_bytes: usize,
    ) -> (Vec<Kept>, u64) {
        self.backlog
            .lock()
            .since(patterns, from_ms, now_ms, max_bytes)
    }

    /// Connection `conn` (whose notifications go to `mailbox`) subscribes `id` to
    /// `patterns`, replacing a subscription of that id it held. With `backlog`, the
    /// subscription is pending until [`Exchange::finish_backlog`] with the token answered.
    pub fn subscribe(
        &self,
        conn: u64,
        mailbox: &Arc<Mailbox>,
        id: String,
        patterns: Vec<TopicPattern>,
        backlog: bool,
    ) -> Option<u64> {
        let mut inner = self.inner.lock();
        let id_json = serde_json::to_string(&id).unwrap_or_default();
        let key = (conn, id);
        inner.remove(&key);
        inner.next += 1;
        let handle = inner.next;
        for p in &patterns {
            inner.matcher.insert(&p.pattern, p.exact_match, handle);
        }
        // The subscription's number doubles as its backlog's token.
        let pending = backlog.then(|| Pending {
            token: handle,
            held: VecDeque::new(),
            bytes: 0,
            max_bytes: mailbox.max_bytes(),
        });
        let token = pending.as_ref().map(|p| p.token);
        let version = self.version.fetch_add(1, Ordering::Relaxed) + 1;
        inner.subscriptions.insert(
            handle,
            Sub {
                mailbox: mailbox.clone(),
                version,
                id_json,
                patterns,
                pending,
                cuts: BTreeMap::new(),
            },
        );
        inner.handles.insert(key, handle);
        inner
            .mailboxes
            .entry(conn)
            .or_insert_with(|| mailbox.clone());
        token
    }

    /// The backlog of subscription `id` of `conn` is in (`token` from its subscribe), as
    /// notifications with their node and sequence number there, and each node's cut:
    /// `backlog` goes to its mailbox, as far as there is room, then the live notifications
    /// held back, except those the backlog had.
    pub fn finish_backlog(
        &self,
        conn: u64,
        id: &str,
        token: u64,
        backlog: Vec<(u64, u64, String)>,
        cuts: &BTreeMap<u64, u64>,
    ) {
        let mut inner = self.inner.lock();
        let Some(sub) = inner.get_mut(&(conn, id.to_owned())) else {
            return;
        };
        let mailbox = sub.mailbox.clone();
        if sub.pending.as_ref().map(|p| p.token) != Some(token) {
            return; // replaced or resubscribed since: that one fetches its own
        }
        let Some(pending) = sub.pending.take() else {
            return;
        };
        let mut had: BTreeMap<u64, (u64, BTreeSet<u64>)> = cuts
            .iter()
            .map(|(origin, cut)| (*origin, (*cut, BTreeSet::new())))
            .collect();
        let mut delivered = 0;
        for (origin, seq, text) in backlog {
            if let Some((_, seqs)) = had.get_mut(&origin) {
                seqs.insert(seq);
            }
            if mailbox.offer(text) {
                delivered += 1;
            } else {
                mailbox.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.backlog_delivered
            .fetch_add(delivered, Ordering::Relaxed);
        had.retain(|_, (_, seqs)| !seqs.is_empty());
        for (origin, seq, text) in pending.held {
            if !had
                .get(&origin)
                .is_some_and(|(_, seqs)| seqs.contains(&seq))
            {
                mailbox.push(text);
            }
        }
        sub.cuts = had;
    }

    /// The version of the subscriptions (changes with each subscribe and unsubscribe).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// Every distinct pattern subscribed here, as `(pattern, exact)`: what peers forward by.
    pub fn interest(&self) -> Vec<(String, bool)> {
        let inner = self.inner.lock();
        let set: std::collections::BTreeSet<(String, bool)> = inner
            .subscriptions
            .values()
            .flat_map(|s| &s.patterns)
            .map(|p| (p.pattern.clone(), p.exact_match))
            .collect();
        set.into_iter().collect()
    }

    /// Whether `conn` held subscription `id` (it no longer does).
    pub fn unsubscribe(&self, conn: u64, id: &str) -> bool {
        if self.inner.lock().remove(&(conn, id.to_owned())).is_none() {
            return false;
        }
        self.version.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// How many subscriptions `conn` holds here.
    pub fn held(&self, conn: u64) -> usize {
        self.inner
            .lock()
            .handles
            .range((conn, String::new())..)
            .take_while(|((c, _), _)| *c == conn)
            .count()
    }

    /// Connection `conn` closed: its subscriptions die with it.
    pub fn forget(&self, conn: u64) {
        let mut inner = self.inner.lock();
        let keys: Vec<Key> = inner
            .handles
            .range((conn, String::new())..)
            .take_while(|((c, _), _)| *c == conn)
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            inner.remove(&key);
        }
        self.version.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = inner.mailboxes.remove(&conn) {
            self.closed_delivered
                .fetch_add(m.delivered.load(Ordering::Relaxed), Ordering::Relaxed);
            self.closed_dropped
                .fetch_add(m.dropped.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    /// Queues a notification of `message` (number `seq` of node `origin`) for every
    /// matching subscription here (held back for those pending); how many. `known`: the
    /// version of this node's interest a peer forwarded it by; subscriptions made since
    /// were not what it was forwarded for, and do not hear it (they may be a subscriber
    /// that moved here from a node that had it already).
    pub fn publish(
        &self,
        message: &PubSubMessage,
        origin: u64,
        seq: u64,
        known: Option<u64>,
    ) -> usize {
        use crate::protocol::pubsub::Notifier;
        self.published.fetch_add(1, Ordering::Relaxed);
        // The message as notifications carry it, encoded once for all of them.
        let mut notifier: Option<Notifier> = None;
        let mut held = 0;
        let targets: Vec<(Arc<Mailbox>, String)> = {
            let mut inner = self.inner.lock();
            let handles = inner.matcher.matching(&message.topic);
            let mut targets = Vec::with_capacity(handles.len());
            for handle in handles {
                let Some(sub) = inner.subscriptions.get_mut(&handle) else {
                    continue;
                };
                if known.is_some_and(|v| sub.version > v) {
                    continue;
                }
                if let Some((cut, seqs)) = sub.cuts.get(&origin) {
                    if seq > *cut {
                        sub.cuts.remove(&origin);
                    } else if seqs.contains(&seq) {
                        continue; // its backlog had it
                    }
                }
                let n = notifier.get_or_insert_with(|| Notifier::new(message));
                let text = n.for_subscription(&sub.id_json);
                match &mut sub.pending {
                    None => targets.push((sub.mailbox.clone(), text)),
                    Some(p) => {
                        p.bytes += text.len();
                        p.held.push_back((origin, seq, text));
                        while p.bytes > p.max_bytes && p.held.len() > 1 {
                            if let Some((_, _, old)) = p.held.pop_front() {
                                p.bytes -= old.len();
                                sub.mailbox.dropped.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        held += 1;
                    }
                }
            }
            targets
        };
        // Outside the lock: a mailbox's own lock and its connection's wake-up.
        let n = targets.len() + held;
        for (mailbox, text) in targets {
            mailbox.push(text);
        }
        self.queued.fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    pub fn stats(&self) -> ExchangeStats {
        let inner = self.inner.lock();
        let (mut delivered, mut dropped, mut waiting_bytes) = (
            self.closed_delivered.load(Ordering::Relaxed),
            self.closed_dropped.load(Ordering::Relaxed),
            0,
        );
        for m in inner.mailboxes.values() {
            delivered += m.delivered.load(Ordering::Relaxed);
            dropped += m.dropped.load(Ordering::Relaxed);
            waiting_bytes += m.bytes();
        }
        for p in inner
            .subscriptions
            .values()
            .filter_map(|s| s.pending.as_ref())
        {
            waiting_bytes += p.bytes;
        }
        let subscriptions = inner.subscriptions.len();
        drop(inner);
        let backlog = self.backlog.lock();
        let (backlog_messages, backlog_bytes) = backlog.size();
        ExchangeStats {
            published: self.published.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
            delivered,
            dropped,
            subscriptions,
            waiting_bytes,
            backlog_messages,
            backlog_bytes,
            backlog_evicted: backlog.evicted,
            backlog_delivered: self.backlog_delivered.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::json::Json;

    fn message(id: &str) -> PubSubMessage {
        PubSubMessage {
            topic: "t.a".into(),
            payload: Json::from_text("1".into()).unwrap(),
            timestamp: 0.0,
            message_id: id.into(),
            publisher: "p".into(),
            headers: Json::empty_object(),
        }
    }

    const RETENTION: Retention = Retention {
        topic_messages: 10,
        topic_bytes: 1 << 20,
        max_age_ms: 1000,
        total_bytes: 1 << 20,
    };

    fn pattern() -> Vec<TopicPattern> {
        vec![TopicPattern {
            pattern: "t.*".into(),
            exact_match: false,
        }]
    }

    fn ids(m: &Mailbox) -> Vec<String> {
        std::iter::from_fn(|| m.pop())
            .map(|t| {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                v["message"]["message_id"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    #[test]
    fn a_forward_by_an_older_interest_skips_later_subscriptions() {
        let x = Exchange::new(RETENTION, 5000);
        let (old, new) = (
            Arc::new(Mailbox::new(1 << 20, false)),
            Arc::new(Mailbox::new(1 << 20, false)),
        );
        x.subscribe(1, &old, "a".into(), pattern(), false);
        let known = x.version();
        assert!(known > 5000, "versions start from the base");
        x.subscribe(2, &new, "b".into(), pattern(), false);
        assert_eq!(x.publish(&message("m1"), 9, 1, Some(known)), 1);
        assert_eq!(x.publish(&message("m2"), 9, 2, None), 2);
        assert_eq!(x.publish(&message("m3"), 9, 3, Some(x.version())), 2);
        assert_eq!(ids(&old), ["m1", "m2", "m3"]);
        assert_eq!(ids(&new), ["m2", "m3"]);
    }

    #[test]
    fn a_pending_subscription_hears_its_backlog_then_what_the_backlog_lacked() {
        let x = Exchange::new(RETENTION, 0);
        let m = Arc::new(Mailbox::new(1 << 20, false));
        let token = x.subscribe(1, &m, "s".into(), pattern(), true).unwrap();
        // Live while pending: node 9's 4 and 5 (the backlog will have 4), node 8's 1.
        x.publish(&message("n9-4"), 9, 4, None);
        x.publish(&message("n9-5"), 9, 5, None);
        x.publish(&message("n8-1"), 8, 1, None);
        assert!(ids(&m).is_empty(), "held back");
        let text = |id: &str| {
            crate::protocol::pubsub::notification(&message(id).notified_json(), &message(id), "s")
        };
        let backlog = vec![(9, 3, text("n9-3")), (9, 4, text("n9-4"))];
        x.finish_backlog(1, "s", token, backlog, &[(9, 4)].into());
        // Node 9's 4 again, still on its way: the backlog had it.
        x.publish(&message("n9-4"), 9, 4, None);
        x.publish(&message("n9-6"), 9, 6, None);
        assert_eq!(ids(&m), ["n9-3", "n9-4", "n9-5", "n8-1", "n9-6"]);
        assert_eq!(x.stats().backlog_delivered, 2);
    }
}
