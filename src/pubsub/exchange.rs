//! One node's topic exchange: its clients' subscriptions (in a [`TopicMatcher`]) and each
//! subscribing connection's [`Mailbox`]. A publish on this node goes to every matching
//! subscription here, once per subscription, in the order publishes arrive; it never waits
//! for a subscriber.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::mailbox::Mailbox;
use super::matcher::TopicMatcher;
use crate::protocol::pubsub::{PubSubMessage, TopicPattern};

/// A subscription: its connection and the id its client chose.
type Key = (u64, String);

#[derive(Debug, Default)]
struct Inner {
    matcher: TopicMatcher<Key>,
    subscriptions: BTreeMap<Key, Vec<TopicPattern>>,
    mailboxes: BTreeMap<u64, Arc<Mailbox>>,
}

#[derive(Debug, Default)]
pub struct Exchange {
    inner: Mutex<Inner>,
    /// Messages published on this node.
    pub published: AtomicU64,
    /// Notifications queued for subscribers here.
    pub queued: AtomicU64,
    /// Messages published here queued for interested peers, and those dropped because a
    /// peer's queue was full (`node::fanout`).
    pub forwarded: AtomicU64,
    pub forward_dropped: AtomicU64,
    /// Bumped by every change of the subscriptions (peers learn the interest anew).
    version: AtomicU64,
    /// What the mailboxes of connections that closed delivered and dropped.
    closed_delivered: AtomicU64,
    closed_dropped: AtomicU64,
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
}

impl Exchange {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every change is whole under the lock; a poisoned exchange is still consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Connection `conn` (whose notifications go to `mailbox`) subscribes `id` to
    /// `patterns`, replacing a subscription of that id it held.
    pub fn subscribe(
        &self,
        conn: u64,
        mailbox: &Arc<Mailbox>,
        id: String,
        patterns: Vec<TopicPattern>,
    ) {
        let mut inner = self.lock();
        let key = (conn, id);
        if let Some(old) = inner.subscriptions.remove(&key) {
            for p in &old {
                inner.matcher.remove(&p.pattern, p.exact_match, &key);
            }
        }
        for p in &patterns {
            inner.matcher.insert(&p.pattern, p.exact_match, key.clone());
        }
        inner.subscriptions.insert(key, patterns);
        inner
            .mailboxes
            .entry(conn)
            .or_insert_with(|| mailbox.clone());
        self.version.fetch_add(1, Ordering::Relaxed);
    }

    /// The version of the subscriptions (changes with each subscribe and unsubscribe).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// Every distinct pattern subscribed here, as `(pattern, exact)`: what peers forward by.
    pub fn interest(&self) -> Vec<(String, bool)> {
        let inner = self.lock();
        let set: std::collections::BTreeSet<(String, bool)> = inner
            .subscriptions
            .values()
            .flatten()
            .map(|p| (p.pattern.clone(), p.exact_match))
            .collect();
        set.into_iter().collect()
    }

    /// Whether `conn` held subscription `id` (it no longer does).
    pub fn unsubscribe(&self, conn: u64, id: &str) -> bool {
        let mut inner = self.lock();
        let key = (conn, id.to_owned());
        let Some(patterns) = inner.subscriptions.remove(&key) else {
            return false;
        };
        for p in &patterns {
            inner.matcher.remove(&p.pattern, p.exact_match, &key);
        }
        self.version.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// How many subscriptions `conn` holds here.
    pub fn held(&self, conn: u64) -> usize {
        self.lock()
            .subscriptions
            .range((conn, String::new())..)
            .take_while(|((c, _), _)| *c == conn)
            .count()
    }

    /// Connection `conn` closed: its subscriptions die with it.
    pub fn forget(&self, conn: u64) {
        let mut inner = self.lock();
        let keys: Vec<Key> = inner
            .subscriptions
            .range((conn, String::new())..)
            .take_while(|((c, _), _)| *c == conn)
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            if let Some(patterns) = inner.subscriptions.remove(&key) {
                for p in &patterns {
                    inner.matcher.remove(&p.pattern, p.exact_match, &key);
                }
            }
        }
        self.version.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = inner.mailboxes.remove(&conn) {
            self.closed_delivered
                .fetch_add(m.delivered.load(Ordering::Relaxed), Ordering::Relaxed);
            self.closed_dropped
                .fetch_add(m.dropped.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    /// Queues a notification of `message` for every matching subscription here; how many.
    pub fn publish(&self, message: &PubSubMessage) -> usize {
        self.published.fetch_add(1, Ordering::Relaxed);
        let targets: Vec<(Arc<Mailbox>, String)> = {
            let inner = self.lock();
            inner
                .matcher
                .matches(&message.topic)
                .into_iter()
                .filter_map(|(conn, id)| Some((inner.mailboxes.get(&conn)?.clone(), id)))
                .collect()
        };
        if targets.is_empty() {
            return 0;
        }
        // The message as notifications carry it, encoded once for all of them.
        let body = message.notified_json();
        for (mailbox, id) in &targets {
            mailbox.push(crate::protocol::pubsub::notification(&body, message, id));
        }
        self.queued
            .fetch_add(targets.len() as u64, Ordering::Relaxed);
        targets.len()
    }

    pub fn stats(&self) -> ExchangeStats {
        let inner = self.lock();
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
        ExchangeStats {
            published: self.published.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
            delivered,
            dropped,
            subscriptions: inner.subscriptions.len(),
            waiting_bytes,
        }
    }
}
