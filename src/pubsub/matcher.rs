//! Which subscriptions a topic reaches: a trie of pattern words, so that matching one topic
//! costs what its words and the patterns that share its prefixes cost, not the number of
//! subscriptions.
//!
//! Topics are `.`-separated words. In a pattern `*` matches exactly one word and `#` any
//! number, none included (the original's semantics: `m.#` matches `m`, `t.*.x` does not
//! match `t.a.b.x`). An exact-match pattern matches the topic that is its text, wildcards
//! included as plain characters.
//!
//! Pure: no IO, no clock; maps are ordered, so results and their order are the same on
//! every run.

use std::collections::{BTreeMap, BTreeSet};

/// Subscribers `K` by pattern.
#[derive(Debug, Clone)]
pub struct TopicMatcher<K: Ord + Clone> {
    root: Node<K>,
    exact: BTreeMap<String, BTreeSet<K>>,
    patterns: usize,
}

impl<K: Ord + Clone> Default for TopicMatcher<K> {
    fn default() -> Self {
        TopicMatcher {
            root: Node::default(),
            exact: BTreeMap::new(),
            patterns: 0,
        }
    }
}

#[derive(Debug, Clone)]
struct Node<K: Ord + Clone> {
    words: BTreeMap<Box<str>, Node<K>>,
    star: Option<Box<Node<K>>>,
    hash: Option<Box<Node<K>>>,
    /// Subscribers whose pattern ends here.
    here: BTreeSet<K>,
}

impl<K: Ord + Clone> Default for Node<K> {
    fn default() -> Self {
        Node {
            words: BTreeMap::new(),
            star: None,
            hash: None,
            here: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Clone> Node<K> {
    fn is_empty(&self) -> bool {
        self.here.is_empty() && self.words.is_empty() && self.star.is_none() && self.hash.is_none()
    }

    fn child(&mut self, word: &str) -> &mut Node<K> {
        match word {
            "*" => self.star.get_or_insert_with(Box::default),
            "#" => self.hash.get_or_insert_with(Box::default),
            w => self.words.entry(w.into()).or_default(),
        }
    }

    /// Removes `key` at the end of `words`; prunes nodes left empty. Whether it was there.
    fn remove(&mut self, words: &[&str], key: &K) -> bool {
        let Some((first, rest)) = words.split_first() else {
            return self.here.remove(key);
        };
        let removed;
        match *first {
            "*" | "#" => {
                let slot = if *first == "*" {
                    &mut self.star
                } else {
                    &mut self.hash
                };
                let Some(child) = slot.as_mut() else {
                    return false;
                };
                removed = child.remove(rest, key);
                if child.is_empty() {
                    *slot = None;
                }
            }
            w => {
                let Some(child) = self.words.get_mut(w) else {
                    return false;
                };
                removed = child.remove(rest, key);
                if child.is_empty() {
                    self.words.remove(w);
                }
            }
        }
        removed
    }

    /// Adds to `out` the subscribers of patterns under this node that match `topic` (a
    /// subscriber can be added more than once).
    fn collect(&self, topic: &[&str], out: &mut Vec<K>) {
        if let Some(hash) = &self.hash {
            // `#` takes none, one, … or all of the remaining words.
            for skip in 0..=topic.len() {
                hash.collect(&topic[skip..], out);
            }
        }
        match topic.split_first() {
            None => out.extend(self.here.iter().cloned()),
            Some((word, rest)) => {
                if let Some(child) = self.words.get(*word) {
                    child.collect(rest, out);
                }
                if let Some(star) = &self.star {
                    star.collect(rest, out);
                }
            }
        }
    }
}

impl<K: Ord + Clone> TopicMatcher<K> {
    /// `key` subscribes to `pattern` (as text, when `exact`).
    pub fn insert(&mut self, pattern: &str, exact: bool, key: K) {
        let added = if exact {
            self.exact
                .entry(pattern.to_owned())
                .or_default()
                .insert(key)
        } else {
            let mut node = &mut self.root;
            for word in pattern.split('.') {
                node = node.child(word);
            }
            node.here.insert(key)
        };
        if added {
            self.patterns += 1;
        }
    }

    /// `key` no longer subscribes to `pattern`; whether it did.
    pub fn remove(&mut self, pattern: &str, exact: bool, key: &K) -> bool {
        let removed = if exact {
            let removed = self.exact.get_mut(pattern).is_some_and(|s| s.remove(key));
            if self.exact.get(pattern).is_some_and(BTreeSet::is_empty) {
                self.exact.remove(pattern);
            }
            removed
        } else {
            let words: Vec<&str> = pattern.split('.').collect();
            self.root.remove(&words, key)
        };
        if removed {
            self.patterns -= 1;
        }
        removed
    }

    /// Every subscriber with a pattern that matches `topic`, once each, in order.
    pub fn matches(&self, topic: &str) -> BTreeSet<K> {
        self.matching(topic).into_iter().collect()
    }

    /// [`TopicMatcher::matches`] as a sorted `Vec` (cheaper to build than a set).
    pub fn matching(&self, topic: &str) -> Vec<K> {
        let mut out = Vec::new();
        // Words on the stack for the usual topic (at most 32 words are allowed).
        let mut words: [&str; 32] = [""; 32];
        let mut n = 0;
        for w in topic.split('.') {
            if n == words.len() {
                // Longer than any allowed topic: matched the slow way.
                let all: Vec<&str> = topic.split('.').collect();
                self.root.collect(&all, &mut out);
                n = usize::MAX;
                break;
            }
            words[n] = w;
            n += 1;
        }
        if n != usize::MAX {
            self.root.collect(&words[..n], &mut out);
        }
        if let Some(exact) = self.exact.get(topic) {
            out.extend(exact.iter().cloned());
        }
        out.sort();
        out.dedup();
        out
    }

    /// (pattern, subscriber) pairs held.
    pub fn len(&self) -> usize {
        self.patterns
    }

    pub fn is_empty(&self) -> bool {
        self.patterns == 0
    }
}

/// The word-by-word definition lives with the pattern syntax (`protocol::pubsub`).
pub use crate::protocol::pubsub::pattern_matches;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_originals_semantics() {
        let mut m = TopicMatcher::default();
        m.insert("t.*.x", false, 1);
        m.insert("m.#", false, 2);
        m.insert("a.b", true, 3);
        m.insert("a.*", true, 4);
        m.insert("#", false, 5);
        fn ids(m: &TopicMatcher<i32>, t: &str) -> Vec<i32> {
            m.matches(t).into_iter().collect()
        }
        assert_eq!(ids(&m, "t.a.x"), [1, 5]);
        assert_eq!(ids(&m, "t.a.b.x"), [5]);
        assert_eq!(ids(&m, "m"), [2, 5]);
        assert_eq!(ids(&m, "m.a.b"), [2, 5]);
        assert_eq!(ids(&m, "a.b"), [3, 5]);
        assert_eq!(
            ids(&m, "a.*"),
            [4, 5],
            "an exact pattern's `*` is a plain character"
        );
        assert!(m.remove("#", false, &5));
        assert!(!m.remove("#", false, &5));
        assert_eq!(ids(&m, "t.a.x"), [1]);
        assert_eq!(m.len(), 4);
    }

    #[test]
    fn a_subscriber_is_reported_once_however_many_of_its_patterns_match() {
        let mut m = TopicMatcher::default();
        m.insert("a.#", false, 7);
        m.insert("a.*", false, 7);
        m.insert("#.b", false, 7);
        assert_eq!(m.matches("a.b").into_iter().collect::<Vec<_>>(), [7]);
    }

    #[test]
    fn removal_prunes_the_trie() {
        let mut m = TopicMatcher::default();
        m.insert("a.b.c", false, 1);
        m.insert("a.#", false, 2);
        assert!(m.remove("a.b.c", false, &1));
        assert!(m.remove("a.#", false, &2));
        assert!(m.root.is_empty() && m.is_empty());
    }
}
