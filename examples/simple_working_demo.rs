//! The seed's "simple working demo": one embedded node and a three-step dependency chain.
//!
//!     cargo run --example simple_working_demo
//!
//! `step2` names `step1` in its arguments and `final` names `step2`, so the node runs them
//! in order and returns the last one's result.

use mpreg::{Client, Function, Node, RpcCommand, Settings};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let settings = Settings {
        port: 0, // any free port
        resources: ["compute".to_owned()].into(),
        ..Settings::default()
    };
    let node = Node::builder(settings)
        .function(
            Function::new("process", |data: Vec<i64>| async move {
                Ok::<_, String>(
                    json!({"cleaned": data.iter().filter(|x| **x >= 0).collect::<Vec<_>>()}),
                )
            })
            .params(["data"]),
        )?
        .function(
            Function::new("analyze", |processed: Value| async move {
                let xs: Vec<i64> = serde_json::from_value(processed["cleaned"].clone())
                    .map_err(|e| e.to_string())?;
                let mean = xs.iter().sum::<i64>() as f64 / xs.len().max(1) as f64;
                Ok::<_, String>(json!({"count": xs.len(), "mean": mean}))
            })
            .params(["processed"]),
        )?
        .function(
            Function::new("summarize", |stats: Value| async move {
                Ok::<_, String>(format!(
                    "{} values, mean {:.2}",
                    stats["count"],
                    stats["mean"].as_f64().unwrap_or(0.0)
                ))
            })
            .params(["stats"]),
        )?
        .start()
        .await?;
    println!("MPREG_URL={}", node.url());

    let client = Client::connect(node.url()).await?;
    let commands = vec![
        RpcCommand::new("step1", "process").args(json!([[4, -1, 8, 15, -16, 23, 42]])),
        RpcCommand::new("step2", "analyze").args(json!(["step1"])), // waits for step1
        RpcCommand::new("final", "summarize")
            .args(json!(["step2"]))
            .locs(["compute"]), // waits for step2
    ];
    let results = client.request(commands).await?;
    println!("final: {}", results["final"]);
    assert_eq!(results["final"], json!("5 values, mean 18.40"));

    node.shutdown().await;
    Ok(())
}
