//! A node's peer fabric ([`Fabric`]): the handle its planes use to reach their peers, one
//! link per peer shared by every plane, and to serve them.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::budget::Traffic;
use super::endpoint::Endpoint;
use super::frame::{Caller, Plane};
use super::link::{Link, LinkTo};
use super::plane::PlaneHandler;
use super::secret::ClusterSecret;
use crate::env::Env;

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
            e.secret().clone(),
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
            e.secret().clone(),
            e.speaks_next(),
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
        self.endpoint.introduce(Caller {
            id,
            addr: addr.into(),
        });
    }

    /// The peer protocol this node speaks with node `id` on a connection open now (the
    /// highest, if several addresses reach it); `None` when no connection to it is open.
    pub fn protocol_of(&self, id: u64) -> Option<u32> {
        let links: Vec<Link> = self
            .links
            .lock()
            .iter()
            .filter(|((node, _), _)| *node == id)
            .map(|(_, link)| link.clone())
            .collect();
        links.iter().filter_map(Link::protocol).max()
    }

    /// Serves `plane` with `handler`, held weakly (the node owns it).
    pub fn serve(&self, plane: Plane, handler: Weak<dyn PlaneHandler>) {
        self.endpoint.planes().serve(plane, handler);
    }

    /// Bytes every peer connection read and wrote so far.
    pub fn traffic(&self) -> &Traffic {
        &self.endpoint.traffic
    }

    /// Peer connections open now (dialled or accepted; one per peer once settled).
    pub fn open_connections(&self) -> usize {
        self.endpoint.open_connections()
    }

    /// Ends every peer connection of this node and dials no more: it has stopped.
    pub fn close(&self) {
        self.endpoint.close();
    }

    /// The link to node `target` at `addr` (`host:port`) that every caller shares.
    pub fn link_to(&self, target: u64, addr: &str) -> Link {
        self.links
            .lock()
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
