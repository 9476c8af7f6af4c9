//! Serves an axum router from a listener of the node's `Env`, over the node's TLS when it
//! has one. Every connection is bounded: the TLS handshake and the request head must arrive
//! within [`HEAD_TIMEOUT`], a head is at most [`MAX_HEAD_BYTES`], and at most
//! [`MAX_CONNECTIONS`] are served at once (more wait in the listen backlog).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::{Semaphore, watch};

use crate::env::Listener;
use crate::tls::NodeTls;

/// How long a client may take for its TLS handshake and its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (line and headers) read.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Admin connections served at once.
pub const MAX_CONNECTIONS: usize = 256;

/// Accepts until `shutdown`, serving `router` on each connection.
pub async fn serve(
    mut listener: Box<dyn Listener>,
    tls: Option<NodeTls>,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (tls, router) = (tls.clone(), router.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let stream = match tls {
                Some(tls) => match tokio::time::timeout(HEAD_TIMEOUT, tls.accept(stream)).await {
                    Ok(Ok((s, _))) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "admin TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                },
                None => stream,
            };
            let service = TowerToHyperService::new(router);
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "admin connection ended");
            }
        });
    }
}
