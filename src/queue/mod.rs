//! Queues (SQS semantics), in the shape every system takes (docs/ARCHITECTURE.md, "The shape
//! of a system"): the engine, one queue's state and commands, pure (`engine`; laws in
//! `tests/queue_laws.rs`); the built-ins' requests checked under their bounds (`request`);
//! the owner's store, durable before the ack (`store`); the service at the IO edge, where the
//! owner runs a queue (`service/owner.rs`) and other nodes forward to it (`service`), with
//! its failures (`fail`); subscriptions that the node feeds a connection (`feed`); and its
//! figures (`metrics`). The built-ins are `builtins/queue.rs`. Being built (issue 28): a
//! queue replicated by a Raft group of its own: the engine as a replicated state machine
//! (`machine`; laws in `tests/queue_machine_laws.rs`), the group's openraft side (`group`)
//! and its RPCs on the peer fabric (`group_network`).

pub mod counters;
pub mod engine;
pub mod fail;
pub mod feed;
pub mod group;
pub mod group_network;
pub mod groups;
pub mod machine;
pub mod metrics;
pub mod request;
pub mod service;
pub mod store;
