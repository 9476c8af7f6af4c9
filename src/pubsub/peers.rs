//! Pub/sub's side of the data plane: what peers send this node (their publishes, their
//! clients' interest, backlog questions), checked and handed to the engine.

use std::sync::Arc;

use super::exchange::Exchange;
use super::interest::{MAX_INTEREST_PATTERNS, RemoteInterest};
use crate::data::client::MAX_BACKLOG_REPLY;
use crate::data::plane::{BacklogAsk, PeerPubSub};
use crate::protocol::pubsub::{PeerMessage, TopicPattern};

/// This node's subscriptions, its peers', and whose time backlogs are kept by.
pub(crate) struct FromPeers {
    pub(crate) exchange: Arc<Exchange>,
    pub(crate) interest: Arc<RemoteInterest>,
    pub(crate) clock: Arc<dyn crate::env::Clock>,
}

impl PeerPubSub for FromPeers {
    fn publish(&self, messages: Vec<PeerMessage>) -> u64 {
        let mut notified = 0;
        for m in messages {
            let (origin, seq, known) = (m.origin, m.seq, m.known_version);
            if let Ok(m) = m.into_message()
                && m.check().is_ok()
            {
                notified += self.exchange.publish(&m, origin, seq, known) as u64;
            }
        }
        notified
    }

    fn interest(
        &self,
        node: u64,
        version: u64,
        patterns: Vec<(String, bool)>,
    ) -> Result<(), String> {
        check_interest(&patterns)?;
        self.interest.set(node, version, patterns);
        Ok(())
    }

    fn backlog(&self, ask: BacklogAsk) -> Result<(Vec<(u64, PeerMessage)>, u64), String> {
        check_interest(&ask.interest)?;
        check_interest(&ask.patterns)?;
        // The interest first, then the cut (`pubsub::backlog`).
        self.interest.set(ask.node, ask.version, ask.interest);
        let patterns: Vec<_> = ask
            .patterns
            .into_iter()
            .map(|(pattern, exact_match)| TopicPattern {
                pattern,
                exact_match,
            })
            .collect();
        let now = self.clock.wall_ms();
        let (kept, cut) = self.exchange.backlog_since(
            &patterns,
            now.saturating_sub(ask.from_ms_ago),
            now,
            ask.max_bytes.min(MAX_BACKLOG_REPLY) as usize,
        );
        let kept = kept
            .iter()
            .map(|k| (k.at_ms, PeerMessage::of(&k.message, 0, k.seq)))
            .collect();
        Ok((kept, cut))
    }
}

/// Bounds on a peer's interest summary: what each of its patterns costs to hold and match.
fn check_interest(patterns: &[(String, bool)]) -> Result<(), String> {
    use crate::protocol::pubsub::{MAX_TOPIC_BYTES, MAX_TOPIC_WORDS};
    if patterns.len() > MAX_INTEREST_PATTERNS {
        return Err(format!(
            "{} patterns; at most {MAX_INTEREST_PATTERNS}",
            patterns.len()
        ));
    }
    match patterns.iter().find(|(p, _)| {
        p.is_empty() || p.len() > MAX_TOPIC_BYTES || p.split('.').count() > MAX_TOPIC_WORDS
    }) {
        Some((p, _)) => Err(format!("pattern of {} bytes out of bounds", p.len())),
        None => Ok(()),
    }
}
