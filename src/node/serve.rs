//! Serving clients until shutdown, then leaving the cluster and draining: the accept loop.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::shared::Shared;
use crate::env::Listener;
use crate::shutdown::stopping;

/// Accepts connections until shutdown, then drains them.
/// How long a stopping node tries to leave the cluster before it gives up.
const LEAVE_DEADLINE: Duration = Duration::from_secs(5);

pub(crate) async fn serve(
    shared: Arc<Shared>,
    mut listener: Box<dyn Listener>,
    mut shutdown: watch::Receiver<bool>,
    peers: Vec<String>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = stopping(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    conns.spawn(super::conn::serve_connection(shared.clone(), stream, peer, shutdown.clone()));
                }
                Err(e) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(ended) = conns.join_next(), if !conns.is_empty() => {
                if let Err(e) = ended
                    && e.is_panic()
                {
                    // A node bug: that client's connection is gone, the node carries on.
                    tracing::error!(error = %e, "connection task panicked");
                }
            }
        }
    }
    // Leave the cluster while still accepting connections: the peers that commit the
    // departure reach this node through the listener. New clients are told to go away
    // (their connections see the shutdown signal).
    {
        let leave = shared.view.control.leave(&peers, LEAVE_DEADLINE);
        tokio::pin!(leave);
        loop {
            tokio::select! {
                biased;
                () = &mut leave => break,
                accepted = listener.accept() => if let Ok((stream, peer)) = accepted {
                    conns.spawn(super::conn::serve_connection(shared.clone(), stream, peer, shutdown.clone()));
                },
            }
        }
    }
    drop(listener);
    // The node has left the cluster (or given up): its peer links may close now.
    shared.view.fabric.close();
    let drain = Duration::from_millis(shared.settings.drain_timeout_ms);
    let drained =
        tokio::time::timeout(drain, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            connections = conns.len(),
            "drain timeout reached; cancelling the remaining requests"
        );
        conns.abort_all();
    }
    if let Err(e) = shared.view.control.raft.shutdown().await {
        tracing::warn!(error = %e, "raft did not shut down cleanly");
    }
    tracing::info!("node stopped");
}
