//! Topic pub/sub: which subscriptions a published message reaches (`matcher`), what waits
//! for each subscribing connection (`mailbox`), and a node's subscriptions (`exchange`).

pub mod exchange;
pub mod mailbox;
pub mod matcher;
