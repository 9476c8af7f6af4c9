//! Waiting for a node's stop signal (a `watch` channel that turns `true`).

use tokio::sync::watch;

/// Resolves once shutdown has been asked for. (A helper so that the watch guard never lives
/// across an await of the caller, which would make its future `!Send`.)
pub(crate) async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|s| *s).await.is_err() {
        // Every handle is gone (the `RunningNode` was dropped): nobody can ask for a stop
        // any more, so the node runs until its runtime ends.
        std::future::pending::<()>().await;
    }
}
