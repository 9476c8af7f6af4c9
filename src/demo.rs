//! Functions for demos and tests, chosen by a node's resources: what `mpreg-demo-node`
//! serves and what the examples and process tests call. Every result names the node that
//! computed it, so a caller can see where each step ran.
//!
//! | resource | functions |
//! |---|---|
//! | `cpu` | `preprocess(values)`, `aggregate(parts)` |
//! | `gpu` | `infer(input)` (idempotent), `render(ms)` (idempotent), `train(ms)` |
//! | `database` | `store(record)`, `lookup(key)` |
//! | any node | `hold(ms)`: waits `ms` and answers (not idempotent) |

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::registry::Function;

/// The demo functions for a node called `node` offering `resources`.
pub fn functions(node: &str, resources: &BTreeSet<String>) -> Vec<Function> {
    let node: Arc<str> = node.into();
    let mut fs = vec![hold(node.clone())];
    if resources.contains("cpu") {
        fs.push(preprocess(node.clone()));
        fs.push(aggregate(node.clone()));
    }
    if resources.contains("gpu") {
        fs.push(infer(node.clone()));
        fs.push(render(node.clone()));
        fs.push(train(node.clone()));
    }
    if resources.contains("database") {
        let next_id = Arc::new(AtomicU64::new(1));
        fs.push(store(node.clone(), next_id));
        fs.push(lookup(node));
    }
    fs
}

fn hold(node: Arc<str>) -> Function {
    Function::new("hold", move |ms: u64| {
        let node = node.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, String>(json!({"held_ms": ms, "node": &*node}))
        }
    })
    .params(["ms"])
}

/// Scales `values` to 0..1.
fn preprocess(node: Arc<str>) -> Function {
    Function::new("preprocess", move |values: Vec<f64>| {
        let node = node.clone();
        async move {
            let max = values.iter().copied().fold(f64::MIN, f64::max).max(1e-9);
            let scaled: Vec<f64> = values.iter().map(|v| v / max).collect();
            Ok::<_, String>(json!({"values": scaled, "node": &*node}))
        }
    })
    .params(["values"])
}

/// Sums the `score` of each part.
fn aggregate(node: Arc<str>) -> Function {
    Function::new("aggregate", move |parts: Vec<Value>| {
        let node = node.clone();
        async move {
            let total: f64 = parts.iter().filter_map(|p| p["score"].as_f64()).sum();
            Ok::<_, String>(json!({"total": total, "count": parts.len(), "node": &*node}))
        }
    })
    .params(["parts"])
}

/// A "model": the score of a preprocessed input is the mean of its values.
fn infer(node: Arc<str>) -> Function {
    Function::new("infer", move |input: Value| {
        let node = node.clone();
        async move {
            let values: Vec<f64> = input["values"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .ok_or("infer needs {\"values\": [numbers]}")?;
            let score = values.iter().sum::<f64>() / values.len().max(1) as f64;
            Ok::<_, String>(json!({"score": score, "node": &*node}))
        }
    })
    .params(["input"])
    .idempotent(true)
}

/// A long, repeatable GPU job.
fn render(node: Arc<str>) -> Function {
    Function::new("render", move |ms: u64| {
        let node = node.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, String>(json!({"rendered_ms": ms, "node": &*node}))
        }
    })
    .params(["ms"])
    .idempotent(true)
}

/// A long GPU job that must not run twice (it updates a model).
fn train(node: Arc<str>) -> Function {
    Function::new("train", move |ms: u64| {
        let node = node.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, String>(json!({"trained_ms": ms, "node": &*node}))
        }
    })
    .params(["ms"])
}

/// Stores `record` under a fresh id (not idempotent: each call is a new row).
fn store(node: Arc<str>, next_id: Arc<AtomicU64>) -> Function {
    Function::new("store", move |record: Value| {
        let (node, next_id) = (node.clone(), next_id.clone());
        async move {
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            Ok::<_, String>(json!({"id": id, "record": record, "node": &*node}))
        }
    })
    .params(["record"])
}

fn lookup(node: Arc<str>) -> Function {
    Function::new("lookup", move |key: String| {
        let node = node.clone();
        async move { Ok::<_, String>(json!({"key": key, "found": false, "node": &*node})) }
    })
    .params(["key"])
}
