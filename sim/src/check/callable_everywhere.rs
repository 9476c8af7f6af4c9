//! After the faults heal, every function a live member offers is callable through every
//! live member: routing forgets nothing it should not (no "not found" cached, no node left
//! marked down, no link left broken).

use crate::cluster::Observations;

pub fn check(obs: &Observations) -> Result<(), String> {
    let failed: Vec<String> = obs
        .probes
        .iter()
        .filter_map(|p| {
            p.result
                .as_ref()
                .err()
                .map(|e| format!("{} via {}: {e}", p.function, p.node))
        })
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("not callable after healing: {failed:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster_rpc::ProbeRecord;

    #[test]
    fn one_failed_probe_fails() {
        let probe = |result| ProbeRecord {
            node: "n1".into(),
            function: "inc".into(),
            result,
        };
        let mut obs = Observations::default();
        obs.probes.push(probe(Ok(())));
        assert!(check(&obs).is_ok());
        obs.probes.push(probe(Err("1001".into())));
        assert!(check(&obs).is_err());
    }
}
