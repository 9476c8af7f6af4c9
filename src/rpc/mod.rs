//! Requests → plan → execution.

mod exec;
pub mod plan;
pub mod resolve;

pub use exec::{ExecError, ExecLimits, execute};
pub use plan::{Plan, PlanError, plan};
