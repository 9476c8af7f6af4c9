//! Topic pub/sub: which subscriptions a published message reaches (`matcher`).

pub mod matcher;
