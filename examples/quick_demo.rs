//! Quick demo: three nodes with different resources (CPU, GPU, database) in one process,
//! and requests whose steps run where their resources are.
//!
//!     cargo run --example quick_demo
//!
//! 1. A dependency chain across all three nodes, sent to any node.
//! 2. Fan-out/fan-in: eight inferences in parallel on the GPU node, aggregated on the CPU.
//! 3. Concurrency: many requests at once through a `ClusterClient`.
//!
//! Each node serves `mpreg::demo`'s functions for its resources; every result names the node
//! that computed it.

// An example program that times itself from outside any node.
#![allow(clippy::disallowed_methods)]

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use mpreg::{Client, ClusterClient, Node, RpcCommand, RunningNode, Settings};
use serde_json::{Value, json};

async fn start(name: &str, resources: &[&str], peers: &[&RunningNode]) -> RunningNode {
    let settings = Settings {
        name: name.to_owned(),
        port: 0, // any free port
        resources: resources.iter().map(|r| r.to_string()).collect(),
        peers: peers.iter().map(|p| p.url().to_owned()).collect(),
        ..Settings::default()
    };
    let mut builder = Node::builder(settings.clone());
    for f in mpreg::demo::functions(name, &settings.resources) {
        builder.register(f).expect("demo functions register");
    }
    builder.start().await.expect("node starts")
}

/// Waits until `node`'s catalog has every one of `functions` (registrations are Raft
/// commits; usually a few milliseconds).
async fn wait_routable(node: &RunningNode, functions: &[&str]) -> Result<(), mpreg::ClientError> {
    let client = Client::connect(node.url()).await?;
    for f in functions {
        while client.call("catalog_query", json!([{"name": f}])).await?["functions"]
            .as_array()
            .is_none_or(Vec::is_empty)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("== starting three nodes");
    let cpu = start("cpu-node", &["cpu"], &[]).await;
    let gpu = start("gpu-node", &["gpu"], &[&cpu]).await;
    let db = start("db-node", &["database"], &[&cpu]).await;
    for n in [&cpu, &gpu, &db] {
        println!("   {} at {}", n.node_id(), n.url());
    }
    wait_routable(&db, &["preprocess", "infer", "store", "aggregate"]).await?;

    println!("\n== 1. a dependency chain: preprocess (cpu) → infer (gpu) → store (database)");
    let client = Client::connect(db.url()).await?;
    let mut req = mpreg::protocol::RpcRequest::new(
        "chain",
        vec![
            RpcCommand::new("clean", "preprocess").args(json!([[3.0, 6.0, 12.0]])),
            RpcCommand::new("score", "infer").args(json!(["clean"])),
            RpcCommand::new("saved", "store").args(json!(["score"])),
        ],
    );
    req.return_intermediate_results = true;
    let reply = client.send(req, None).await?;
    for level in &reply.intermediate_results {
        for (step, value) in &level.level_results {
            println!(
                "   level {}: {step:<6} ran on {:<9} → {}",
                level.level_index,
                value["node"].as_str().unwrap_or("?"),
                brief(value)
            );
        }
    }

    println!("\n== 2. fan-out/fan-in: 8 inferences in parallel, then one aggregate");
    let mut cmds = vec![RpcCommand::new("input", "preprocess").args(json!([[1.0, 2.0, 4.0]]))];
    let parts: Vec<String> = (0..8).map(|i| format!("infer{i}")).collect();
    for p in &parts {
        cmds.push(RpcCommand::new(p.as_str(), "infer").args(json!(["input"])));
    }
    cmds.push(RpcCommand::new("total", "aggregate").args(json!([parts])));
    let started = Instant::now();
    let r = client.request(cmds).await?;
    println!(
        "   {} scores summed to {:.3} on {} in {:.1} ms",
        r["total"]["count"],
        r["total"]["total"].as_f64().unwrap_or(0.0),
        r["total"]["node"].as_str().unwrap_or("?"),
        started.elapsed().as_secs_f64() * 1000.0
    );

    println!("\n== 3. concurrency: 2,000 calls through a ClusterClient, 200 at a time");
    let cluster = ClusterClient::connect(&[db.url()]).await?;
    println!(
        "   it learned {} nodes from cluster_map",
        cluster.known_urls().await.len()
    );
    let started = Instant::now();
    let mut done = 0usize;
    for _ in 0..10 {
        let calls = (0..200).map(|i| {
            cluster
                .call("infer", json!([{"values": [i as f64, 1.0]}]))
                .into_future()
        });
        for r in futures_util::future::join_all(calls).await {
            r?;
            done += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "   {done} calls in {:.2} s: {:.0} calls/s (entry node {}, each forwarded to gpu-node)",
        secs,
        done as f64 / secs,
        cluster.url().await.unwrap_or_default()
    );

    println!("\n== shutting down");
    for n in [db, gpu, cpu] {
        n.shutdown().await;
    }
    Ok(())
}

/// The value without its `node` field, for printing.
fn brief(v: &Value) -> String {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("node");
    }
    v.to_string()
}
