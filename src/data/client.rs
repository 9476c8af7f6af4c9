//! This node's side of a call on another node's data plane: the messages
//! ([`DataRequest`], [`DataReply`]) and [`DataClient`], on the link every plane shares.

use std::io;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::env::Env;
use crate::fabric::frame::MAX_FRAME_BYTES;
use crate::fabric::liveness::Load;
use crate::fabric::{CallFailure, ClusterSecret, Fabric, Link, Plane, codec};
use crate::protocol::pubsub::PeerMessage;
use crate::rpc::{ForwardError, Step, StepOutcome};

/// A request to a node's data plane.
#[derive(Debug, Serialize, Deserialize)]
pub enum DataRequest {
    /// The sender's load; the answer carries the receiver's.
    Heartbeat { load: Load },
    /// A command to run here, forwarded by the node coordinating its request.
    Step(Step),
    /// Messages published on the sender, for this node's matching subscribers (in the
    /// order they were published there).
    Publish(Vec<PeerMessage>),
    /// What the sender's clients subscribe to (`pubsub::interest`), as of `version`.
    Interest {
        node: u64,
        version: u64,
        patterns: Vec<(String, bool)>,
    },
    /// A subscription on the sender wants what this node kept for `patterns` since
    /// `from_seconds` ago (at most `max_bytes`). It carries the sender's interest, which
    /// this node takes first: what it publishes after its answer is cut goes to the sender
    /// live.
    Backlog {
        node: u64,
        version: u64,
        interest: Vec<(String, bool)>,
        patterns: Vec<(String, bool)>,
        from_ms_ago: u64,
        max_bytes: u64,
    },
    /// A queue call (`op`, a built-in's name) for the queue's owner; its request as JSON.
    Queue {
        op: String,
        #[serde(with = "serde_bytes")]
        request: Vec<u8>,
    },
}

/// A queue call's failure as it travels: (kind, code, message) (`queue::service::QueueFail`).
pub type QueueFailure = (u8, String, String);

/// The answer to a [`DataRequest`] of the same variant.
#[derive(Debug, Serialize, Deserialize)]
pub enum DataReply {
    Heartbeat {
        load: Load,
    },
    Step(StepOutcome),
    /// How many notifications the messages made here.
    Published {
        notified: u64,
    },
    /// `Err`: the summary was refused (why).
    Interest(Result<(), String>),
    /// The kept messages (with the time each was kept, ms), oldest first, and the number
    /// they are cut at; `Err`: refused (why).
    Backlog(Result<(Vec<(u64, PeerMessage)>, u64), String>),
    /// The queue call's reply as JSON, or why it failed.
    Queue(Result<serde_bytes::ByteBuf, QueueFailure>),
}

/// The most a backlog answer carries (a peer frame holds 64 MiB).
pub(crate) const MAX_BACKLOG_REPLY: u64 = 16 << 20;

/// A peer's answer of another kind than the request's.
fn mismatched() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "mismatched peer reply")
}

/// This node's data-plane client of one peer, on the link every plane shares.
#[derive(Clone)]
pub struct DataClient {
    link: Link,
}

impl DataClient {
    pub(crate) fn new(link: Link) -> DataClient {
        DataClient { link }
    }

    /// A client with a link of its own to `addr`, proving `secret` (tools and tests).
    pub fn to_addr(env: Env, addr: impl Into<String>, secret: ClusterSecret) -> DataClient {
        DataClient::new(Fabric::tool(env, addr, secret))
    }

    /// The `host:port` this client talks to.
    pub fn addr(&self) -> &str {
        self.link.addr()
    }

    /// Drops the connection to the peer; the next call opens a new one.
    pub fn reset(&self) {
        self.link.reset();
    }

    pub(crate) async fn call(&self, body: Vec<u8>, ttl: Duration) -> Result<Vec<u8>, CallFailure> {
        self.link.call_patiently(Plane::Data, body, ttl).await
    }

    /// A heartbeat carrying this node's `load`; answers the peer's. A missed deadline
    /// does not break the link (it is shared with forwarded steps, which would be lost):
    /// the caller decides when silence means the link is dead ([`DataClient::reset`]).
    pub async fn heartbeat(&self, load: Load, ttl: Duration) -> io::Result<Load> {
        let body = codec::encode(&DataRequest::Heartbeat { load }).map_err(io::Error::other)?;
        self.heartbeat_with(body, ttl).await
    }

    /// A heartbeat written as `body` (the next build writes its own); the peer's load.
    pub(crate) async fn heartbeat_with(&self, body: Vec<u8>, ttl: Duration) -> io::Result<Load> {
        let reply = self.call(body, ttl).await.map_err(|f| f.error)?;
        match codec::decode::<DataReply>(&reply, MAX_FRAME_BYTES) {
            Ok(DataReply::Heartbeat { load }) => Ok(load),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "mismatched peer reply",
            )),
        }
    }

    /// Sends `req` and decodes the answer (whichever variant it is).
    async fn request(&self, req: &DataRequest, ttl: Duration) -> io::Result<DataReply> {
        let body = codec::encode(req).map_err(io::Error::other)?;
        let reply = self.call(body, ttl).await.map_err(|f| f.error)?;
        codec::decode(&reply, MAX_FRAME_BYTES).map_err(|_| mismatched())
    }

    /// Hands `messages` to the peer's subscribers; how many notifications they made.
    pub async fn publish(&self, messages: Vec<PeerMessage>, ttl: Duration) -> io::Result<u64> {
        match self.request(&DataRequest::Publish(messages), ttl).await? {
            DataReply::Published { notified } => Ok(notified),
            _ => Err(mismatched()),
        }
    }

    /// Tells the peer what this node's clients subscribe to.
    pub async fn interest(
        &self,
        node: u64,
        version: u64,
        patterns: Vec<(String, bool)>,
        ttl: Duration,
    ) -> io::Result<()> {
        let req = DataRequest::Interest {
            node,
            version,
            patterns,
        };
        match self.request(&req, ttl).await? {
            DataReply::Interest(r) => r.map_err(io::Error::other),
            _ => Err(mismatched()),
        }
    }

    /// What the peer kept for `patterns` since `from_ms_ago` (at most `max_bytes`), telling
    /// it first this node's (`node`'s) `interest` as of `version`: its kept messages, with
    /// when each was kept, and the number they are cut at.
    #[allow(clippy::too_many_arguments)]
    pub async fn backlog(
        &self,
        node: u64,
        version: u64,
        interest: Vec<(String, bool)>,
        patterns: Vec<(String, bool)>,
        from_ms_ago: u64,
        max_bytes: u64,
        ttl: Duration,
    ) -> io::Result<(Vec<(u64, PeerMessage)>, u64)> {
        let req = DataRequest::Backlog {
            node,
            version,
            interest,
            patterns,
            from_ms_ago,
            max_bytes,
        };
        match self.request(&req, ttl).await? {
            DataReply::Backlog(r) => r.map_err(io::Error::other),
            _ => Err(mismatched()),
        }
    }

    /// Runs queue call `op` on the peer (the queue's owner) within `ttl`: its JSON reply, or
    /// why it failed there.
    pub async fn queue(
        &self,
        op: &str,
        request: Vec<u8>,
        ttl: Duration,
    ) -> io::Result<Result<Vec<u8>, QueueFailure>> {
        let req = DataRequest::Queue {
            op: op.to_owned(),
            request,
        };
        match self.request(&req, ttl).await? {
            DataReply::Queue(r) => Ok(r.map(serde_bytes::ByteBuf::into_vec)),
            _ => Err(mismatched()),
        }
    }

    /// Runs `step` on the peer within `ttl`; a missed deadline does not break the link.
    pub async fn step(&self, step: Step, ttl: Duration) -> Result<StepOutcome, ForwardError> {
        let body = codec::encode(&DataRequest::Step(step))
            .map_err(|e| ForwardError::NotSent(e.to_string()))?;
        match self.call(body, ttl).await {
            Ok(reply) => match codec::decode::<DataReply>(&reply, MAX_FRAME_BYTES) {
                Ok(DataReply::Step(outcome)) => Ok(outcome),
                _ => Err(ForwardError::Lost("mismatched peer reply".into())),
            },
            Err(f) if f.sent => Err(ForwardError::Lost(f.error.to_string())),
            // Not sent, or refused (busy, unsupported): nothing ran there.
            Err(f) => Err(ForwardError::NotSent(f.error.to_string())),
        }
    }
}
