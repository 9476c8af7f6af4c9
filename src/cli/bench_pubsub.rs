//! `mpreg bench --pubsub`: topic fan-out measured as natsbench (a NATS load generator kept
//! outside this repository) measures NATS, so the two can be set side by side
//! (`scripts/bench_pubsub.sh`, given natsbench's path, runs both in one go).
//!
//! One publisher connection publishes as fast as it can (or `--rate` msgs/s, in 1 ms ticks)
//! for warm-up + duration, to `--topics` topics `bench.<i>.created`; K subscriber
//! connections each subscribe to `bench.*.created`. Each message carries its send time (in
//! `timestamp`, ns since the round began) and its number (`message_id`); a subscriber
//! counts a message delivered when it was published inside the measured window, records its
//! one-way latency (publish call to subscriber task), and counts gaps in the numbers as lost.
//! The publisher keeps at most [`WINDOW`] publishes unacknowledged (NATS's client buffers its
//! publishes likewise; the original protocol acks every one).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use super::bench_round::median;
use crate::env::Env;
use crate::transport::write_loop;

/// Publishes sent and not yet acknowledged, at most.
const WINDOW: usize = 1024;
/// The number an end marker carries.
const END: &str = "end";

/// What a round is.
#[derive(Debug, Clone)]
pub struct PubSubLoad {
    pub subscribe_url: String,
    pub publish_url: String,
    pub subscribers: usize,
    pub topics: usize,
    pub rate: f64,
    pub warmup: Duration,
    pub duration: Duration,
    pub payload_bytes: usize,
    pub connect: crate::client::ConnectOptions,
}

/// One round's figures.
#[derive(Debug, Clone, Serialize)]
pub struct PubSubRound {
    pub published_per_sec: f64,
    pub published: u64,
    pub delivered_per_sec_per_subscriber: Vec<f64>,
    pub lost: u64,
    pub all_drained: bool,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
}

/// A notification's send time and number, found by their keys (a full parse of every
/// notification would cost the load generator more than the node's sending it; the
/// messages are the benchmark's own, so the first `"timestamp":` is the message's).
fn note(text: &str) -> Option<(f64, &str)> {
    if !text.starts_with(r#"{"role":"pubsub-notification""#) {
        return None;
    }
    let rest = &text[text.find(r#""timestamp":"#)? + 12..];
    let ts = rest[..rest.find(',')?].parse().ok()?;
    let rest = &rest[rest.find(r#""message_id":""#)? + 14..];
    Some((ts, &rest[..rest.find('"')?]))
}

struct SubStats {
    delivered: u64,
    lost: u64,
    hist: Histogram<u64>,
    got_end: bool,
}

fn hist() -> Result<Histogram<u64>, String> {
    // Nanoseconds, 1 ns to 60 s, 3 significant figures (as natsbench).
    Histogram::new_with_bounds(1, 60_000_000_000, 3).map_err(|e| e.to_string())
}

type Ws = tokio_tungstenite::WebSocketStream<crate::env::BoxStream>;

async fn open(env: &Env, url: &str, load: &PubSubLoad) -> Result<Ws, String> {
    crate::client::open_websocket(env, url, &load.connect, 64 << 20)
        .await
        .map_err(|e| format!("{url}: {e}"))
}

fn publish_frame(topic: &str, ts_ns: u64, id: &str, payload: &str) -> String {
    format!(
        r#"{{"role":"pubsub-publish","u":"p","message":{{"topic":"{topic}","payload":{payload},"timestamp":{ts_ns},"message_id":"{id}","publisher":"bench","headers":{{}}}}}}"#
    )
}

/// A subscriber connection subscribed to `bench.*.created` (acknowledged).
async fn subscriber(env: &Env, load: &PubSubLoad, i: usize) -> Result<Ws, String> {
    let mut ws = open(env, &load.subscribe_url, load).await?;
    let sub = json!({"role": "pubsub-subscribe", "u": format!("sub-{i}"), "subscription": {
        "subscription_id": format!("bench-{i}"),
        "patterns": [{"pattern": "bench.*.created", "exact_match": false}],
        "subscriber": "bench", "created_at": 0, "get_backlog": false, "backlog_seconds": 0}});
    ws.send(Message::text(sub.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    while let Some(frame) = ws.next().await {
        let frame = frame.map_err(|e| e.to_string())?;
        let Ok(reply) = serde_json::from_slice::<serde_json::Value>(&frame.into_data()) else {
            continue;
        };
        if reply["role"] == "pubsub-ack" {
            return match reply["success"].as_bool() {
                Some(true) => Ok(ws),
                _ => Err(format!("subscribe refused: {reply}")),
            };
        }
    }
    Err("the node closed a subscriber's connection".into())
}

/// Runs one round.
pub async fn run_round(env: &Env, load: &PubSubLoad) -> Result<PubSubRound, String> {
    let mut subs = Vec::new();
    for i in 0..load.subscribers {
        subs.push(subscriber(env, load, i).await?);
    }
    let base = env.clock.now();
    let ns = move |env: &Env| env.clock.now().duration_since(base).as_nanos() as u64;
    let payload =
        serde_json::Value::String("x".repeat(load.payload_bytes.saturating_sub(2))).to_string();
    let publisher = Publisher::start(open(env, &load.publish_url, load).await?);
    // Across two nodes the subscribers' interest reaches the publisher's node within its
    // summary interval: probe until every subscriber has heard one.
    let (probe_tx, probe_rx) = mpsc::channel::<usize>(load.subscribers * 4);
    let (go_tx, go_rx) = watch::channel(None::<(u64, u64)>);
    let mut readers = Vec::new();
    for (i, ws) in subs.into_iter().enumerate() {
        let (probe_tx, mut go_rx, env) = (probe_tx.clone(), go_rx.clone(), env.clone());
        readers.push(tokio::spawn(async move {
            read_subscriber(ws, i, &env, ns, probe_tx, &mut go_rx).await
        }));
    }
    drop(probe_tx);
    publisher
        .probe(env, load.subscribers, probe_rx, &payload)
        .await?;
    let start_ns = ns(env);
    let from_ns = start_ns + load.warmup.as_nanos() as u64;
    let to_ns = from_ns + load.duration.as_nanos() as u64;
    let _ = go_tx.send(Some((from_ns, to_ns)));
    let topics: Vec<String> = (0..load.topics.max(1))
        .map(|i| format!("bench.{i}.created"))
        .collect();
    let window = Measured {
        start_ns,
        from_ns,
        to_ns,
    };
    let published = publisher
        .publish_round(env, ns, load.rate, window, &topics, &payload)
        .await?;
    let stats = publisher
        .end_round(env, readers, &topics[0], &payload)
        .await?;
    let n = publisher.finish();
    if n > 0 {
        return Err(format!("{n} publishes were refused"));
    }
    figures(load.duration, published, &stats)
}

/// When a round began publishing and the window it measures, in ns since its base.
#[derive(Debug, Clone, Copy)]
struct Measured {
    start_ns: u64,
    from_ns: u64,
    to_ns: u64,
}

/// The publisher's connection: frames go out through a writer task, and its acks, read
/// back by another, open the window again.
struct Publisher {
    tx: mpsc::Sender<Message>,
    window: Arc<Semaphore>,
    /// Publishes the node refused.
    refused: Arc<AtomicU64>,
}

impl Publisher {
    fn start(ws: Ws) -> Publisher {
        let (sink, mut acks) = ws.split();
        let (tx, rx) = mpsc::channel::<Message>(WINDOW);
        tokio::spawn(write_loop(sink, rx));
        let window = Arc::new(Semaphore::new(WINDOW));
        let refused = Arc::new(AtomicU64::new(0));
        {
            let (window, refused) = (window.clone(), refused.clone());
            tokio::spawn(async move {
                while let Some(Ok(frame)) = acks.next().await {
                    if let Message::Text(t) = &frame {
                        if !t.contains(r#""success":true"#) {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        window.add_permits(1);
                    }
                }
            });
        }
        Publisher {
            tx,
            window,
            refused,
        }
    }

    /// Sends `frame` once fewer than [`WINDOW`] publishes wait for their acks.
    async fn publish(&self, frame: String) -> Result<(), String> {
        self.window
            .acquire()
            .await
            .map_err(|e| e.to_string())?
            .forget();
        self.tx
            .send(Message::text(frame))
            .await
            .map_err(|_| "the publisher's connection closed".to_string())
    }

    /// Publishes probes until each of the `subscribers` has reported one on `heard_by`
    /// (within 10 s).
    async fn probe(
        &self,
        env: &Env,
        subscribers: usize,
        mut heard_by: mpsc::Receiver<usize>,
        payload: &str,
    ) -> Result<(), String> {
        let mut heard = vec![false; subscribers];
        let probe_deadline = env.clock.now() + Duration::from_secs(10);
        let mut n = 0u64;
        while !heard.iter().all(|h| *h) {
            if env.clock.now() > probe_deadline {
                return Err("the subscribers' interest never reached the publisher's node".into());
            }
            self.publish(publish_frame(
                "bench.probe.created",
                0,
                &format!("probe-{n}"),
                payload,
            ))
            .await?;
            n += 1;
            if let Ok(Some(i)) =
                tokio::time::timeout(Duration::from_millis(20), heard_by.recv()).await
            {
                heard[i] = true;
            }
            while let Ok(i) = heard_by.try_recv() {
                heard[i] = true;
            }
        }
        Ok(())
    }

    /// Publishes round-robin to `topics` until the window ends, as fast as acks allow or
    /// `rate` msgs/s (in 1 ms ticks); returns how many were published inside the window.
    async fn publish_round(
        &self,
        env: &Env,
        ns: impl Fn(&Env) -> u64,
        rate: f64,
        window: Measured,
        topics: &[String],
        payload: &str,
    ) -> Result<u64, String> {
        let Measured {
            start_ns,
            from_ns,
            to_ns,
        } = window;
        let (mut seq, mut published, mut due) = (0u64, 0u64, 0u64);
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        loop {
            if rate > 0.0 && seq >= due {
                tick.tick().await;
                let now = ns(env);
                if now >= to_ns {
                    break;
                }
                due = ((now - start_ns) as f64 * rate / 1e9) as u64;
                continue;
            }
            let ts = ns(env);
            if ts >= to_ns {
                break;
            }
            let topic = &topics[(seq % topics.len() as u64) as usize];
            self.publish(publish_frame(topic, ts, &seq.to_string(), payload))
                .await?;
            if ts >= from_ns {
                published += 1;
            }
            seq += 1;
        }
        Ok(published)
    }

    /// Publishes end markers to `topic` until every reader has one (one can be dropped like
    /// any message), for at most 20 s, and returns what each counted (`None`: it never
    /// finished).
    async fn end_round(
        &self,
        env: &Env,
        readers: Vec<tokio::task::JoinHandle<Result<SubStats, String>>>,
        topic: &str,
        payload: &str,
    ) -> Result<Vec<Option<SubStats>>, String> {
        let deadline = env.clock.now() + Duration::from_secs(20);
        while env.clock.now() < deadline && !readers.iter().all(|r| r.is_finished()) {
            self.publish(publish_frame(topic, 0, END, payload)).await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut stats = Vec::new();
        for r in readers {
            if !r.is_finished() {
                r.abort();
                stats.push(None);
                continue;
            }
            stats.push(r.await.ok().and_then(Result::ok));
        }
        Ok(stats)
    }

    /// Closes the publisher's side (its writer ends) and says how many publishes the node
    /// refused.
    fn finish(self) -> u64 {
        let Publisher { tx, refused, .. } = self;
        drop(tx);
        refused.load(Ordering::Relaxed)
    }
}

/// The round's figures from what each subscriber counted over `duration`.
fn figures(
    duration: Duration,
    published: u64,
    stats: &[Option<SubStats>],
) -> Result<PubSubRound, String> {
    let mut all = hist()?;
    let secs = duration.as_secs_f64();
    let mut delivered = Vec::new();
    let mut lost = 0;
    let mut all_drained = true;
    for s in stats {
        match s {
            Some(s) => {
                all.add(&s.hist).map_err(|e| e.to_string())?;
                delivered.push(s.delivered as f64 / secs);
                lost += s.lost;
                all_drained &= s.got_end;
            }
            None => {
                delivered.push(0.0);
                all_drained = false;
            }
        }
    }
    let us = |q| all.value_at_quantile(q) as f64 / 1000.0;
    Ok(PubSubRound {
        published_per_sec: published as f64 / secs,
        published,
        delivered_per_sec_per_subscriber: delivered,
        lost,
        all_drained,
        p50_us: us(0.5),
        p99_us: us(0.99),
        p999_us: us(0.999),
    })
}

/// One subscriber's reading: probes are reported on `probe` until the round starts, then
/// messages are counted until an end marker.
async fn read_subscriber(
    mut ws: Ws,
    i: usize,
    env: &Env,
    ns: impl Fn(&Env) -> u64,
    probe: mpsc::Sender<usize>,
    go: &mut watch::Receiver<Option<(u64, u64)>>,
) -> Result<SubStats, String> {
    let mut st = SubStats {
        delivered: 0,
        lost: 0,
        hist: hist()?,
        got_end: false,
    };
    let mut expect = 0u64;
    while let Some(frame) = ws.next().await {
        let frame = frame.map_err(|e| e.to_string())?;
        let now = ns(env);
        let Message::Text(t) = &frame else { continue };
        let Some((timestamp, message_id)) = note(t.as_str()) else {
            continue;
        };
        if message_id.starts_with("probe-") {
            let _ = probe.try_send(i);
            continue;
        }
        if message_id == END {
            st.got_end = true;
            break;
        }
        let Ok(seq) = message_id.parse::<u64>() else {
            continue;
        };
        if seq > expect {
            st.lost += seq - expect;
        }
        expect = seq + 1;
        let window = *go.borrow_and_update();
        let ts = timestamp as u64;
        if let Some((from, to)) = window
            && ts >= from
            && ts < to
        {
            st.delivered += 1;
            let _ = st.hist.record(now.saturating_sub(ts).max(1));
        }
    }
    Ok(st)
}

/// Medians over rounds.
#[derive(Debug, Clone, Serialize)]
pub struct PubSubSummary {
    pub published_per_sec: f64,
    pub delivered_per_sec_per_subscriber_mean: f64,
    pub delivered_per_sec_per_subscriber_min: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub lost: u64,
    pub rounds: Vec<PubSubRound>,
}

impl PubSubSummary {
    pub fn new(rounds: Vec<PubSubRound>) -> PubSubSummary {
        let med = |f: &dyn Fn(&PubSubRound) -> f64| median(rounds.iter().map(f).collect());
        PubSubSummary {
            published_per_sec: med(&|r| r.published_per_sec),
            delivered_per_sec_per_subscriber_mean: med(&|r| {
                let d = &r.delivered_per_sec_per_subscriber;
                d.iter().sum::<f64>() / d.len().max(1) as f64
            }),
            delivered_per_sec_per_subscriber_min: med(&|r| {
                let d = &r.delivered_per_sec_per_subscriber;
                d.iter().copied().fold(f64::INFINITY, f64::min)
            }),
            p50_us: med(&|r| r.p50_us),
            p99_us: med(&|r| r.p99_us),
            p999_us: med(&|r| r.p999_us),
            lost: rounds.iter().map(|r| r.lost).sum(),
            rounds,
        }
    }
}

pub fn describe(round: usize, rounds: usize, r: &PubSubRound) -> String {
    let per: Vec<String> = r
        .delivered_per_sec_per_subscriber
        .iter()
        .map(|d| format!("{d:.0}"))
        .collect();
    format!(
        "round {round}/{rounds} mpreg-pubsub published {:>10.0} msg/s ({} msgs)  delivered/sub [{}] msg/s  lost {}  all drained {}  latency p50 {:.1} µs  p99 {:.1} µs  p999 {:.1} µs",
        r.published_per_sec,
        r.published,
        per.join(", "),
        r.lost,
        r.all_drained,
        r.p50_us,
        r.p99_us,
        r.p999_us
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_gives_its_send_time_and_number() {
        let frame = publish_frame("bench.7.created", 123_456_789, "42", r#""xxxxxxxxxxxxxx""#);
        let req: serde_json::Value = serde_json::from_str(&frame).unwrap();
        let m: crate::protocol::pubsub::PubSubMessage =
            serde_json::from_value(req["message"].clone()).unwrap();
        let n = crate::protocol::pubsub::notification(&m.notified_json(), &m, "bench-0");
        assert_eq!(note(&n), Some((123_456_789.0, "42")));
        assert_eq!(note(r#"{"role":"pubsub-ack","operation_id":"p"}"#), None);
    }
}
