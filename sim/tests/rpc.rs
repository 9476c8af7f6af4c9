//! The `rpc` scenario over many seeds, and the determinism of its traces.

use sim::rpc_workload::{RpcWorkload, run};
use sim::seeds;

#[test]
fn rpc_answers_are_correct_for_every_seed() {
    let w = RpcWorkload::default();
    for seed in seeds(16) {
        match run(seed, &w) {
            Ok(r) => eprintln!(
                "seed {seed}: trace {:016x}, {} requests in {:?} simulated",
                r.hash, r.requests, r.sim_elapsed
            ),
            Err(f) => panic!("{}", f.report("rpc_answers_are_correct_for_every_seed")),
        }
    }
}

#[test]
fn same_seed_same_trace_other_seed_other_trace() {
    let w = RpcWorkload::default();
    for seed in seeds(4) {
        let first = run(seed, &w).unwrap_or_else(|f| {
            panic!(
                "{}",
                f.report("same_seed_same_trace_other_seed_other_trace")
            )
        });
        let again = run(seed, &w).unwrap_or_else(|f| {
            panic!(
                "{}",
                f.report("same_seed_same_trace_other_seed_other_trace")
            )
        });
        assert_eq!(
            first.trace, again.trace,
            "seed {seed}: traces differ between two runs"
        );
        assert_eq!(first.hash, again.hash);
        let other = run(seed + 1_000, &w).unwrap_or_else(|f| {
            panic!(
                "{}",
                f.report("same_seed_same_trace_other_seed_other_trace")
            )
        });
        assert_ne!(
            first.hash,
            other.hash,
            "seeds {seed} and {} gave the same trace",
            seed + 1_000
        );
    }
}
