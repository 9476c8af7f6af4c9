//! The planes a node serves on its peer links. Each registers a handler when the node
//! starts (`Fabric::serve`); the fabric hands it the body of every request for its plane
//! and writes back what it answers, knowing nothing of what either says.

use std::sync::{Arc, OnceLock, Weak};

use super::frame::Plane;
/// A boxed future that can move between threads.
pub type BoxFuture<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a request costs the node that answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Runs user code (a forwarded step): limited per connection, and stopped when the
    /// caller cancels it or the connection ends.
    Step,
    /// Anything else (Raft, heartbeats): answered in its own time.
    Other,
}

/// A handler's answer to one request: what kind of work it is, and the reply to come.
/// `Err(why)`: the body is of a kind this build does not know (a newer build's); the caller
/// is told it is unsupported.
pub struct Answer {
    pub work: Work,
    pub reply: BoxFuture<Result<Vec<u8>, String>>,
}

/// A plane's side of the fabric.
pub trait PlaneHandler: Send + Sync + 'static {
    /// Answers one request's `body`. Called on the connection's task: decode here, do the
    /// work in the returned future (it is polled once at once, and spawned if not ready).
    fn answer(self: Arc<Self>, body: Vec<u8>) -> Answer;
}

/// The handlers of one node, by plane. Held weakly: the node owns them (a handler reaches
/// the node's Raft, whose network holds the fabric), and a request that comes once the
/// node is gone ends its connection.
#[derive(Default)]
pub(crate) struct Planes {
    raft: OnceLock<Weak<dyn PlaneHandler>>,
    data: OnceLock<Weak<dyn PlaneHandler>>,
    groups: OnceLock<Weak<dyn PlaneHandler>>,
}

/// Whether a plane has a handler to take a request.
pub(crate) enum Handler {
    By(Arc<dyn PlaneHandler>),
    /// No handler was registered (a tool, or a node still starting): unsupported here.
    Missing,
    /// Its handler is gone with the node.
    Gone,
}

impl Planes {
    fn slot(&self, plane: Plane) -> &OnceLock<Weak<dyn PlaneHandler>> {
        match plane {
            Plane::Raft => &self.raft,
            Plane::Data => &self.data,
            Plane::Groups => &self.groups,
        }
    }

    /// Registers `handler` for `plane`; the first registration stands.
    pub(crate) fn serve(&self, plane: Plane, handler: Weak<dyn PlaneHandler>) {
        let _ = self.slot(plane).set(handler);
    }

    pub(crate) fn get(&self, plane: Plane) -> Handler {
        match self.slot(plane).get() {
            None => Handler::Missing,
            Some(w) => w.upgrade().map_or(Handler::Gone, Handler::By),
        }
    }
}
