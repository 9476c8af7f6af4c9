//! Who gets a WebSocket: the TLS handshake (when the port serves TLS), then the upgrade
//! request, checked before any WebSocket exists. The peer path needs a certificate of the
//! peer CA (when one is configured); a client needs one of the node's `max_connections`
//! slots, then a valid token (when tokens are required). A refusal is an HTTP response
//! (401, 403, 503) with a one-line reason, logged at most once per interval and counted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

use super::shared::Shared;
use crate::auth::{Access, AuthError};
use crate::env::{BoxStream, Clock};
use crate::fabric::PEER_PATH;

/// A connection that has not finished its TLS and WebSocket handshakes by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The close code of a connection whose token expired (private range 4000–4999: 4000 +
/// HTTP's 401).
pub(super) const TOKEN_EXPIRED_CLOSE: u16 = 4401;

/// Expiries further away than this (about 30 years) are not timed: `Instant` arithmetic
/// would overflow on some, and no connection lives that long.
const FARTHEST_EXPIRY_MS: u64 = 30 * 366 * 24 * 3600 * 1000;

/// An upgrade refused with `status` and a one-line reason, before any WebSocket exists.
fn refusal(status: u16, why: &str) -> ErrorResponse {
    let mut resp = ErrorResponse::new(Some(format!("{why}\n")));
    *resp.status_mut() = tungstenite::http::StatusCode::from_u16(status)
        .unwrap_or(tungstenite::http::StatusCode::FORBIDDEN);
    if status == 401 {
        resp.headers_mut().insert(
            tungstenite::http::header::WWW_AUTHENTICATE,
            tungstenite::http::HeaderValue::from_static("Bearer"),
        );
    }
    resp
}

/// Who may use an upgraded connection: a peer, or a client with its access.
pub(super) enum Admitted {
    Peer,
    Client {
        access: Access,
        /// When the client's token runs out (seconds since the epoch).
        expires: Option<u64>,
        /// Its place among the node's client connections, given back when it is dropped.
        slot: ClientSlot,
    },
}

/// One of the node's `max_connections` client connections, taken at the upgrade (before the
/// token is checked: a flood over the limit costs no verification) and given back when
/// dropped, however the connection ends.
pub(super) struct ClientSlot {
    stats: Arc<crate::data::stats::Stats>,
}

impl ClientSlot {
    /// A slot, unless `max` client connections are open.
    fn take(stats: &Arc<crate::data::stats::Stats>, max: usize) -> Option<ClientSlot> {
        stats
            .active_clients
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ClientSlot {
                stats: stats.clone(),
            })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.stats.active_clients.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Checks an upgrade request: the peer path needs a certificate of the peer CA (when one
/// is configured); a client needs a valid token (when tokens are required).
fn admit(
    shared: &Shared,
    req: &Request,
    peer_certified: bool,
    now_s: u64,
) -> Result<Admitted, (u16, String)> {
    if req.uri().path() == PEER_PATH {
        if !peer_certified {
            return Err((
                403,
                "a peer connection needs a certificate signed by the cluster's peer CA".into(),
            ));
        }
        return Ok(Admitted::Peer);
    }
    let Some(slot) = ClientSlot::take(&shared.view.stats, shared.settings.max_connections) else {
        shared
            .view
            .stats
            .clients_refused_full
            .fetch_add(1, Ordering::Relaxed);
        return Err((
            503,
            format!(
                "the node serves {} client connections, its max_connections; try another node or later",
                shared.settings.max_connections
            ),
        ));
    };
    let Some(tokens) = &shared.tokens else {
        return Ok(Admitted::Client {
            access: Access::Open,
            expires: None,
            slot,
        });
    };
    let authorization = req
        .headers()
        .get(tungstenite::http::header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    let verified = crate::auth::upgrade::presented_token(authorization, req.uri().query())
        .and_then(|t| t.ok_or(AuthError::Missing))
        .and_then(|t| tokens.verify(&t, now_s))
        .map_err(|e| (401, e.to_string()))?;
    Ok(Admitted::Client {
        access: Access::Verified(Arc::new(verified.identity)),
        expires: Some(verified.exp),
        slot,
    })
}

/// Runs the handshakes on an accepted stream: the WebSocket and who may use it, or `None`
/// (refused, failed or too slow; already logged).
pub(super) async fn upgrade(
    shared: &Shared,
    stream: BoxStream,
    peer: SocketAddr,
) -> Option<(WebSocketStream<BoxStream>, Admitted)> {
    let clock = &shared.view.env.clock;
    let deadline = clock.now() + HANDSHAKE_TIMEOUT;
    let (stream, peer_certified) = match &shared.tls {
        Some(tls) => {
            let handshake = tls.accept(stream);
            match tokio::time::timeout_at(deadline, handshake).await {
                Ok(Ok(accepted)) => accepted,
                Ok(Err(e)) => {
                    let why = format!("TLS handshake failed: {e}");
                    shared
                        .refusals
                        .refused(clock.now(), &peer.to_string(), &why);
                    return None;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return None;
                }
            }
        }
        None => (stream, true),
    };
    let config = crate::transport::websocket_config(shared.settings.max_message_bytes);
    // The request path tells clients from peers: peers ask for PEER_PATH.
    let mut admitted = None;
    let mut refused = None;
    let now_s = clock.wall_ms() / 1000;
    #[allow(clippy::result_large_err)] // the error type is tungstenite's Callback contract
    let check = |req: &Request, resp: Response| match admit(shared, req, peer_certified, now_s) {
        Ok(a) => {
            admitted = Some(a);
            Ok(resp)
        }
        Err((status, why)) => {
            let r = refusal(status, &why);
            refused = Some(why);
            Err(r)
        }
    };
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config));
    let ws = match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            match refused {
                Some(why) => shared
                    .refusals
                    .refused(clock.now(), &peer.to_string(), &why),
                None => tracing::debug!(%peer, error = %e, "websocket handshake failed"),
            }
            return None;
        }
        Err(_) => {
            tracing::debug!(%peer, "websocket handshake timed out");
            return None;
        }
    };
    // The callback always runs before a handshake succeeds.
    admitted.map(|a| (ws, a))
}

/// The monotonic instant at which a token expiring at `exp` (seconds since the epoch)
/// ends its connection. A token valid for longer than any timer can wait (a signer's
/// choice, not a client's) gets none.
pub(super) fn expiry(exp: u64, clock: &dyn Clock) -> Option<Instant> {
    let left_ms = exp.saturating_mul(1000).saturating_sub(clock.wall_ms());
    (left_ms <= FARTHEST_EXPIRY_MS)
        .then(|| clock.now().checked_add(Duration::from_millis(left_ms)))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct At(u64);

    impl Clock for At {
        fn wall_ms(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn a_connection_ends_at_its_tokens_expiry_if_a_timer_can_reach_it() {
        let clock = At(1_000_500);
        let now = clock.now();
        let at = |exp| expiry(exp, &clock).map(|i| i.duration_since(now).as_millis());
        assert_eq!(at(1_002), Some(1_500));
        assert_eq!(at(1_000), Some(0), "already expired: at once");
        assert_eq!(at(0), Some(0));
        assert_eq!(at(u64::MAX), None, "beyond any timer");
        assert_eq!(at(1_000 + FARTHEST_EXPIRY_MS / 1000 + 1), None);
    }
}
