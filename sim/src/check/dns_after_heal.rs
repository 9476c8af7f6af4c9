//! After the faults heal and the replicas converge, every staying node's DNS gateway answers
//! every service as the converged catalog says, within `DNS_BOUND`: the SRV records of a
//! registered service (replacements included), NXDOMAIN for one unregistered or gone with
//! the node that accepted it. A gateway answering from a stale replica or a stale answer
//! cache fails it.

use crate::cluster::Observations;
use crate::cluster::dns::{DNS_BOUND, expected};

pub fn check(obs: &Observations) -> Result<(), String> {
    if obs.dns_probes.is_empty() {
        return Ok(()); // no DNS workload, or nothing converged (convergence says so)
    }
    // The converged catalog: the last boot of a final member.
    let Some(catalog) = obs.final_members.first().and_then(|n| {
        obs.boots
            .iter()
            .rev()
            .find(|b| &b.host == n)
            .map(|b| b.machine.state().catalog)
    }) else {
        return Err("DNS probes but no final member's replica".into());
    };
    let mut wrong = Vec::new();
    for p in &obs.dns_probes {
        let want = expected(&catalog, &p.service);
        let late = p.at.saturating_sub(p.started) > DNS_BOUND;
        if p.answer.as_ref() != Ok(&want) || late {
            wrong.push(format!(
                "{} at {}: answered {:?} after {:?}, the catalog says {want:?}",
                p.service,
                p.node,
                p.answer,
                p.at.saturating_sub(p.started)
            ));
        }
    }
    // Every staying node answered for every service probed.
    let nodes: std::collections::BTreeSet<&str> =
        obs.dns_probes.iter().map(|p| p.node.as_str()).collect();
    let services: std::collections::BTreeSet<&str> =
        obs.dns_probes.iter().map(|p| p.service.as_str()).collect();
    for n in &obs.final_members {
        if !nodes.contains(n.as_str()) {
            wrong.push(format!("{n} was never asked"));
        }
    }
    if obs.dns_probes.len() != nodes.len() * services.len() {
        wrong.push(format!(
            "{} probes for {} nodes and {} services",
            obs.dns_probes.len(),
            nodes.len(),
            services.len()
        ));
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("DNS answers differ from the catalog: {wrong:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::testing::{boot, member};
    use crate::cluster::dns::DnsProbe;
    use mpreg::control::{CatalogCommand, DnsService, NodeId, ServiceKey};
    use std::collections::BTreeSet;
    use std::time::Duration;

    fn svc(port: u16, targets: &[&str]) -> DnsService {
        DnsService {
            key: ServiceKey {
                namespace: "sim".into(),
                name: "svc1".into(),
                protocol: "tcp".into(),
                port,
            },
            targets: targets.iter().map(|t| (*t).to_owned()).collect(),
            scope: "zone".into(),
            tags: BTreeSet::new(),
            capabilities: BTreeSet::new(),
            metadata: Default::default(),
            priority: 1,
            weight: 10,
            ttl_seconds: 30,
            registered_by: NodeId(1),
            cluster_id: "sim".into(),
            registration_id: "r".into(),
            registered_at_ms: 0,
        }
    }

    fn probe(answer: &[&str], after_ms: u64) -> DnsProbe {
        DnsProbe {
            node: "n1".into(),
            service: "svc1".into(),
            started: Duration::from_secs(10),
            at: Duration::from_secs(10) + Duration::from_millis(after_ms),
            answer: Ok(answer.iter().map(|a| (*a).to_owned()).collect()),
        }
    }

    /// Observations whose final catalog has `svc1` on port 8001 at 10.0.1.5 (having been
    /// registered at 10.0.1.1 before: a replacement).
    fn observed() -> Observations {
        let reg = |s| Some(CatalogCommand::RegisterService(s));
        let entries = vec![
            (1, 1, Some(member())),
            (2, 1, reg(svc(8001, &["10.0.1.1"]))),
            (3, 1, reg(svc(8001, &["10.0.1.5"]))),
        ];
        let mut obs = Observations {
            final_members: vec!["n1".into()],
            ..Observations::default()
        };
        obs.boots.push(boot("n1", 1, entries));
        obs
    }

    #[test]
    fn the_catalogs_answer_passes_and_a_stale_one_fails() {
        let mut obs = observed();
        obs.dns_probes
            .push(probe(&["1 10 8001 ip4-10-0-1-5.addr.mpreg."], 20));
        assert_eq!(check(&obs), Ok(()));
        // The answer from before the replacement: stale.
        obs.dns_probes[0] = probe(&["1 10 8001 ip4-10-0-1-1.addr.mpreg."], 20);
        assert!(check(&obs).is_err());
        // Right, but only after the bound.
        obs.dns_probes[0] = probe(&["1 10 8001 ip4-10-0-1-5.addr.mpreg."], 6_000);
        assert!(check(&obs).is_err());
        // A service the catalog does not have must be NXDOMAIN, not a leftover answer.
        obs.dns_probes[0] = probe(&["1 10 8001 ip4-10-0-1-5.addr.mpreg."], 20);
        obs.dns_probes[0].service = "svc2".into();
        assert!(check(&obs).is_err());
        obs.dns_probes[0] = probe(&["NXDOMAIN"], 20);
        obs.dns_probes[0].service = "svc2".into();
        assert_eq!(check(&obs), Ok(()));
        // A final member never asked.
        obs.final_members.push("n2".into());
        assert!(check(&obs).is_err());
    }
}
