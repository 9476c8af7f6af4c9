//! The data plane between nodes, and what it serves from: the functions this node offers
//! (`functions`), steps forwarded to the node that can run them (`forward`), the peer
//! endpoint that runs steps and takes publishes from other nodes (`plane`), the bytes
//! clients hold (`client_budget`) and the node's live counters (`stats`).
//!
//! Nothing here goes through consensus: the catalog (control plane) says who offers what,
//! and steps travel directly to a node that does.

pub mod client;
pub mod client_budget;
pub mod forward;
pub mod functions;
pub mod metrics;
/// The next build inside this one, for tests of rolling upgrades and the simulator; not in
/// production builds.
#[cfg(feature = "next-build")]
pub mod next;
#[cfg(not(feature = "next-build"))]
#[path = "next_absent.rs"]
pub mod next;
pub mod plane;
pub mod stats;
