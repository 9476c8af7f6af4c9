//! Two real-world shapes, each on four nodes with their own resources, in one process.
//!
//!     cargo run --example real_world_examples
//!
//! **Data processing pipeline** (ETL with anomaly detection):
//!
//! ```text
//! Data Ingestion → Processing → Analytics → Storage
//! ```
//!
//! Three sources are ingested in parallel, each batch is cleaned and scanned for anomalies
//! on its own, and one report is stored.
//!
//! **ML inference cluster**:
//!
//! ```text
//! ML Router → Vision Models → NLP Models → Feature Processing
//! ```
//!
//! Features are extracted once; two vision models and two NLP models run on them in
//! parallel; the router combines their answers into one decision.

// An example program that times itself from outside any node.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use mpreg::{Client, Function, Node, RpcCommand, RunningNode, Settings};
use serde_json::{Value, json};

type BoxError = Box<dyn std::error::Error>;

async fn start(
    name: &str,
    resource: &str,
    peers: &[&RunningNode],
    functions: Vec<Function>,
) -> Result<RunningNode, BoxError> {
    let settings = Settings {
        name: name.to_owned(),
        port: 0,
        resources: [resource.to_owned()].into(),
        peers: peers.iter().map(|p| p.url().to_owned()).collect(),
        ..Settings::default()
    };
    let mut builder = Node::builder(settings);
    for f in functions {
        builder.register(f)?;
    }
    Ok(builder.start().await?)
}

/// Waits until `node`'s catalog lists every one of `functions`.
async fn wait_routable(node: &RunningNode, functions: &[&str]) -> Result<(), BoxError> {
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

// ---- the ETL pipeline's functions ----------------------------------------------------

/// A batch of sensor readings from `source`: a deterministic wave with a spike and a gap.
fn ingest_batch() -> Function {
    Function::new("ingest_batch", |source: String, n: usize| async move {
        let seed = source.bytes().map(u64::from).sum::<u64>();
        let readings: Vec<Value> = (0..n)
            .map(|i| {
                let base = 20.0 + ((i as f64 + seed as f64) / 3.0).sin() * 2.0;
                let value = match i {
                    _ if i == n / 2 => json!(base + 25.0), // a spike
                    _ if i % 17 == 5 => Value::Null,       // a dropped reading
                    _ => json!(base),
                };
                json!({"source": source, "seq": i, "value": value})
            })
            .collect();
        Ok::<_, String>(readings)
    })
    .params(["source", "n"])
}

/// Drops readings without a value.
fn clean() -> Function {
    Function::new("clean", |records: Vec<Value>| async move {
        let kept: Vec<Value> = records
            .into_iter()
            .filter(|r| r["value"].is_f64())
            .collect();
        Ok::<_, String>(kept)
    })
    .params(["records"])
}

/// Readings more than 3 standard deviations from their batch's mean.
fn detect_anomalies() -> Function {
    Function::new("detect_anomalies", |records: Vec<Value>| async move {
        let xs: Vec<f64> = records.iter().filter_map(|r| r["value"].as_f64()).collect();
        let n = xs.len().max(1) as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let sd = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
        let anomalies: Vec<Value> = records
            .iter()
            .filter(|r| {
                r["value"]
                    .as_f64()
                    .is_some_and(|x| (x - mean).abs() > 3.0 * sd)
            })
            .cloned()
            .collect();
        Ok::<_, String>(json!({"count": xs.len(), "mean": mean, "anomalies": anomalies}))
    })
    .params(["records"])
}

/// Stores one report over every batch's analysis (an append-only log here).
fn persist_report() -> Function {
    let stored = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    Function::new("persist_report", move |batches: Vec<Value>| {
        let stored = stored.clone();
        async move {
            let report = json!({
                "batches": batches.len(),
                "readings": batches.iter().filter_map(|b| b["count"].as_u64()).sum::<u64>(),
                "anomalies": batches.iter().flat_map(|b| b["anomalies"].as_array().cloned().unwrap_or_default()).collect::<Vec<_>>(),
            });
            let mut log = stored.lock().map_err(|e| e.to_string())?;
            log.push(report.clone());
            Ok::<_, String>(json!({"report_id": log.len(), "report": report}))
        }
    })
    .params(["batches"])
}

async fn etl_pipeline() -> Result<(), BoxError> {
    println!("== Data processing pipeline: ingestion → processing → analytics → storage");
    let ingestion = start("ingestion", "ingest", &[], vec![ingest_batch()]).await?;
    let processing = start("processing", "processing", &[&ingestion], vec![clean()]).await?;
    let analytics = start(
        "analytics",
        "analytics",
        &[&ingestion],
        vec![detect_anomalies()],
    )
    .await?;
    let storage = start("storage", "storage", &[&ingestion], vec![persist_report()]).await?;
    wait_routable(
        &storage,
        &[
            "ingest_batch",
            "clean",
            "detect_anomalies",
            "persist_report",
        ],
    )
    .await?;

    // Sent to the storage node; each step runs on its stage's node.
    let sources = ["turbine-a", "turbine-b", "pump-c"];
    let mut cmds = Vec::new();
    for s in sources {
        cmds.push(RpcCommand::new(format!("raw_{s}"), "ingest_batch").args(json!([s, 200])));
        cmds.push(RpcCommand::new(format!("clean_{s}"), "clean").args(json!([format!("raw_{s}")])));
        cmds.push(
            RpcCommand::new(format!("scan_{s}"), "detect_anomalies")
                .args(json!([format!("clean_{s}")])),
        );
    }
    let scans: Vec<String> = sources.iter().map(|s| format!("scan_{s}")).collect();
    cmds.push(RpcCommand::new("report", "persist_report").args(json!([scans])));
    let started = Instant::now();
    let r = Client::connect(storage.url()).await?.request(cmds).await?;
    let report = &r["report"]["report"];
    println!(
        "   {} batches, {} clean readings, {} anomalies, report #{} stored in {:.1} ms",
        report["batches"],
        report["readings"],
        report["anomalies"].as_array().map_or(0, Vec::len),
        r["report"]["report_id"],
        started.elapsed().as_secs_f64() * 1000.0
    );
    for a in report["anomalies"].as_array().into_iter().flatten() {
        println!(
            "   ALERT {} reading {}: {:.1}",
            a["source"].as_str().unwrap_or("?"),
            a["seq"],
            a["value"].as_f64().unwrap_or(0.0)
        );
    }
    for n in [storage, analytics, processing, ingestion] {
        n.shutdown().await;
    }
    Ok(())
}

// ---- the ML inference cluster's functions --------------------------------------------

fn extract_features() -> Function {
    Function::new("extract_features", |payload: Value| async move {
        let text = payload["text"].as_str().unwrap_or_default().to_lowercase();
        let pixels: Vec<f64> = payload["image"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        let brightness = pixels.iter().sum::<f64>() / pixels.len().max(1) as f64;
        let words: Vec<&str> = text.split_whitespace().collect();
        Ok::<_, String>(json!({
            "image": {"brightness": brightness, "pixels": pixels.len()},
            "text": {"words": words, "length": words.len()},
        }))
    })
    .params(["payload"])
}

fn vision_models() -> Vec<Function> {
    vec![
        Function::new("classify_image", |image: Value| async move {
            let b = image["brightness"].as_f64().unwrap_or(0.0);
            let label = if b > 0.5 {
                "daylight scene"
            } else {
                "night scene"
            };
            Ok::<_, String>(json!({"label": label, "confidence": 0.5 + (b - 0.5).abs()}))
        })
        .params(["image"])
        .idempotent(true),
        Function::new("detect_objects", |image: Value| async move {
            let n = image["pixels"].as_u64().unwrap_or(0) / 4;
            Ok::<_, String>(json!({"objects": n}))
        })
        .params(["image"])
        .idempotent(true),
    ]
}

fn nlp_models() -> Vec<Function> {
    vec![
        Function::new("sentiment", |text: Value| async move {
            let words: Vec<String> =
                serde_json::from_value(text["words"].clone()).map_err(|e| e.to_string())?;
            let score: i64 = words
                .iter()
                .map(|w| match w.trim_matches(|c: char| !c.is_alphanumeric()) {
                    "great" | "good" | "love" | "fast" => 1,
                    "bad" | "slow" | "broken" | "hate" => -1,
                    _ => 0,
                })
                .sum();
            Ok::<_, String>(json!({"score": score}))
        })
        .params(["text"])
        .idempotent(true),
        Function::new("summarize_text", |text: Value| async move {
            let words: Vec<String> =
                serde_json::from_value(text["words"].clone()).map_err(|e| e.to_string())?;
            Ok::<_, String>(json!(
                words.iter().take(5).cloned().collect::<Vec<_>>().join(" ")
            ))
        })
        .params(["text"])
        .idempotent(true),
    ]
}

fn route_decision() -> Function {
    Function::new(
        "route_decision",
        |scene: Value, objects: Value, mood: Value, summary: Value| async move {
            let action = match (
                mood["score"].as_i64().unwrap_or(0),
                objects["objects"].as_u64(),
            ) {
                (s, _) if s < 0 => "escalate to a human",
                (_, Some(n)) if n > 2 => "auto-tag and archive",
                _ => "archive",
            };
            Ok::<_, String>(json!({
                "scene": scene["label"], "objects": objects["objects"],
                "sentiment": mood["score"], "summary": summary, "action": action,
            }))
        },
    )
    .params(["scene", "objects", "mood", "summary"])
}

async fn ml_inference() -> Result<(), BoxError> {
    println!("\n== ML inference cluster: router → vision → NLP → feature processing");
    let router = start("ml-router", "router", &[], vec![route_decision()]).await?;
    let vision = start("vision", "vision", &[&router], vision_models()).await?;
    let nlp = start("nlp", "nlp", &[&router], nlp_models()).await?;
    let features = start("features", "features", &[&router], vec![extract_features()]).await?;
    wait_routable(
        &router,
        &[
            "extract_features",
            "classify_image",
            "detect_objects",
            "sentiment",
            "summarize_text",
        ],
    )
    .await?;

    let client = Client::connect(router.url()).await?;
    let inputs = [
        json!({"text": "Great camera, fast delivery, love it", "image": [0.9, 0.8, 0.7, 0.9, 0.6, 0.8, 0.9, 0.7, 0.8, 0.9, 0.9, 0.8]}),
        json!({"text": "Arrived broken and support was slow", "image": [0.1, 0.2, 0.1, 0.3]}),
    ];
    for (k, input) in inputs.into_iter().enumerate() {
        let started = Instant::now();
        let r = client
            .request(vec![
                RpcCommand::new("f", "extract_features").args(json!([input])),
                RpcCommand::new("scene", "classify_image").args(json!(["f.image"])),
                RpcCommand::new("objects", "detect_objects").args(json!(["f.image"])),
                RpcCommand::new("mood", "sentiment").args(json!(["f.text"])),
                RpcCommand::new("summary", "summarize_text").args(json!(["f.text"])),
                RpcCommand::new("decision", "route_decision")
                    .args(json!(["scene", "objects", "mood", "summary"])),
            ])
            .await?;
        println!(
            "   request {k}: {} ({:.1} ms)",
            r["decision"],
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    for n in [features, nlp, vision, router] {
        n.shutdown().await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    etl_pipeline().await?;
    ml_inference().await?;
    Ok(())
}
