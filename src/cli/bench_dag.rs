//! `mpreg bench --fanout N`: one request of N independent calls of `--fun` plus one
//! `--fan-in` command that takes all their results, against N calls of `--fun` made one
//! after another by the client; each kept going for the round's duration on one
//! connection. Both go to the same node, so the figures compare the DAG executor's
//! parallel fan-out with client-side sequencing, on whatever nodes host the functions.

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::bench_round::{Load, RoundResult};
use crate::client::Client;
use crate::env::Env;
use crate::protocol::RpcCommand;

/// One round: the fan-out/fan-in request (`dag`) or the sequential calls, repeated for
/// `load.duration` after `load.warmup`; each sample is one whole request or sequence.
pub async fn run_round(
    env: &Env,
    url: &str,
    load: &Load,
    n: usize,
    fan_in: &str,
    dag: bool,
) -> Result<RoundResult, String> {
    let client = Client::connect_with_options(env, url, &load.connect)
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).map_err(|e| e.to_string())?;
    let mut errors = 0;
    let start = env.clock.now();
    let (measure_from, stop_at) = (start + load.warmup, start + load.warmup + load.duration);
    let arg = Value::String(load.payload.clone());
    loop {
        let began = env.clock.now();
        if began >= stop_at {
            break;
        }
        let ok = if dag {
            let mut cmds: Vec<RpcCommand> = (0..n)
                .map(|i| RpcCommand::new(format!("s{i}"), load.fun.as_str()).args(json!([arg])))
                .collect();
            let parts: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
            cmds.push(RpcCommand::new("fan_in", fan_in).args(json!([parts])));
            client.request(cmds).await.is_ok()
        } else {
            let mut ok = true;
            for _ in 0..n {
                ok &= client.call(load.fun.as_str(), json!([arg])).await.is_ok();
            }
            ok
        };
        let done = env.clock.now();
        if began >= measure_from && done <= stop_at {
            if !ok {
                errors += 1;
            }
            let us = done.duration_since(began).as_micros().max(1) as u64;
            let _ = hist.record(us);
        }
    }
    Ok(RoundResult::new(&hist, errors, load.duration))
}
