//! The data plane on the peer fabric, as this node serves it: heartbeats (the sender's
//! load, answered with the receiver's), forwarded steps, publishes and interest from other
//! nodes. The node registers [`DataPlane`] with its fabric when it starts, once its
//! functions exist; [`DataBeat`] is the heartbeat loop's side.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::client::{DataClient, DataReply, DataRequest};
use super::next::UpgradeStats;
use crate::fabric::frame::MAX_FRAME_BYTES;
use crate::fabric::liveness::Load;
use crate::fabric::{Answer, Link, PlaneHandler, Work, codec};
use crate::protocol::pubsub::PeerMessage;
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
    /// Where peers' publishes, interest and backlog questions go (pub/sub's service).
    pub(crate) pubsub: Arc<dyn PeerPubSub>,
    /// Where queue calls forwarded to this node (as a queue's owner) go.
    pub(crate) queues: Arc<dyn PeerQueues>,
}

/// What the data plane hands to the queues: a call forwarded to this node as the queue's
/// owner. The queue service implements it; the data plane knows no queues.
pub(crate) trait PeerQueues: Send + Sync {
    /// Runs queue call `op` with its JSON `request`: the JSON reply, or why not.
    fn call(
        &self,
        op: String,
        request: Vec<u8>,
    ) -> BoxFuture<Result<Vec<u8>, super::client::QueueFailure>>;
}

/// What the data plane hands to pub/sub: publishes, interest and backlog questions from
/// peers. Pub/sub's service implements it; the data plane knows no topics.
pub(crate) trait PeerPubSub: Send + Sync {
    /// Hands a peer's publishes to this node's subscribers; how many notifications they
    /// made.
    fn publish(&self, messages: Vec<PeerMessage>) -> u64;
    /// What peer `node`'s clients subscribe to, as of `version`.
    fn interest(
        &self,
        node: u64,
        version: u64,
        patterns: Vec<(String, bool)>,
    ) -> Result<(), String>;
    /// What this node kept for `patterns` since `from_ms_ago`, after taking the asking
    /// node's interest (`pubsub::backlog`): the messages with when they were published,
    /// and the cut.
    fn backlog(&self, ask: BacklogAsk) -> Result<(Vec<(u64, PeerMessage)>, u64), String>;
}

/// A peer's backlog question ([`DataRequest::Backlog`]).
pub(crate) struct BacklogAsk {
    pub(crate) node: u64,
    pub(crate) version: u64,
    pub(crate) interest: Vec<(String, bool)>,
    pub(crate) patterns: Vec<(String, bool)>,
    pub(crate) from_ms_ago: u64,
    pub(crate) max_bytes: u64,
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
                let notified = self.pubsub.publish(messages);
                now(encoded(&DataReply::Published { notified }))
            }
            Ok(DataRequest::Interest {
                node,
                version,
                patterns,
            }) => now(encoded(&DataReply::Interest(
                self.pubsub.interest(node, version, patterns),
            ))),
            Ok(DataRequest::Backlog {
                node,
                version,
                interest,
                patterns,
                from_ms_ago,
                max_bytes,
            }) => {
                let ask = BacklogAsk {
                    node,
                    version,
                    interest,
                    patterns,
                    from_ms_ago,
                    max_bytes,
                };
                now(encoded(&DataReply::Backlog(self.pubsub.backlog(ask))))
            }
            Ok(DataRequest::Queue { op, request }) => {
                let call = self.queues.call(op, request);
                Answer {
                    // Bounded per connection and stopped with its caller, as steps are: a
                    // long-polling receive waits up to 20 s.
                    work: Work::Step,
                    reply: Box::pin(async move {
                        encoded(&DataReply::Queue(
                            call.await.map(serde_bytes::ByteBuf::from),
                        ))
                    }),
                }
            }
            // A request of a kind this build does not know: answered unsupported.
            Err(e) => now(Err(e.to_string())),
        }
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
