//! A deliberately wrong property, for testing the shrinker only: "the first leader stays
//! the only leader". Any fault that removes the leader breaks it, so a schedule that fails it
//! shrinks to one such fault. Never part of [`super::ALL`].

use crate::cluster::Observations;

pub fn leader_never_changes(obs: &Observations) -> Result<(), String> {
    let mut leaders = obs.leaders.values().flatten();
    let Some(first) = leaders.next() else {
        return Ok(());
    };
    match leaders.find(|l| *l != first) {
        Some(other) => Err(format!("{other} took over from {first}")),
        None => Ok(()),
    }
}
