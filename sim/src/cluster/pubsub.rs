//! The cluster scenarios' pub/sub workload: subscribers on the nodes, publishers publishing
//! numbered messages while the faults happen, and a final phase after healing in which every
//! live node publishes to every subscriber.
//!
//! - Subscriber `s{i}` holds a [`ClusterSubscription`] (it moves to another node when its
//!   node goes) to the patterns [`patterns`] gives it, plus `probe.#`. The last subscriber
//!   comes late, halfway through the workload, on one node, asking for the cluster's
//!   backlog of the last five minutes (`get_backlog`); if its connection ends it subscribes
//!   again without (a second backlog would repeat messages by design). Its first
//!   subscription, the one with the backlog, is recorded as a [`BacklogSub`].
//! - Publisher `q{i}` publishes `ps.p{i}.even` / `ps.p{i}.odd` alternately, each payload
//!   naming the publisher, its connection (`e`, counted from 1: a publisher whose node went
//!   reconnects elsewhere, and order is promised per connection) and its number `k`.
//! - After healing, host `pf` publishes `probe.<node>` through every live node until every
//!   subscriber has heard one from each (the bound is [`READY_BOUND`]), then a batch of
//!   `ps.*` messages through each; each must reach every subscriber it matches within
//!   [`FINAL_BOUND`].

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use mpreg::pubsub::backlog::Retention;
use mpreg::{Client, Env};
use serde_json::{Value, json};

use super::{PORT, Shared, now};
use crate::env::sim_env;
use crate::scenario::Scenario;
use crate::trace::Trace;

/// Patterns of subscriber `i` (besides `probe.#`).
pub fn patterns(i: usize) -> Vec<String> {
    let sets: [&[&str]; 4] = [
        &["ps.#"],
        &["ps.*.even"],
        &["ps.p0.*", "ps.p1.odd"],
        &["ps.p1.*", "ps.p0.even"],
    ];
    let mut p: Vec<String> = sets[i % sets.len()].iter().map(|s| s.to_string()).collect();
    p.push("probe.#".into());
    p
}

/// After healing: how long every subscriber may take to hear a probe from every live node.
pub const READY_BOUND: Duration = Duration::from_secs(20);
/// How long a final message may take to reach a subscriber it matches.
pub const FINAL_BOUND: Duration = Duration::from_secs(2);
/// Final messages per live node.
pub const FINAL_PER_NODE: usize = 6;

/// A message a subscriber heard.
#[derive(Debug, Clone)]
pub struct Heard {
    pub subscriber: String,
    pub topic: String,
    /// `pub/e/k` for workload and final messages, `probe/<node>` for probes.
    pub key: String,
    pub at: Duration,
}

/// A publish a publisher made (`acked`: the node took it).
#[derive(Debug, Clone)]
pub struct Published {
    pub publisher: String,
    pub topic: String,
    pub key: String,
    /// The node it was published through (which keeps it for backlogs).
    pub node: String,
    /// When the publisher sent it (the node cannot have kept it earlier).
    pub sent: Duration,
    /// When its ack came, or when the publisher gave up on it (within [`PUBLISH_TIMEOUT`]).
    pub at: Duration,
    pub acked: bool,
    /// Published in the final phase, after healing.
    pub fin: bool,
}

/// The late subscriber's subscription with a backlog: on which node, for which patterns,
/// how far back; when it was asked for (a publish acknowledged before then had reached its
/// node before any node heard of this subscription), when the node acknowledged it (it
/// gathers the backlog from then on) and when it ended (`None`: it lasted the run).
/// With what each node keeps ([`Retention`]) and the most bytes a backlog answer carries.
#[derive(Debug, Clone)]
pub struct BacklogSub {
    pub subscriber: String,
    pub node: String,
    pub patterns: Vec<String>,
    pub window: Duration,
    pub asked: Duration,
    pub acked: Duration,
    pub ended: Option<Duration>,
    pub retention: Retention,
    pub max_bytes: usize,
}

/// How far back the late subscriber's backlog reaches (the original client's default).
pub const BACKLOG_WINDOW: Duration = Duration::from_secs(300);
/// How long a publisher waits for a publish's ack.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);

/// The node named in `url` (`ws://n1:9000` → `n1`).
pub fn node_of(url: &str) -> String {
    let host = url.split_once("://").map_or(url, |(_, rest)| rest);
    host.split(':').next().unwrap_or(host).to_owned()
}

/// The final phase: when it began, when every subscriber had heard every live node's probe
/// (`None`: not within [`READY_BOUND`]), the nodes it published through.
#[derive(Debug, Clone, Default)]
pub struct FinalPhase {
    pub started: Duration,
    pub ready_at: Option<Duration>,
    pub nodes: Vec<String>,
}

/// The payload of message `k` of `publisher`'s connection `e`.
pub fn payload(publisher: &str, e: u32, k: usize) -> Value {
    json!({"pub": publisher, "e": e, "k": k})
}

/// The key of a heard payload: `pub/e/k`, or `probe/<node>`.
pub fn key_of(payload: &Value) -> String {
    if let Some(node) = payload["probe"].as_str() {
        return format!("probe/{node}");
    }
    format!(
        "{}/{}/{}",
        payload["pub"].as_str().unwrap_or("?"),
        payload["e"],
        payload["k"]
    )
}

/// A client of `url`, or `None` if it does not connect within a couple of seconds.
pub async fn connect(env: &Env, url: &str) -> Option<Client> {
    tokio::time::timeout(Duration::from_secs(2), Client::connect_with(env, url))
        .await
        .ok()?
        .ok()
}

/// Reads `sub` until it ends, handing each notification to `heard`.
pub async fn drain<S>(mut sub: S, mut heard: impl FnMut(String, Value))
where
    S: futures_util::Stream<Item = mpreg::client::pubsub::Notification> + Unpin,
{
    while let Some(n) = sub.next().await {
        heard(n.topic, n.payload);
    }
}

/// What a subscriber does with each notification: records it for the checkers.
fn recorder(world: &Shared, trace: &Trace, name: &str) -> impl FnMut(String, Value) + use<> {
    let (world, trace, name) = (world.clone(), trace.clone(), name.to_owned());
    move |topic, payload| {
        let key = key_of(&payload);
        trace.record(&name, format!("heard {topic} {key}"));
        world.borrow_mut().obs.pubsub_heard.push(Heard {
            subscriber: name.clone(),
            topic,
            key,
            at: now(),
        });
    }
}

/// Adds subscriber host `s{i}` (a host: it listens until the run ends).
pub(super) fn add_subscriber(
    sim: &mut turmoil::Sim<'_>,
    world: &Shared,
    trace: &Trace,
    seed: u64,
    i: usize,
    scenario: &Scenario,
) {
    let name = format!("s{i}");
    let late = i + 1 == scenario.pubsub_subscribers;
    let pats = patterns(i);
    world
        .borrow_mut()
        .obs
        .pubsub_patterns
        .insert(name.clone(), pats.clone());
    let seeds = super::initial_urls(scenario, i);
    let halfway = Duration::from_millis(scenario.pubsub_ms() / 2);
    let (world, trace, scenario) = (world.clone(), trace.clone(), scenario.clone());
    sim.host(name.clone(), move || {
        let (world, trace, name, pats, seeds, scenario) = (
            world.clone(),
            trace.clone(),
            name.clone(),
            pats.clone(),
            seeds.clone(),
            scenario.clone(),
        );
        async move {
            let env = sim_env(seed, &name);
            if late {
                tokio::time::sleep(halfway).await;
            }
            let mut backlog = late;
            for attempt in 0.. {
                if late {
                    // On one node at a time, the cluster's backlog first.
                    let url = &seeds[attempt % seeds.len()];
                    if let Some(client) = connect(&env, url).await {
                        let asked = now();
                        let sub = if backlog {
                            client
                                .subscribe_with_backlog(pats.clone(), BACKLOG_WINDOW.as_secs_f64())
                                .await
                        } else {
                            client.subscribe(pats.clone()).await
                        };
                        match sub {
                            Ok(sub) => {
                                trace.record(
                                    &name,
                                    format!("subscribed on {url} (backlog {backlog})"),
                                );
                                let with_backlog = std::mem::take(&mut backlog);
                                if with_backlog {
                                    let node = node_of(url);
                                    // What the nodes keep and answer: their settings.
                                    let settings = super::node_settings(&node, &scenario, &[]);
                                    world.borrow_mut().obs.pubsub_backlog = Some(BacklogSub {
                                        subscriber: name.clone(),
                                        node,
                                        patterns: pats.clone(),
                                        window: BACKLOG_WINDOW,
                                        asked,
                                        acked: now(),
                                        ended: None,
                                        retention: Retention::from_settings(&settings),
                                        // The node's share of its queue for a backlog
                                        // (`node::conn`'s subscribe).
                                        max_bytes: settings.pubsub_queue_bytes / 2,
                                    });
                                }
                                drain(sub, recorder(&world, &trace, &name)).await;
                                trace.record(&name, "subscription ended");
                                if with_backlog
                                    && let Some(b) = world.borrow_mut().obs.pubsub_backlog.as_mut()
                                {
                                    b.ended = Some(now());
                                }
                            }
                            Err(e) => trace.record(&name, format!("subscribe on {url}: {e}")),
                        }
                    }
                } else if let Some(cluster) = crate::cluster_rpc::connect(&env, &seeds).await {
                    match cluster.subscribe(pats.clone()).await {
                        Ok(sub) => {
                            trace.record(&name, "subscribed");
                            drain(sub, recorder(&world, &trace, &name)).await;
                            trace.record(&name, "cluster subscription ended");
                        }
                        Err(e) => trace.record(&name, format!("subscribe: {e}")),
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Ok(())
        }
    });
}

/// Publishes `payload` on `topic` through `client` within [`PUBLISH_TIMEOUT`]; whether the
/// node took it.
async fn publish(client: &Client, topic: &str, payload: Value) -> bool {
    matches!(
        tokio::time::timeout(PUBLISH_TIMEOUT, client.publish(topic, payload)).await,
        Ok(Ok(()))
    )
}

/// Adds publisher client `q{i}`: `pubsub_messages_per_publisher` messages, one every
/// `pubsub_every_ms`, through its node, or the next one when that fails.
pub(super) fn add_publisher(
    sim: &mut turmoil::Sim<'_>,
    world: &Shared,
    trace: &Trace,
    seed: u64,
    i: usize,
    scenario: &Scenario,
) {
    let name = format!("q{i}");
    let seeds = super::initial_urls(scenario, i);
    let (world, trace, scenario) = (world.clone(), trace.clone(), scenario.clone());
    sim.client(name.clone(), async move {
        let env = sim_env(seed, &name);
        let (mut client, mut connection, mut attempt) = (None::<Client>, 0u32, 0usize);
        let mut node = String::new();
        for k in 0..scenario.pubsub_messages_per_publisher {
            tokio::time::sleep(Duration::from_millis(scenario.pubsub_every_ms)).await;
            for _ in 0..seeds.len() {
                if client.is_some() {
                    break;
                }
                let url = &seeds[attempt % seeds.len()];
                attempt += 1;
                client = connect(&env, url).await;
                if client.is_some() {
                    node = node_of(url);
                    connection += 1;
                    trace.record(&name, format!("connection {connection} to {url}"));
                }
            }
            let Some(c) = &client else {
                trace.record(&name, format!("message {k}: no node reachable"));
                continue;
            };
            let topic = format!("ps.p{i}.{}", if k % 2 == 0 { "even" } else { "odd" });
            let sent = now();
            let acked = publish(c, &topic, payload(&name, connection, k)).await;
            trace.record(&name, format!("published {topic} {k}: acked {acked}"));
            world.borrow_mut().obs.pubsub_published.push(Published {
                publisher: name.clone(),
                topic,
                key: format!("{name}/{connection}/{k}"),
                node: node.clone(),
                sent,
                at: now(),
                acked,
                fin: false,
            });
            if !acked {
                client = None; // a fresh connection (and numbering) next time
            }
        }
        Ok(())
    });
}

/// After healing: probes through every live node until every subscriber has heard each,
/// then the final messages (see the module's note). Sets `pubsub_final_done` when through.
pub(super) fn add_final(sim: &mut turmoil::Sim<'_>, world: &Shared, trace: &Trace, seed: u64) {
    let (live, subscribers) = {
        let w = world.borrow();
        let subscribers: Vec<String> = w.obs.pubsub_patterns.keys().cloned().collect();
        (w.staying(), subscribers)
    };
    let (world, trace) = (world.clone(), trace.clone());
    sim.client("pf", async move {
        let env = sim_env(seed, "pf");
        let started = now();
        world.borrow_mut().obs.pubsub_final = Some(FinalPhase {
            started,
            ready_at: None,
            nodes: live.clone(),
        });
        let mut clients: BTreeMap<String, Client> = BTreeMap::new();
        let ready = |w: &super::World| {
            subscribers.iter().all(|s| {
                live.iter().all(|n| {
                    let key = format!("probe/{n}");
                    w.obs
                        .pubsub_heard
                        .iter()
                        .any(|h| h.subscriber == *s && h.key == key && h.at >= started)
                })
            })
        };
        let mut ready_at = None;
        while now() < started + READY_BOUND {
            for node in &live {
                if !clients.contains_key(node)
                    && let Some(c) = connect(&env, &format!("ws://{node}:{PORT}")).await
                {
                    clients.insert(node.clone(), c);
                }
                if let Some(c) = clients.get(node)
                    && !publish(c, &format!("probe.{node}"), json!({"probe": node})).await
                {
                    clients.remove(node);
                }
            }
            if ready(&world.borrow()) {
                ready_at = Some(now());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        trace.record("pf", format!("subscribers ready: {ready_at:?}"));
        if let Some(f) = world.borrow_mut().obs.pubsub_final.as_mut() {
            f.ready_at = ready_at;
        }
        if ready_at.is_some() {
            for node in &live {
                let publisher = format!("final-{node}");
                for k in 0..FINAL_PER_NODE {
                    let topic = format!(
                        "ps.p{}.{}",
                        k % 2,
                        if (k / 2) % 2 == 0 { "even" } else { "odd" }
                    );
                    let sent = now();
                    let acked = match clients.get(node) {
                        Some(c) => publish(c, &topic, payload(&publisher, 1, k)).await,
                        None => false,
                    };
                    trace.record("pf", format!("final {topic} via {node}: acked {acked}"));
                    world.borrow_mut().obs.pubsub_published.push(Published {
                        publisher: publisher.clone(),
                        topic,
                        key: format!("{publisher}/1/{k}"),
                        node: node.clone(),
                        sent,
                        at: now(),
                        acked,
                        fin: true,
                    });
                }
            }
            tokio::time::sleep(FINAL_BOUND + Duration::from_millis(500)).await;
        }
        world.borrow_mut().pubsub_final_done = true;
        Ok(())
    });
}
