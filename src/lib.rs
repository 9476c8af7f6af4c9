//! # mpreg
//!
//! A distributed RPC cluster: users register functions on nodes; a client sends one request
//! made of commands whose arguments may name other commands, and the node runs that
//! dependency DAG, each step as soon as its inputs are ready.
//!
//! ## Layout
//!
//! * [`env`]: the node's only door to the network, clocks and randomness (production or
//!   simulated by the `sim` crate).
//! * [`protocol`]: wire messages, error codes and frame decoding (no IO).
//! * [`registry`]: functions with name, `function_id`, version and resources; matching.
//! * [`rpc`]: the pure DAG planner, argument resolution, and the executor.
//! * [`node`]: the WebSocket server: connections, reply coalescing, draining.
//! * [`client`]: the client library: one node ([`Client`]) or the cluster ([`ClusterClient`]).
//! * [`routing`]: which node runs a command (pure), and the failure detector.
//! * [`demo`]: the demo functions `mpreg-demo-node` and the examples serve.
//! * [`fabric`]: what peers say to each other: bounded frame decoding, the cluster secret
//!   and the hello's challenge-response, per-connection byte budgets.
//! * [`control`]: the replicated catalog's state machine (control plane).
//! * [`auth`]: client tokens (JWT), the roles they carry, and what a caller may do.
//! * [`tls`]: rustls on the node's port (clients and peers) and in the client.
//! * [`config`]: settings layered defaults < TOML < `MPREG_*` env < flags, each declared once.
//! * [`small_file`]: reading the key, certificate and secret files settings name.
//! * [`cli`]: the `mpreg` and `mpreg-node` command lines, and the benchmark.

pub mod admin;
pub mod auth;
pub mod builtins;
pub mod cache;
pub mod cli;
pub mod client;
pub mod config;
pub mod control;
pub mod data;
pub mod demo;
pub mod dns;
pub mod env;
pub mod fabric;
#[doc(hidden)]
pub mod fuzzing;
pub mod ids;
pub mod memory;
mod metrics;
pub mod node;
pub mod protocol;
pub mod pubsub;
pub mod queue;
pub mod registry;
pub mod routing;
pub mod rpc;
mod shutdown;
pub mod small_file;
pub mod tls;
mod transport;
mod view;

pub use client::{
    CallBuilder, Client, ClientError, ClusterClient, ClusterSubscription, ConnectOptions,
    Notification, Retry, Subscription,
};
pub use config::Settings;
pub use env::Env;
pub use node::{Node, NodeBuilder, NodeError, RunningNode, ShutdownHandle};

pub use protocol::{ErrorCode, RpcCommand};
pub use registry::{CallArgs, CallError, Function, RegisterError};
