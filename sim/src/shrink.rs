//! Generated fault schedules: proptest draws schedules from a seed, runs each against the
//! checkers, and when one fails shrinks it (fewer faults, earlier, simpler) to the smallest
//! schedule that still fails. That schedule is written out as a scenario file which replays
//! the failure with `cargo test -p sim` (see docs/SIMULATION.md).

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

use crate::check::Checker;
use crate::run_checked;
use crate::scenario::{Action, FaultEvent, Scenario, Target};

/// The cluster and workload generated schedules run against: small, so that a case (and
/// each shrinking step) takes a fraction of a second.
pub fn base_scenario() -> Scenario {
    Scenario {
        name: "generated".into(),
        description: "a proptest-generated fault schedule".into(),
        nodes: 3,
        voters: 3,
        replace_voter_after_ms: 30_000,
        clients: 2,
        writes_per_client: 8,
        write_every_ms: 250,
        read_every: 4,
        rpc_clients: 1,
        rpc_requests_per_client: 8,
        rpc_every_ms: 250,
        pubsub_subscribers: 0,
        pubsub_publishers: 2,
        pubsub_messages_per_publisher: 30,
        pubsub_every_ms: 120,
        dns_services: 0,
        queue_messages: 0,
        queue_consumers: 2,
        queue_every_ms: 60,
        queue_replicas: None,
        settle_ms: 20_000,
        seeds: 1,
        seed: None,
        faults: Vec::new(),
    }
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        Just(Target::Leader),
        Just(Target::Follower),
        Just(Target::Random)
    ]
}

/// Simpler actions first: proptest shrinks a `prop_oneof` towards its first branches.
fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        Just(Action::Heal),
        Just(Action::Calm),
        Just(Action::Restart {
            target: Target::Crashed
        }),
        target().prop_map(|target| Action::Isolate { target }),
        target().prop_map(|target| Action::Crash { target }),
        any::<bool>().prop_map(|leader_in_minority| Action::Split { leader_in_minority }),
        Just(Action::Join),
        prop_oneof![Just(Target::Follower), Just(Target::Random)]
            .prop_map(|target| Action::Leave { target }),
        (0u32..=10, prop_oneof![Just(5u64), Just(50), Just(200)]).prop_map(|(permille, ms)| {
            Action::Links {
                fail_rate: f64::from(permille) / 1000.0,
                max_latency_ms: ms,
            }
        }),
    ]
}

/// One fault at 0.5–2.5 s of simulated time (the workload's span), in 100 ms slots.
fn fault() -> impl Strategy<Value = FaultEvent> {
    (0u64..=20, action()).prop_map(|(slot, action)| FaultEvent {
        at_ms: 500 + slot * 100,
        action,
    })
}

/// Schedules of one to six faults.
pub fn schedule() -> impl Strategy<Value = Vec<FaultEvent>> {
    proptest::collection::vec(fault(), 1..=6)
}

/// The smallest failing schedule found, written out as a scenario.
#[derive(Debug)]
pub struct Shrunk {
    /// The first failing schedule proptest drew, before shrinking.
    pub first_failing: Vec<FaultEvent>,
    pub scenario: Scenario,
    pub message: String,
    pub path: PathBuf,
}

/// Where shrunk scenarios are written.
pub fn shrunk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/sim-shrunk")
}

/// Runs `cases` schedules generated from `seed` (the simulation uses `seed` too) against
/// `checkers`. All pass: `Ok(cases)`. One fails: it is shrunk, written to
/// [`shrunk_dir`], and returned.
pub fn explore(seed: u64, cases: u32, checkers: &[(&str, Checker)]) -> Result<u32, Box<Shrunk>> {
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 200,
        ..Config::default()
    };
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &key);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let base = base_scenario();
    let first_failing: std::cell::RefCell<Option<Vec<FaultEvent>>> = Default::default();
    let outcome = runner.run(&schedule(), |faults| {
        let scenario = Scenario {
            faults: faults.clone(),
            ..base.clone()
        };
        run_checked(&scenario, seed, checkers)
            .map(|_| ())
            .map_err(|f| {
                first_failing.borrow_mut().get_or_insert(faults);
                TestCaseError::fail(f.message)
            })
    });
    let first_failing = first_failing.into_inner().unwrap_or_default();
    match outcome {
        Ok(()) => Ok(cases),
        Err(TestError::Fail(reason, mut faults)) => {
            faults.sort_by_key(|f| f.at_ms);
            let scenario = Scenario {
                name: format!("shrunk-{seed}"),
                description: format!("shrunk by proptest from seed {seed}: {reason}"),
                seed: Some(seed),
                faults,
                ..base
            };
            let path = write(&scenario, &reason.to_string());
            Err(Box::new(Shrunk {
                first_failing,
                scenario,
                message: reason.to_string(),
                path,
            }))
        }
        Err(TestError::Abort(reason)) => Err(Box::new(Shrunk {
            first_failing,
            scenario: base,
            message: format!("proptest gave up: {reason}"),
            path: PathBuf::new(),
        })),
    }
}

/// Writes `scenario` with a header saying how to replay it; returns the path.
fn write(scenario: &Scenario, reason: &str) -> PathBuf {
    let dir = shrunk_dir();
    let path = dir.join(format!("{}.toml", scenario.name));
    let text = format!(
        "# {reason}\n# Replay: MPREG_SIM_SCENARIO={} cargo test -p sim --test scenarios -- \
         replay_scenario_file --exact --ignored --nocapture\n{}",
        path.display(),
        scenario.to_toml()
    );
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, text)) {
        eprintln!("cannot write {}: {e}", path.display());
    }
    path
}
