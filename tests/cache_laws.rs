//! Laws of the cache's two levels (`mpreg::cache::CacheService` with L1 in memory and L2 in
//! SQLite, both small so that evictions are frequent) over random sequences of puts, gets,
//! deletes, invalidations and the passing of time, checked against a plain map of key to
//! (value, deadline) after every step:
//!
//! * a get answers the value last put under the key, or a miss: never an expired value,
//!   never an older one, never a value after a delete or an invalidation that took it;
//!   a miss where the model holds a value is allowed only as an eviction (a cache forgets);
//! * each level's bytes stay within its bound after every operation;
//! * a get served by L2 puts the entry in L1 (the next get, with nothing between, is L1's).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mpreg::cache::request::decode;
use mpreg::cache::{CacheLimits, CacheService};
use mpreg::env::Clock;
use proptest::prelude::*;
use serde_json::{Value, json};

/// Wall time the test sets.
#[derive(Default)]
struct Manual(AtomicU64);

impl Clock for Manual {
    fn wall_ms(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone)]
enum Op {
    Put {
        key: u8,
        size: usize,
        ttl_ms: Option<u64>,
    },
    Get(u8),
    Delete(u8),
    /// Invalidate every key of namespace `ns0` or `ns1`.
    Invalidate(u8),
    /// Time passes; the expiry sweep runs only when `sweep` (so reads meet expired entries).
    Advance {
        ms: u64,
        sweep: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..12, 1usize..700, prop::option::of(1u64..5_000))
            .prop_map(|(key, size, ttl_ms)| Op::Put { key, size, ttl_ms }),
        5 => (0u8..12).prop_map(Op::Get),
        1 => (0u8..12).prop_map(Op::Delete),
        1 => (0u8..2).prop_map(Op::Invalidate),
        2 => (1u64..3_000, any::<bool>()).prop_map(|(ms, sweep)| Op::Advance { ms, sweep }),
    ]
}

fn key(k: u8) -> Value {
    json!({"namespace": format!("ns{}", k % 2), "identifier": format!("k{k}")})
}

fn text_key(k: u8) -> String {
    format!("ns{}:k{k}:v1.0.0", k % 2)
}

async fn ask(cache: &CacheService, frame: Value) -> Value {
    let mut frame = frame;
    frame["u"] = json!("t");
    let req = decode(&frame.to_string()).expect("a valid request");
    let o = cache.outcome(&req).await;
    json!({
        "status": serde_json::to_value(o.status).unwrap(),
        "level": o.level.map(|l| l.name()),
        "value": o.entry.map(|e| serde_json::from_str::<Value>(&e.value).unwrap()),
        "error": o.error,
    })
}

/// The model: key → (value, deadline), deadlines in wall ms.
type Model = BTreeMap<u8, (Value, Option<u64>)>;

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let clock = Arc::new(Manual(AtomicU64::new(1_000_000)));
        let limits = CacheLimits {
            memory_bytes: 3 * 1024,
            disk_bytes: 6 * 1024,
            ..CacheLimits::default()
        };
        let cache = CacheService::open(
            std::path::Path::new(":memory:"),
            limits,
            clock.clone(),
            "t".into(),
            7,
        )
        .await
        .expect("opens");
        let mut model = Model::new();
        let mut version = 0u64;
        for op in ops {
            let now = clock.wall_ms();
            match op {
                Op::Put {
                    key: k,
                    size,
                    ttl_ms,
                } => {
                    version += 1;
                    let value = json!({"v": version, "pad": "x".repeat(size)});
                    let mut frame = json!({"operation": "put", "key": key(k), "value": value});
                    if let Some(t) = ttl_ms {
                        frame["metadata"] = json!({"ttl_seconds": t as f64 / 1000.0});
                    }
                    let r = ask(&cache, frame).await;
                    prop_assert_eq!(&r["status"], "hit", "{}", r);
                    model.insert(k, (value, ttl_ms.map(|t| now + t)));
                }
                Op::Get(k) => {
                    let r = ask(&cache, json!({"operation": "get", "key": key(k)})).await;
                    let live = model
                        .get(&k)
                        .filter(|(_, d)| d.is_none_or(|d| now < d))
                        .map(|(v, _)| v.clone());
                    match (r["status"].as_str(), live) {
                        (Some("hit"), Some(v)) => {
                            prop_assert_eq!(&r["value"], &v, "{} stale", text_key(k));
                            if r["level"] == "L2" {
                                let again =
                                    ask(&cache, json!({"operation": "get", "key": key(k)})).await;
                                prop_assert_eq!(&again["level"], "L1", "promoted: {}", again);
                            }
                        }
                        (Some("hit"), None) => {
                            return Err(TestCaseError::fail(format!(
                                "{} answered {} after it expired or was removed",
                                text_key(k),
                                r
                            )));
                        }
                        (Some("miss"), _) => {}
                        _ => return Err(TestCaseError::fail(format!("{r}"))),
                    }
                }
                Op::Delete(k) => {
                    let r = ask(&cache, json!({"operation": "delete", "key": key(k)})).await;
                    prop_assert!(r["status"] == "hit" || r["status"] == "miss", "{}", r);
                    model.remove(&k);
                }
                Op::Invalidate(ns) => {
                    let pattern = format!("ns{ns}:*");
                    let r = ask(
                        &cache,
                        json!({"operation": "invalidate", "invalidation_pattern": pattern}),
                    )
                    .await;
                    prop_assert_eq!(&r["status"], "hit", "{}", r);
                    model.retain(|k, _| k % 2 != ns);
                }
                Op::Advance { ms, sweep } => {
                    clock.0.fetch_add(ms, Ordering::Relaxed);
                    if sweep {
                        cache.sweep().await;
                    }
                }
            }
            let s = cache.snapshot();
            prop_assert!(
                s.memory.bytes <= s.memory.capacity_bytes,
                "L1 {:?}",
                s.memory
            );
            let disk = s.disk.expect("L2 is there");
            prop_assert!(disk.bytes <= disk.capacity_bytes, "L2 {:?}", disk);
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn two_levels_behave_as_a_map_that_forgets(ops in prop::collection::vec(op(), 1..120)) {
        run(ops)?;
    }
}
