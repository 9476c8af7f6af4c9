//! The client wire protocol: message shapes, error codes and frame decoding. No IO.
//!
//! Compatible with the original MPREG's Python clients (see docs/PROTOCOL.md): JSON objects in
//! text or binary WebSocket frames, correlated by `u`.

mod codes;
mod decode;
pub mod jscan;
pub(crate) mod json;
mod message;
pub mod param;
pub mod pubsub;
mod worker;

pub use codes::ErrorCode;
pub use decode::{DecodeError, Incoming, decode_frame, decode_text};
pub use json::{Json, Kind, plain_error};
pub use message::{
    ExecutionSummary, IntermediateResult, Role, RpcCommand, RpcReply, RpcRequest, StepTiming,
    WireError,
};
pub use worker::{CallResult, RegisterRequest, WorkerCall, WorkerFunction};
