//! The topic matcher's law: for any subscriptions and topic, the trie reports exactly the
//! subscribers that the word-by-word definition (`pattern_matches`) says match, each once;
//! and removing subscriptions leaves the same answers as never having added them.

use std::collections::BTreeSet;

use mpreg::pubsub::matcher::{TopicMatcher, pattern_matches};
use proptest::prelude::*;

/// Words from a small alphabet, so that topics and patterns often share prefixes.
fn word() -> impl Strategy<Value = String> {
    prop_oneof![Just("a"), Just("b"), Just("c"), Just("")].prop_map(str::to_owned)
}

fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(word(), 1..6).prop_map(|w| w.join("."))
}

fn pattern() -> impl Strategy<Value = (String, bool)> {
    let part = prop_oneof![
        4 => word(),
        2 => Just("*".to_owned()),
        2 => Just("#".to_owned()),
    ];
    (prop::collection::vec(part, 1..6), any::<bool>()).prop_map(|(w, exact)| (w.join("."), exact))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_trie_agrees_with_the_definition(
        subs in prop::collection::vec((pattern(), 0u8..8), 0..40),
        removed in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
        topics in prop::collection::vec(topic(), 1..10),
    ) {
        let mut m = TopicMatcher::default();
        for ((p, exact), key) in &subs {
            m.insert(p, *exact, *key);
        }
        // Remove some (pattern, key) pairs again.
        let mut kept: Vec<((String, bool), u8)> = subs.clone();
        for i in &removed {
            if kept.is_empty() {
                break;
            }
            let ((p, exact), key) = kept.remove(i.index(kept.len()));
            // A pair added twice stays until both are gone only if distinct; the matcher
            // holds a set, so remove every copy of it from `kept` too.
            m.remove(&p, exact, &key);
            kept.retain(|((q, e), k)| !(q == &p && *e == exact && *k == key));
        }
        for t in &topics {
            let want: BTreeSet<u8> = kept
                .iter()
                .filter(|((p, exact), _)| pattern_matches(p, *exact, t))
                .map(|(_, k)| *k)
                .collect();
            prop_assert_eq!(m.matches(t), want, "topic {:?}", t);
        }
        let pairs: BTreeSet<_> = kept.iter().collect();
        prop_assert_eq!(m.len(), pairs.len());
    }
}
