//! The `raft_partition` scenario over many seeds, and its determinism.

use sim::raft_cluster::run;
use sim::seeds;

const WRITES: usize = 30;

#[test]
fn raft_partition_keeps_acknowledged_writes_and_converges() {
    for seed in seeds(16) {
        match run(seed, WRITES) {
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
            Err(f) => panic!(
                "{}",
                f.report("raft_partition_keeps_acknowledged_writes_and_converges")
            ),
        }
    }
}

#[test]
fn raft_partition_replays_exactly() {
    for seed in seeds(2) {
        let a = run(seed, WRITES)
            .unwrap_or_else(|f| panic!("{}", f.report("raft_partition_replays_exactly")));
        let b = run(seed, WRITES)
            .unwrap_or_else(|f| panic!("{}", f.report("raft_partition_replays_exactly")));
        assert_eq!(a.hash, b.hash, "seed {seed} did not replay");
    }
}

#[test]
#[ignore = "prints one run's trace; run with --ignored --nocapture"]
fn print_trace() {
    let seed = sim::seeds(1)[0];
    let r = run(seed, WRITES).unwrap_or_else(|f| panic!("{}", f.report("print_trace")));
    eprintln!("{r:?}");
}
