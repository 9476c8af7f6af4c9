//! The checkers: each takes a run's [`Observations`] and says which property it broke.
//! One file per property, each citing it. Determinism (the fifth property) is checked by
//! running a seed twice and comparing trace hashes (see `tests/scenarios.rs`).

mod at_most_once;
mod callable_everywhere;
mod convergence;
mod election_safety;
mod linearizable_reads;
mod no_disruption;
mod no_lost_ack;
mod one_connection_per_pair;
mod planted;
mod pubsub_after_heal;
mod pubsub_matching;
mod pubsub_once;
mod pubsub_order;
mod rpc_answers;
mod state_machine_safety;
mod upgrade_mixes_builds;

use crate::cluster::Observations;

pub use planted::leader_never_changes;

/// A checker: `Err` names the broken property and the evidence.
pub type Checker = fn(&Observations) -> Result<(), String>;

/// The checkers every scenario must pass.
pub const ALL: [(&str, Checker); 15] = [
    ("election safety", election_safety::check),
    ("state-machine safety", state_machine_safety::check),
    ("acknowledged writes are never lost", no_lost_ack::check),
    ("convergence after healing", convergence::check),
    ("linearizable reads", linearizable_reads::check),
    ("RPC answers are right", rpc_answers::check),
    ("non-idempotent steps run at most once", at_most_once::check),
    (
        "every function callable everywhere after healing",
        callable_everywhere::check,
    ),
    (
        "one peer connection per node pair after healing",
        one_connection_per_pair::check,
    ),
    (
        "a removed member's campaign disrupts nothing",
        no_disruption::check,
    ),
    (
        "a rolling upgrade runs both builds side by side",
        upgrade_mixes_builds::check,
    ),
    (
        "a notification reaches only matching subscriptions",
        pubsub_matching::check,
    ),
    ("no subscriber hears a message twice", pubsub_once::check),
    (
        "each publisher connection's order holds",
        pubsub_order::check,
    ),
    (
        "after healing every publish reaches every matching subscriber",
        pubsub_after_heal::check,
    ),
];

/// Runs `checkers` in order; the first failure is reported with its property's name.
pub fn run_all(obs: &Observations, checkers: &[(&str, Checker)]) -> Result<(), String> {
    for (name, check) in checkers {
        check(obs).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(())
}
