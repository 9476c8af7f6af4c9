//! The accepting side of a peer connection.

use std::net::SocketAddr;
use std::time::Duration;

use super::drive::start;
use super::endpoint::until_true;
use super::frame::PeerWs;
use super::hello::{Welcomed, welcome};
use super::links::Fabric;

/// How long an accepted connection may take to say hello, and then to prove itself.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves a connection a peer dialled: checks its hello and its proof that it holds the
/// cluster secret, then runs it as any other; when the hello says which node dialled, this
/// node uses the connection for its calls to that node too. Ends when the peer disconnects
/// or misbehaves; the forwarded steps still running then are cancelled (nobody waits for
/// them). `remote` is the peer's socket address, for the log.
pub async fn serve_peer(fabric: Fabric, mut ws: PeerWs, remote: SocketAddr) {
    let endpoint = fabric.endpoint().clone();
    let mut closed = endpoint.closed();
    let admitted = tokio::select! {
        biased;
        () = until_true(&mut closed) => return,
        admitted = tokio::time::timeout(HELLO_TIMEOUT, welcome(&endpoint, &mut ws)) => admitted,
    };
    let refused = |why: &str| {
        let now = endpoint.env.clock.now();
        endpoint.refusals.refused(now, &remote.to_string(), why);
    };
    let (from, protocol) = match admitted {
        Ok(Ok(Welcomed { from, protocol })) => {
            tracing::debug!(%remote, protocol, "peer link accepted");
            (from, protocol)
        }
        Ok(Err(why)) => return refused(&why),
        Err(_) => return refused("no hello and proof within the deadline"),
    };
    let dialled_by = from.as_ref().map_or(0, |c| c.id);
    let me = endpoint.me().map(|m| m.id);
    let (open, task) = start(ws, dialled_by, endpoint, protocol);
    if let Some(caller) = from.filter(|c| Some(c.id) != me) {
        fabric.link_to(caller.id, &caller.addr).install(open);
    } else {
        drop(open);
    }
    task.await;
}
