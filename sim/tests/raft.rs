//! The `raft_partition` scenario over many seeds, and its determinism.

use sim::raft_cluster::{Fault, run};
use sim::seeds;

const WRITES: usize = 30;

/// Runs `fault` over the seeds; every run must pass its checkers and most writes commit.
fn scenario_holds(fault: Fault, test_name: &str) {
    for seed in seeds(16) {
        match run(seed, WRITES, fault) {
            Ok(r) => {
                eprintln!(
                    "seed {seed}: trace {:016x}, {} acknowledged, {} unknown, {:?} simulated",
                    r.hash, r.acknowledged, r.unknown, r.sim_elapsed
                );
                assert!(
                    r.acknowledged > WRITES / 2,
                    "seed {seed}: only {} writes acknowledged",
                    r.acknowledged
                );
            }
            Err(f) => panic!("{}", f.report(test_name)),
        }
    }
}

#[test]
fn raft_partition_keeps_acknowledged_writes_and_converges() {
    scenario_holds(
        Fault::PartitionLeader,
        "raft_partition_keeps_acknowledged_writes_and_converges",
    );
}

#[test]
fn raft_crash_of_the_leader_keeps_acknowledged_writes_and_converges() {
    scenario_holds(
        Fault::CrashLeader,
        "raft_crash_of_the_leader_keeps_acknowledged_writes_and_converges",
    );
}

#[test]
fn raft_partition_replays_exactly() {
    for seed in seeds(2) {
        let a = run(seed, WRITES, Fault::PartitionLeader)
            .unwrap_or_else(|f| panic!("{}", f.report("raft_partition_replays_exactly")));
        let b = run(seed, WRITES, Fault::PartitionLeader)
            .unwrap_or_else(|f| panic!("{}", f.report("raft_partition_replays_exactly")));
        assert_eq!(a.hash, b.hash, "seed {seed} did not replay");
    }
}

#[test]
#[ignore = "prints one run's trace; run with --ignored --nocapture"]
fn print_trace() {
    let seed = sim::seeds(1)[0];
    // MPREG_SIM_CRASH=1 prints the crash scenario instead of the partition one.
    let fault = if std::env::var_os("MPREG_SIM_CRASH").is_some() {
        Fault::CrashLeader
    } else {
        Fault::PartitionLeader
    };
    let r = run(seed, WRITES, fault).unwrap_or_else(|f| panic!("{}", f.report("print_trace")));
    eprintln!("{r:?}");
}
