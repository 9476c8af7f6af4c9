//! `cargo bench --bench topic_match`: matching topics against 100k subscriptions with the
//! trie (`mpreg::pubsub::matcher`), and, as the baseline, checking every pattern in turn
//! (what a list of subscriptions costs). Prints ns per topic for both and their ratio.
#![allow(clippy::disallowed_methods)] // a benchmark times itself with the real clock

use std::hint::black_box;
use std::time::Instant;

use mpreg::pubsub::matcher::{TopicMatcher, pattern_matches};

/// A deterministic generator (xorshift), so every run measures the same subscriptions.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const SUBSCRIPTIONS: usize = 100_000;

fn main() {
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    // orders.<region>.<kind>, metrics.<host>.#, users.*.login … over realistic vocabularies.
    let domains = [
        "orders", "metrics", "users", "billing", "audit", "jobs", "cache", "dns",
    ];
    let mut patterns = Vec::with_capacity(SUBSCRIPTIONS);
    for _ in 0..SUBSCRIPTIONS {
        let d = domains[g.below(domains.len() as u64) as usize];
        let p = match g.below(4) {
            0 => format!("{d}.r{}.k{}", g.below(200), g.below(50)),
            1 => format!("{d}.r{}.#", g.below(200)),
            2 => format!("{d}.*.k{}", g.below(50)),
            _ => format!("{d}.r{}.k{}.e{}", g.below(200), g.below(50), g.below(20)),
        };
        patterns.push(p);
    }
    let mut matcher = TopicMatcher::default();
    for (i, p) in patterns.iter().enumerate() {
        matcher.insert(p, false, i as u32);
    }
    let topics: Vec<String> = (0..10_000)
        .map(|_| {
            let d = domains[g.below(domains.len() as u64) as usize];
            format!("{d}.r{}.k{}", g.below(200), g.below(50))
        })
        .collect();

    let rounds = 20;
    let started = Instant::now();
    let mut found = 0usize;
    for _ in 0..rounds {
        for t in &topics {
            found += black_box(matcher.matches(black_box(t))).len();
        }
    }
    let trie_ns = started.elapsed().as_nanos() as f64 / (rounds * topics.len()) as f64;

    let scan_topics = &topics[..200];
    let started = Instant::now();
    let mut scanned = 0usize;
    for t in scan_topics {
        scanned += patterns
            .iter()
            .filter(|p| pattern_matches(black_box(p), false, black_box(t)))
            .count();
    }
    let scan_ns = started.elapsed().as_nanos() as f64 / scan_topics.len() as f64;
    // The two agree on what they found, per topic on average.
    let per_topic_trie = found as f64 / (rounds * topics.len()) as f64;
    let per_topic_scan = scanned as f64 / scan_topics.len() as f64;
    println!(
        "{SUBSCRIPTIONS} subscriptions: trie {trie_ns:.0} ns/topic ({per_topic_trie:.1} matches), \
         scanning every pattern {scan_ns:.0} ns/topic ({per_topic_scan:.1} matches): \
         trie/scan = {:.5}",
        trie_ns / scan_ns
    );
}
