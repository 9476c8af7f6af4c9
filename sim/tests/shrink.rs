//! Generated fault schedules (proptest) and their shrinking.

use sim::check::{ALL, Checker, leader_never_changes};
use sim::run_checked;
use sim::scenario::Scenario;
use sim::shrink::explore;

/// How many generated schedules a run tries (`MPREG_SIM_CASES` for soaks).
fn cases(default: u32) -> u32 {
    std::env::var("MPREG_SIM_CASES")
        .ok()
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or(default)
}

/// Random schedules of up to six faults (partitions, crashes, joins, leaves, lossy links)
/// must pass every checker; a failure is shrunk and written out for replay.
#[test]
fn generated_fault_schedules_hold() {
    for seed in sim::seeds(2) {
        if let Err(shrunk) = explore(seed, cases(4), &ALL) {
            panic!(
                "seed {seed}: {}\nshrunk schedule: {}\nreplay: MPREG_SIM_SCENARIO={} cargo test \
                 -p sim --test scenarios -- replay_scenario_file --exact --ignored --nocapture",
                shrunk.message,
                shrunk.path.display(),
                shrunk.path.display()
            );
        }
    }
}

/// The shrinker works: with a deliberately wrong checker planted ("the first leader stays
/// leader"), a failing schedule is found and shrunk: to at most three faults, no more than
/// it started with, and 1-minimal (without any one of its faults it passes). It is written
/// as a scenario file that still fails the planted checker when replayed, while the real
/// checkers pass on it (the schedule is survivable; only the planted property is wrong).
#[test]
fn a_planted_bug_is_shrunk_to_a_small_replayable_schedule() {
    let mut planted: Vec<(&str, Checker)> = ALL.to_vec();
    planted.push((
        "planted: the first leader stays leader",
        leader_never_changes,
    ));
    let seed = 11;
    let shrunk = explore(seed, 32, &planted).expect_err("the planted checker must fail");
    assert!(
        shrunk.message.contains("planted"),
        "failed for another reason: {}",
        shrunk.message
    );
    let faults = &shrunk.scenario.faults;
    assert!(
        (1..=3).contains(&faults.len()) && faults.len() <= shrunk.first_failing.len(),
        "not shrunk enough: {faults:?} from {:?}",
        shrunk.first_failing
    );
    for (i, fault) in faults.iter().enumerate() {
        let mut fewer = shrunk.scenario.clone();
        fewer.faults.remove(i);
        assert!(
            run_checked(&fewer, seed, &planted).is_ok(),
            "not minimal: it still fails without {fault:?}"
        );
    }
    let replayed = Scenario::load(&shrunk.path).expect("the shrunk scenario was written");
    assert_eq!(replayed.faults, *faults);
    assert_eq!(replayed.seeds(), vec![seed]);
    let Err(again) = run_checked(&replayed, seed, &planted) else {
        panic!("the replayed schedule passed the planted checker");
    };
    assert!(again.message.contains("planted"), "{}", again.message);
    run_checked(&replayed, seed, &ALL).unwrap_or_else(|f| panic!("{}", f.report("shrink")));
    eprintln!(
        "shrunk {} faults to {faults:?} in {}",
        shrunk.first_failing.len(),
        shrunk.path.display()
    );
}
