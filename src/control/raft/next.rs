//! Build N+1, inside this build, so that one test binary can run a cluster of two builds
//! (rolling upgrades, issue 12 point 6). A node started with
//! `NodeBuilder::speak_next_protocol` behaves as the next build would:
//!
//! * it speaks peer protocol `PEER_PROTOCOL + 1` as well (the hello settles on what both
//!   ends speak, `frame::negotiate`);
//! * its heartbeats carry a field this build's `RaftRequest::Heartbeat` does not have
//!   (`build`), which this build's nodes ignore, and it reads heartbeats with that field
//!   optional, so those of this build's nodes (without it) read as `None`;
//! * with every heartbeat it also sends a message kind this build does not know
//!   (`Gossip`): this build's nodes answer it `Unsupported`, a node of N+1 answers it.
//!
//! [`UpgradeStats`] counts each of these, so tests can see both builds talk.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::routing::liveness::Load;

/// The requests N+1 writes differently from this build, or that this build lacks.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum NextRequest {
    /// This build's `Heartbeat`, plus a field it does not know.
    Heartbeat {
        load: Load,
        #[serde(default)]
        build: Option<String>,
    },
    /// A kind this build does not know; N+1 answers it `Pong`.
    Gossip { note: String },
}

/// The frame N+1 writes its [`NextRequest`]s in (the same shape as `Frame::Request`).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum NextFrame {
    Request { id: u64, req: NextRequest },
}

/// What a node speaking N+1 saw of the other build.
#[derive(Debug, Default)]
pub struct UpgradeStats {
    /// Heartbeats received with N+1's field (from N+1 nodes).
    pub heartbeats_with_build: AtomicU64,
    /// Heartbeats received without it (from this build's nodes): read as `None`.
    pub heartbeats_without_build: AtomicU64,
    /// `Gossip` requests this node answered (from N+1 nodes).
    pub gossip_answered: AtomicU64,
    /// `Gossip` requests of this node's that a peer answered `Unsupported` (this build).
    pub gossip_unsupported: AtomicU64,
    /// `Gossip` requests of this node's that a peer answered (N+1).
    pub gossip_served: AtomicU64,
}

impl UpgradeStats {
    pub(crate) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot: (with build, without build, gossip answered, unsupported, served).
    pub fn read(&self) -> [u64; 5] {
        [
            &self.heartbeats_with_build,
            &self.heartbeats_without_build,
            &self.gossip_answered,
            &self.gossip_unsupported,
            &self.gossip_served,
        ]
        .map(|c| c.load(Ordering::Relaxed))
    }
}

/// How this build serves an N+1 request.
pub(crate) enum Served {
    /// As this request of its own.
    As(super::RaftRequest),
    /// At once, with this reply.
    Answered(super::RaftReply),
}

/// An N+1 request as this build serves it: N+1's heartbeat is this build's (its field
/// counted, then dropped); N+1's `Gossip` is answered at once.
pub(crate) fn as_this_build(req: NextRequest, stats: &UpgradeStats) -> Served {
    match req {
        NextRequest::Heartbeat { load, build } => {
            UpgradeStats::count(match build {
                Some(_) => &stats.heartbeats_with_build,
                None => &stats.heartbeats_without_build,
            });
            Served::As(super::RaftRequest::Heartbeat { load })
        }
        NextRequest::Gossip { note: _ } => {
            UpgradeStats::count(&stats.gossip_answered);
            Served::Answered(super::RaftReply::Pong)
        }
    }
}
