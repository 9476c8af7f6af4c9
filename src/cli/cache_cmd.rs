//! `mpreg cache get|put|delete|invalidate|incr|stats`: the node's cache from the shell,
//! through the client's `cache-request`s (`client::cache`). Keys are written as text,
//! `namespace:identifier[:version]`. Tables by default, `--json` for the node's response.

use std::time::Duration;

use clap::Subcommand;
use serde_json::Value;

use super::Out;
use super::text::{clip, duration, table, text};
use super::text::{fail, print_json};
use crate::client::cache::{CacheClient, CacheResponse};

#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// The entry under a key, with the level that answered (exit code 1 on a miss)
    Get {
        #[arg(value_name = "KEY", id = "cache_key")]
        key: String,
        #[command(flatten)]
        out: Out,
    },
    /// Store a value (JSON, or a string) under a key
    Put {
        #[arg(value_name = "KEY", id = "cache_key")]
        key: String,
        value: String,
        /// How long it lives (e.g. 10m; default: until evicted or invalidated)
        #[arg(long, value_parser = duration)]
        ttl: Option<Duration>,
        #[command(flatten)]
        out: Out,
    },
    /// Remove a key, and the entries that depend on it
    Delete {
        #[arg(value_name = "KEY", id = "cache_key")]
        key: String,
        #[command(flatten)]
        out: Out,
    },
    /// Remove every key matching a pattern (`orders:*`, `*:v2`, or a namespace)
    Invalidate {
        pattern: String,
        #[command(flatten)]
        out: Out,
    },
    /// Add to the number under a key (a missing key starts from 0)
    Incr {
        #[arg(value_name = "KEY", id = "cache_key")]
        key: String,
        #[arg(long, default_value_t = 1, allow_hyphen_values = true)]
        by: i64,
        #[command(flatten)]
        out: Out,
    },
    /// Entries, bytes, hits, misses and evictions per level, requests per operation
    Stats {
        #[command(flatten)]
        out: Out,
    },
}

/// A value typed at the shell: JSON if it parses, else the text as a string.
fn value_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// An entry as two columns.
fn entry_table(r: &CacheResponse) -> String {
    let e = r.entry.clone().unwrap_or(Value::Null);
    let rows = vec![
        vec!["status".to_owned(), r.status.clone()],
        vec!["level".to_owned(), r.level.clone().unwrap_or_default()],
        vec!["value".to_owned(), clip(&e["value"].to_string(), 200)],
        vec!["size_bytes".to_owned(), text(&e["size_bytes"])],
        vec!["ttl_seconds".to_owned(), text(&e["ttl_seconds"])],
        vec!["access_count".to_owned(), text(&e["access_count"])],
    ];
    table(&["entry", ""], rows)
}

/// The stats answer as a table: one row per level.
fn stats_table(v: &Value) -> String {
    let rows = ["L1", "L2"].iter().filter(|l| !v[**l].is_null()).map(|l| {
        let s = &v[*l];
        vec![
            (*l).to_owned(),
            text(&s["entries"]),
            text(&s["bytes"]),
            text(&s["capacity_bytes"]),
            text(&s["hits"]),
            text(&s["misses"]),
            format!("{:.1}%", s["hit_rate"].as_f64().unwrap_or(0.0) * 100.0),
            text(&s["evictions"]),
            text(&s["expirations"]),
        ]
    });
    table(
        &[
            "level",
            "entries",
            "bytes",
            "capacity",
            "hits",
            "misses",
            "hit rate",
            "evictions",
            "expirations",
        ],
        rows,
    )
}

pub async fn run(cmd: CacheCommand) -> i32 {
    let out = match &cmd {
        CacheCommand::Get { out, .. }
        | CacheCommand::Put { out, .. }
        | CacheCommand::Delete { out, .. }
        | CacheCommand::Invalidate { out, .. }
        | CacheCommand::Incr { out, .. }
        | CacheCommand::Stats { out } => out,
    };
    let client = match out.target.client().await {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    run_on(&client.cache(), &cmd, out.json).await
}

async fn run_on(cache: &CacheClient<'_>, cmd: &CacheCommand, json: bool) -> i32 {
    let answered = match cmd {
        CacheCommand::Get { key, .. } => match cache.get(key).await {
            Ok(None) => {
                eprintln!("mpreg: {key}: miss");
                return 1;
            }
            Ok(Some(r)) => Ok(r),
            Err(e) => Err(e),
        },
        CacheCommand::Put {
            key, value, ttl, ..
        } => cache.put(key, value_of(value), *ttl).await,
        CacheCommand::Delete { key, .. } => {
            cache
                .request(serde_json::json!({"operation": "delete",
                    "key": crate::client::cache::key_json(key)}))
                .await
        }
        CacheCommand::Invalidate { pattern, .. } => {
            cache
                .request(serde_json::json!({"operation": "invalidate",
                    "invalidation_pattern": pattern}))
                .await
        }
        CacheCommand::Incr { key, by, .. } => {
            cache
                .request(serde_json::json!({"operation": "atomic",
                    "key": crate::client::cache::key_json(key),
                    "atomic_operation": {"operation_type": "increment", "increment_by": by,
                        "create_if_missing": true, "initial_value": 0}}))
                .await
        }
        CacheCommand::Stats { .. } => {
            cache
                .request(serde_json::json!({"operation": "stats"}))
                .await
        }
    };
    let r = match answered {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    if json {
        print_json(&r.raw);
        return 0;
    }
    let value = r.value().cloned().unwrap_or(Value::Null);
    match cmd {
        CacheCommand::Get { .. } => println!("{}", entry_table(&r)),
        CacheCommand::Put { key, .. } => println!(
            "stored {key} in {} ({} bytes)",
            r.level.as_deref().unwrap_or("-"),
            text(
                &r.entry
                    .as_ref()
                    .map_or(Value::Null, |e| e["size_bytes"].clone())
            )
        ),
        CacheCommand::Delete { key, .. } if r.status == "miss" => println!("{key}: not there"),
        CacheCommand::Delete { .. } | CacheCommand::Invalidate { .. } => {
            let more = if value["truncated"] == true {
                " (stopped at the bound; run it again)"
            } else {
                ""
            };
            println!("removed {} entries{more}", text(&value["removed"]));
        }
        CacheCommand::Incr { key, .. } => println!("{key} = {}", text(&value)),
        CacheCommand::Stats { .. } => println!("{}", stats_table(&value)),
    }
    0
}
