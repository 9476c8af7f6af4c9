//! Steps that run on another node: what the entry node sends (one command with its
//! arguments already resolved), what comes back, and the [`Cluster`] the executor asks to
//! choose a node and carry the step there.
//!
//! The executor owns the failure semantics (see `exec::remote_step`): a step that never
//! reached its node, or reached a node that no longer has the function, is sent elsewhere;
//! a step whose node failed after receiving it is retried only if its function is
//! idempotent, and otherwise fails the request with 1018 (it may have run).

use std::time::Duration;

use semver::Version;
use serde::{Deserialize, Serialize};

use crate::control::NodeId;
use crate::registry::BoxFuture;
use crate::registry::Query;
use crate::routing::NoRoute;
pub use crate::routing::Route;

/// One command for another node. Bincode cannot carry `serde_json::Value`s (they need a
/// self-describing format), so the arguments travel as JSON text.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    pub fun: String,
    pub function_id: Option<String>,
    /// The exact version the entry node chose (the target runs that one or none).
    pub version: Version,
    pub locs: Vec<String>,
    /// `[args, kwargs]` as JSON.
    pub args_json: String,
    /// What is left of the request's deadline when the step leaves.
    pub timeout_ms: u64,
    /// Who called, as the entry node verified it (`None`: it does not require tokens).
    /// Absent in frames from builds before tokens, which read as `None`.
    #[serde(default)]
    pub caller: Option<crate::auth::Identity>,
    /// The request's trace id, for the target's logs (absent from older builds' steps).
    #[serde(default)]
    pub trace_id: Option<String>,
}

/// What the target node says of a step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StepOutcome {
    /// The result, as JSON.
    Done(String),
    /// The node has no such function (any more): nothing ran.
    NotHere(String),
    /// It ran and failed, or ran out of time: a wire error code and message.
    Failed { code: i64, message: String },
    /// The process serving it here (a worker) went away during the call: it may have run.
    Lost(String),
}

/// Why a forwarded step has no outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// It never reached the node: safe to send elsewhere.
    #[error("not sent: {0}")]
    NotSent(String),
    /// It was sent, then the node or the link failed before the answer: it may have run.
    #[error("lost: {0}")]
    Lost(String),
}

/// The rest of the cluster, as the executor on one node sees it.
pub trait Cluster: Send + Sync {
    /// A node other than this one (and none in `exclude`) to run `want` on.
    fn route(&self, want: Query<'_>, exclude: &[NodeId]) -> Result<Route, NoRoute>;

    /// Sends `step` to `node` and waits for its outcome (at most `wait`).
    fn forward(
        &self,
        node: NodeId,
        step: Step,
        wait: Duration,
    ) -> BoxFuture<Result<StepOutcome, ForwardError>>;

    /// How `node` is named in replies (`None`: this node).
    fn node_name(&self, node: Option<NodeId>) -> String {
        node.map_or_else(|| "local".to_owned(), |n| n.to_string())
    }
}
