//! The cluster scenarios' queue workload: one queue, a producer sending numbered messages
//! while the faults happen, competing consumers receiving and acknowledging them, and after
//! healing a drain until the queue is empty.
//!
//! - Host `qp` creates queue `simq` through the first node that takes it (that node owns
//!   it: its messages live on its simulated disk, which a crash cuts back to what it had
//!   synced), then sends `queue_messages` messages `{"k": k}`, one every `queue_every_ms`,
//!   each with deduplication id `d{k}` and message group `g{k % GROUPS}`. A send whose
//!   answer did not come is sent again (same dedup id) through the next node, for up to
//!   [`SEND_PATIENCE`]; each send is recorded as a [`QueueSend`], `acked` when answered.
//! - Consumers `qc{i}`, from [`CONSUMERS_FROM`] on, receive up to 3 messages (long polls of 500 ms) through a node,
//!   failing over to the next when it does not answer, and for each message: acknowledge
//!   it after a short while, or nack it (1 in 20), or hold it past its visibility timeout
//!   before acknowledging (1 in 10; that ack may be refused). Every delivery and every
//!   ack or nack is recorded ([`QueueDelivery`], [`QueueAck`]).
//! - After healing, the harness sets the final phase: once the producer is done, a
//!   consumer whose receive comes back empty asks `queue_stats`, and the queue is drained
//!   when it holds nothing, pending or in flight.

use std::time::Duration;

use mpreg::{Client, Env};
use serde_json::{Value, json};

use super::{PORT, Shared, now};
use crate::env::sim_env;
use crate::scenario::Scenario;
use crate::trace::Trace;

pub const QUEUE: &str = "simq";
/// The queue's visibility timeout.
pub const VISIBILITY: Duration = Duration::from_secs(1);
/// Message groups the producer sends to (order holds within each).
pub const GROUPS: u64 = 3;
/// How long the producer keeps sending one message again before giving up on it.
pub const SEND_PATIENCE: Duration = Duration::from_secs(6);
/// One call's timeout.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Consumers start this far into the run: the messages sent before wait in the queue, so
/// that an early crash of the owner finds messages stored and not yet delivered.
pub const CONSUMERS_FROM: Duration = Duration::from_millis(1500);
/// After healing: how long the drain may take.
pub const DRAIN_BOUND: Duration = Duration::from_secs(40);
/// After healing: how soon the queue must take a send again (its group may still be
/// electing a leader or moving a replica off a lost node).
pub const SEND_AFTER_HEAL_BOUND: Duration = Duration::from_secs(10);

/// One message the producer sent (perhaps several times, under one dedup id).
#[derive(Debug, Clone)]
pub struct QueueSend {
    pub k: u64,
    pub group: String,
    /// When the first attempt began and the last one ended.
    pub started: Duration,
    pub finished: Duration,
    /// A node answered it: it is stored on the owner's disk.
    pub acked: bool,
    /// The id the answer named.
    pub message_id: Option<String>,
}

/// One delivery a consumer received.
#[derive(Debug, Clone)]
pub struct QueueDelivery {
    pub consumer: String,
    pub k: u64,
    pub message_id: String,
    pub receive_count: u64,
    /// The receive was asked at `asked` and answered at `got`: the owner delivered it in
    /// between.
    pub asked: Duration,
    pub got: Duration,
}

/// An ack or nack of one delivery.
#[derive(Debug, Clone)]
pub struct QueueAck {
    pub consumer: String,
    pub message_id: String,
    pub receive_count: u64,
    pub nack: bool,
    pub asked: Duration,
    pub done: Duration,
    /// The owner answered it as done (false: refused, or no answer).
    pub ok: bool,
}

/// What the queue workload saw.
#[derive(Debug, Clone, Default)]
pub struct QueueObs {
    /// The node that owns the queue (`None`: no node took the create).
    pub owner: Option<String>,
    pub sends: Vec<QueueSend>,
    pub deliveries: Vec<QueueDelivery>,
    pub acks: Vec<QueueAck>,
    /// When the final phase began, and when the queue was seen empty (`None`: never,
    /// within [`DRAIN_BOUND`]).
    pub final_from: Option<Duration>,
    pub drained_at: Option<Duration>,
    /// The send made once the final phase began (also among `sends`), to show the queue
    /// takes sends again after healing (`None`: not made).
    pub after_heal: Option<QueueSend>,
}

async fn connect(env: &Env, node: &str) -> Option<Client> {
    super::pubsub::connect(env, &format!("ws://{node}:{PORT}")).await
}

/// Calls queue built-in `fun` with `req`; `Err(true)` when the node did not answer (the
/// caller moves on to another), `Err(false)` when it refused.
async fn call(client: &Client, fun: &str, req: Value) -> Result<Value, bool> {
    match tokio::time::timeout(
        CALL_TIMEOUT + Duration::from_millis(500),
        client.call(fun, json!([req])).timeout(CALL_TIMEOUT),
    )
    .await
    {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(mpreg::ClientError::Rpc { .. })) => Err(false),
        _ => Err(true),
    }
}

/// Adds the producer `qp`.
pub(super) fn add_producer(
    sim: &mut turmoil::Sim<'_>,
    world: &Shared,
    trace: &Trace,
    seed: u64,
    scenario: &Scenario,
) {
    let nodes: Vec<String> = (1..=scenario.nodes).map(|i| format!("n{i}")).collect();
    let (world, trace, scenario) = (world.clone(), trace.clone(), scenario.clone());
    sim.client("qp", async move {
        let env = sim_env(seed, "qp");
        let mut at = 0usize;
        let mut client: Option<Client> = None;
        // Create through n1 (its owner), again until it answers: a create whose answer
        // was lost is answered by the next as the queue that exists.
        let mut create = json!({"queue_name": QUEUE,
            "default_visibility_timeout_seconds": VISIBILITY.as_secs_f64(),
            "enable_dead_letter_queue": false, "deduplication_window_seconds": 600});
        if let Some(r) = scenario.queue_replicas {
            create["replicas"] = json!(r);
        }
        let until = now() + Duration::from_secs(20);
        while world.borrow().obs.queue.owner.is_none() && now() < until {
            if client.is_none() {
                client = connect(&env, &nodes[0]).await;
            }
            let created = match &client {
                Some(c) => call(c, "queue_create", create.clone()).await,
                None => Err(true),
            };
            match created {
                Ok(v) => {
                    trace.record(
                        "qp",
                        format!(
                            "created {QUEUE}: owner {}, replicas {}",
                            v["owner"], v["replicas"]
                        ),
                    );
                    world.borrow_mut().obs.queue.owner = Some(nodes[0].clone());
                }
                Err(_) => {
                    client = None;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        if world.borrow().obs.queue.owner.is_none() {
            trace.record("qp", "no node took the queue");
            world.borrow_mut().queue_produced = true;
            return Ok(());
        }
        for k in 0..scenario.queue_messages as u64 {
            tokio::time::sleep(Duration::from_millis(scenario.queue_every_ms)).await;
            let started = now();
            let sent = send_k(
                &env,
                &nodes,
                &mut at,
                &mut client,
                k,
                started + SEND_PATIENCE,
            )
            .await;
            trace.record("qp", format!("send {k}: acked {}", sent.acked));
            world.borrow_mut().obs.queue.sends.push(sent);
        }
        world.borrow_mut().queue_produced = true;
        Ok(())
    });
}

/// Sends message `k` (dedup id `d<k>`, group `g<k % GROUPS>`) through `client` (connected
/// to `nodes[at]` when missing), moving on to the next node a moment after a call that got
/// no answer or was refused (the owner out of reach), until one answers or `until`.
async fn send_k(
    env: &Env,
    nodes: &[String],
    at: &mut usize,
    client: &mut Option<Client>,
    k: u64,
    until: Duration,
) -> QueueSend {
    let group = format!("g{}", k % GROUPS);
    let req = json!({"queue_name": QUEUE, "message_payload": {"k": k},
        "deduplication_id": format!("d{k}"), "message_group_id": group});
    let started = now();
    let mut answer = None;
    while answer.is_none() && now() < until {
        if client.is_none() {
            *client = connect(env, &nodes[*at % nodes.len()]).await;
        }
        let sent = match client.as_ref() {
            Some(c) => call(c, "queue_send", req.clone()).await,
            None => Err(true),
        };
        match sent {
            Ok(v) => answer = Some(v),
            Err(_) => {
                *client = None;
                *at += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    QueueSend {
        k,
        group,
        started,
        finished: now(),
        acked: answer.is_some(),
        message_id: answer.and_then(|v| v["message_id"].as_str().map(str::to_owned)),
    }
}

/// Once the final phase began: one more send (key `queue_messages`, so that it must be
/// delivered too), retried on the next node until acknowledged or
/// [`SEND_AFTER_HEAL_BOUND`] has passed since the phase began.
async fn send_after_heal(
    world: &Shared,
    trace: &Trace,
    env: &Env,
    nodes: &[String],
    at: &mut usize,
) {
    let (Some(from), k) = ({
        let w = world.borrow();
        (w.obs.queue.final_from, w.obs.queue.sends.len() as u64)
    }) else {
        return;
    };
    let send = send_k(env, nodes, at, &mut None, k, from + SEND_AFTER_HEAL_BOUND).await;
    trace.record(
        "qc0",
        format!("send {k} after healing: acked {}", send.acked),
    );
    let mut w = world.borrow_mut();
    w.obs.queue.sends.push(send.clone());
    w.obs.queue.after_heal = Some(send);
}

/// Adds consumer `qc{i}`.
pub(super) fn add_consumer(
    sim: &mut turmoil::Sim<'_>,
    world: &Shared,
    trace: &Trace,
    seed: u64,
    i: usize,
    scenario: &Scenario,
) {
    let name = format!("qc{i}");
    let nodes: Vec<String> = (1..=scenario.nodes).map(|i| format!("n{i}")).collect();
    let (world, trace) = (world.clone(), trace.clone());
    // A host, not a client: the run's first phase ends when its clients are done, and the
    // consumers go on into the final phase.
    sim.host(name.clone(), move || {
        let (world, trace, name, nodes) =
            (world.clone(), trace.clone(), name.clone(), nodes.clone());
        consume(world, trace, seed, i, name, nodes)
    });
}

async fn consume(
    world: Shared,
    trace: Trace,
    seed: u64,
    i: usize,
    name: String,
    nodes: Vec<String>,
) -> turmoil::Result {
    {
        let env = sim_env(seed, &name);
        let mut at = i;
        let mut client: Option<Client> = None;
        if now() < CONSUMERS_FROM {
            tokio::time::sleep(CONSUMERS_FROM - now()).await;
        }
        while !world.borrow().queue_drained {
            if world.borrow().obs.queue.owner.is_none() {
                if world.borrow().queue_produced {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let probe_due = {
                let w = world.borrow();
                i == 0 && w.obs.queue.final_from.is_some() && w.obs.queue.after_heal.is_none()
            };
            if probe_due {
                send_after_heal(&world, &trace, &env, &nodes, &mut at).await;
                client = None;
            }
            if client.is_none() {
                client = connect(&env, &nodes[at % nodes.len()]).await;
            }
            let Some(c) = client.clone() else {
                at += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let asked = now();
            let got = call(
                &c,
                "queue_receive",
                json!({"queue_name": QUEUE, "max_messages": 3, "wait_seconds": 0.5}),
            )
            .await;
            let messages = match got {
                Ok(v) => v["messages"].as_array().cloned().unwrap_or_default(),
                Err(_) => {
                    client = None;
                    at += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let got = now();
            if messages.is_empty() {
                let finishing = {
                    let w = world.borrow();
                    // (The send after healing is in, or it would be left behind.)
                    w.queue_produced
                        && w.obs.queue.final_from.is_some()
                        && w.obs.queue.after_heal.is_some()
                };
                if !finishing {
                    continue;
                }
                let stats = call(&c, "queue_stats", json!({"queue_name": QUEUE})).await;
                if let Ok(s) = stats
                    && s["depth"] == 0
                    && s["in_flight"] == 0
                {
                    trace.record(&name, "the queue is drained");
                    let mut w = world.borrow_mut();
                    w.queue_drained = true;
                    w.obs.queue.drained_at = Some(now());
                }
                continue;
            }
            for m in messages {
                let k = m["message_payload"]["k"].as_u64().unwrap_or(u64::MAX);
                let id = m["message_id"].as_str().unwrap_or_default().to_owned();
                let receive_count = m["receive_count"].as_u64().unwrap_or(0);
                trace.record(&name, format!("got {k} ({id}, receive {receive_count})"));
                world.borrow_mut().obs.queue.deliveries.push(QueueDelivery {
                    consumer: name.clone(),
                    k,
                    message_id: id.clone(),
                    receive_count,
                    asked,
                    got,
                });
                let roll = env.rng.below(20);
                let (nack, hold) = match roll {
                    0 => (true, Duration::from_millis(20)),
                    1 | 2 => (false, VISIBILITY + Duration::from_millis(300)),
                    _ => (false, Duration::from_millis(10 + env.rng.below(150))),
                };
                tokio::time::sleep(hold).await;
                let fun = if nack { "queue_nack" } else { "queue_ack" };
                let asked = now();
                let done = call(
                    &c,
                    fun,
                    json!({"queue_name": QUEUE, "receipt_handle": m["receipt_handle"]}),
                )
                .await;
                world.borrow_mut().obs.queue.acks.push(QueueAck {
                    consumer: name.clone(),
                    message_id: id,
                    receive_count,
                    nack,
                    asked,
                    done: now(),
                    ok: done.is_ok(),
                });
            }
        }
        Ok(())
    }
}
