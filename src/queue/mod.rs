//! Queues (SQS semantics), in the shape every system takes (docs/ARCHITECTURE.md, "The shape
//! of a system"): the engine, one queue's state and commands, pure (`engine`; laws in
//! `tests/queue_laws.rs`); the built-ins' requests checked under their bounds (`request`);
//! the owner's store, durable before the ack (`store`); the service at the IO edge, where the
//! owner runs a queue (`service/owner.rs`) and other nodes forward to it (`service`), with
//! its failures (`fail`); subscriptions that the node feeds a connection (`feed`); and its
//! figures (`metrics`). The built-ins are `builtins/queue.rs`.

pub mod engine;
pub mod fail;
pub mod feed;
pub mod machine;
pub mod metrics;
pub mod request;
pub mod service;
pub mod store;
