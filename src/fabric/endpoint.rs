//! What the peer links of one node share ([`Endpoint`]), and the handle the node's planes
//! use to reach their peers and to serve them ([`Fabric`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use tokio::sync::watch;

use super::ClusterSecret;
use super::frame::{Caller, MIN_PEER_PROTOCOL, PEER_PROTOCOL, Plane};
use super::handshake::RefusalLog;
use super::link::{Link, LinkTo};
use super::plane::{PlaneHandler, Planes};
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
    pub(crate) traffic: Arc<super::budget::Traffic>,
    /// Set when the node has stopped: every connection ends and no new one is dialled.
    closed: watch::Sender<bool>,
}

impl Endpoint {
    fn new(
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

    pub(crate) fn connection_opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A node's peer fabric: the links to its peers (one per node pair, shared by every plane)
/// and the planes it serves. Clones share it.
#[derive(Clone)]
pub struct Fabric {
    endpoint: Arc<Endpoint>,
    /// By node and address: a node restarted at an address with a new id is a new link.
    links: Arc<Mutex<BTreeMap<(u64, String), Link>>>,
}

impl Fabric {
    /// A fabric that proves `secret` and says `cluster` (`None`: a tool) in its hellos.
    pub fn new(env: Env, cluster: Option<String>, secret: ClusterSecret) -> Fabric {
        Fabric::with(Endpoint::new(env, cluster, secret, false, None))
    }

    fn with(endpoint: Endpoint) -> Fabric {
        Fabric {
            endpoint: Arc::new(endpoint),
            links: Arc::default(),
        }
    }

    /// Speaks the next build's peer protocol as well (tests of rolling upgrades). Called
    /// before any link exists.
    #[doc(hidden)]
    pub fn speak_next_protocol(self) -> Fabric {
        let e = &self.endpoint;
        Fabric::with(Endpoint::new(
            e.env.clone(),
            e.cluster.clone(),
            e.secret.clone(),
            true,
            e.tls.clone(),
        ))
    }

    /// Dials peers over `tls` (the node's port serves TLS, and so do its peers'). Called
    /// before any link exists.
    pub fn dial_tls(self, tls: Option<crate::tls::NodeTls>) -> Fabric {
        let e = &self.endpoint;
        Fabric::with(Endpoint::new(
            e.env.clone(),
            e.cluster.clone(),
            e.secret.clone(),
            e.next,
            tls,
        ))
    }

    pub(crate) fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// Says in every hello that this is node `id`, reached at `addr`, so that each peer
    /// uses the connection for its own calls here instead of dialling another (and a hello
    /// naming another node is refused).
    pub fn introduce(&self, id: u64, addr: impl Into<String>) {
        let _ = self.endpoint.me.set(Caller {
            id,
            addr: addr.into(),
        });
    }

    /// Serves `plane` with `handler`, held weakly (the node owns it).
    pub fn serve(&self, plane: Plane, handler: Weak<dyn PlaneHandler>) {
        self.endpoint.planes.serve(plane, handler);
    }

    /// Bytes every peer connection read and wrote so far.
    pub fn traffic(&self) -> &super::budget::Traffic {
        &self.endpoint.traffic
    }

    /// Peer connections open now (dialled or accepted; one per peer once settled).
    pub fn open_connections(&self) -> usize {
        self.endpoint.open.load(Ordering::Relaxed)
    }

    /// Ends every peer connection of this node and dials no more: it has stopped.
    pub fn close(&self) {
        self.endpoint.closed.send_replace(true);
    }

    /// The link to node `target` at `addr` (`host:port`) that every caller shares.
    pub fn link_to(&self, target: u64, addr: &str) -> Link {
        self.links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((target, addr.to_owned()))
            .or_insert_with(|| {
                Link::new(
                    addr.to_owned(),
                    LinkTo {
                        node: Some(target),
                        introduce: true,
                        endpoint: self.endpoint.clone(),
                    },
                )
            })
            .clone()
    }

    /// A link of its own to whichever node is at `addr` (joins, a leave through a
    /// configured peer): its hello says this cluster, so that a node of another cluster
    /// refuses it, but not who this node is.
    pub fn dial(&self, addr: impl Into<String>) -> Link {
        Link::new(
            addr.into(),
            LinkTo {
                node: None,
                introduce: false,
                endpoint: self.endpoint.clone(),
            },
        )
    }

    /// A link of a tool's to whichever node of whichever cluster is at `addr`, proving
    /// `secret`.
    pub fn tool(env: Env, addr: impl Into<String>, secret: ClusterSecret) -> Link {
        Fabric::new(env, None, secret).dial(addr)
    }

    /// [`Fabric::tool`] over TLS: to a node whose port serves TLS, showing `tls`'s
    /// certificate and checking the node's against its peer CA.
    pub fn tool_over_tls(
        env: Env,
        addr: impl Into<String>,
        secret: ClusterSecret,
        tls: crate::tls::NodeTls,
    ) -> Link {
        Fabric::new(env, None, secret)
            .dial_tls(Some(tls))
            .dial(addr)
    }
}
