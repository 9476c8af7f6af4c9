//! Subscriptions that outlive a node: [`ClusterClient::subscribe`] subscribes on one node
//! of the cluster and, when that node's connection ends, on the next reachable one.
//!
//! **What can be missed**: messages published while no subscription is in place, between
//! the old connection ending and the new subscription being acknowledged (and, for
//! messages published on other nodes, until the new node's interest has reached them,
//! normally within 100 ms). Nothing is delivered twice by the move: the old subscription
//! died with its connection.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::ClientError;
use super::cluster::ClusterClient;
use super::pubsub::Notification;

/// Notifications buffered for the consumer (as [`super::pubsub::BUFFERED`]).
const BUFFERED: usize = 1024;
/// Between attempts to subscribe again: doubling from the first to the last.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_LAST: Duration = Duration::from_secs(2);
/// Consecutive failed attempts after which the stream ends (every node unreachable for
/// about half a minute).
const MAX_FAILED_ATTEMPTS: u32 = 20;

/// A subscription on whichever node is reachable; a `Stream` of its notifications that
/// ends when no node could take it again ([`MAX_FAILED_ATTEMPTS`]) or when dropped.
pub struct ClusterSubscription {
    rx: mpsc::Receiver<Notification>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ClusterSubscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl futures_util::Stream for ClusterSubscription {
    type Item = Notification;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Notification>> {
        self.rx.poll_recv(cx)
    }
}

impl ClusterClient {
    /// Subscribes to `patterns` on a reachable node, and again on another when that one
    /// goes away (see the module's note on what the gap can miss). The first subscription
    /// is in place when this returns.
    pub async fn subscribe<I, S>(&self, patterns: I) -> Result<ClusterSubscription, ClientError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let patterns: Vec<String> = patterns.into_iter().map(Into::into).collect();
        // Its own connections: a subscription's node need not be the one calls go to.
        let own = self.detached().await;
        let first = own.live().await?.subscribe(patterns.clone()).await?;
        let (tx, rx) = mpsc::channel(BUFFERED);
        let task = tokio::spawn(follow(own, patterns, first, tx));
        Ok(ClusterSubscription { rx, task })
    }
}

async fn follow(
    cluster: ClusterClient,
    patterns: Vec<String>,
    mut current: super::pubsub::Subscription,
    tx: mpsc::Sender<Notification>,
) {
    loop {
        while let Some(n) = current.next().await {
            if tx.send(n).await.is_err() {
                return; // the consumer is gone
            }
        }
        // The connection ended: subscribe on the next reachable node.
        cluster.drop_current().await;
        let mut wait = RETRY_FIRST;
        let mut failed = 0;
        current = loop {
            let attempt = async {
                let client = cluster.live().await?;
                client.subscribe(patterns.clone()).await
            };
            match attempt.await {
                Ok(s) => break s,
                Err(e) => {
                    failed += 1;
                    if failed >= MAX_FAILED_ATTEMPTS {
                        tracing::warn!(error = %e, "a cluster subscription could not be renewed");
                        return;
                    }
                    cluster.drop_current().await;
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(RETRY_LAST);
                }
            }
        };
    }
}
