//! Build N+1, inside this build, so that one test binary can run a cluster of two builds
//! (rolling upgrades, issue 12 point 6). A node started with
//! `NodeBuilder::speak_next_protocol` behaves as the next build would:
//!
//! * it speaks peer protocol `PEER_PROTOCOL + 1` as well (the hello settles on what both
//!   ends speak, `fabric::frame::negotiate`);
//! * its heartbeats carry a field this build's `DataRequest::Heartbeat` does not have
//!   (`build`), which this build's nodes ignore, and it reads heartbeats with that field
//!   optional, so those of this build's nodes (without it) read as `None`;
//! * with every heartbeat it also sends a message kind this build does not know
//!   (`Gossip`): this build's nodes answer it `Unsupported`, a node of N+1 answers it.
//!
//! [`UpgradeStats`] counts each of these, so tests can see both builds talk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::client::{DataClient, DataReply};
use crate::fabric::codec;
use crate::fabric::frame::MAX_FRAME_BYTES;
use crate::fabric::liveness::Load;

/// The data-plane requests N+1 writes differently from this build, or that it lacks.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum NextRequest {
    /// This build's `Heartbeat`, plus a field it does not know.
    Heartbeat {
        load: Load,
        #[serde(default)]
        build: Option<String>,
    },
    /// A kind this build does not know.
    Gossip { note: String },
}

/// N+1's answer to `Gossip`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum NextReply {
    Gossip { note: String },
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

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl UpgradeStats {
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

/// N+1's heartbeat, after its `Gossip` to the same peer; the peer's load.
pub(crate) async fn heartbeat(
    peer: &DataClient,
    stats: &UpgradeStats,
    load: Load,
    ttl: Duration,
) -> std::io::Result<Load> {
    gossip(peer, stats, ttl).await;
    let build = Some(format!(
        "peer protocol {}",
        crate::fabric::PEER_PROTOCOL + 1
    ));
    let body =
        codec::encode(&NextRequest::Heartbeat { load, build }).map_err(std::io::Error::other)?;
    peer.heartbeat_with(body, ttl).await
}

/// How N+1 answers a request it reads as one of its own (`load`: this node's); `None`:
/// not one of N+1's, so this build's handling answers it.
pub(crate) fn answer(
    body: &[u8],
    stats: &UpgradeStats,
    load: Load,
) -> Option<Result<Vec<u8>, String>> {
    let req = codec::decode::<NextRequest>(body, MAX_FRAME_BYTES).ok()?;
    let reply = match req {
        NextRequest::Heartbeat { build, .. } => {
            count(match build {
                Some(_) => &stats.heartbeats_with_build,
                None => &stats.heartbeats_without_build,
            });
            codec::encode(&DataReply::Heartbeat { load })
        }
        NextRequest::Gossip { note } => {
            count(&stats.gossip_answered);
            codec::encode(&NextReply::Gossip { note })
        }
    };
    Some(reply.map_err(|e| e.to_string()))
}

/// Sends N+1's new kind to the peer and counts how it was answered.
async fn gossip(peer: &DataClient, stats: &UpgradeStats, ttl: Duration) {
    let note = "hello from the next build".to_owned();
    match call(peer, &NextRequest::Gossip { note }, ttl).await {
        Ok(None) => count(&stats.gossip_unsupported),
        Ok(Some(NextReply::Gossip { .. })) => count(&stats.gossip_served),
        Err(_) => {}
    }
}

/// Sends the next build's new message kind; `Ok(None)`: unsupported by the peer.
async fn call(
    peer: &DataClient,
    req: &NextRequest,
    ttl: Duration,
) -> std::io::Result<Option<NextReply>> {
    let body = codec::encode(req).map_err(std::io::Error::other)?;
    match peer.call(body, ttl).await {
        Ok(reply) => codec::decode(&reply, MAX_FRAME_BYTES)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(f) if f.error.kind() == std::io::ErrorKind::Unsupported => Ok(None),
        Err(f) => Err(f.error),
    }
}
