//! The node-local cache, L1 (memory) and L2 (SQLite), on the original's `cache-request`
//! messages, and the results of cacheable functions; in the shape every system takes
//! (docs/ARCHITECTURE.md, "The shape of a system"): the engines, pure and taking the time
//! as an argument (`memory` for L1; `ops` for the atomic and structure operations; `key`
//! and `pattern` for keys), the disk level's functions (`disk`, run on its database
//! thread), the messages (`request`), the service at the IO edge (`service`), result
//! caching for the RPC path (`results`), and its figures (`figures`, as values; `metrics`, the
//! collector and the original's shape). The connection hands
//! `cache-request` frames to the service (`node/conn.rs`).

pub mod disk;
pub mod figures;
pub mod key;
pub mod memory;
pub mod metrics;
pub mod ops;
pub mod pattern;
pub mod request;
pub mod results;
pub mod service;

pub use key::{CacheKey, canonical_json, made_identifier};
pub use service::{CacheLimits, CacheService};
