//! Every scenario in `scenarios/*.toml`, over its seeds, against every checker; plus
#![allow(clippy::disallowed_methods)] // wall time only measures and prints the simulator's speed
//! determinism (a seed replays to the same trace hash) and replaying one scenario file.

use std::path::{Path, PathBuf};

use sim::check::ALL;
use sim::run_checked;
use sim::scenario::{Scenario, shipped};

fn scenario_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(format!("{name}.toml"))
}

/// Runs scenario `name` over its seeds; any checker failure panics with the replay report.
fn holds(name: &str) {
    let scenario = Scenario::load(&scenario_path(name)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        scenario.name, name,
        "the file name and the scenario name differ"
    );
    let mut acknowledged = 0;
    let mut writes = 0;
    let (mut rpc_ok, mut rpc_all) = (0, 0);
    let (mut pubsub_heard, mut pubsub_final, mut backlog_checked) = (0, true, 0);
    let (mut dns_services_answered, mut dns_every_seed) = (0, true);
    let (mut queue_acked, mut queue_drained_every_seed) = (0, true);
    for seed in scenario.seeds() {
        let wall = std::time::Instant::now();
        match run_checked(&scenario, seed, &ALL) {
            Ok(r) => {
                eprintln!(
                    "{name} seed {seed}: trace {:016x}, {}/{} writes acknowledged, {} reads, \
                     {:.1} s simulated in {:.2} s",
                    r.hash,
                    r.acknowledged(),
                    r.obs.writes.len(),
                    r.obs.reads.len(),
                    r.sim_elapsed.as_secs_f64(),
                    wall.elapsed().as_secs_f64()
                );
                acknowledged += r.acknowledged();
                writes += r.obs.writes.len();
                rpc_ok += r.obs.rpc.iter().filter(|q| q.answer.is_ok()).count();
                rpc_all += r.obs.rpc.len();
                if scenario.rpc_clients > 0 {
                    let mut codes = std::collections::BTreeMap::new();
                    for q in &r.obs.rpc {
                        if let Err((code, _)) = &q.answer {
                            codes
                                .entry(code.map_or("client".to_owned(), |c| c.to_string()))
                                .or_insert_with(Vec::new)
                                .push(q.request.as_str());
                        }
                    }
                    eprintln!(
                        "  rpc: {}/{} answered (failed by code: {codes:?}), {} `record` starts, \
                         {} probes",
                        r.obs.rpc.iter().filter(|q| q.answer.is_ok()).count(),
                        r.obs.rpc.len(),
                        r.obs.executions.values().sum::<u32>(),
                        r.obs.probes.len()
                    );
                }
                if scenario.dns_services > 0 {
                    let o = &r.obs;
                    let answered: std::collections::BTreeSet<&str> = o
                        .dns_probes
                        .iter()
                        .filter(|p| p.answer.as_ref().is_ok_and(|a| !a.contains("NXDOMAIN")))
                        .map(|p| p.service.as_str())
                        .collect();
                    eprintln!(
                        "  dns: {}/{} registrations and removals acknowledged, {} answers probed, {} services with records",
                        o.dns_writes.iter().filter(|w| w.1).count(),
                        o.dns_writes.len(),
                        o.dns_probes.len(),
                        answered.len()
                    );
                    dns_services_answered += answered.len();
                    dns_every_seed &= !o.dns_probes.is_empty();
                }
                if let Some(want) = scenario.queue_replicas {
                    let created = format!("replicas {want}");
                    assert!(
                        r.trace
                            .iter()
                            .any(|l| l.contains("created simq") && l.contains(&created)),
                        "{name} seed {seed}: the queue was not created with {created}"
                    );
                    // State-machine safety was checked on the group, not vacuously: a
                    // majority of its replicas applied entries.
                    let hosts: std::collections::BTreeSet<&str> = r
                        .obs
                        .applied
                        .iter()
                        .filter(|(_, run)| run.group != 0 && !run.entries.is_empty())
                        .map(|(host, _)| host.as_str())
                        .collect();
                    assert!(
                        hosts.len() > want as usize / 2,
                        "{name} seed {seed}: only {hosts:?} applied the queue group's entries"
                    );
                    eprintln!("  queue group applied on {hosts:?}");
                }
                if scenario.queue_messages > 0 {
                    let q = &r.obs.queue;
                    let acked = q.sends.iter().filter(|s| s.acked).count();
                    let distinct: std::collections::BTreeSet<u64> =
                        q.deliveries.iter().map(|d| d.k).collect();
                    eprintln!(
                        "  queue: {acked}/{} sends acknowledged, {} deliveries of {} messages, {} acks/nacks answered, drained after {:?}",
                        q.sends.len(),
                        q.deliveries.len(),
                        distinct.len(),
                        q.acks.iter().filter(|a| a.ok).count(),
                        q.final_from.zip(q.drained_at).map(|(f, d)| d - f),
                    );
                    eprintln!(
                        "  queue: a send after healing acknowledged after {:?}",
                        q.final_from
                            .zip(q.after_heal.as_ref())
                            .map(|(f, s)| s.finished.saturating_sub(f)),
                    );
                    queue_acked += acked;
                    queue_drained_every_seed &= q.drained_at.is_some();
                }
                if scenario.pubsub_subscribers > 0 {
                    let o = &r.obs;
                    let heard = o
                        .pubsub_heard
                        .iter()
                        .filter(|h| !h.key.starts_with("probe/"));
                    let acked = o.pubsub_published.iter().filter(|p| p.acked).count();
                    // run_checked passed it, so this is the count, not an error.
                    let backlog = sim::check::backlog_checked(o).unwrap_or(0);
                    eprintln!(
                        "  pubsub: {acked}/{} publishes taken, {} notifications heard, ready {:?} after healing, {backlog} backlog messages checked",
                        o.pubsub_published.len(),
                        heard.count(),
                        o.pubsub_final
                            .as_ref()
                            .and_then(|f| Some(f.ready_at? - f.started)),
                    );
                    backlog_checked += backlog;
                    pubsub_heard += o.pubsub_heard.len();
                    pubsub_final &= o
                        .pubsub_final
                        .as_ref()
                        .is_some_and(|f| f.ready_at.is_some());
                }
            }
            Err(f) => panic!("{}", f.report(name)),
        }
    }
    // The faults are survivable: most writes must get through (a run where nothing commits
    // would pass the safety checkers vacuously).
    assert!(
        acknowledged * 2 > writes,
        "{name}: only {acknowledged} of {writes} writes acknowledged"
    );
    // The pub/sub checkers hold vacuously unless messages were heard and the final phase ran.
    if scenario.pubsub_subscribers > 0 {
        assert!(
            pubsub_heard > 0 && pubsub_final,
            "{name}: {pubsub_heard} notifications heard, final phase ran every time: {pubsub_final}"
        );
        // Likewise the late subscriber's backlog: some kept message must have been in the
        // checker's scope (faults may take a seed's out, not every seed's).
        assert!(
            backlog_checked > 0,
            "{name}: no message was in the backlog checker's scope in any seed"
        );
    }
    // The DNS checker holds vacuously unless every seed probed and some services had records.
    if scenario.dns_services > 0 {
        assert!(
            dns_every_seed && dns_services_answered > 0,
            "{name}: DNS probed in every seed: {dns_every_seed}; services with records: {dns_services_answered}"
        );
    }
    // The queue checkers hold vacuously unless sends were acknowledged and drained.
    if scenario.queue_messages > 0 {
        assert!(
            queue_acked > 0 && queue_drained_every_seed,
            "{name}: {queue_acked} queue sends acknowledged; drained in every seed: {queue_drained_every_seed}"
        );
    }
    // Likewise most RPCs must complete (each completed one was checked for its answer).
    if scenario.rpc_clients > 0 {
        assert!(
            rpc_ok * 2 > rpc_all,
            "{name}: only {rpc_ok} of {rpc_all} RPC requests answered"
        );
    }
}

macro_rules! scenario_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                holds(stringify!($name));
            }
        )*
        const TESTED: &[&str] = &[$(stringify!($name)),*];
    };
}

scenario_tests!(
    churn,
    five_nodes_under_load,
    leader_crash_restart,
    leader_partitioned,
    majority_partition,
    minority_partition,
    queue_group_disk_lost,
    queue_group_leader_crash,
    queue_group_partition,
    queue_group_replica_moves,
    random_links,
    removed_member_campaigns,
    rolling_restart,
    rolling_upgrade,
    rpc_churn,
    rpc_node_crash,
    rpc_partition,
    voter_replacement,
);

#[test]
fn every_scenario_file_has_a_test() {
    let files: Vec<String> = shipped()
        .iter()
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    assert!(!files.is_empty());
    for f in &files {
        assert!(
            TESTED.contains(&f.as_str()),
            "scenarios/{f}.toml has no test in sim/tests/scenarios.rs"
        );
    }
}

/// Determinism: one seed of each scenario, run twice, gives the same trace.
#[test]
fn scenarios_replay_exactly() {
    for path in shipped() {
        let scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let seed = scenario.seeds()[0];
        let run = || {
            run_checked(&scenario, seed, &ALL)
                .unwrap_or_else(|f| panic!("{}", f.report("scenarios_replay_exactly")))
        };
        let (a, b) = (run(), run());
        if a.hash != b.hash {
            let first = a.trace.iter().zip(&b.trace).position(|(x, y)| x != y);
            let show = |t: &Vec<String>, i: Option<usize>| {
                i.and_then(|i| t.get(i))
                    .cloned()
                    .unwrap_or_else(|| "(end)".into())
            };
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/sim-traces");
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(
                dir.join(format!("{}-{seed}.a.trace", scenario.name)),
                a.trace.join("\n"),
            );
            let _ = std::fs::write(
                dir.join(format!("{}-{seed}.b.trace", scenario.name)),
                b.trace.join("\n"),
            );
            panic!(
                "{} seed {seed} did not replay (both traces in target/sim-traces/): traces differ first at line {first:?}:\n  {}\n  {}",
                scenario.name,
                show(&a.trace, first),
                show(&b.trace, first)
            );
        }
    }
}

/// The voter that crashed and stayed down was replaced: at the end it is a learner and
/// three others vote.
#[test]
fn a_voter_down_too_long_is_replaced() {
    let scenario = Scenario::load(&scenario_path("voter_replacement")).unwrap();
    for seed in sim::seeds(4) {
        let r = run_checked(&scenario, seed, &ALL)
            .unwrap_or_else(|f| panic!("{}", f.report("a_voter_down_too_long_is_replaced")));
        let crashed = r
            .obs
            .schedule
            .iter()
            .find_map(|l| l.split("crash [\"").nth(1))
            .and_then(|rest| rest.split('"').next())
            .expect("a voter was crashed")
            .to_owned();
        let boot = r.obs.boots.last().expect("a boot");
        let state = boot.machine.state();
        let membership = state.membership.membership();
        let crashed_id = state
            .catalog
            .members()
            .find(|m| m.name == crashed)
            .map(|m| m.id)
            .expect("the crashed node is still a member");
        assert_eq!(membership.voter_ids().count(), 3, "seed {seed}");
        assert!(
            membership.learner_ids().any(|l| l == crashed_id.0),
            "seed {seed}: {crashed} was not demoted to learner: {membership:?}"
        );
    }
}

/// Replays one scenario file, e.g. one the shrinker wrote:
/// `MPREG_SIM_SCENARIO=path cargo test -p sim --test scenarios -- replay_scenario_file
/// --exact --ignored --nocapture`.
#[test]
#[ignore = "replays the file named by MPREG_SIM_SCENARIO"]
fn replay_scenario_file() {
    let path = std::env::var("MPREG_SIM_SCENARIO").expect("set MPREG_SIM_SCENARIO to a file");
    let scenario = Scenario::load(Path::new(&path)).unwrap_or_else(|e| panic!("{e}"));
    for seed in scenario.seeds() {
        match run_checked(&scenario, seed, &ALL) {
            Ok(r) => eprintln!(
                "{} seed {seed}: passed, trace {:016x}",
                scenario.name, r.hash
            ),
            Err(f) => panic!("{}", f.report("replay_scenario_file")),
        }
    }
}
