//! The peer fabric: what nodes say to each other, below the control plane (Raft) and the
//! data plane (forwarded steps, heartbeats).
//!
//! * [`codec`]: peer frames in and out, every decode under a byte limit proportional to the
//!   frame, so no length a peer claims allocates more than it sent.
//! * [`secret`]: the cluster secret every member holds (`--cluster-secret-file`).
//! * [`handshake`]: the hello's challenge-response (HMAC-SHA256 over fresh nonces from both
//!   sides), pure: bytes in, proofs and verdicts out.
//! * [`budget`]: the byte budget of one peer connection's unwritten frames.
//!
//! The peer link itself (connections, multiplexing, deadlines) still lives in
//! `control::raft::link`; moving it here, with the planes registering their handlers, is
//! the next step of the layout DESIGN.md sets out.

pub mod budget;
pub mod codec;
pub mod handshake;
pub mod secret;

pub use secret::{ClusterSecret, SecretError};
