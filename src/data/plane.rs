//! The data plane on the peer fabric, as this node serves it: heartbeats (the sender's
//! load, answered with the receiver's), forwarded steps, publishes and interest from other
//! nodes. The node registers [`DataPlane`] with its fabric when it starts, once its
//! functions exist; [`DataBeat`] is the heartbeat loop's side.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::client::{DataClient, DataReply, DataRequest, MAX_BACKLOG_REPLY};
use super::next::UpgradeStats;
use crate::fabric::frame::MAX_FRAME_BYTES;
use crate::fabric::liveness::Load;
use crate::fabric::{Answer, Link, PlaneHandler, Work, codec};
use crate::protocol::pubsub::{PeerMessage, TopicPattern};
use crate::pubsub::exchange::Exchange;
use crate::pubsub::interest::{MAX_INTEREST_PATTERNS, RemoteInterest};
use crate::registry::BoxFuture;
use crate::rpc::{Step, StepOutcome};

/// How this node serves its data plane.
pub(crate) struct DataPlane {
    /// This node's load now.
    pub(crate) load: Box<dyn Fn() -> Load + Send + Sync>,
    /// Runs a forwarded step.
    pub(crate) run: Box<dyn Fn(Step) -> BoxFuture<StepOutcome> + Send + Sync>,
    /// Set when this node speaks as the next build would (`next`).
    pub(crate) next: Option<Arc<UpgradeStats>>,
    /// This node's subscriptions, and its peers'.
    pub(crate) pubsub: Arc<Exchange>,
    pub(crate) interest: Arc<RemoteInterest>,
    /// Whose time backlogs are kept and asked for by.
    pub(crate) clock: Arc<dyn crate::env::Clock>,
}

fn encoded<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    codec::encode(value).map_err(|e| e.to_string())
}

impl PlaneHandler for DataPlane {
    fn answer(self: Arc<Self>, body: Vec<u8>) -> Answer {
        let now = |reply| Answer {
            work: Work::Other,
            reply: Box::pin(std::future::ready(reply)),
        };
        if let Some(stats) = &self.next
            && let Some(reply) = super::next::answer(&body, stats, (self.load)())
        {
            return now(reply);
        }
        match codec::decode::<DataRequest>(&body, MAX_FRAME_BYTES) {
            Ok(DataRequest::Heartbeat { load: _ }) => now(encoded(&DataReply::Heartbeat {
                load: (self.load)(),
            })),
            Ok(DataRequest::Step(step)) => {
                let run = (self.run)(step);
                Answer {
                    work: Work::Step,
                    reply: Box::pin(async move { encoded(&DataReply::Step(run.await)) }),
                }
            }
            Ok(DataRequest::Publish(messages)) => {
                let mut notified = 0;
                for m in messages {
                    let (origin, seq, known) = (m.origin, m.seq, m.known_version);
                    if let Ok(m) = m.into_message()
                        && m.check().is_ok()
                    {
                        notified += self.pubsub.publish(&m, origin, seq, known) as u64;
                    }
                }
                now(encoded(&DataReply::Published { notified }))
            }
            Ok(DataRequest::Interest {
                node,
                version,
                patterns,
            }) => {
                let checked = check_interest(&patterns);
                if checked.is_ok() {
                    self.interest.set(node, version, patterns);
                }
                now(encoded(&DataReply::Interest(checked)))
            }
            Ok(DataRequest::Backlog {
                node,
                version,
                interest,
                patterns,
                from_ms_ago,
                max_bytes,
            }) => {
                let answer = check_interest(&interest)
                    .and_then(|()| check_interest(&patterns))
                    .map(|()| {
                        // The interest first, then the cut (`pubsub::backlog`).
                        self.interest.set(node, version, interest);
                        let patterns: Vec<_> = patterns
                            .into_iter()
                            .map(|(pattern, exact_match)| TopicPattern {
                                pattern,
                                exact_match,
                            })
                            .collect();
                        let now = self.clock.wall_ms();
                        let (kept, cut) = self.pubsub.backlog_since(
                            &patterns,
                            now.saturating_sub(from_ms_ago),
                            now,
                            max_bytes.min(MAX_BACKLOG_REPLY) as usize,
                        );
                        let kept = kept
                            .iter()
                            .map(|k| (k.at_ms, PeerMessage::of(&k.message, 0, k.seq)))
                            .collect();
                        (kept, cut)
                    });
                now(encoded(&DataReply::Backlog(answer)))
            }
            // A request of a kind this build does not know: answered unsupported.
            Err(e) => now(Err(e.to_string())),
        }
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

/// The data plane's heartbeat, for the fabric's heartbeat loop.
pub(crate) struct DataBeat {
    pub(crate) next: Option<Arc<UpgradeStats>>,
}

impl crate::fabric::heartbeat::Beat for DataBeat {
    fn beat(&self, link: Link, load: Load, ttl: Duration) -> BoxFuture<io::Result<Load>> {
        let peer = DataClient::new(link);
        let next = self.next.clone();
        Box::pin(async move {
            match next {
                Some(stats) => super::next::heartbeat(&peer, &stats, load, ttl).await,
                None => peer.heartbeat(load, ttl).await,
            }
        })
    }
}
