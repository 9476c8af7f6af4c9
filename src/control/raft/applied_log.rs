//! What replicas applied, for the simulator's state-machine-safety checkers: each applied
//! entry's id and a digest of its payload, so that a checker compares what replicas
//! applied, not only where.
//!
//! Recording is off unless a memory disk asks for it ([`super::LogStore::record_applied`]):
//! a node would otherwise keep 32 bytes per entry it ever applied.

use std::sync::Arc;

use openraft::LogId;
use parking_lot::Mutex;

/// One applied log entry: its id and a digest of its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub log_id: LogId<u64>,
    pub digest: u64,
}

impl Applied {
    /// The entry `log_id` whose payload encodes to `bytes`.
    pub fn of(log_id: LogId<u64>, bytes: &[u8]) -> Applied {
        Applied {
            log_id,
            digest: digest(bytes),
        }
    }
}

/// FNV-1a: a stable digest (the same in every process and run).
fn digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// What one state machine of one Raft group applied in a row: from its start (after the
/// snapshot it loaded) or from a snapshot it installed, to the next such event.
#[derive(Debug, Clone)]
pub struct AppliedRun {
    /// The Raft group (0: the catalog; a queue group's id otherwise).
    pub group: i64,
    pub entries: Vec<Applied>,
}

/// Every run applied by the state machines of one node's disk, over all its boots (the
/// record belongs to the observer, not the disk: a crash or a forgotten membership keeps it).
#[derive(Debug, Clone, Default)]
pub struct AppliedLog(Arc<Mutex<Vec<AppliedRun>>>);

/// Where a state machine writes what it applies: a run of an [`AppliedLog`].
#[derive(Debug, Clone)]
pub struct AppliedRecorder {
    log: AppliedLog,
    group: i64,
    run: usize,
}

impl AppliedLog {
    /// A new run of `group`: what one state machine applies from now on.
    pub fn start(&self, group: i64) -> AppliedRecorder {
        let mut runs = self.0.lock();
        runs.push(AppliedRun {
            group,
            entries: Vec::new(),
        });
        AppliedRecorder {
            log: self.clone(),
            group,
            run: runs.len() - 1,
        }
    }

    /// Every run so far, in the order they started.
    pub fn runs(&self) -> Vec<AppliedRun> {
        self.0.lock().clone()
    }
}

impl AppliedRecorder {
    pub fn push(&self, applied: Applied) {
        if let Some(run) = self.log.0.lock().get_mut(self.run) {
            run.entries.push(applied);
        }
    }

    /// The same group's next run (after this state machine installed a snapshot).
    pub fn restart(&self) -> AppliedRecorder {
        self.log.start(self.group)
    }
}
