//! Topic pub/sub, in the shape every system takes (docs/ARCHITECTURE.md, "The shape of a
//! system"):
//!
//! * **Engine** (no IO, no clock of its own: the time comes in with each event): which
//!   subscriptions a published message reaches (`matcher`), what waits for each subscribing
//!   connection (`mailbox`), what is kept for late subscribers (`backlog`), a node's
//!   subscriptions (`exchange`) and its peers' (`interest`). Laws: `tests/topic_laws.rs`,
//!   and the simulator's pub/sub checkers.
//! * **Service** (`service`, `peers`): the IO edge. The publishing task and the per-peer senders
//!   forward publishes to interested peers on the fabric; `advertise` tells peers what this
//!   node's clients subscribe to; backlogs are gathered from every member. `peers` takes what
//!   peers send (publishes, interest, backlog questions) off the data plane.
//! * **Built-ins**: none of its own; clients subscribe and publish on the client path
//!   (`node::conn`).
//! * **Settings**: `pubsub_*` (per-subscriber queue, slow-subscriber policy, backlog
//!   retention), converted here (`backlog::Retention`).
//! * **Metrics**: `metrics::PubSubMetrics`, registered by the node.

pub mod backlog;
pub mod exchange;
pub mod interest;
pub mod mailbox;
pub mod matcher;
pub mod metrics;
pub mod peers;
pub mod service;
