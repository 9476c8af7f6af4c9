//! What other nodes subscribe to, as they last said (`DataRequest::Interest`): a publish
//! goes only to the peers whose interest matches its topic. Eventually consistent: a
//! subscription made on a peer takes effect here when its next summary arrives.

use parking_lot::Mutex;
use std::collections::BTreeMap;

use super::matcher::TopicMatcher;

/// Most patterns one peer's summary may hold; a longer one is refused (a node sends at
/// most this many: beyond, it says `#`, everything).
pub const MAX_INTEREST_PATTERNS: usize = 16_384;

#[derive(Debug, Default)]
struct Inner {
    matcher: TopicMatcher<u64>,
    /// Each peer's patterns and the version they came with.
    peers: BTreeMap<u64, (u64, Vec<(String, bool)>)>,
}

#[derive(Debug, Default)]
pub struct RemoteInterest(Mutex<Inner>);

impl RemoteInterest {
    /// `peer`'s interest is now `patterns` (as of its `version`; an older one is ignored).
    pub fn set(&self, peer: u64, version: u64, patterns: Vec<(String, bool)>) {
        let mut inner = self.0.lock();
        if let Some((v, _)) = inner.peers.get(&peer)
            && *v > version
        {
            return;
        }
        if let Some((_, old)) = inner.peers.remove(&peer) {
            for (p, exact) in &old {
                inner.matcher.remove(p, *exact, &peer);
            }
        }
        for (p, exact) in &patterns {
            inner.matcher.insert(p, *exact, peer);
        }
        inner.peers.insert(peer, (version, patterns));
    }

    /// Forgets every peer not in `members`.
    pub fn retain(&self, members: &std::collections::BTreeSet<u64>) {
        let mut inner = self.0.lock();
        let gone: Vec<u64> = inner
            .peers
            .keys()
            .filter(|p| !members.contains(p))
            .copied()
            .collect();
        for peer in gone {
            if let Some((_, old)) = inner.peers.remove(&peer) {
                for (p, exact) in &old {
                    inner.matcher.remove(p, *exact, &peer);
                }
            }
        }
    }

    /// Every distinct pattern some peer subscribes to, as `(pattern, exact)`.
    pub fn patterns(&self) -> std::collections::BTreeSet<(String, bool)> {
        let inner = self.0.lock();
        inner
            .peers
            .values()
            .flat_map(|(_, ps)| ps.iter().cloned())
            .collect()
    }

    /// The peers with a subscription matching `topic`, each with the version of its
    /// interest this is.
    pub fn peers_for(&self, topic: &str) -> Vec<(u64, u64)> {
        let inner = self.0.lock();
        inner
            .matcher
            .matches(topic)
            .into_iter()
            .map(|p| (p, inner.peers.get(&p).map_or(0, |(v, _)| *v)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_summaries_replace_older_ones() {
        let r = RemoteInterest::default();
        r.set(1, 2, vec![("orders.#".into(), false)]);
        r.set(2, 1, vec![("orders.1.created".into(), true)]);
        assert_eq!(r.peers_for("orders.1.created"), [(1, 2), (2, 1)]);
        r.set(1, 1, vec![]); // older: ignored
        assert_eq!(r.peers_for("orders.9"), [(1, 2)]);
        r.set(1, 3, vec![("metrics.#".into(), false)]);
        assert_eq!(r.peers_for("orders.9"), []);
        r.retain(&[2].into());
        assert_eq!(r.peers_for("metrics"), []);
        assert_eq!(r.peers_for("orders.1.created"), [(2, 1)]);
    }
}
