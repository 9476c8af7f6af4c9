//! What the peer links and connections of one node share ([`Endpoint`]): who the node is,
//! what it proves and serves, how many connections it has open, and whether it has stopped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::watch;

use super::budget::Traffic;
use super::frame::{Caller, MIN_PEER_PROTOCOL, PEER_PROTOCOL};
use super::handshake::RefusalLog;
use super::plane::Planes;
use super::secret::ClusterSecret;
use crate::env::Env;

/// What every connection of one node shares: who the node is (its hellos say so, so that a
/// peer can use the connection for its calls back, and a hello naming another node is
/// refused), what it proves, what it serves, and how many connections it has open.
pub(crate) struct Endpoint {
    pub(crate) env: Env,
    /// Said in every hello (`None`: a tool), and the cluster an accepted hello must name.
    pub(crate) cluster: Option<String>,
    /// What both ends of every connection prove they hold (`fabric::handshake`).
    secret: ClusterSecret,
    /// Speaks the next build's protocol too (tests of rolling upgrades).
    next: bool,
    /// Dials peers over TLS (a node whose port serves TLS; `None`: plain WebSocket).
    pub(crate) tls: Option<crate::tls::NodeTls>,
    /// Refused hellos and proofs, logged at most once per interval.
    pub(crate) refusals: RefusalLog,
    me: OnceLock<Caller>,
    planes: Planes,
    open: AtomicUsize,
    /// Bytes its peer connections read and wrote.
    pub(crate) traffic: Arc<Traffic>,
    /// Set when the node has stopped: every connection ends and no new one is dialled.
    closed: watch::Sender<bool>,
}

impl Endpoint {
    pub(crate) fn new(
        env: Env,
        cluster: Option<String>,
        secret: ClusterSecret,
        next: bool,
        tls: Option<crate::tls::NodeTls>,
    ) -> Endpoint {
        Endpoint {
            env,
            cluster,
            secret,
            next,
            tls,
            refusals: RefusalLog::default(),
            me: OnceLock::new(),
            planes: Planes::default(),
            open: AtomicUsize::new(0),
            traffic: Arc::default(),
            closed: watch::Sender::new(false),
        }
    }

    /// The oldest and newest peer protocols this node speaks.
    pub(crate) fn protocols(&self) -> (u32, u32) {
        (MIN_PEER_PROTOCOL, PEER_PROTOCOL + u32::from(self.next))
    }

    pub(crate) fn secret(&self) -> &ClusterSecret {
        &self.secret
    }

    /// Whether it speaks the next build's protocol too.
    pub(crate) fn speaks_next(&self) -> bool {
        self.next
    }

    /// Says from now on that this node is `me` (the first call stands).
    pub(crate) fn introduce(&self, me: Caller) {
        let _ = self.me.set(me);
    }

    /// Who this node is, once it knows (hellos name nobody before).
    pub(crate) fn me(&self) -> Option<&Caller> {
        self.me.get()
    }

    pub(crate) fn planes(&self) -> &Planes {
        &self.planes
    }

    pub(crate) fn closed(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    pub(crate) fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Ends every connection and dials no more: the node has stopped.
    pub(crate) fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Connections open now.
    pub(crate) fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub(crate) fn connection_opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Resolves once `rx` says true (never, if the sender is gone).
pub(crate) async fn until_true(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
