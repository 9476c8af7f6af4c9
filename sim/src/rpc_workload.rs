//! Scenario `rpc`: one node, several clients sending single calls and DAGs concurrently
//! over a network with random latency. Every reply is checked against the answer computed
//! locally (a sequential evaluation of the same request).

use std::time::{Duration, UNIX_EPOCH};

use mpreg::env::SharedRng;
use mpreg::{Client, ClientError, ErrorCode, Function, Node, RpcCommand, Settings};
use serde_json::{Value, json};

use crate::SimFailure;
use crate::env::sim_env;
use crate::trace::Trace;

/// Shape of the workload.
#[derive(Debug, Clone)]
pub struct RpcWorkload {
    pub clients: usize,
    /// Concurrent request loops per client (all on one connection).
    pub loops_per_client: usize,
    pub requests_per_loop: usize,
    pub max_latency: Duration,
}

impl Default for RpcWorkload {
    fn default() -> Self {
        RpcWorkload {
            clients: 3,
            loops_per_client: 2,
            requests_per_loop: 12,
            max_latency: Duration::from_millis(8),
        }
    }
}

/// What a successful run produced.
#[derive(Debug)]
pub struct RunReport {
    pub seed: u64,
    pub hash: u64,
    pub trace: Vec<String>,
    pub requests: usize,
    pub sim_elapsed: Duration,
}

const NODE: &str = "node";
const PORT: u16 = 9000;

fn node_functions() -> Vec<Function> {
    vec![
        Function::new(
            "add",
            |a: i64, b: i64| async move { Ok::<_, String>(a + b) },
        )
        .params(["a", "b"]),
        Function::new("slow_add", |a: i64, b: i64, delay_ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            Ok::<_, String>(a + b)
        })
        .params(["a", "b", "delay_ms"]),
        Function::new("sum", |xs: Vec<i64>| async move {
            Ok::<_, String>(xs.iter().sum::<i64>())
        })
        .params(["xs"]),
        Function::new("fail", |msg: String| async move { Err::<i64, _>(msg) }).params(["msg"]),
    ]
}

/// One request of the workload and the outcome a correct node gives.
struct Case {
    label: String,
    cmds: Vec<RpcCommand>,
    expect: Result<Value, ErrorCode>,
}

fn small(rng: &SharedRng) -> i64 {
    rng.below(1000) as i64 - 500
}

/// Draws the next request from `rng`.
fn draw_case(rng: &SharedRng) -> Case {
    match rng.below(10) {
        0..=2 => {
            let x = small(rng);
            Case {
                label: format!("echo {x}"),
                cmds: vec![RpcCommand::new("e", "echo").args(json!([x]))],
                expect: Ok(json!({"e": x})),
            }
        }
        3..=5 => {
            // Fan-out of slow adds with random delays, fan-in by `sum`.
            let width = 1 + rng.below(5) as usize;
            let mut cmds = Vec::new();
            let mut names = Vec::new();
            let mut total = 0;
            for i in 0..width {
                let (a, b, d) = (small(rng), small(rng), rng.below(20));
                total += a + b;
                names.push(format!("p{i}"));
                cmds.push(RpcCommand::new(format!("p{i}"), "slow_add").args(json!([a, b, d])));
            }
            cmds.push(RpcCommand::new("total", "sum").args(json!([names])));
            Case {
                label: format!("fan-out {width} -> sum"),
                cmds,
                expect: Ok(json!({"total": total})),
            }
        }
        6..=7 => {
            // A chain through keyword and positional references.
            let (a, b, c) = (small(rng), small(rng), small(rng));
            let cmds = vec![
                RpcCommand::new("first", "add").args(json!([a, b])),
                RpcCommand::new("second", "slow_add")
                    .kwarg("a", json!("first"))
                    .kwarg("b", json!(c))
                    .kwarg("delay_ms", json!(rng.below(10))),
                RpcCommand::new("third", "echos").args(json!(["second", {"from": "first"}])),
            ];
            Case {
                label: "chain".to_owned(),
                cmds,
                expect: Ok(json!({"third": [a + b + c, {"from": a + b}]})),
            }
        }
        8 => Case {
            label: "not found".to_owned(),
            cmds: vec![RpcCommand::new("x", "no_such_function")],
            expect: Err(ErrorCode::CommandNotFound),
        },
        _ => Case {
            label: "failing step".to_owned(),
            cmds: vec![
                RpcCommand::new("ok", "add").args(json!([1, 2])),
                RpcCommand::new("bad", "fail").args(json!(["boom"])),
            ],
            expect: Err(ErrorCode::ExecutionFailed),
        },
    }
}

fn outcome(
    result: &Result<serde_json::Map<String, Value>, ClientError>,
) -> Result<Value, ErrorCode> {
    match result {
        Ok(r) => Ok(Value::Object(r.clone())),
        Err(e) => Err(e.code().unwrap_or(ErrorCode::Internal)),
    }
}

/// Runs the scenario with `seed`.
pub fn run(seed: u64, w: &RpcWorkload) -> Result<RunReport, SimFailure> {
    // The node runs a (single-replica) Raft: its election timeouts come from the seed too.
    mpreg::control::raft::seed_raft_rng(seed);
    let trace = Trace::default();
    let failures = Trace::default();
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(UNIX_EPOCH + Duration::from_secs(1_800_000_000))
        .simulation_duration(Duration::from_secs(120))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(w.max_latency)
        .build();
    sim.host(NODE, move || async move {
        let settings = Settings {
            host: "0.0.0.0".to_owned(),
            port: PORT,
            name: NODE.to_owned(),
            ..Settings::default()
        };
        let mut builder = Node::builder(settings)
            .env(sim_env(seed, NODE))
            .cluster_secret(crate::env::sim_secret());
        for f in node_functions() {
            builder.register(f)?;
        }
        builder.start().await?.wait().await;
        Ok(())
    });
    for c in 0..w.clients {
        let host = format!("client{c}");
        let (trace, failures, w) = (trace.clone(), failures.clone(), w.clone());
        sim.client(host.clone(), async move {
            let env = sim_env(seed, &host);
            let client = Client::connect_with(&env, &format!("ws://{NODE}:{PORT}")).await?;
            let map = client.call("cluster_map", json!([])).await?;
            trace.record(
                &host,
                format!("connected to {}", map["nodes"][0]["node_id"]),
            );
            let mut loops = tokio::task::JoinSet::new();
            for l in 0..w.loops_per_client {
                let (client, trace, failures, rng, host) = (
                    client.clone(),
                    trace.clone(),
                    failures.clone(),
                    env.rng.fork(),
                    host.clone(),
                );
                loops.spawn_local(async move {
                    for k in 0..w.requests_per_loop {
                        let case = draw_case(&rng);
                        let got = client.request(case.cmds).await;
                        let got = outcome(&got);
                        let verdict = if got == case.expect { "ok" } else { "WRONG" };
                        let line = format!("loop {l} req {k} {}: {got:?} {verdict}", case.label);
                        if got != case.expect {
                            failures.record(&host, format!("{line}; expected {:?}", case.expect));
                        }
                        trace.record(&host, line);
                    }
                });
            }
            while loops.join_next().await.is_some() {}
            Ok(())
        });
    }
    let result = sim.run();
    let fail = |message: String| SimFailure {
        seed,
        scenario: "rpc".to_owned(),
        message,
        trace: trace.lines(),
        schedule: Vec::new(),
    };
    if let Err(e) = result {
        return Err(fail(format!("simulation error: {e}")));
    }
    let wrong = failures.lines();
    if !wrong.is_empty() {
        return Err(fail(format!(
            "{} wrong answers, first: {}",
            wrong.len(),
            wrong[0]
        )));
    }
    let requests = w.clients * w.loops_per_client * w.requests_per_loop;
    let lines = trace.lines();
    let answered = lines.iter().filter(|l| l.contains(" req ")).count();
    if answered != requests {
        return Err(fail(format!("{answered} of {requests} requests answered")));
    }
    Ok(RunReport {
        seed,
        hash: trace.hash(),
        trace: lines,
        requests,
        sim_elapsed: sim.elapsed(),
    })
}
