//! Scenarios `raft_partition` and `raft_crash`: three catalog replicas under openraft. A
//! client writes catalog changes; after a third of them the leader is cut off from the other
//! two (or crashed), which must elect a new leader and keep committing; after two thirds the
//! partition heals (or the crashed node restarts from its storage), and every replica must
//! converge.
//!
//! Checkers: at most one leader per term (election safety); every acknowledged write is in every replica's final catalog (committed entries
//! are never lost; a timed-out write is "unknown", never "failed"); replicas applied the
//! same log id at every index they share (log matching / state-machine safety); replicas
//! converge to one catalog; and the trace replays with the seed.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use mpreg::control::raft::{
    CatalogStateMachine, LogStore, NetworkFactory, PeerClient, Raft, seed_raft_rng,
};
use mpreg::control::{CatalogCommand, FunctionEntry, Member, Role};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Config, ServerState};

use crate::SimFailure;
use crate::env::sim_env;
use crate::trace::Trace;

const RAFT_PORT: u16 = 7000;
const NODES: [&str; 3] = ["n1", "n2", "n3"];
const WRITE_TIMEOUT: Duration = Duration::from_millis(1500);

/// The fault injected midway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The leader is partitioned from the other replicas, then healed.
    PartitionLeader,
    /// The leader crashes (its tasks and connections vanish; its storage stays), then
    /// restarts.
    CrashLeader,
}

impl Fault {
    fn scenario(self) -> &'static str {
        match self {
            Fault::PartitionLeader => "raft_partition",
            Fault::CrashLeader => "raft_crash",
        }
    }
}

/// What the client asks the harness to do to a host (only the outer loop can crash one).
enum HostAction {
    Crash(&'static str),
    Bounce(&'static str),
}

/// What a successful run produced.
#[derive(Debug)]
pub struct RaftReport {
    pub hash: u64,
    pub trace: Vec<String>,
    pub acknowledged: usize,
    pub unknown: usize,
    pub sim_elapsed: Duration,
}

fn raft_config() -> Arc<Config> {
    let config = Config {
        cluster_name: "mpreg-sim".to_owned(),
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        ..Config::default()
    };
    // A fixed, valid configuration: validation cannot fail.
    Arc::new(config.validate().unwrap_or_default())
}

fn members() -> BTreeMap<u64, BasicNode> {
    NODES
        .iter()
        .enumerate()
        .map(|(i, n)| (i as u64 + 1, BasicNode::new(format!("{n}:{RAFT_PORT}"))))
        .collect()
}

/// The write number `k`: node 1 registers function `f{k}`.
fn write(k: usize) -> CatalogCommand {
    CatalogCommand::RegisterFunctions {
        node: 1,
        functions: vec![FunctionEntry {
            name: format!("f{k}"),
            function_id: format!("f{k}"),
            version: semver::Version::new(1, 0, 0),
            resources: BTreeSet::new(),
        }],
    }
}

fn member_one() -> CatalogCommand {
    CatalogCommand::UpsertMember(Member {
        id: 1,
        name: "n1".into(),
        cluster_id: "sim".into(),
        advertised_urls: vec![format!("ws://n1:9000")],
        resources: BTreeSet::new(),
        role: Role::Voter,
    })
}

/// Runs the scenario with `seed`.
pub fn run(seed: u64, writes: usize, fault: Fault) -> Result<RaftReport, SimFailure> {
    seed_raft_rng(seed);
    let trace = Trace::default();
    // Per term, the nodes that reported themselves leader.
    let leaders: Rc<RefCell<BTreeMap<u64, BTreeSet<u64>>>> = Rc::default();
    let actions: Rc<RefCell<Vec<HostAction>>> = Rc::default();
    let stores: Vec<(LogStore, CatalogStateMachine)> = NODES
        .iter()
        .map(|_| (LogStore::default(), CatalogStateMachine::default()))
        .collect();
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(UNIX_EPOCH + Duration::from_secs(1_800_000_000))
        .simulation_duration(Duration::from_secs(120))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(5))
        .build();
    for (i, name) in NODES.iter().enumerate() {
        let (log, sm) = stores[i].clone();
        let leaders = leaders.clone();
        sim.host(*name, move || {
            let (log, sm, leaders) = (log.clone(), sm.clone(), leaders.clone());
            async move {
                let env = sim_env(seed, name);
                let id = i as u64 + 1;
                let bootstrap = id == 1 && !log.has_vote();
                let raft =
                    Raft::new(id, raft_config(), NetworkFactory::new(env.clone()), log, sm).await?;
                let listener = env.net.listen(&format!("0.0.0.0:{RAFT_PORT}")).await?;
                let service = mpreg::control::raft::PeerService {
                    raft: raft.clone(),
                    env: env.clone(),
                    policy: Default::default(),
                };
                tokio::spawn(mpreg::control::raft::serve_raft(service, listener));
                if bootstrap {
                    raft.initialize(members()).await?;
                }
                // Record every (term, leader) this node reports, for election safety.
                let mut metrics = raft.metrics();
                loop {
                    {
                        let m = metrics.borrow_and_update();
                        if m.state == ServerState::Leader {
                            leaders
                                .borrow_mut()
                                .entry(m.current_term)
                                .or_default()
                                .insert(id);
                        }
                    }
                    if metrics.changed().await.is_err() {
                        return Ok(());
                    }
                }
            }
        });
    }
    let client_trace = trace.clone();
    let client_actions = actions.clone();
    sim.client("client", async move {
        let env = sim_env(seed, "client");
        let mut peers: Vec<PeerClient> = NODES
            .iter()
            .map(|n| PeerClient::to_addr(env.clone(), format!("{n}:{RAFT_PORT}")))
            .collect();
        let mut leader = 0usize;
        let mut outcomes = Vec::new();
        let cut_at = writes / 3;
        let heal_at = 2 * writes / 3;
        let mut cut = None;
        for k in 0..=writes {
            let cmd = if k == 0 { member_one() } else { write(k) };
            if k == cut_at {
                let l = NODES[leader];
                match fault {
                    // Cut the current leader off from the other replicas (not the client).
                    Fault::PartitionLeader => {
                        for other in NODES.iter().filter(|n| **n != l) {
                            turmoil::partition(l, *other);
                        }
                        client_trace.record("client", format!("partition {l} from the others"));
                    }
                    Fault::CrashLeader => {
                        client_actions.borrow_mut().push(HostAction::Crash(l));
                        client_trace.record("client", format!("crash {l}"));
                        // Give the harness a tick to carry it out.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                cut = Some(l);
            }
            if k == heal_at
                && let Some(l) = cut.take()
            {
                match fault {
                    Fault::PartitionLeader => {
                        for other in NODES.iter().filter(|n| **n != l) {
                            turmoil::repair(l, *other);
                        }
                        client_trace.record("client", format!("heal {l}"));
                    }
                    Fault::CrashLeader => {
                        client_actions.borrow_mut().push(HostAction::Bounce(l));
                        client_trace.record("client", format!("restart {l}"));
                    }
                }
            }
            let mut result = "unknown";
            // Try each node at most twice, following leader hints.
            for _attempt in 0..(2 * NODES.len()) {
                match peers[leader].write(cmd.clone(), WRITE_TIMEOUT).await {
                    Ok(Ok(resp)) => {
                        result = if resp.data.is_ok() { "ok" } else { "rejected" };
                        break;
                    }
                    Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                        leader = match f.leader_id {
                            Some(id) if id >= 1 && id as usize <= NODES.len() => id as usize - 1,
                            _ => (leader + 1) % NODES.len(),
                        };
                        if f.leader_id.is_none() {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                    // Timed out or failed: the write may or may not have committed.
                    _ => leader = (leader + 1) % NODES.len(),
                }
            }
            client_trace.record(
                "client",
                format!("write {k} via {}: {result}", NODES[leader]),
            );
            outcomes.push((k, result));
        }
        // Wait (in simulated time) until every replica applied the same log.
        Ok(())
    });
    let fail = |message: String, trace: &Trace| SimFailure {
        seed,
        scenario: fault.scenario().to_owned(),
        message,
        trace: trace.lines(),
    };
    // Step by hand so that the client's crash/restart requests can be carried out.
    loop {
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => return Err(fail(format!("simulation error: {e}"), &trace)),
        }
        for action in actions.borrow_mut().drain(..) {
            match action {
                HostAction::Crash(h) => sim.crash(h),
                HostAction::Bounce(h) => sim.bounce(h),
            }
        }
    }
    // Let the cluster settle after the client finished: step until converged or 30 s pass.
    let deadline = sim.elapsed() + Duration::from_secs(30);
    while !converged(&stores) && sim.elapsed() < deadline {
        if let Err(e) = sim.step() {
            return Err(fail(
                format!("simulation error while settling: {e}"),
                &trace,
            ));
        }
    }
    check(&stores, &trace).map_err(|m| fail(m, &trace))?;
    for (term, ids) in leaders.borrow().iter() {
        if ids.len() > 1 {
            return Err(fail(
                format!("election safety: term {term} had leaders {ids:?}"),
                &trace,
            ));
        }
    }
    let lines = trace.lines();
    let acknowledged = lines.iter().filter(|l| l.ends_with(": ok")).count();
    let unknown = lines.iter().filter(|l| l.ends_with(": unknown")).count();
    for (i, (_, sm)) in stores.iter().enumerate() {
        let s = sm.state();
        trace.record_at(
            sim.elapsed(),
            NODES[i],
            format!(
                "applied {:?}, {} functions",
                s.last_applied,
                s.catalog.functions().count()
            ),
        );
    }
    Ok(RaftReport {
        hash: trace.hash(),
        trace: trace.lines(),
        acknowledged,
        unknown,
        sim_elapsed: sim.elapsed(),
    })
}

fn converged(stores: &[(LogStore, CatalogStateMachine)]) -> bool {
    let states: Vec<_> = stores.iter().map(|(_, sm)| sm.state()).collect();
    states
        .windows(2)
        .all(|w| w[0].last_applied == w[1].last_applied && w[0].catalog == w[1].catalog)
}

/// The checkers (see the module comment).
fn check(stores: &[(LogStore, CatalogStateMachine)], trace: &Trace) -> Result<(), String> {
    // Log matching: at every index two replicas both applied, they applied the same entry.
    let histories: Vec<BTreeMap<u64, _>> = stores
        .iter()
        .map(|(_, sm)| {
            sm.history()
                .into_iter()
                .map(|a| (a.log_id.index, a.log_id))
                .collect()
        })
        .collect();
    for (a, ha) in histories.iter().enumerate() {
        for (b, hb) in histories.iter().enumerate().skip(a + 1) {
            for (index, id) in ha {
                if let Some(other) = hb.get(index)
                    && other != id
                {
                    return Err(format!(
                        "{} applied {id} but {} applied {other} at index {index}",
                        NODES[a], NODES[b]
                    ));
                }
            }
        }
    }
    if !converged(stores) {
        return Err(
            "replicas did not converge within 30 s of simulated time after the workload".into(),
        );
    }
    // Acknowledged writes are never lost.
    let catalog = stores[0].1.state().catalog;
    let present: BTreeSet<String> = catalog.functions().map(|(_, f)| f.name.clone()).collect();
    for line in trace.lines() {
        if let Some(rest) = line.split("write ").nth(1)
            && line.ends_with(": ok")
        {
            let k: usize = rest
                .split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            if k > 0 && !present.contains(&format!("f{k}")) {
                return Err(format!(
                    "acknowledged write {k} is missing from the converged catalog"
                ));
            }
        }
    }
    Ok(())
}
