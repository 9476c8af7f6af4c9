//! Requests → plan → execution.

mod exec;
pub mod forward;
pub mod names;
pub mod plan;
pub mod reply;
pub mod resolve;
pub mod trace;
mod unordered;

pub use exec::{ExecError, ExecLimits, execute, execute_in, run_step};
pub use forward::{Cluster, ForwardError, Route, Step, StepOutcome};
pub use plan::{Plan, PlanError, plan};
pub use reply::Reply;
pub use trace::Trace;
pub(crate) use unordered::Unordered;
