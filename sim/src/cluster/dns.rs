//! The cluster scenarios' DNS workload: service registrations committed while the faults
//! happen, and after healing a probe of every staying node's DNS gateway for every service
//! ever registered.
//!
//! - Host `d0` registers `svc{k}` in namespace `sim` (port `8000 + k`, two IP targets)
//!   through a node, as `dns_register` does (a `RegisterService` catalog command accepted by
//!   that node), following leader hints and failing over as the catalog clients do. Every
//!   fourth service is unregistered again, and `svc0` is registered a second time with other
//!   targets (a replacement). Registrations accepted by a node that later leaves go with it.
//! - After healing, host `dnsprobe` asks every staying node's gateway (UDP port 53) for
//!   `_svc._tcp.svc{k}.sim.mpreg SRV`, for every `k` tried, until the answer is what the
//!   converged catalog says ([`expected`]) or [`DNS_BOUND`] has passed; each last answer is
//!   a [`DnsProbe`] for the checker `dns_after_heal`.

use std::collections::BTreeSet;
use std::time::Duration;

use mpreg::control::{Catalog, CatalogCommand, DnsService, ServiceKey};
use mpreg::dns::client::{Via, resolve};
use mpreg::ids::NodeId;

use super::{Outcome, Shared, now, write_with_failover};
use crate::env::sim_env;
use crate::scenario::Scenario;
use crate::trace::Trace;

/// The port the nodes' gateways listen on (UDP and TCP).
pub const DNS_PORT: u16 = 53;
/// After healing, how long a node's gateway may take to answer a service as the catalog
/// says (it answers from its replica, which converged before the probe began; its answer
/// cache lives a second).
pub const DNS_BOUND: Duration = Duration::from_secs(5);
/// One query's timeout.
const QUERY_TIMEOUT: Duration = Duration::from_millis(500);
/// How often a query that did not yet match is asked again.
const RETRY_EVERY: Duration = Duration::from_millis(250);

/// The last answer a node's gateway gave for one service after healing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsProbe {
    pub node: String,
    /// The service's name (`svc{k}`).
    pub service: String,
    /// When the probe of this node and service began and when it got this answer.
    pub started: Duration,
    pub at: Duration,
    /// The SRV records as `priority weight port target`, or `NXDOMAIN`, or why the query
    /// failed.
    pub answer: Result<BTreeSet<String>, String>,
}

/// The query for service `svc` of namespace `sim`.
pub fn qname(service: &str) -> String {
    format!("_svc._tcp.{service}.sim.mpreg")
}

/// What a gateway must answer for `service` given `catalog`: its SRV records, one per target
/// (IP targets as the synthesized `ip4-….addr.mpreg.` names), or `NXDOMAIN` when the
/// catalog has no such service. Computed from the catalog alone, not by the gateway's code.
pub fn expected(catalog: &Catalog, service: &str) -> BTreeSet<String> {
    let found: Vec<&DnsService> = catalog
        .services()
        .filter(|s| s.key.namespace == "sim" && s.key.name == service)
        .collect();
    if found.is_empty() {
        return BTreeSet::from(["NXDOMAIN".to_owned()]);
    }
    let mut out = BTreeSet::new();
    for s in found {
        for t in &s.targets {
            let target = match t.parse::<std::net::Ipv4Addr>() {
                Ok(ip) => format!("ip4-{}.addr.mpreg.", ip.to_string().replace('.', "-")),
                Err(_) => format!("{}.", t.trim_end_matches('.')),
            };
            out.insert(format!(
                "{} {} {} {target}",
                s.priority, s.weight, s.key.port
            ));
        }
    }
    out
}

fn service(k: usize, targets: [&str; 2], by: u64) -> DnsService {
    DnsService {
        key: ServiceKey {
            namespace: "sim".into(),
            name: format!("svc{k}"),
            protocol: "tcp".into(),
            port: 8000 + k as u16,
        },
        targets: targets.iter().map(|t| (*t).to_owned()).collect(),
        scope: "zone".into(),
        tags: BTreeSet::new(),
        capabilities: BTreeSet::new(),
        metadata: Default::default(),
        priority: (k % 3) as u16,
        weight: 10,
        ttl_seconds: 30,
        registered_by: NodeId(by),
        cluster_id: "sim".into(),
        registration_id: format!("sim-{k}"),
        registered_at_ms: 0,
    }
}

/// Adds host `d0`: registers `scenario.dns_services` services through the nodes while the
/// faults happen, unregisters every fourth, and replaces `svc0`.
pub(super) fn add_registrar(
    sim: &mut turmoil::Sim<'_>,
    world: &Shared,
    trace: &Trace,
    seed: u64,
    scenario: &Scenario,
) {
    let (world, trace, scenario) = (world.clone(), trace.clone(), scenario.clone());
    sim.client("d0", async move {
        let env = sim_env(seed, "d0");
        let mut home = "n1".to_owned();
        let every = Duration::from_millis(scenario.write_every_ms);
        let n = scenario.dns_services;
        let mut steps: Vec<(String, CatalogCommand)> = Vec::new();
        for k in 0..n {
            let a = format!("10.0.{k}.1");
            let b = format!("10.0.{k}.2");
            steps.push((
                format!("register svc{k}"),
                register(&world, &home, k, [&a, &b]),
            ));
            if k % 4 == 3 {
                let key = service(k, ["", ""], 0).key;
                steps.push((
                    format!("unregister svc{k}"),
                    CatalogCommand::UnregisterService(key),
                ));
            }
        }
        steps.push((
            "replace svc0".into(),
            register(&world, &home, 0, ["10.9.0.1", "10.9.0.2"]),
        ));
        for (j, (what, mut cmd)) in steps.into_iter().enumerate() {
            tokio::time::sleep(every).await;
            // Spread the registrations over the members, so that some are accepted by nodes
            // that leave later (and must go with them).
            let live = world.borrow().live();
            if !live.is_empty() {
                home = live[j % live.len()].clone();
            }
            // The accepting node is the one written through (as `dns_register` records it).
            if let CatalogCommand::RegisterService(s) = &mut cmd {
                s.registered_by = NodeId(world.borrow().owner_for(&home));
            }
            let via = home.clone();
            let (outcome, detail) = write_with_failover(&env, &world, &cmd, &mut home, j).await;
            trace.record("d0", format!("{what} via {via}: {outcome:?}{detail}"));
            world
                .borrow_mut()
                .obs
                .dns_writes
                .push((what, outcome == Outcome::Acknowledged));
        }
        Ok(())
    });
}

fn register(world: &Shared, home: &str, k: usize, targets: [&str; 2]) -> CatalogCommand {
    let by = world.borrow().owner_for(home);
    CatalogCommand::RegisterService(service(k, targets, by))
}

/// After healing: asks every staying node's gateway for every service tried, until each
/// answer is what the converged catalog says or [`DNS_BOUND`] passed.
pub(super) fn add_probe(
    sim: &mut turmoil::Sim<'_>,
    world: &Shared,
    trace: &Trace,
    seed: u64,
    scenario: &Scenario,
) {
    let (nodes, catalog) = {
        let w = world.borrow();
        let nodes = w.staying();
        // The replicas converged: any staying node's catalog is the catalog.
        let catalog = nodes
            .first()
            .and_then(|n| w.obs.boots.iter().rev().find(|b| &b.host == n))
            .map(|b| b.machine.state().catalog.clone());
        (nodes, catalog)
    };
    let services: Vec<String> = (0..scenario.dns_services)
        .map(|k| format!("svc{k}"))
        .collect();
    let (world, trace) = (world.clone(), trace.clone());
    sim.client("dnsprobe", async move {
        let env = sim_env(seed, "dnsprobe");
        let catalog = catalog.unwrap_or_default();
        for node in &nodes {
            let server = std::net::SocketAddr::new(turmoil::lookup(node.as_str()), DNS_PORT);
            for svc in &services {
                let want = expected(&catalog, svc);
                let started = now();
                let mut tries = 0;
                let answer = loop {
                    tries += 1;
                    let got = ask(&env, server, svc).await;
                    if got.as_ref() == Ok(&want) || now() - started >= DNS_BOUND {
                        break got;
                    }
                    tokio::time::sleep(RETRY_EVERY).await;
                };
                trace.record(
                    "dnsprobe",
                    format!("{svc} at {node} ({tries} tries): {answer:?}"),
                );
                world.borrow_mut().obs.dns_probes.push(DnsProbe {
                    node: node.clone(),
                    service: svc.clone(),
                    started,
                    at: now(),
                    answer,
                });
            }
        }
        world.borrow_mut().dns_probed = true;
        Ok(())
    });
}

/// One SRV query over UDP (TCP when truncated), as a set of records or `NXDOMAIN`.
async fn ask(
    env: &mpreg::Env,
    server: std::net::SocketAddr,
    svc: &str,
) -> Result<BTreeSet<String>, String> {
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::RecordType;
    let r = resolve(
        env,
        server,
        &qname(svc),
        RecordType::SRV,
        Via::Udp,
        QUERY_TIMEOUT,
    )
    .await
    .map_err(|e| e.to_string())?;
    match r.rcode() {
        ResponseCode::NXDomain => Ok(BTreeSet::from(["NXDOMAIN".to_owned()])),
        ResponseCode::NoError => Ok(r
            .message
            .answers
            .iter()
            .filter(|a| a.record_type() == RecordType::SRV)
            .map(|a| a.data.to_string())
            .collect()),
        other => Err(format!("rcode {other}")),
    }
}
