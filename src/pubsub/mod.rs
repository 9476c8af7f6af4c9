//! Topic pub/sub: which subscriptions a published message reaches (`matcher`), what waits
//! for each subscribing connection (`mailbox`), a node's subscriptions (`exchange`) and
//! its peers' (`interest`), and what is kept for late subscribers (`backlog`).

pub mod backlog;
pub mod exchange;
pub mod fanout;
pub mod interest;
pub mod mailbox;
pub mod matcher;
pub mod metrics;
