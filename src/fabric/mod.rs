//! The peer fabric: connections between nodes and what travels on them, below the control
//! plane (Raft, `control::raft`) and the data plane (heartbeats and forwarded steps,
//! `data::plane`), which register their handlers with it when the node starts. It
//! knows nothing of what the planes say.
//!
//! * [`links`]: [`Fabric`], a node's links (one per node pair, shared by every plane)
//!   and the planes it serves; [`endpoint`]: what its links and connections share.
//! * [`link`]: one peer's link: dialling, crossed dials, calls with deadlines.
//! * `conn`: what one open connection's handle (`open`) and its task (`drive`) share;
//!   the task reads, answers (`served`) and writes.
//! * [`lifecycle`]: what a connection is doing (using, done, retired), pure.
//! * [`serve`]: the accepting side; [`hello`]: both halves of the hello.
//! * [`frame`]: what travels (MessagePack, self-describing), protocol negotiation.
//! * [`codec`]: every decode bounded by the bytes received.
//! * [`secret`], [`handshake`]: the cluster secret and its challenge-response (pure).
//! * [`budget`]: the byte budget of one connection (pure).
//! * [`plane`]: what a plane's handler answers.
//! * [`heartbeat`], [`liveness`]: heartbeats to every member and the failure detector
//!   they feed (routing reads it).

pub mod budget;
pub mod codec;
mod conn;
mod drive;
pub mod endpoint;
pub mod frame;
pub mod handshake;
pub mod heartbeat;
pub mod hello;
pub mod lifecycle;
pub mod link;
pub mod links;
pub mod liveness;
mod open;
pub mod plane;
pub mod secret;
mod serve;
mod served;

pub use frame::{
    Caller, Frame, Hello, MIN_PEER_PROTOCOL, PEER_PATH, PEER_PROTOCOL, Plane, decode_frame,
    encode_frame, negotiate,
};
pub use hello::{parse_hello, transcript as hello_transcript};
pub use link::{CallFailure, Link};
pub use links::Fabric;
pub use plane::{Answer, PlaneHandler, Work};
pub use secret::{ClusterSecret, SecretError};
pub use serve::serve_peer;
