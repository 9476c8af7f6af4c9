//! Raft's liveness rests on members drawing different election timeouts (§5.2): a node
//! seeds openraft's generator from its `Env` when it starts, so every process draws its
//! own sequence (they all drew the same one, from a constant, before), while the
//! simulator, which seeds the `Env` from the run's seed, still replays exactly.

use std::process::Command;

use mpreg::control::raft::{SeededRuntime, seed_raft_rng};

fn config() -> openraft::Config {
    openraft::Config {
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        ..Default::default()
    }
}

fn draws() -> Vec<u64> {
    let c = config();
    (0..8)
        .map(|_| c.new_rand_election_timeout::<SeededRuntime>())
        .collect()
}

/// Run by `two_node_processes_draw_different_election_timeouts` in a child process: starts
/// a node (on this thread: the runtime is current-thread) and prints the election
/// timeouts this thread then draws.
#[tokio::test]
#[ignore = "a child process of two_node_processes_draw_different_election_timeouts"]
async fn child_start_a_node_and_draw() {
    let node = mpreg::Node::builder(mpreg::Settings {
        port: 0,
        ..Default::default()
    })
    .start()
    .await
    .expect("node starts");
    println!("DRAWS {:?}", draws());
    node.shutdown().await;
}

fn child_draws() -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_start_a_node_and_draw",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {stdout}");
    stdout
        .lines()
        .find_map(|l| l.find("DRAWS ").map(|at| l[at..].to_owned()))
        .unwrap_or_else(|| panic!("no draws in {stdout}"))
}

#[test]
fn two_node_processes_draw_different_election_timeouts() {
    let (a, b) = (child_draws(), child_draws());
    assert_ne!(a, b, "two nodes drew the same election timeouts");
}

#[test]
fn the_same_seed_draws_the_same_timeouts() {
    // What the simulator relies on: one seed, one sequence.
    seed_raft_rng(42);
    let first = draws();
    seed_raft_rng(42);
    assert_eq!(draws(), first);
    seed_raft_rng(43);
    assert_ne!(draws(), first);
}
