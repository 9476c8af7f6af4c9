//! Deterministic simulation of mpreg under turmoil.
//!
//! A node and its clients run as turmoil hosts on one thread with simulated network and time.
//! The node is the production code given a simulated [`mpreg::Env`] ([`env::sim_env`]); no
//! code path differs. Everything random flows from the run's seed: turmoil's message
//! latencies, the node's ids and the clients' workload. So one seed replays a run exactly,
//! which [`trace::Trace`] hashes make checkable. See docs/SIMULATION.md.

pub mod check;
pub mod cluster;
pub mod cluster_rpc;
pub mod env;
pub mod rpc_workload;
pub mod scenario;
pub mod shrink;
pub mod trace;

use std::path::PathBuf;

/// The seeds a test runs: `MPREG_SIM_SEED=n` replays one seed; `MPREG_SIM_SEEDS=N` runs
/// seeds 0..N (soaks), or from `MPREG_SIM_SEED_FROM` on (a soak in chunks, one process
/// each, on as many cores); otherwise `default_count` seeds from 0.
pub fn seeds(default_count: u64) -> Vec<u64> {
    if let Some(one) = std::env::var("MPREG_SIM_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return vec![one];
    }
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    let n = var("MPREG_SIM_SEEDS").unwrap_or(default_count);
    let from = var("MPREG_SIM_SEED_FROM").unwrap_or(0);
    (from..from.saturating_add(n)).collect()
}

/// A failed run: everything needed to replay and inspect it.
#[derive(Debug)]
pub struct SimFailure {
    pub seed: u64,
    pub scenario: String,
    pub message: String,
    pub trace: Vec<String>,
    /// The faults as they were applied (targets resolved); empty for fault-free runs.
    pub schedule: Vec<String>,
}

impl SimFailure {
    /// Writes the trace under `target/sim-traces/` and returns a report naming the file and
    /// the exact replay command.
    pub fn report(&self, test_name: &str) -> String {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/sim-traces");
        let path = dir.join(format!("{}-{}.trace", self.scenario, self.seed));
        let written = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&path, self.trace.join("\n")))
            .map(|()| path.display().to_string())
            .unwrap_or_else(|e| format!("(trace not written: {e})"));
        let schedule = if self.schedule.is_empty() {
            String::new()
        } else {
            format!("\n  fault schedule:\n    {}", self.schedule.join("\n    "))
        };
        format!(
            "scenario `{}` failed with seed {}: {}{schedule}\n  trace: {}\n  replay: MPREG_SIM_SEED={} cargo test -p sim -- {} --exact",
            self.scenario, self.seed, self.message, written, self.seed, test_name
        )
    }
}

/// Runs `scenario` with `seed` and applies `checkers` to what it observed.
pub fn run_checked(
    scenario: &scenario::Scenario,
    seed: u64,
    checkers: &[(&str, check::Checker)],
) -> Result<cluster::RunReport, SimFailure> {
    let report = cluster::run(scenario, seed)?;
    check::run_all(&report.obs, checkers).map_err(|message| SimFailure {
        seed,
        scenario: scenario.name.clone(),
        message,
        trace: report.trace.clone(),
        schedule: report.obs.schedule.clone(),
    })?;
    Ok(report)
}
