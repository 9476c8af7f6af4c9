//! `mpreg bench --cache`: C connections × N in flight of `cache-request`s, 90% gets and 10%
//! puts over a key space loaded first (100k keys, 64-byte values by default), as
//! `redis-benchmark` measures Redis (`scripts/bench_cache.sh` runs both); and, alternating
//! with it in the same run, `echo` calls at the same concurrency, for the ratio of an L1
//! hit's latency to a call's.

use std::sync::Arc;

use serde::Serialize;
use serde_json::json;

use super::bench_round::{Load, MakeFrame, RoundResult, median, run_frames, run_round};
use crate::env::Env;

/// What a cache round does.
#[derive(Debug, Clone)]
pub struct CacheLoad {
    pub keys: u64,
    pub value_bytes: usize,
    /// Percent of requests that are gets.
    pub get_percent: u64,
    /// `options.cache_levels`, as JSON.
    pub levels: String,
}

/// A request's pseudo-random number: SplitMix64 of where it comes from, so every run asks
/// for the same keys in the same order, without shared state between the loops.
fn mix(conn: usize, slot: usize, seq: u64) -> u64 {
    let mut z = (conn as u64) << 48 ^ (slot as u64) << 32 ^ seq;
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn put_frame(u: &str, key: u64, value: &str, levels: &str) -> String {
    format!(
        r#"{{"role":"cache-request","u":"{u}","operation":"put","key":{{"namespace":"bench","identifier":"k{key}"}},"options":{{"cache_levels":{levels},"include_metadata":false}},"value":{value}}}"#
    )
}

/// Gets (kind 0) and puts (kind 1), mixed as `load` says.
fn frames(load: &CacheLoad) -> MakeFrame {
    let value = serde_json::Value::String("v".repeat(load.value_bytes)).to_string();
    let load = load.clone();
    Arc::new(move |conn, slot, seq| {
        let r = mix(conn, slot, seq);
        let key = r % load.keys.max(1);
        let u = format!("{slot}-{conn}-{seq}");
        if (r >> 40) % 100 < load.get_percent {
            // Key and value alone, as Redis GET answers (`include_metadata: false`).
            let frame = format!(
                r#"{{"role":"cache-request","u":"{u}","operation":"get","key":{{"namespace":"bench","identifier":"k{key}"}},"options":{{"cache_levels":{},"include_metadata":false}}}}"#,
                load.levels
            );
            (frame, 0)
        } else {
            (put_frame(&u, key, &value, &load.levels), 1)
        }
    })
}

/// Puts every key once, so that gets hit (64 puts in flight on one connection).
pub async fn preload(env: &Env, url: &str, load: &Load, cache: &CacheLoad) -> Result<(), String> {
    let client = crate::Client::connect_with_options(env, url, &load.connect)
        .await
        .map_err(|e| e.to_string())?;
    let value = json!("v".repeat(cache.value_bytes));
    let levels: serde_json::Value =
        serde_json::from_str(&cache.levels).map_err(|e| e.to_string())?;
    let lanes = 64u64;
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..lanes {
        let (client, value, levels, keys) =
            (client.clone(), value.clone(), levels.clone(), cache.keys);
        tasks.spawn(async move {
            let mut k = lane;
            while k < keys {
                client
                    .cache()
                    .request(json!({"operation": "put",
                        "key": {"namespace": "bench", "identifier": format!("k{k}")},
                        "options": {"cache_levels": levels}, "value": value}))
                    .await
                    .map_err(|e| format!("preloading k{k}: {e}"))?;
                k += lanes;
            }
            Ok::<(), String>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// One cache round: gets, puts, all; and an echo round beside it.
#[derive(Debug, Clone, Serialize)]
pub struct CacheRound {
    pub gets: RoundResult,
    pub puts: RoundResult,
    pub all: RoundResult,
    pub echo: RoundResult,
}

/// Runs a cache round, then an echo round with the same connections and in-flight count.
pub async fn run_round_pair(
    env: &Env,
    url: &str,
    load: &Load,
    cache: &CacheLoad,
) -> Result<CacheRound, String> {
    let mut kinds = run_frames(env, url, load, frames(cache), 2).await?;
    let all = kinds.pop().ok_or("no figures")?;
    let puts = kinds.pop().ok_or("no figures")?;
    let gets = kinds.pop().ok_or("no figures")?;
    let echo_load = Load {
        fun: "echo".into(),
        ..load.clone()
    };
    let echo = run_round(env, url, &echo_load).await?;
    Ok(CacheRound {
        gets,
        puts,
        all,
        echo,
    })
}

/// Medians over rounds.
#[derive(Debug, Clone, Serialize)]
pub struct CacheSummary {
    pub ops_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub get_p50_us: f64,
    pub get_p99_us: f64,
    pub put_p50_us: f64,
    pub echo_calls_per_sec: f64,
    pub echo_p50_us: f64,
    /// An L1 hit's p50 over an echo call's.
    pub get_p50_vs_echo: f64,
    pub errors: u64,
    pub rounds: Vec<CacheRound>,
}

impl CacheSummary {
    pub fn new(rounds: Vec<CacheRound>) -> CacheSummary {
        let med = |f: &dyn Fn(&CacheRound) -> f64| median(rounds.iter().map(f).collect());
        let get_p50 = med(&|r| r.gets.p50_us as f64);
        let echo_p50 = med(&|r| r.echo.p50_us as f64);
        CacheSummary {
            ops_per_sec: med(&|r| r.all.calls_per_sec),
            p50_us: med(&|r| r.all.p50_us as f64),
            p99_us: med(&|r| r.all.p99_us as f64),
            get_p50_us: get_p50,
            get_p99_us: med(&|r| r.gets.p99_us as f64),
            put_p50_us: med(&|r| r.puts.p50_us as f64),
            echo_calls_per_sec: med(&|r| r.echo.calls_per_sec),
            echo_p50_us: echo_p50,
            get_p50_vs_echo: get_p50 / echo_p50.max(1.0),
            errors: rounds.iter().map(|r| r.all.errors + r.echo.errors).sum(),
            rounds,
        }
    }
}

pub fn describe(r: &CacheRound) -> String {
    format!(
        "cache {:>10.0} ops/s p50 {:>6} µs p99 {:>6} µs (get p50 {} µs, put p50 {} µs); echo {:>8.0} calls/s p50 {} µs; errors {}",
        r.all.calls_per_sec,
        r.all.p50_us,
        r.all.p99_us,
        r.gets.p50_us,
        r.puts.p50_us,
        r.echo.calls_per_sec,
        r.echo.p50_us,
        r.all.errors + r.echo.errors
    )
}
