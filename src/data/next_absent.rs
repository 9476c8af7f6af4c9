//! Without the `next-build` feature (production builds) there is no next build inside this
//! one: no node can be told to speak it, so [`UpgradeStats`] has no value, and what would
//! use one cannot be reached (the type says so, not a runtime check).

use std::time::Duration;

use super::client::DataClient;
use crate::fabric::liveness::Load;

/// Uninhabited: a node of this build never speaks the next one.
#[derive(Debug)]
pub enum UpgradeStats {}

impl UpgradeStats {
    pub fn read(&self) -> [u64; 5] {
        match *self {}
    }
}

pub(crate) fn answer(
    _body: &[u8],
    stats: &UpgradeStats,
    _load: Load,
) -> Option<Result<Vec<u8>, String>> {
    match *stats {}
}

pub(crate) async fn heartbeat(
    _peer: &DataClient,
    stats: &UpgradeStats,
    _load: Load,
    _ttl: Duration,
) -> std::io::Result<Load> {
    match *stats {}
}
