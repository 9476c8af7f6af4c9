//! Queues (SQS semantics), in the shape every system takes (docs/ARCHITECTURE.md, "The shape
//! of a system"). So far the engine: one queue's state and commands, pure (`engine`; laws in
//! `tests/queue_laws.rs`), and the `queue_create`/`queue_send` requests checked under their
//! bounds into the engine's types (`request`). The store (durable before the ack), the service
//! at the IO edge, the built-ins, settings and metrics come with the rest of the queues issue.

pub mod engine;
pub mod metrics;
pub mod request;
pub mod service;
pub mod store;
