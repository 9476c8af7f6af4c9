//! Runs a [`Scenario`]: production nodes (the whole `mpreg` node, its Raft replica
//! included) on simulated hosts `n1`, `n2`, …, clients `c0`, `c1`, … that write and read the
//! catalog through the nodes, and the scenario's fault schedule applied by the harness
//! between simulation steps. Everything the checkers need is recorded in [`Observations`].
//!
//! Each node keeps its Raft log on a simulated disk ([`LogStore`]) that the harness holds,
//! so a crashed node restarts on what it had synced, and loses what it had not.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use mpreg::control::raft::{AppliedRun, CatalogStateMachine, LogStore, PeerClient, seed_raft_rng};
use mpreg::control::{CatalogCommand, QueueEntry, QueueSpec};
use mpreg::{Client, Node, Settings};
use openraft::ServerState;
use openraft::error::{ClientWriteError, RaftError};
use serde_json::json;

use crate::SimFailure;
use crate::cluster_rpc::{self, Executions, ProbeRecord, RpcRecord};
use crate::env::{sim_env, sim_secret};
use crate::scenario::{Action, FaultEvent, Scenario, Target};
use crate::trace::Trace;

pub mod dns;
pub mod pubsub;
pub mod queue;

const PORT: u16 = 9000;
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A node's simulated disks: its Raft log and its queues' tables. Both sync writes this
/// long after they were written, and a crash loses what they had not synced.
#[derive(Clone)]
struct Disks {
    log: LogStore,
    queues: mpreg::queue::store::MemoryDisk,
}

impl Disks {
    fn new() -> Disks {
        let log = LogStore::with_sync_delay(DISK_SYNC_DELAY);
        // For the state-machine-safety checker: what every replica on this disk applied.
        log.record_applied();
        Disks {
            log,
            queues: mpreg::queue::store::MemoryDisk::with_sync_delay(QUEUE_SYNC_DELAY),
        }
    }

    fn crash(&self) {
        self.log.crash();
        self.queues.crash();
    }
}

/// The queue tables' simulated fsync: a send is answered this long after it was written,
/// and a crash inside that window loses it (a slow disk, so that crashes hit the window).
const QUEUE_SYNC_DELAY: Duration = Duration::from_millis(10);
/// The simulated disk syncs appends this long after they were written.
const DISK_SYNC_DELAY: Duration = Duration::from_millis(2);
/// A normal link's most latency (the least is 1 ms).
const MAX_LATENCY: Duration = Duration::from_millis(5);

/// What one client write came to. A write that timed out or lost its connection is
/// `Unknown`: it may or may not have committed, and the checkers must allow both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Acknowledged,
    Rejected,
    Unknown,
}

#[derive(Debug, Clone)]
pub struct WriteRecord {
    pub client: String,
    /// The queue the write creates (unique per write).
    pub queue: String,
    pub started: Duration,
    pub finished: Duration,
    pub outcome: Outcome,
}

#[derive(Debug, Clone)]
pub struct ReadRecord {
    pub client: String,
    pub node: String,
    pub started: Duration,
    pub finished: Duration,
    /// The queues a linearizable read saw, or why it failed.
    pub result: Result<BTreeSet<String>, String>,
}

/// One boot of one node: its state machine (volatile, rebuilt at each boot).
#[derive(Clone)]
pub struct Boot {
    pub host: String,
    pub boot: usize,
    pub machine: CatalogStateMachine,
}

/// Everything a run recorded for the checkers.
#[derive(Default)]
pub struct Observations {
    /// Per term, the hosts that reported being leader in it.
    pub leaders: BTreeMap<u64, BTreeSet<String>>,
    pub boots: Vec<Boot>,
    /// What the replicas applied (the catalog's, group 0, and every queue group's), each
    /// run with the host whose disk recorded it, in the order they started.
    pub applied: Vec<(String, AppliedRun)>,
    pub writes: Vec<WriteRecord>,
    pub reads: Vec<ReadRecord>,
    /// Hosts up and still members at the end (their replicas must have converged).
    pub final_members: Vec<String>,
    /// When the last fault was healed.
    pub healed_at: Duration,
    /// When the replicas were first seen to agree after that (`None`: never, within the
    /// scenario's bound).
    pub converged_at: Option<Duration>,
    /// The fault schedule as it happened, targets resolved.
    pub schedule: Vec<String>,
    /// The RPC workload's requests (scenarios with `rpc_clients`).
    pub rpc: Vec<RpcRecord>,
    /// How many times `record` started, per request and step.
    pub executions: BTreeMap<String, u32>,
    /// After healing: every function some live member offers, called through every live
    /// member.
    pub probes: Vec<ProbeRecord>,
    /// After healing and the probe: each live member's open peer connections, once they
    /// settled at one per other live member or when [`CONNECTIONS_BOUND`] ran out (empty:
    /// the replicas never converged, so nothing was measured).
    pub peer_connections: BTreeMap<String, usize>,
    /// A removed member's campaign (`Action::Campaign`), if the scenario has one.
    pub campaign: Option<Campaign>,
    /// The nodes upgraded to the next build (`Action::Upgrade`), with what each saw of the
    /// other build at the end (`RunningNode::upgrade_stats`).
    pub upgrades: BTreeMap<String, [u64; 5]>,
    /// The pub/sub workload (scenarios with `pubsub_subscribers`): each subscriber's
    /// patterns, what the subscribers heard and what was published, and the final phase.
    pub pubsub_patterns: BTreeMap<String, Vec<String>>,
    pub pubsub_heard: Vec<pubsub::Heard>,
    pub pubsub_published: Vec<pubsub::Published>,
    pub pubsub_final: Option<pubsub::FinalPhase>,
    /// The late subscriber's subscription with a backlog, once it was acknowledged.
    pub pubsub_backlog: Option<pubsub::BacklogSub>,
    /// The DNS workload (scenarios with `dns_services`): each registration or removal and
    /// whether it was acknowledged, and after healing each node's answer for each service.
    pub dns_writes: Vec<(String, bool)>,
    pub dns_probes: Vec<dns::DnsProbe>,
    /// The queue workload (scenarios with `queue_messages`).
    pub queue: queue::QueueObs,
    /// Links between nodes cut or degraded by the faults, each for a while.
    pub link_faults: Vec<LinkFault>,
    /// Nodes that lost what they held in memory (crashed, or restarted into an upgrade) or
    /// were asked to leave, in the order it happened.
    pub node_faults: Vec<NodeFault>,
}

/// A link between nodes `a` and `b` (`a < b`) that was cut (`Isolate`, `Split`) or degraded
/// (`Links`: lossy or slower than normal) from `from` until `until` (`None`: until the end
/// of the run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkFault {
    pub a: String,
    pub b: String,
    pub cut: bool,
    pub from: Duration,
    pub until: Option<Duration>,
}

impl LinkFault {
    /// Whether it is the link between `x` and `y` and was faulty at some time in `from..=to`.
    pub fn hits(&self, x: &str, y: &str, from: Duration, to: Duration) -> bool {
        let pair = (self.a == x && self.b == y) || (self.a == y && self.b == x);
        pair && self.from <= to && self.until.is_none_or(|u| u >= from)
    }
}

/// A node fault: a crash (its memory is gone; an upgrade crashes it too), or a request to
/// leave (it shuts down and is no longer a member).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFault {
    pub node: String,
    pub at: Duration,
    pub leave: bool,
}

/// What a rogue campaign asked and got.
#[derive(Debug, Clone, Default)]
pub struct Campaign {
    /// The highest term any node was in when it began.
    pub start_term: u64,
    pub requests: u64,
    /// Requests answered (granted or not); the rest failed to connect or timed out.
    pub answered: u64,
    pub granted: u64,
    pub highest_term_asked: u64,
}

/// What the harness knows of a node.
#[derive(Debug, Clone, Default)]
struct NodeStatus {
    raft_id: u64,
    up: bool,
    state: Option<ServerState>,
    term: u64,
    /// A voter in the membership this node last saw.
    voter: bool,
    /// Its open peer connections, as of its last look.
    peer_connections: usize,
    /// What it saw of the other build, when it runs the next one.
    upgrade: [u64; 5],
}

/// State shared by the harness and every simulated host (they all run on this thread).
#[derive(Default)]
struct World {
    nodes: BTreeMap<String, NodeStatus>,
    crashed: BTreeSet<String>,
    left: BTreeSet<String>,
    /// Nodes that boot into the next build (`Action::Upgrade`).
    upgraded: BTreeSet<String>,
    leave_requested: BTreeSet<String>,
    boots: BTreeMap<String, usize>,
    obs: Observations,
    /// The probe after healing has finished.
    probed: bool,
    /// `record`'s execution counts, when the scenario has an RPC workload.
    executions: Option<Executions>,
    /// The pub/sub workload's final phase has finished.
    pubsub_final_done: bool,
    /// The DNS probe after healing has finished.
    dns_probed: bool,
    /// The queue producer has sent everything; the consumers found the queue empty in the
    /// final phase.
    queue_produced: bool,
    queue_drained: bool,
    /// Link faults still in force: (a, b, cut) → since when.
    open_link_faults: BTreeMap<(String, String, bool), Duration>,
}

type Shared = Rc<RefCell<World>>;

impl World {
    /// The live node leading in the highest term.
    fn leader(&self) -> Option<String> {
        self.nodes
            .iter()
            .filter(|(_, s)| s.up && s.state == Some(ServerState::Leader))
            .max_by_key(|(_, s)| s.term)
            .map(|(n, _)| n.clone())
    }

    /// The link between `x` and `y` is cut (`cut`) or degraded from `at` on, unless it
    /// already was.
    fn link_fault_begins(&mut self, x: &str, y: &str, cut: bool, at: Duration) {
        let (a, b) = if x < y { (x, y) } else { (y, x) };
        self.open_link_faults
            .entry((a.to_owned(), b.to_owned(), cut))
            .or_insert(at);
    }

    /// The link between `x` and `y` is no longer cut (`cut`) or degraded, as of `at`.
    fn link_fault_ends(&mut self, x: &str, y: &str, cut: bool, at: Duration) {
        let (a, b) = if x < y { (x, y) } else { (y, x) };
        let key = (a.to_owned(), b.to_owned(), cut);
        if let Some(from) = self.open_link_faults.remove(&key) {
            self.obs.link_faults.push(LinkFault {
                a: key.0,
                b: key.1,
                cut,
                from,
                until: Some(at),
            });
        }
    }

    /// Live members not asked to leave (those are on their way out): what the phases after
    /// healing call through.
    fn staying(&self) -> Vec<String> {
        self.live()
            .into_iter()
            .filter(|n| !self.leave_requested.contains(n))
            .collect()
    }

    fn live(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(n, s)| s.up && !self.left.contains(*n))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The node a queue created by a client of `home` is owned by: `home` while it is a
    /// member, else the first node still in the cluster.
    fn owner_for(&self, home: &str) -> u64 {
        let usable = |n: &str| !self.left.contains(n);
        let pick = if usable(home) {
            Some(home.to_owned())
        } else {
            self.nodes.keys().find(|n| usable(n)).cloned()
        };
        pick.and_then(|n| self.nodes.get(&n).map(|s| s.raft_id))
            .unwrap_or(0)
    }
}

/// A successful run: its trace and what it observed.
pub struct RunReport {
    pub hash: u64,
    pub trace: Vec<String>,
    pub obs: Observations,
    pub sim_elapsed: Duration,
}

impl RunReport {
    pub fn acknowledged(&self) -> usize {
        self.obs
            .writes
            .iter()
            .filter(|w| w.outcome == Outcome::Acknowledged)
            .count()
    }
}

fn node_settings(name: &str, scenario: &Scenario, initial: &[String]) -> Settings {
    let peers = if name == "n1" {
        Vec::new() // the seed node bootstraps the cluster
    } else {
        initial
            .iter()
            .filter(|n| *n != name)
            .map(|n| format!("ws://{n}:{PORT}"))
            .collect()
    };
    Settings {
        host: "0.0.0.0".into(),
        port: PORT,
        name: name.to_owned(),
        cluster_id: "sim".into(),
        peers,
        advertised_urls: vec![format!("ws://{name}:{PORT}")],
        voters: scenario.voters,
        replace_voter_after_ms: scenario.replace_voter_after_ms,
        drain_timeout_ms: 1_000,
        dns_port: (scenario.dns_services > 0).then_some(dns::DNS_PORT),
        ..Settings::default()
    }
}

/// Adds host `name` running a node on `disk`s.
fn add_node(
    sim: &mut turmoil::Sim<'_>,
    world: &Shared,
    trace: &Trace,
    seed: u64,
    name: &str,
    settings: Settings,
    disk: Disks,
) {
    let rpc = world.borrow().executions.clone();
    world
        .borrow_mut()
        .nodes
        .insert(name.to_owned(), NodeStatus::default());
    let (world, trace, host) = (world.clone(), trace.clone(), name.to_owned());
    let index: usize = name.trim_start_matches('n').parse().unwrap_or(0);
    sim.host(name, move || {
        let (world, trace, host, settings, disk) = (
            world.clone(),
            trace.clone(),
            host.clone(),
            settings.clone(),
            disk.clone(),
        );
        let functions = rpc
            .as_ref()
            .map(|e| cluster_rpc::functions(index, e))
            .unwrap_or_default();
        async move {
            let boot = {
                let mut w = world.borrow_mut();
                let b = w.boots.entry(host.clone()).or_insert(0);
                *b += 1;
                *b
            };
            // Each boot draws fresh randomness; the disk keeps the node id.
            let env = sim_env(seed ^ (boot as u64).wrapping_mul(0x9e37_79b9), &host);
            let mut builder = Node::builder(settings)
                .env(env)
                .memory_disk(disk.log)
                .queue_disk(disk.queues)
                .cluster_secret(sim_secret());
            let next = world.borrow().upgraded.contains(&host);
            if next {
                builder = builder.speak_next_protocol();
            }
            for f in functions {
                builder.register(f)?;
            }
            let node = builder.start().await?;
            {
                let mut w = world.borrow_mut();
                let status = w.nodes.entry(host.clone()).or_default();
                status.raft_id = node.raft_id();
                status.up = true;
                w.obs.boots.push(Boot {
                    host: host.clone(),
                    boot,
                    machine: node.catalog(),
                });
            }
            trace.record(
                &host,
                format!(
                    "boot {boot}: raft id {}",
                    mpreg::ids::NodeId(node.raft_id())
                ),
            );
            // Record every (term, leader) this node reports, until asked to leave. (One
            // loop, not a spawned task: the shared state is thread-local.)
            let mut metrics = node.raft_metrics();
            loop {
                {
                    let m = metrics.borrow_and_update();
                    let mut w = world.borrow_mut();
                    if let Some(s) = w.nodes.get_mut(&host) {
                        s.peer_connections = node.peer_connections();
                        s.upgrade = node.upgrade_stats();
                        s.state = Some(m.state);
                        s.term = m.current_term;
                        s.voter = m
                            .membership_config
                            .membership()
                            .voter_ids()
                            .any(|v| v == s.raft_id);
                    }
                    if m.state == ServerState::Leader
                        && w.obs
                            .leaders
                            .entry(m.current_term)
                            .or_default()
                            .insert(host.clone())
                    {
                        trace.record(&host, format!("leader in term {}", m.current_term));
                    }
                }
                if world.borrow().leave_requested.contains(&host) {
                    break;
                }
                tokio::select! {
                    changed = metrics.changed() => if changed.is_err() { break },
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
            node.shutdown().await;
            let mut w = world.borrow_mut();
            w.left.insert(host.clone());
            if let Some(s) = w.nodes.get_mut(&host) {
                s.up = false;
            }
            trace.record(&host, "left the cluster");
            Ok(())
        }
    });
}

/// Adds client host `c{i}`: it writes `writes_per_client` queues through its home node
/// (following leader hints to others) and reads linearizably every `read_every` writes.
fn add_client(
    sim: &mut turmoil::Sim<'_>,
    world: &Shared,
    trace: &Trace,
    seed: u64,
    i: usize,
    scenario: &Scenario,
) {
    let name = format!("c{i}");
    // The node this client talks to; it moves to another node when that one fails it.
    let mut home = format!("n{}", i % scenario.nodes + 1);
    let (world, trace, scenario) = (world.clone(), trace.clone(), scenario.clone());
    sim.client(name.clone(), async move {
        let env = sim_env(seed, &name);
        let mut reader: Option<(String, Client)> = None;
        for k in 0..scenario.writes_per_client {
            tokio::time::sleep(Duration::from_millis(scenario.write_every_ms)).await;
            let queue = format!("{name}-q{k}");
            let owner = world.borrow().owner_for(&home);
            let cmd = CatalogCommand::CreateQueue(QueueEntry {
                name: queue.clone(),
                owner: mpreg::ids::NodeId(owner),
                incarnation: 1,
                created_ms: 0,
                replicas: Vec::new(),
                spec: QueueSpec {
                    visibility_timeout_ms: 30_000,
                    max_receives: 0,
                    dedup_window_ms: 0,
                    ..QueueSpec::default()
                },
            });
            let started = now();
            let (outcome, detail) = write_with_failover(&env, &world, &cmd, &mut home, i).await;
            let finished = now();
            trace.record(&name, format!("write {queue}: {outcome:?}{detail}"));
            world.borrow_mut().obs.writes.push(WriteRecord {
                client: name.clone(),
                queue,
                started,
                finished,
                outcome,
            });
            if scenario.read_every > 0 && (k + 1) % scenario.read_every == 0 {
                let via = home.clone();
                let started = now();
                let result =
                    tokio::time::timeout(READ_TIMEOUT, read_queues(&env, &via, &mut reader))
                        .await
                        .unwrap_or_else(|_| {
                            reader = None;
                            Err("timed out".into())
                        });
                let finished = now();
                trace.record(
                    &name,
                    match &result {
                        Ok(q) => format!("read via {via}: {} queues", q.len()),
                        Err(e) => format!("read via {via} failed: {e}"),
                    },
                );
                if result.is_err() {
                    // Fail over to another live node for the next read.
                    let live = world.borrow().live();
                    if let Some(n) = live.get(k % live.len().max(1)) {
                        home = n.clone();
                    }
                }
                world.borrow_mut().obs.reads.push(ReadRecord {
                    client: name.clone(),
                    node: via,
                    started,
                    finished,
                    result,
                });
            }
        }
        Ok(())
    });
}

/// Writes `cmd` through `home`, following leader hints and failing over to other live nodes
/// (`i` spreads the clients' choices), at most four tries; `home` becomes the node that
/// answered. The detail says why a write was rejected.
async fn write_with_failover(
    env: &mpreg::Env,
    world: &Shared,
    cmd: &CatalogCommand,
    home: &mut String,
    i: usize,
) -> (Outcome, String) {
    let mut target = home.clone();
    for attempt in 0..4 {
        let mut peer = PeerClient::to_addr(env.clone(), format!("{target}:{PORT}"), sim_secret());
        match peer.write(cmd.clone(), WRITE_TIMEOUT).await {
            Ok(Ok(resp)) => {
                *home = target;
                return match resp.data.into_result() {
                    Ok(()) => (Outcome::Acknowledged, String::new()),
                    Err(e) => (Outcome::Rejected, format!(" ({e})")),
                };
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                if let Some(leader) = f.leader_node {
                    target = leader.addr.split(':').next().unwrap_or_default().to_owned();
                    continue;
                }
            }
            Ok(Err(_)) | Err(_) => {}
        }
        // No answer, or no leader known: fail over to another live node.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let live = world.borrow().live();
        if !live.is_empty() {
            target = live[(i + attempt + 1) % live.len()].clone();
        }
    }
    (Outcome::Unknown, String::new())
}

/// Adds host `rogue`, which holds the cluster secret and campaigns as member `id` (one
/// that left): each round it asks every live node for its vote at a term 10 above the
/// last, claiming a log longer than anyone's, and records what it got.
fn add_rogue(
    sim: &mut turmoil::Sim<'_>,
    world: &Shared,
    trace: &Trace,
    seed: u64,
    id: u64,
    rounds: u32,
    every: Duration,
) {
    use mpreg::control::raft::{RaftReply, RaftRequest};
    use openraft::raft::VoteRequest;
    use openraft::{CommittedLeaderId, LogId, Vote};
    let (world, trace) = (world.clone(), trace.clone());
    let start_term = world
        .borrow()
        .nodes
        .values()
        .map(|s| s.term)
        .max()
        .unwrap_or(0);
    world.borrow_mut().obs.campaign = Some(Campaign {
        start_term,
        ..Campaign::default()
    });
    sim.client("rogue", async move {
        let env = sim_env(seed, "rogue");
        for round in 1..=u64::from(rounds) {
            tokio::time::sleep(every).await;
            let term = start_term + 10 * round;
            let live = world.borrow().live();
            for node in live {
                let last = LogId::new(CommittedLeaderId::new(term, id), 1 << 40);
                let req = VoteRequest::new(Vote::new(term, id), Some(last));
                let mut peer =
                    PeerClient::to_addr(env.clone(), format!("{node}:{PORT}"), sim_secret());
                let reply = peer
                    .call(RaftRequest::Vote(req), Duration::from_millis(500))
                    .await;
                let granted = match &reply {
                    Ok(RaftReply::Vote(Ok(r))) => Some(r.vote_granted),
                    _ => None,
                };
                trace.record(
                    "rogue",
                    format!("vote at term {term} from {node}: {granted:?}"),
                );
                let mut w = world.borrow_mut();
                let c = w.obs.campaign.get_or_insert_with(Campaign::default);
                c.requests += 1;
                c.highest_term_asked = term;
                if let Some(g) = granted {
                    c.answered += 1;
                    c.granted += u64::from(g);
                }
            }
        }
        Ok(())
    });
}

/// The initial nodes' URLs, node `n{i % nodes + 1}` first.
fn initial_urls(scenario: &Scenario, i: usize) -> Vec<String> {
    (0..scenario.nodes)
        .map(|k| format!("ws://n{}:{PORT}", (i + k) % scenario.nodes + 1))
        .collect()
}

/// Adds RPC client host `r{i}`: it sends the workload's requests through a
/// `ClusterClient` seeded with every initial node (its own first).
fn add_rpc_client(
    sim: &mut turmoil::Sim<'_>,
    world: &Shared,
    trace: &Trace,
    seed: u64,
    i: usize,
    scenario: &Scenario,
) {
    let name = format!("r{i}");
    let seeds = initial_urls(scenario, i);
    let (world, trace, scenario) = (world.clone(), trace.clone(), scenario.clone());
    sim.client(name.clone(), async move {
        let env = sim_env(seed, &name);
        let Some(cluster) = cluster_rpc::connect(&env, &seeds).await else {
            trace.record(&name, "no node reachable");
            return Ok(());
        };
        for k in 0..scenario.rpc_requests_per_client {
            tokio::time::sleep(Duration::from_millis(scenario.rpc_every_ms)).await;
            let (request, cmds, expected) = cluster_rpc::request(i, k);
            let answer = cluster_rpc::send(&cluster, cmds).await;
            trace.record(
                &name,
                match &answer {
                    Ok(v) => format!("{request}: {v}"),
                    Err((code, e)) => format!("{request} failed ({code:?}): {e}"),
                },
            );
            world.borrow_mut().obs.rpc.push(RpcRecord {
                client: name.clone(),
                request,
                expected,
                answer,
            });
        }
        Ok(())
    });
}

/// How long (simulated) the live members' peer connections may take to settle at one per
/// pair after the probe: a connection to a crashed node's previous boot ends only once
/// heartbeats give up on it (four missed, 250 ms apart).
const CONNECTIONS_BOUND: Duration = Duration::from_secs(10);

/// How long (simulated) the probe after healing may take.
const PROBE_BOUND: Duration = Duration::from_secs(60);

/// After healing: calls every function a live member offers through every live member.
fn add_probe(sim: &mut turmoil::Sim<'_>, world: &Shared, trace: &Trace, seed: u64) {
    let (live, offered) = {
        let w = world.borrow();
        // Nodes asked to leave are on their way out: not probed, not counted as offering.
        let live = w.staying();
        let mut offered: BTreeSet<&'static str> = BTreeSet::new();
        for n in &live {
            let index: usize = n.trim_start_matches('n').parse().unwrap_or(0);
            offered.extend(cluster_rpc::offered(index));
        }
        (live, offered)
    };
    let (world, trace) = (world.clone(), trace.clone());
    sim.client("probe", async move {
        let env = sim_env(seed, "probe");
        for node in &live {
            for function in &offered {
                let result = cluster_rpc::probe(&env, node, PORT, function).await;
                trace.record("probe", format!("{function} via {node}: {result:?}"));
                world.borrow_mut().obs.probes.push(ProbeRecord {
                    node: node.clone(),
                    function: (*function).to_owned(),
                    result,
                });
            }
        }
        world.borrow_mut().probed = true;
        Ok(())
    });
}

/// Simulated time since the run began.
fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_else(turmoil::elapsed)
}

/// A linearizable `catalog_query` for the queues, over the client protocol, on `home`
/// (reconnecting when the client moved to another node).
async fn read_queues(
    env: &mpreg::Env,
    home: &str,
    reader: &mut Option<(String, Client)>,
) -> Result<BTreeSet<String>, String> {
    if reader.as_ref().is_none_or(|(at, _)| at != home) {
        *reader = None;
        *reader = Some((
            home.to_owned(),
            Client::connect_with(env, &format!("ws://{home}:{PORT}"))
                .await
                .map_err(|e| e.to_string())?,
        ));
    }
    let (_, client) = reader.as_ref().ok_or("no connection")?;
    let reply = client
        .call(
            "catalog_query",
            json!([{"name": "-", "linearizable": true, "queues": true}]),
        )
        .timeout(READ_TIMEOUT)
        .await;
    match reply {
        Ok(v) => Ok(v["queues"]
            .as_array()
            .map(|qs| {
                qs.iter()
                    .filter_map(|q| q["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()),
        Err(e) => {
            if e.code().is_none() {
                *reader = None; // the connection broke: reconnect next time
            }
            Err(e.to_string())
        }
    }
}

/// The harness's side of one run: the simulation and the disks it keeps.
struct Harness<'a> {
    sim: turmoil::Sim<'a>,
    world: Shared,
    trace: Trace,
    disks: BTreeMap<String, Disks>,
    scenario: Scenario,
    seed: u64,
    initial: Vec<String>,
    /// Deterministic choices of `Target::Random`.
    rng: u64,
}

impl Harness<'_> {
    fn node_names(&self) -> Vec<String> {
        self.world.borrow().nodes.keys().cloned().collect()
    }

    /// Resolves `target` to node names (empty: nothing to do).
    fn resolve(&mut self, target: &Target) -> Vec<String> {
        let w = self.world.borrow();
        let leader = w.leader();
        match target {
            Target::Leader => leader.into_iter().collect(),
            Target::Follower => w
                .live()
                .into_iter()
                .find(|n| Some(n) != leader.as_ref() && w.nodes.get(n).is_some_and(|s| s.voter))
                .into_iter()
                .collect(),
            Target::Random => {
                let candidates: Vec<String> = w
                    .live()
                    .into_iter()
                    .filter(|n| Some(n) != leader.as_ref())
                    .collect();
                drop(w);
                self.rng = self
                    .rng
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                if candidates.is_empty() {
                    return Vec::new();
                }
                vec![candidates[(self.rng >> 33) as usize % candidates.len()].clone()]
            }
            Target::Crashed => w.crashed.iter().cloned().collect(),
            Target::Node(n) => vec![n.clone()],
        }
    }

    fn apply(&mut self, event: &FaultEvent) {
        let description = match &event.action {
            Action::Isolate { target } => {
                let targets = self.resolve(target);
                for t in &targets {
                    for other in self.node_names().iter().filter(|o| *o != t) {
                        self.cut(t, other);
                    }
                }
                format!("isolate {targets:?}")
            }
            Action::Split { leader_in_minority } => {
                let (live, leader) = {
                    let w = self.world.borrow();
                    (w.live(), w.leader())
                };
                let mut ordered: Vec<String> = Vec::new();
                // The leader goes first (minority) or last (majority).
                if *leader_in_minority {
                    ordered.extend(leader.clone());
                }
                ordered.extend(live.iter().filter(|n| Some(*n) != leader.as_ref()).cloned());
                if !*leader_in_minority {
                    ordered.extend(leader.clone());
                }
                let minority: Vec<String> = ordered[..ordered.len() / 2].to_vec();
                let all = self.node_names();
                for a in &minority {
                    for b in all.iter().filter(|b| !minority.contains(b)) {
                        self.cut(a, b);
                    }
                }
                format!("split off {minority:?} (leader was {leader:?})")
            }
            Action::Heal => {
                self.heal_links();
                "heal".to_owned()
            }
            Action::Crash { target } => {
                let targets = self.resolve(target);
                for t in &targets {
                    self.crash(t);
                }
                format!("crash {targets:?}")
            }
            Action::Restart { target } => {
                let targets = self.resolve(target);
                let mut restarted = Vec::new();
                for t in targets {
                    if self.world.borrow_mut().crashed.remove(&t) {
                        self.sim.bounce(t.as_str());
                        restarted.push(t);
                    }
                }
                format!("restart {restarted:?}")
            }
            Action::Join => {
                let name = format!("n{}", self.node_names().len() + 1);
                let settings = node_settings(&name, &self.scenario, &self.initial);
                let disk = Disks::new();
                self.disks.insert(name.clone(), disk.clone());
                add_node(
                    &mut self.sim,
                    &self.world,
                    &self.trace,
                    self.seed,
                    &name,
                    settings,
                    disk,
                );
                format!("join {name}")
            }
            Action::Leave { target } => {
                let targets = self.resolve(target);
                let at = self.sim.elapsed();
                let mut w = self.world.borrow_mut();
                for t in &targets {
                    w.leave_requested.insert(t.clone());
                    w.obs.node_faults.push(NodeFault {
                        node: t.clone(),
                        at,
                        leave: true,
                    });
                }
                format!("leave {targets:?}")
            }
            Action::Links {
                fail_rate,
                max_latency_ms,
            } => {
                self.set_links(*fail_rate, Duration::from_millis(*max_latency_ms));
                format!("links fail_rate={fail_rate} max_latency={max_latency_ms}ms")
            }
            Action::Calm => {
                self.set_links(0.0, MAX_LATENCY);
                "calm".to_owned()
            }
            Action::Upgrade { target } => {
                let targets = self.resolve(target);
                for t in &targets {
                    self.crash(t);
                    let mut w = self.world.borrow_mut();
                    w.upgraded.insert(t.clone());
                    w.crashed.remove(t);
                    drop(w);
                    self.sim.bounce(t.as_str());
                }
                format!("upgrade {targets:?} to the next build")
            }
            Action::Campaign {
                target,
                rounds,
                every_ms,
            } => {
                let targets = self.resolve(target);
                let Some(member) = targets.first() else {
                    return;
                };
                let id = self.world.borrow().nodes[member].raft_id;
                add_rogue(
                    &mut self.sim,
                    &self.world,
                    &self.trace,
                    self.seed,
                    id,
                    *rounds,
                    Duration::from_millis(*every_ms),
                );
                format!(
                    "campaign as {member} ({}), {rounds} rounds",
                    mpreg::ids::NodeId(id)
                )
            }
        };
        let line = format!("{:>6}ms {description}", event.at_ms);
        self.trace
            .record_at(self.sim.elapsed(), "harness", &description);
        self.world.borrow_mut().obs.schedule.push(line);
    }

    fn crash(&mut self, host: &str) {
        {
            let mut w = self.world.borrow_mut();
            if w.crashed.contains(host) || w.left.contains(host) {
                return;
            }
            w.crashed.insert(host.to_owned());
            if let Some(s) = w.nodes.get_mut(host) {
                s.up = false;
                s.state = None;
            }
            w.obs.node_faults.push(NodeFault {
                node: host.to_owned(),
                at: self.sim.elapsed(),
                leave: false,
            });
        }
        self.sim.crash(host);
        if let Some(disk) = self.disks.get(host) {
            disk.crash();
        }
    }

    /// Cuts the link between nodes `a` and `b` (recorded for the checkers).
    fn cut(&mut self, a: &str, b: &str) {
        self.sim.partition(a, b);
        let at = self.sim.elapsed();
        self.world.borrow_mut().link_fault_begins(a, b, true, at);
    }

    fn heal_links(&mut self) {
        let names = self.node_names();
        let at = self.sim.elapsed();
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                self.sim.repair(a.as_str(), b.as_str());
                self.world.borrow_mut().link_fault_ends(a, b, true, at);
            }
        }
    }

    /// Every link between nodes drops messages at `fail_rate` and delays them up to
    /// `max_latency`; degraded (recorded for the checkers) when that is worse than the
    /// simulation's normal links.
    fn set_links(&mut self, fail_rate: f64, max_latency: Duration) {
        let names = self.node_names();
        let at = self.sim.elapsed();
        let degraded = fail_rate > 0.0 || max_latency > MAX_LATENCY;
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                self.sim
                    .set_link_fail_rate(a.as_str(), b.as_str(), fail_rate);
                self.sim
                    .set_link_max_message_latency(a.as_str(), b.as_str(), max_latency);
                let mut w = self.world.borrow_mut();
                if degraded {
                    w.link_fault_begins(a, b, false, at);
                } else {
                    w.link_fault_ends(a, b, false, at);
                }
            }
        }
    }

    /// Every live member has one peer connection per other live member.
    fn connections_settled(&self) -> bool {
        let w = self.world.borrow();
        let live = w.live();
        live.iter()
            .all(|n| w.nodes.get(n).map(|s| s.peer_connections) == Some(live.len() - 1))
    }

    /// Every live member's current replica applied the same log to the same catalog.
    fn converged(&self) -> bool {
        let w = self.world.borrow();
        let live = w.live();
        let states: Vec<_> = live
            .iter()
            .filter_map(|n| w.obs.boots.iter().rev().find(|b| &b.host == n))
            .map(|b| b.machine.state())
            .collect();
        states.len() == live.len()
            && states
                .windows(2)
                .all(|p| p[0].last_applied == p[1].last_applied && p[0].catalog == p[1].catalog)
    }
}

/// Runs `scenario` with `seed`: the schedule, then healing, then settling. Returns the
/// observations for the checkers, or a failure if the simulation itself broke.
///
/// Each run gets a thread of its own: thread-local state left behind by an earlier run
/// (dependencies' caches and counters) must not leak into this one's schedule.
///
/// Runs in one process take turns: tokio's task ids are process-wide (see
/// [`align_task_ids`]), so two simulations spawning tasks at once would shift each other's.
#[allow(clippy::disallowed_methods)] // a fresh thread is what makes a run replayable
pub fn run(scenario: &Scenario, seed: u64) -> Result<RunReport, SimFailure> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    std::thread::scope(|s| {
        s.spawn(|| run_here(scenario, seed))
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// tokio numbers tasks process-wide, and a runtime that shuts down (a crashed host) drops
/// its tasks grouped by id modulo 4 (its task list's shards). Their sockets close in that
/// order, and turmoil turns the closes into messages whose latencies it draws in order: a
/// run's crashes would depend on how many tasks earlier runs spawned. Every run therefore
/// starts at the same task-id residue.
fn align_task_ids() {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    rt.block_on(async {
        for _ in 0..1024 {
            let id = tokio::spawn(async {}).id().to_string();
            if id.parse::<u64>().is_ok_and(|n| n % 64 == 63) {
                return;
            }
        }
    });
}

fn run_here(scenario: &Scenario, seed: u64) -> Result<RunReport, SimFailure> {
    align_task_ids();
    seed_raft_rng(seed);
    let trace = Trace::default();
    let world: Shared = Rc::default();
    let horizon = scenario
        .faults
        .iter()
        .map(|f| f.at_ms)
        .max()
        .unwrap_or(0)
        .max(scenario.workload_ms())
        + 4 * scenario.settle_ms
        + 120_000;
    let sim = turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(UNIX_EPOCH + Duration::from_secs(1_800_000_000))
        .simulation_duration(Duration::from_millis(horizon))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(MAX_LATENCY)
        .build();
    let initial: Vec<String> = (1..=scenario.nodes).map(|i| format!("n{i}")).collect();
    let mut h = Harness {
        sim,
        world: world.clone(),
        trace: trace.clone(),
        disks: BTreeMap::new(),
        scenario: scenario.clone(),
        seed,
        initial: initial.clone(),
        rng: seed ^ 0x5eed,
    };
    world.borrow_mut().executions = (scenario.rpc_clients > 0).then(Executions::default);
    for name in &initial {
        let disk = Disks::new();
        h.disks.insert(name.clone(), disk.clone());
        let settings = node_settings(name, scenario, &initial);
        add_node(&mut h.sim, &world, &trace, seed, name, settings, disk);
    }
    for i in 0..scenario.clients {
        add_client(&mut h.sim, &world, &trace, seed, i, scenario);
    }
    for i in 0..scenario.rpc_clients {
        add_rpc_client(&mut h.sim, &world, &trace, seed, i, scenario);
    }
    for i in 0..scenario.pubsub_subscribers {
        pubsub::add_subscriber(&mut h.sim, &world, &trace, seed, i, scenario);
    }
    if scenario.pubsub_subscribers > 0 {
        for i in 0..scenario.pubsub_publishers {
            pubsub::add_publisher(&mut h.sim, &world, &trace, seed, i, scenario);
        }
    }
    if scenario.dns_services > 0 {
        dns::add_registrar(&mut h.sim, &world, &trace, seed, scenario);
    }
    if scenario.queue_messages > 0 {
        queue::add_producer(&mut h.sim, &world, &trace, seed, scenario);
        for i in 0..scenario.queue_consumers {
            queue::add_consumer(&mut h.sim, &world, &trace, seed, i, scenario);
        }
    }
    let fail = |message: String| SimFailure {
        seed,
        scenario: scenario.name.clone(),
        message,
        trace: trace.lines(),
        schedule: world.borrow().obs.schedule.clone(),
    };
    let mut faults: Vec<FaultEvent> = scenario.faults.clone();
    faults.sort_by_key(|f| f.at_ms);
    let mut next = 0;
    // The workload with the faults, until the clients are done and every fault fired.
    loop {
        let done = match h.sim.step() {
            Ok(done) => done,
            Err(e) => return Err(fail(format!("simulation error: {e}"))),
        };
        while next < faults.len() && h.sim.elapsed() >= Duration::from_millis(faults[next].at_ms) {
            let event = faults[next].clone();
            h.apply(&event);
            next += 1;
        }
        if done && next == faults.len() {
            break;
        }
    }
    // Heal everything, then give the cluster `settle_ms` to agree.
    h.heal_links();
    h.set_links(0.0, MAX_LATENCY);
    let crashed: Vec<String> = world.borrow().crashed.iter().cloned().collect();
    for c in crashed {
        world.borrow_mut().crashed.remove(&c);
        h.sim.bounce(c.as_str());
    }
    let healed_at = h.sim.elapsed();
    trace.record_at(
        healed_at,
        "harness",
        "healed: links repaired, crashed nodes restarted",
    );
    let deadline = healed_at + Duration::from_millis(scenario.settle_ms);
    let mut converged_at = None;
    while h.sim.elapsed() < deadline {
        if let Err(e) = h.sim.step() {
            return Err(fail(format!("simulation error while settling: {e}")));
        }
        // A restarted node is "live" only once it booted; wait for all of them.
        let all_up = {
            let w = world.borrow();
            w.nodes.iter().all(|(n, s)| s.up || w.left.contains(n))
        };
        if all_up && h.converged() {
            converged_at = Some(h.sim.elapsed());
            break;
        }
    }
    if scenario.rpc_clients > 0 && converged_at.is_some() {
        add_probe(&mut h.sim, &world, &trace, seed);
        let deadline = h.sim.elapsed() + PROBE_BOUND;
        while !world.borrow().probed && h.sim.elapsed() < deadline {
            if let Err(e) = h.sim.step() {
                return Err(fail(format!("simulation error while probing: {e}")));
            }
        }
        if !world.borrow().probed {
            return Err(fail("the probe did not finish".into()));
        }
    }
    if scenario.pubsub_subscribers > 0 && converged_at.is_some() {
        pubsub::add_final(&mut h.sim, &world, &trace, seed);
        let deadline = h.sim.elapsed() + pubsub::READY_BOUND + Duration::from_secs(30);
        while !world.borrow().pubsub_final_done && h.sim.elapsed() < deadline {
            if let Err(e) = h.sim.step() {
                return Err(fail(format!(
                    "simulation error in pub/sub's final phase: {e}"
                )));
            }
        }
        if !world.borrow().pubsub_final_done {
            return Err(fail("pub/sub's final phase did not finish".into()));
        }
    }
    if scenario.dns_services > 0 && converged_at.is_some() {
        dns::add_probe(&mut h.sim, &world, &trace, seed, scenario);
        let services = scenario.dns_services as u32;
        let nodes = world.borrow().staying().len() as u32;
        let deadline =
            h.sim.elapsed() + (dns::DNS_BOUND + Duration::from_secs(1)) * services * nodes;
        while !world.borrow().dns_probed && h.sim.elapsed() < deadline {
            if let Err(e) = h.sim.step() {
                return Err(fail(format!("simulation error in the DNS probe: {e}")));
            }
        }
        if !world.borrow().dns_probed {
            return Err(fail("the DNS probe did not finish".into()));
        }
    }
    if scenario.queue_messages > 0 && converged_at.is_some() {
        // The consumers drain the queue once its owner is back (healing restarted it).
        let from = h.sim.elapsed();
        world.borrow_mut().obs.queue.final_from = Some(from);
        trace.record_at(from, "harness", "queue: drain");
        while !world.borrow().queue_drained && h.sim.elapsed() < from + queue::DRAIN_BOUND {
            if let Err(e) = h.sim.step() {
                return Err(fail(format!("simulation error in the queue's drain: {e}")));
            }
        }
    }
    if converged_at.is_some() {
        // Every pair of live members talks (heartbeats both ways), over one connection once
        // the ones dialled during faults have been dropped or broken.
        let deadline = h.sim.elapsed() + CONNECTIONS_BOUND;
        while !h.connections_settled() && h.sim.elapsed() < deadline {
            if let Err(e) = h.sim.step() {
                return Err(fail(format!("simulation error while settling links: {e}")));
            }
        }
        let mut w = world.borrow_mut();
        let counts: BTreeMap<String, usize> = w
            .live()
            .into_iter()
            .filter_map(|n| Some((n.clone(), w.nodes.get(&n)?.peer_connections)))
            .collect();
        trace.record_at(
            h.sim.elapsed(),
            "harness",
            format!("peer connections: {counts:?}"),
        );
        w.obs.peer_connections = counts;
    }
    let sim_elapsed = h.sim.elapsed();
    {
        let mut w = world.borrow_mut();
        w.obs.final_members = w.live();
        w.obs.applied = h
            .disks
            .iter()
            .flat_map(|(host, disk)| {
                let runs = disk.log.applied_log().map(|l| l.runs()).unwrap_or_default();
                runs.into_iter().map(move |r| (host.clone(), r))
            })
            .collect();
        w.obs.upgrades = w
            .upgraded
            .iter()
            .filter_map(|n| Some((n.clone(), w.nodes.get(n)?.upgrade)))
            .collect();
        w.obs.healed_at = healed_at;
        w.obs.converged_at = converged_at;
        // Healing repaired every link; anything still open lasted the run.
        let open = std::mem::take(&mut w.open_link_faults);
        w.obs
            .link_faults
            .extend(open.into_iter().map(|((a, b, cut), from)| LinkFault {
                a,
                b,
                cut,
                from,
                until: None,
            }));
        if let Some(e) = w.executions.clone() {
            w.obs.executions = cluster_rpc::lock(&e).clone();
        }
    }
    for b in world.borrow().obs.boots.iter() {
        let s = b.machine.state();
        trace.record_at(
            sim_elapsed,
            &b.host,
            format!(
                "boot {} applied {:?}: {} members, {} queues",
                b.boot,
                s.last_applied.map(|l| l.index),
                s.catalog.members().count(),
                s.catalog.queues().count()
            ),
        );
    }
    drop(h);
    let obs = std::mem::take(&mut world.borrow_mut().obs);
    Ok(RunReport {
        hash: trace.hash(),
        trace: trace.lines(),
        obs,
        sim_elapsed,
    })
}
