//! The cluster scenarios' RPC workload: functions spread over the nodes, clients sending
//! single calls and DAGs through a [`ClusterClient`] while the faults happen, and a probe
//! after healing that calls every offered function through every node.
//!
//! Node `nK` offers `inc` (idempotent) unless K ≡ 0 (mod 3), `record` (not idempotent)
//! unless K ≡ 1, and `slowmul` (idempotent, 30 ms) unless K ≡ 2; so every function lives
//! on two of any three consecutive nodes and most steps cross nodes. `record` counts its
//! executions per request and step, for the at-most-once checker.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mpreg::protocol::RpcRequest;
use mpreg::{Client, ClusterClient, Function, Retry, RpcCommand};
use serde_json::{Map, Value, json};

/// How long a workload request may take (the node's deadline; the client waits a little more).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Executions of `record`, by `request/step`.
pub type Executions = Arc<Mutex<BTreeMap<String, u32>>>;

pub fn lock(e: &Executions) -> std::sync::MutexGuard<'_, BTreeMap<String, u32>> {
    e.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The functions node `index` (1-based) offers.
pub fn offered(index: usize) -> Vec<&'static str> {
    let mut names = Vec::new();
    if !index.is_multiple_of(3) {
        names.push("inc");
    }
    if index % 3 != 1 {
        names.push("record");
    }
    if index % 3 != 2 {
        names.push("slowmul");
    }
    names
}

/// The functions of node `index`, counting `record`'s runs in `executions`.
pub fn functions(index: usize, executions: &Executions) -> Vec<Function> {
    offered(index)
        .into_iter()
        .map(|name| match name {
            "inc" => Function::new("inc", |x: i64| async move { Ok::<_, String>(x + 1) })
                .params(["x"])
                .idempotent(true),
            "record" => {
                let executions = executions.clone();
                Function::new("record", move |req: String, step: String, x: i64| {
                    // Counted when the function starts: a second start for one request's
                    // step is the bug the checker looks for, whether or not it finished.
                    *lock(&executions)
                        .entry(format!("{req}/{step}"))
                        .or_insert(0) += 1;
                    async move { Ok::<_, String>(2 * x + 1) }
                })
                .params(["req", "step", "x"])
            }
            _ => Function::new("slowmul", |x: i64, ms: u64| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok::<_, String>(3 * x)
            })
            .params(["x", "ms"])
            .idempotent(true),
        })
        .collect()
}

/// One workload request and what became of it.
#[derive(Debug, Clone)]
pub struct RpcRecord {
    pub client: String,
    pub request: String,
    pub expected: Value,
    /// The sinks' results, or the error (its code when the node sent one).
    pub answer: Result<Value, (Option<i64>, String)>,
}

/// One probe call after healing: `function` through `node`.
#[derive(Debug, Clone)]
pub struct ProbeRecord {
    pub node: String,
    pub function: String,
    pub result: Result<(), String>,
}

/// Request `k` of client `i`: a four-step DAG across nodes, or a single `record`.
pub fn request(i: usize, k: usize) -> (String, Vec<RpcCommand>, Value) {
    let id = format!("r{i}-{k}");
    let x = (i * 100 + k) as i64;
    if k % 3 == 2 {
        let cmds = vec![RpcCommand::new("s", "record").args(json!([id, "single", x]))];
        return (id, cmds, json!({"s": 2 * x + 1}));
    }
    let cmds = vec![
        RpcCommand::new("a", "inc").args(json!([x])),
        RpcCommand::new("b", "slowmul").args(json!(["a", 30])),
        RpcCommand::new("c", "record").args(json!([id, "dag", "b"])),
        RpcCommand::new("d", "inc").args(json!(["a"])),
    ];
    let expected = json!({"c": 2 * (3 * (x + 1)) + 1, "d": x + 2});
    (id, cmds, expected)
}

/// Connects a cluster client through `seeds`, retrying while the nodes boot.
pub async fn connect(env: &mpreg::Env, seeds: &[String]) -> Option<ClusterClient> {
    for _ in 0..50 {
        if let Ok(c) = ClusterClient::connect_with(env, seeds).await {
            return Some(c);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// Sends one workload request; never retried once it may have run.
pub async fn send(
    cluster: &ClusterClient,
    cmds: Vec<RpcCommand>,
) -> Result<Value, (Option<i64>, String)> {
    let req = RpcRequest::new(String::new(), cmds);
    match cluster
        .send(req, Some(REQUEST_TIMEOUT), Retry::IfNotSent)
        .await
    {
        Ok(reply) => Ok(Value::Object(reply.r.unwrap_or_else(Map::new))),
        Err(e) => Err((e.code().map(|c| c.as_i64()), e.to_string())),
    }
}

/// Calls `function` through `node` until it answers correctly (the probe after healing).
pub async fn probe(env: &mpreg::Env, node: &str, port: u16, function: &str) -> Result<(), String> {
    let mut last = String::from("never tried");
    for attempt in 0..40 {
        // A fresh request id per attempt: an attempt that failed may have run `record`.
        let (args, want) = match function {
            "inc" => (json!([1]), json!(2)),
            "record" => (
                json!([format!("probe-{node}-{attempt}"), "probe", 1]),
                json!(3),
            ),
            _ => (json!([1, 1]), json!(3)),
        };
        let url = format!("ws://{node}:{port}");
        let connect = tokio::time::timeout(Duration::from_secs(2), Client::connect_with(env, &url));
        match connect
            .await
            .unwrap_or_else(|_| Err(mpreg::ClientError::Closed))
        {
            Ok(client) => match client
                .call(function, args.clone())
                .timeout(REQUEST_TIMEOUT)
                .await
            {
                Ok(v) if v == want => return Ok(()),
                Ok(v) => return Err(format!("answered {v}, not {want}")),
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(last)
}
