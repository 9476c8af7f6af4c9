//! `mpreg bench`: a closed-loop load generator. C connections each keep N requests in flight
//! for a fixed time; latencies go into an HDR histogram. With `--raw-echo` it also starts a
//! bare tokio-tungstenite echo server as a child process and runs the identical load against
//! it, alternating rounds, so mpreg's figures come with a same-machine, same-run baseline.

use std::time::Duration;

use clap::Args;
use futures_util::{StreamExt, TryStreamExt};
use serde::Serialize;
use serde_json::json;

use super::bench_round::median;
// Part of `run_round`'s signature, so named here as well.
pub use super::bench_round::{Load, RoundResult, run_round};
use crate::env::Env;
use crate::transport::websocket_config;

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Node to load
    #[arg(long, env = "MPREG_URL", default_value = "ws://127.0.0.1:9000")]
    pub url: String,
    /// Concurrent connections
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Requests kept in flight per connection
    #[arg(long, default_value_t = 64)]
    pub inflight: usize,
    /// Measured seconds per round
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Unmeasured seconds before each round
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Function to call (with one string argument)
    #[arg(long, default_value = "echo")]
    pub fun: String,
    /// Size of the string argument in bytes
    #[arg(long, default_value_t = 16)]
    pub payload_bytes: usize,
    /// Also measure a bare WebSocket echo server and print ratios against it
    #[arg(long)]
    pub raw_echo: bool,
    /// Rounds per target (with --raw-echo they alternate); medians are reported
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Print one JSON object instead of a table
    #[arg(long)]
    pub json: bool,
    /// Measure catalog writes through Raft instead of calls: each connection keeps one
    /// write in flight (--inflight is ignored); latency is until the write is committed
    #[arg(long)]
    pub catalog: bool,
    /// With --catalog: the cluster secret file the node's peers prove (writes go over the
    /// peer protocol)
    #[arg(long, value_name = "FILE")]
    pub cluster_secret_file: Option<std::path::PathBuf>,
    /// Also run the identical load against this node, alternating rounds, and print its
    /// figures as ratios to --url's: give --url the node hosting --fun and this one a node
    /// that must forward each call there (one hop)
    #[arg(long, value_name = "URL")]
    pub forwarded_via: Option<String>,
    /// Instead of single calls: one request of N calls of --fun and one --fan-in command
    /// over their results, against N sequential calls of --fun (one connection each)
    #[arg(long, value_name = "N")]
    pub fanout: Option<usize>,
    /// The command taking every fan-out result (with --fanout)
    #[arg(long, default_value = "aggregate")]
    pub fan_in: String,
    /// With --raw-echo and a wss:// --url: the certificate the echo server serves TLS
    /// with (the node's own, so that both are measured over the same TLS)
    #[arg(long, value_name = "FILE", requires = "echo_tls_key")]
    pub echo_tls_cert: Option<std::path::PathBuf>,
    /// The private key of --echo-tls-cert
    #[arg(long, value_name = "FILE", requires = "echo_tls_cert")]
    pub echo_tls_key: Option<std::path::PathBuf>,
    /// Measure topic pub/sub instead of calls: one publisher, --subscribers subscribers of
    /// `bench.*.created` on --url, publishing to --topics topics (as natsbench measures
    /// NATS; scripts/bench_pubsub.sh runs both, given natsbench's path)
    #[arg(long)]
    pub pubsub: bool,
    /// With --pubsub: subscriber connections
    #[arg(long, default_value_t = 4)]
    pub subscribers: usize,
    /// With --pubsub: the node the publisher publishes on [default: --url]
    #[arg(long, value_name = "URL")]
    pub publish_url: Option<String>,
    /// With --pubsub: publish this many messages a second (0: as fast as acks allow); with
    /// --queue: send this many a second in all
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// With --pubsub: topics published to, `bench.<i>.created`
    #[arg(long, default_value_t = 1000)]
    pub topics: usize,
    /// Measure a work queue instead of calls: --connections producers x --inflight sends
    /// awaiting their answer (stored; fsynced on a sqlite node), --consumers receiving
    /// batches and acknowledging each message, on a fresh queue each round (as natsbench
    /// js-work measures JetStream; scripts/bench_queue.sh runs both)
    #[arg(long)]
    pub queue: bool,
    /// Measure the cache instead of calls: `cache-request`s, --cache-get-percent gets and
    /// the rest puts over --cache-keys keys (loaded first) of --cache-value-bytes, beside
    /// `echo` calls at the same concurrency (scripts/bench_cache.sh adds redis-benchmark)
    #[arg(long)]
    pub cache: bool,
    /// With --cache: keys in the key space
    #[arg(long, default_value_t = 100_000)]
    pub cache_keys: u64,
    /// With --cache: bytes of each value
    #[arg(long, default_value_t = 64)]
    pub cache_value_bytes: usize,
    /// With --cache: percent of requests that are gets
    #[arg(long, default_value_t = 90)]
    pub cache_get_percent: u64,
    /// With --cache: the levels asked (L1, or L1,L2 on a sqlite node)
    #[arg(long, default_value = "L1", value_delimiter = ',')]
    pub cache_levels: Vec<String>,
    /// With --queue: consumer connections (0: sends only, as natsbench js-pub)
    #[arg(long, default_value_t = 4)]
    pub consumers: usize,
    /// With --queue: messages a receive asks for (1 to 10)
    #[arg(long, default_value_t = 10)]
    pub batch: u64,
    /// With --queue: the queue's max_size (at most the node's queue_max_messages; a full
    /// queue refuses sends, counted as errors)
    #[arg(long, default_value_t = 100_000)]
    pub queue_max_size: u64,
    /// With --queue: the queue's replicas (1, 3 or 5; unset: the cluster's default, 3 in a
    /// cluster of three or more nodes)
    #[arg(long)]
    pub queue_replicas: Option<u32>,
    #[command(flatten)]
    pub connect: super::ConnectArgs,
}

/// Medians over rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub target: String,
    pub rounds: Vec<RoundResult>,
    pub calls_per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub errors: u64,
}

impl Summary {
    fn new(target: &str, rounds: Vec<RoundResult>) -> Summary {
        let med = |f: fn(&RoundResult) -> f64| median(rounds.iter().map(f).collect());
        Summary {
            target: target.to_owned(),
            calls_per_sec: med(|r| r.calls_per_sec),
            p50_us: med(|r| r.p50_us as f64) as u64,
            p99_us: med(|r| r.p99_us as f64) as u64,
            p999_us: med(|r| r.p999_us as f64) as u64,
            errors: rounds.iter().map(|r| r.errors).sum(),
            rounds,
        }
    }
}

fn describe(target: &str, r: &RoundResult) -> String {
    format!(
        "{target:<9} {:>12.0} calls/s  p50 {:>7.1} µs  p99 {:>8.1} µs  p999 {:>8.1} µs  errors {}",
        r.calls_per_sec, r.p50_us as f64, r.p99_us as f64, r.p999_us as f64, r.errors
    )
}

/// Starts this executable's hidden echo server and returns it with its URL.
async fn spawn_echo_server(
    tls: Option<&(std::path::PathBuf, std::path::PathBuf)>,
) -> Result<(tokio::process::Child, String), String> {
    use tokio::io::AsyncBufReadExt;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let mut command = tokio::process::Command::new(exe);
    command.args(["bench-echo-server", "--port", "0"]);
    if let Some((cert, key)) = tls {
        command
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key);
    }
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start the echo server: {e}"))?;
    let stdout = child.stdout.take().ok_or("echo server has no stdout")?;
    let mut line = String::new();
    tokio::io::BufReader::new(stdout)
        .read_line(&mut line)
        .await
        .map_err(|e| format!("echo server: {e}"))?;
    let url = line
        .trim()
        .strip_prefix("ECHO_URL=")
        .ok_or_else(|| format!("echo server printed `{}`", line.trim()))?
        .to_owned();
    Ok((child, url))
}

pub async fn run(args: BenchArgs) -> i32 {
    match bench(args).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mpreg bench: {e}");
            1
        }
    }
}

async fn bench(args: BenchArgs) -> Result<(), String> {
    let seconds_ok = |s: f64| s.is_finite() && (0.0..=86_400.0).contains(&s);
    if args.connections == 0
        || args.inflight == 0
        || args.rounds == 0
        || args.duration <= 0.0
        || !seconds_ok(args.duration)
        || !seconds_ok(args.warmup)
    {
        return Err("--connections, --inflight and --rounds must be positive; --duration and --warmup finite seconds (duration > 0)".into());
    }
    let env = Env::production();
    let load = Load {
        connections: args.connections,
        inflight: args.inflight,
        warmup: Duration::from_secs_f64(args.warmup.max(0.0)),
        duration: Duration::from_secs_f64(args.duration),
        fun: args.fun.clone(),
        payload: "x".repeat(args.payload_bytes),
        connect: args.connect.options(&args.url).map_err(|e| e.to_string())?,
    };
    let echo_tls = args.echo_tls_cert.clone().zip(args.echo_tls_key.clone());
    if args.raw_echo
        && crate::ids::NodeUrl::parse(&args.url).is_ok_and(|u| u.is_tls())
        && echo_tls.is_none()
    {
        return Err(
            "a wss:// --url is compared with the echo server over TLS: give it the node's \
             certificate with --echo-tls-cert and --echo-tls-key"
                .into(),
        );
    }
    let echo = if args.raw_echo {
        Some(spawn_echo_server(echo_tls.as_ref()).await?)
    } else {
        None
    };
    if args.catalog {
        return bench_catalog(&env, &args, &load).await;
    }
    if args.pubsub {
        return bench_pubsub(&env, &args, &load).await;
    }
    if args.queue {
        return bench_queue(&env, &args, &load).await;
    }
    if args.cache {
        return bench_cache(&env, &args, &load).await;
    }
    if let Some(n) = args.fanout {
        return bench_fanout(&env, &args, &load, n).await;
    }
    if let Some(via) = &args.forwarded_via {
        return bench_forwarded(&env, &args, &load, via).await;
    }
    let mut mpreg_rounds = Vec::new();
    let mut echo_rounds = Vec::new();
    for round in 1..=args.rounds {
        if let Some((_, echo_url)) = &echo {
            let r = run_round(&env, echo_url, &load).await?;
            eprintln!("round {round}/{} {}", args.rounds, describe("raw-echo", &r));
            echo_rounds.push(r);
        }
        let r = run_round(&env, &args.url, &load).await?;
        eprintln!("round {round}/{} {}", args.rounds, describe("mpreg", &r));
        mpreg_rounds.push(r);
    }
    report_calls(&args, mpreg_rounds, echo_rounds)
}

/// Prints the medians of mpreg's rounds (and the echo server's, with the ratios between
/// them); fails if any call failed.
fn report_calls(
    args: &BenchArgs,
    mpreg_rounds: Vec<RoundResult>,
    echo_rounds: Vec<RoundResult>,
) -> Result<(), String> {
    let mpreg = Summary::new("mpreg", mpreg_rounds);
    let raw = (!echo_rounds.is_empty()).then(|| Summary::new("raw-echo", echo_rounds));
    let ratios = raw.as_ref().map(|e| {
        json!({
            "throughput_vs_raw_echo": mpreg.calls_per_sec / e.calls_per_sec.max(f64::MIN_POSITIVE),
            "p50_vs_raw_echo": mpreg.p50_us as f64 / (e.p50_us.max(1)) as f64,
        })
    });
    if args.json {
        let out = json!({
            "config": {"url": args.url, "connections": args.connections, "inflight": args.inflight,
                       "duration_s": args.duration, "warmup_s": args.warmup, "fun": args.fun,
                       "payload_bytes": args.payload_bytes, "rounds": args.rounds},
            "mpreg": mpreg, "raw_echo": raw, "ratios": ratios,
        });
        println!("{out}");
    } else {
        println!(
            "{} connections x {} in flight, {} s x {} rounds, fun {} ({} B payload); medians:",
            args.connections,
            args.inflight,
            args.duration,
            args.rounds,
            args.fun,
            args.payload_bytes
        );
        println!("{}", summary_line(&mpreg));
        if let Some(e) = &raw {
            println!("{}", summary_line(e));
        }
        if let Some(r) = ratios {
            println!(
                "mpreg / raw-echo: throughput {:.2}x, p50 latency {:.2}x",
                r["throughput_vs_raw_echo"].as_f64().unwrap_or(0.0),
                r["p50_vs_raw_echo"].as_f64().unwrap_or(0.0)
            );
        }
    }
    if mpreg.errors > 0 {
        return Err(format!("{} calls failed", mpreg.errors));
    }
    Ok(())
}

async fn bench_pubsub(env: &Env, args: &BenchArgs, load: &Load) -> Result<(), String> {
    use super::bench_pubsub::{PubSubLoad, PubSubSummary, describe, run_round};
    if args.subscribers == 0 || args.topics == 0 || !(args.rate.is_finite() && args.rate >= 0.0) {
        return Err("--subscribers and --topics must be positive, --rate 0 or more".into());
    }
    if args.payload_bytes < 2 {
        return Err("--payload-bytes must be at least 2 (a JSON string)".into());
    }
    let ps = PubSubLoad {
        subscribe_url: args.url.clone(),
        publish_url: args.publish_url.clone().unwrap_or_else(|| args.url.clone()),
        subscribers: args.subscribers,
        topics: args.topics,
        rate: args.rate,
        warmup: load.warmup,
        duration: load.duration,
        payload_bytes: args.payload_bytes,
        connect: load.connect.clone(),
    };
    let mut rounds = Vec::new();
    for round in 1..=args.rounds {
        let r = run_round(env, &ps).await?;
        eprintln!("{}", describe(round, args.rounds, &r));
        rounds.push(r);
    }
    let s = PubSubSummary::new(rounds);
    let two_nodes = ps.publish_url != ps.subscribe_url;
    if args.json {
        println!(
            "{}",
            json!({"config": {"subscribe_url": ps.subscribe_url, "publish_url": ps.publish_url,
                "subscribers": ps.subscribers, "topics": ps.topics, "rate": ps.rate,
                "payload_bytes": ps.payload_bytes, "duration_s": args.duration,
                "warmup_s": args.warmup, "rounds": args.rounds}, "mpreg_pubsub": s})
        );
    } else {
        println!(
            "1 publisher{}, {} subscribers of bench.*.created over {} topics, {} B payloads, {}, {} s x {} rounds; medians:",
            if two_nodes { " on another node" } else { "" },
            ps.subscribers,
            ps.topics,
            ps.payload_bytes,
            if ps.rate > 0.0 {
                format!("paced at {} msgs/s", ps.rate)
            } else {
                "unpaced".into()
            },
            args.duration,
            args.rounds
        );
        println!(
            "mpreg-pubsub published {:.0} msgs/s, delivered {:.0} msgs/s per subscriber (slowest {:.0}), one-way p50 {:.1} µs p99 {:.1} µs p999 {:.1} µs, lost {}",
            s.published_per_sec,
            s.delivered_per_sec_per_subscriber_mean,
            s.delivered_per_sec_per_subscriber_min,
            s.p50_us,
            s.p99_us,
            s.p999_us,
            s.lost
        );
    }
    Ok(())
}

async fn bench_cache(env: &Env, args: &BenchArgs, load: &Load) -> Result<(), String> {
    use super::bench_cache::{CacheLoad, CacheSummary, describe, preload, run_round_pair};
    if args.cache_keys == 0 || args.cache_get_percent > 100 {
        return Err("--cache-keys must be positive and --cache-get-percent at most 100".into());
    }
    let cache = CacheLoad {
        keys: args.cache_keys,
        value_bytes: args.cache_value_bytes,
        get_percent: args.cache_get_percent,
        levels: json!(args.cache_levels).to_string(),
    };
    preload(env, &args.url, load, &cache).await?;
    let mut rounds = Vec::new();
    for round in 1..=args.rounds {
        let r = run_round_pair(env, &args.url, load, &cache).await?;
        eprintln!("round {round}/{} {}", args.rounds, describe(&r));
        rounds.push(r);
    }
    let s = CacheSummary::new(rounds);
    if args.json {
        println!(
            "{}",
            json!({"config": {"url": args.url, "connections": args.connections,
                "inflight": args.inflight, "duration_s": args.duration, "keys": args.cache_keys,
                "value_bytes": args.cache_value_bytes, "get_percent": args.cache_get_percent,
                "levels": args.cache_levels, "rounds": args.rounds}, "mpreg_cache": s})
        );
    } else {
        println!(
            "{} connections x {} in flight, {}% gets over {} keys of {} B ({}), {} s x {} rounds; medians:",
            args.connections,
            args.inflight,
            args.cache_get_percent,
            args.cache_keys,
            args.cache_value_bytes,
            args.cache_levels.join(","),
            args.duration,
            args.rounds
        );
        println!(
            "mpreg-cache {:.0} ops/s, p50 {:.0} µs, p99 {:.0} µs; get p50 {:.0} µs p99 {:.0} µs; put p50 {:.0} µs",
            s.ops_per_sec, s.p50_us, s.p99_us, s.get_p50_us, s.get_p99_us, s.put_p50_us
        );
        println!(
            "echo calls {:.0}/s, p50 {:.0} µs; get p50 / echo p50 = {:.2}x; errors {}",
            s.echo_calls_per_sec, s.echo_p50_us, s.get_p50_vs_echo, s.errors
        );
    }
    if s.errors > 0 {
        return Err(format!("{} requests failed", s.errors));
    }
    Ok(())
}

async fn bench_queue(env: &Env, args: &BenchArgs, load: &Load) -> Result<(), String> {
    use super::bench_queue::{QueueLoad, QueueSummary, describe, run_round};
    if !((1..=10).contains(&args.batch) && args.rate.is_finite() && args.rate >= 0.0) {
        return Err("--batch must be 1 to 10, --rate 0 or more".into());
    }
    let ql = QueueLoad {
        url: args.url.clone(),
        producers: args.connections,
        inflight: args.inflight,
        consumers: args.consumers,
        batch: args.batch,
        max_size: args.queue_max_size,
        replicas: args.queue_replicas,
        rate: args.rate,
        warmup: load.warmup,
        duration: load.duration,
        connect: load.connect.clone(),
    };
    let run = env.rng.hex_id(4);
    let mut rounds = Vec::new();
    for round in 1..=args.rounds {
        let r = run_round(env, &ql, &format!("bench-{run}-{round}")).await?;
        eprintln!("{}", describe(round, args.rounds, &r));
        rounds.push(r);
    }
    let s = QueueSummary::new(rounds);
    if args.json {
        println!(
            "{}",
            json!({"config": {"url": ql.url, "producers": ql.producers, "inflight": ql.inflight,
                "consumers": ql.consumers, "batch": ql.batch, "rate": ql.rate,
                "payload_bytes": 16, "duration_s": args.duration, "warmup_s": args.warmup,
                "rounds": args.rounds}, "mpreg_queue": s})
        );
    } else {
        println!(
            "{} producers x {} in flight, {} consumers (receiving up to {}), 16 B payloads, {}, {} s x {} rounds, {}; medians:",
            ql.producers,
            ql.inflight,
            ql.consumers,
            ql.batch,
            if ql.rate > 0.0 {
                format!("paced at {} msgs/s", ql.rate)
            } else {
                "unpaced".into()
            },
            args.duration,
            args.rounds,
            if s.durable {
                "fsync before every answer (sqlite)"
            } else {
                "NOT durable (memory mode)"
            },
        );
        println!(
            "mpreg-queue sent {:.0}/s (answered p50 {:.0} µs p99 {:.0} µs), acked {:.0}/s (delivered p50 {:.0} µs p99 {:.0} µs; acked, end to end, p50 {:.0} µs p99 {:.0} µs), backlog {:.0}; missing {}, duplicates {}, errors {}",
            s.sent_per_sec,
            s.send_p50_us,
            s.send_p99_us,
            s.acked_per_sec,
            s.deliver_p50_us,
            s.deliver_p99_us,
            s.e2e_p50_us,
            s.e2e_p99_us,
            s.backlog,
            s.missing,
            s.duplicates,
            s.errors
        );
    }
    if s.missing > 0 {
        return Err(format!(
            "{} acknowledged sends were never received",
            s.missing
        ));
    }
    if s.errors > 0 {
        return Err(format!("{} queue calls failed", s.errors));
    }
    Ok(())
}

async fn bench_catalog(env: &Env, args: &BenchArgs, load: &Load) -> Result<(), String> {
    let secret = match &args.cluster_secret_file {
        Some(path) => crate::fabric::ClusterSecret::from_file(path).map_err(|e| e.to_string())?,
        None => crate::fabric::ClusterSecret::none(),
    };
    super::bench_catalog::probe(env, &args.url, &secret).await?;
    let mut rounds = Vec::new();
    for round in 1..=args.rounds {
        let r = super::bench_catalog::run_round(env, &args.url, load, round, &secret).await?;
        eprintln!(
            "round {round}/{} {} writes/s  p50 {} µs  p99 {} µs  errors {}",
            args.rounds, r.calls_per_sec as u64, r.p50_us, r.p99_us, r.errors
        );
        rounds.push(r);
    }
    let s = Summary::new("catalog", rounds);
    if args.json {
        let out = json!({
            "config": {"url": args.url, "writers": args.connections, "duration_s": args.duration,
                       "warmup_s": args.warmup, "rounds": args.rounds},
            "catalog": s,
        });
        println!("{out}");
    } else {
        println!(
            "catalog writes, {} writers x 1 in flight, {} s x {} rounds; medians:",
            args.connections, args.duration, args.rounds
        );
        println!(
            "catalog   {:>10.0} writes/s  commit p50 {:>7} µs  p99 {:>8} µs  p999 {:>8} µs  errors {}",
            s.calls_per_sec, s.p50_us, s.p99_us, s.p999_us, s.errors
        );
    }
    if s.errors > 0 {
        return Err(format!("{} writes failed", s.errors));
    }
    Ok(())
}

/// Direct calls to the hosting node against the same calls through a node that forwards
/// them, alternating rounds.
async fn bench_forwarded(
    env: &Env,
    args: &BenchArgs,
    load: &Load,
    via: &str,
) -> Result<(), String> {
    let (mut direct, mut forwarded) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        let r = run_round(env, &args.url, load).await?;
        eprintln!("round {round}/{} {}", args.rounds, describe("direct", &r));
        direct.push(r);
        let r = run_round(env, via, load).await?;
        eprintln!(
            "round {round}/{} {}",
            args.rounds,
            describe("forwarded", &r)
        );
        forwarded.push(r);
    }
    let (d, f) = (
        Summary::new("direct", direct),
        Summary::new("forwarded", forwarded),
    );
    compare(args, &d, &f, "forwarded / direct")
}

/// The fan-out/fan-in request against the same calls made one after another.
async fn bench_fanout(env: &Env, args: &BenchArgs, load: &Load, n: usize) -> Result<(), String> {
    if n == 0 {
        return Err("--fanout must be positive".into());
    }
    let (mut seq, mut dag) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        let r = super::bench_dag::run_round(env, &args.url, load, n, &args.fan_in, false).await?;
        eprintln!(
            "round {round}/{} {}",
            args.rounds,
            describe("sequential", &r)
        );
        seq.push(r);
        let r = super::bench_dag::run_round(env, &args.url, load, n, &args.fan_in, true).await?;
        eprintln!("round {round}/{} {}", args.rounds, describe("fan-out", &r));
        dag.push(r);
    }
    let (s, d) = (
        Summary::new("sequential", seq),
        Summary::new("fan-out", dag),
    );
    compare(
        args,
        &s,
        &d,
        &format!("one {n}-call fan-out request / {n} sequential calls"),
    )
}

/// Prints `base` and `other` and `other`'s ratios to `base`.
fn compare(args: &BenchArgs, base: &Summary, other: &Summary, what: &str) -> Result<(), String> {
    let ratio = |a: f64, b: f64| a / b.max(f64::MIN_POSITIVE);
    let ratios = json!({
        "throughput": ratio(other.calls_per_sec, base.calls_per_sec),
        "p50": ratio(other.p50_us as f64, base.p50_us as f64),
        "p99": ratio(other.p99_us as f64, base.p99_us as f64),
    });
    if args.json {
        println!(
            "{}",
            json!({base.target.clone(): base, other.target.clone(): other, "ratios": ratios})
        );
    } else {
        let shape = match args.fanout {
            Some(n) => format!("1 connection, one {n}-call request or sequence at a time"),
            None => format!(
                "{} connections x {} in flight",
                args.connections, args.inflight
            ),
        };
        let sample = if args.fanout.is_some() {
            "request or sequence"
        } else {
            "call"
        };
        println!(
            "{shape}, {} s x {} rounds, fun {}; medians (a sample is one {sample}):",
            args.duration, args.rounds, args.fun,
        );
        println!("{}", summary_line(base));
        println!("{}", summary_line(other));
        println!(
            "{what}: throughput {:.2}x, p50 {:.2}x, p99 {:.2}x",
            ratios["throughput"].as_f64().unwrap_or(0.0),
            ratios["p50"].as_f64().unwrap_or(0.0),
            ratios["p99"].as_f64().unwrap_or(0.0)
        );
    }
    let errors = base.errors + other.errors;
    if errors > 0 {
        return Err(format!("{errors} calls failed"));
    }
    Ok(())
}

fn summary_line(s: &Summary) -> String {
    format!(
        "{:<9} {:>12.0} calls/s  p50 {:>7} µs  p99 {:>8} µs  p999 {:>8} µs  errors {}",
        s.target, s.calls_per_sec, s.p50_us, s.p99_us, s.p999_us, s.errors
    )
}

/// The baseline: accept WebSocket connections and send every data frame straight back.
/// `forward` writes while frames keep arriving and flushes when the input runs dry.
pub async fn run_echo_server(
    host: &str,
    port: u16,
    tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
) -> i32 {
    use std::io::Write;
    let env = Env::production();
    let tls = match tls {
        Some((cert, key)) => {
            let files = crate::tls::NodeTlsFiles {
                cert: Some(cert),
                key: Some(key),
                ..Default::default()
            };
            match crate::tls::NodeTls::from_files(&files, env.clock.clone()) {
                Ok(tls) => tls,
                Err(e) => {
                    eprintln!("echo server: {e}");
                    return 2;
                }
            }
        }
        None => None,
    };
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let mut listener = match env.net.listen(&format!("{host}:{port}")).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("echo server: {e}");
            return 2;
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("ECHO_URL={scheme}://{addr}"),
        Err(e) => {
            eprintln!("echo server: {e}");
            return 2;
        }
    }
    let _ = std::io::stdout().flush();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            let stream = match tls {
                // The same TLS handshake the node runs (`NodeTls::accept`).
                Some(tls) => match tls.accept(stream).await {
                    Ok((s, _)) => s,
                    Err(_) => return,
                },
                None => stream,
            };
            let Ok(ws) = tokio_tungstenite::accept_async_with_config(
                stream,
                Some(websocket_config(64 << 20)),
            )
            .await
            else {
                return;
            };
            let (sink, frames) = ws.split();
            let _ = frames
                .try_filter(|m| std::future::ready(m.is_text() || m.is_binary()))
                .forward(sink)
                .await;
        });
    }
}
