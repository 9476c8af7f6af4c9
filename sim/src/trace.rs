//! The run's trace: what every simulated client observed, in simulated time order. Two runs
//! with one seed must produce the same trace byte for byte.

use std::cell::RefCell;
use std::hash::{Hash, Hasher};
use std::rc::Rc;

/// Shared by the hosts of one run (they all run on one thread).
#[derive(Clone, Default)]
pub struct Trace(Rc<RefCell<Vec<String>>>);

impl Trace {
    /// Records `event` of `host` at the host's simulated time.
    pub fn record(&self, host: &str, event: impl AsRef<str>) {
        // Simulation time, not the host's own (a host added later starts its clock at 0).
        let ms = turmoil::sim_elapsed()
            .unwrap_or_else(turmoil::elapsed)
            .as_micros();
        self.0
            .borrow_mut()
            .push(format!("{ms:>10}us {host:<8} {}", event.as_ref()));
    }

    /// Records `event` at an explicit simulated time (from outside any host).
    pub fn record_at(&self, at: std::time::Duration, host: &str, event: impl AsRef<str>) {
        let us = at.as_micros();
        self.0
            .borrow_mut()
            .push(format!("{us:>10}us {host:<8} {}", event.as_ref()));
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.borrow().clone()
    }

    /// A stable hash of the whole trace (SipHash with fixed keys).
    pub fn hash(&self) -> u64 {
        #[allow(deprecated)] // SipHasher is the stable, fixed-key hasher we want here
        let mut h = std::hash::SipHasher::new();
        for line in self.0.borrow().iter() {
            line.hash(&mut h);
        }
        h.finish()
    }
}
