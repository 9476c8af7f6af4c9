//! A function not registered as idempotent runs at most once per request: a step whose node
//! failed mid-call fails the request (1018) instead of being retried elsewhere, a request
//! that may have run is never resent by the cluster client, and no failover path starts
//! the same step twice. `record` counts its starts per request and step.

use crate::cluster::Observations;

pub fn check(obs: &Observations) -> Result<(), String> {
    let twice: Vec<String> = obs
        .executions
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, n)| format!("{k} ran {n} times"))
        .collect();
    if twice.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "non-idempotent steps ran more than once: {twice:?}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_start_fails() {
        let mut obs = Observations::default();
        obs.executions.insert("r0-1/dag".into(), 1);
        assert!(check(&obs).is_ok());
        obs.executions.insert("r0-2/dag".into(), 2);
        assert!(check(&obs).unwrap_err().contains("r0-2/dag ran 2 times"));
    }
}
