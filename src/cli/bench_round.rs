//! What every `mpreg bench` load generator shares: the load of one round ([`Load`]), one
//! round's figures against one target ([`RoundResult`]), the median over rounds, and the
//! closed-loop driver of request/reply rounds ([`run_round`], [`run_frames`]).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::env::Env;
use crate::transport::write_loop;

/// The load of one round.
#[derive(Debug, Clone)]
pub struct Load {
    pub connections: usize,
    pub inflight: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub fun: String,
    pub payload: String,
    /// The token and TLS trust every connection presents.
    pub connect: crate::client::ConnectOptions,
}

/// One round against one target.
#[derive(Debug, Clone, Serialize)]
pub struct RoundResult {
    pub calls: u64,
    pub errors: u64,
    pub calls_per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl RoundResult {
    /// The round's figures from its latency histogram (µs) over `duration`.
    pub(crate) fn new(h: &Histogram<u64>, errors: u64, duration: Duration) -> RoundResult {
        RoundResult {
            calls: h.len(),
            errors,
            calls_per_sec: h.len() as f64 / duration.as_secs_f64(),
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// The median of `xs` (the upper one of an even count; 0 for none).
pub(super) fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(0.0)
}

/// Only what the load generator reads of a reply: whose it is and whether it failed. The
/// same parse runs for mpreg's replies and the echo server's echoes.
#[derive(Deserialize)]
struct Ack<'a> {
    #[serde(borrow)]
    u: Cow<'a, str>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
    /// A `cache-response`'s.
    #[serde(default, borrow)]
    status: Option<Cow<'a, str>>,
}

/// Per connection: the waiting slot of each in-flight loop.
type Slots = Mutex<Vec<Option<oneshot::Sender<bool>>>>;

/// Runs one round of `load` against `url`.
pub async fn run_round(env: &Env, url: &str, load: &Load) -> Result<RoundResult, String> {
    // JSON-encoded once; each request is then one `format!`.
    let fun = Value::String(load.fun.clone()).to_string();
    let payload = Value::String(load.payload.clone()).to_string();
    let make: MakeFrame = Arc::new(move |conn, slot, seq| {
        let frame = format!(
            r#"{{"role":"rpc","u":"{slot}-{conn}-{seq}","cmds":[{{"name":"b","fun":{fun},"args":[{payload}]}}]}}"#
        );
        (frame, 0)
    });
    let mut kinds = run_frames(env, url, load, make, 1).await?;
    Ok(kinds.remove(0))
}

/// One request of a round: its frame, given its connection, slot and sequence number (its
/// `u` must begin `<slot>-`), and the kind its latency is counted under.
pub(crate) type MakeFrame = Arc<dyn Fn(usize, usize, u64) -> (String, usize) + Send + Sync>;

/// Runs one round of `load` against `url` with the requests `make` builds, of `kinds`
/// kinds; the figures of each kind, then of all together.
pub(crate) async fn run_frames(
    env: &Env,
    url: &str,
    load: &Load,
    make: MakeFrame,
    kinds: usize,
) -> Result<Vec<RoundResult>, String> {
    let start = env.clock.now();
    let measure_from = start + load.warmup;
    let stop_at = measure_from + load.duration;
    let new_hist =
        || Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).map_err(|e| e.to_string());
    let hists = Arc::new(
        (0..kinds)
            .map(|_| new_hist().map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?,
    );
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for conn in 0..load.connections {
        let ws = crate::client::open_websocket(env, url, &load.connect, 64 << 20)
            .await
            .map_err(|e| e.to_string())?;
        let (sink, frames) = ws.split();
        let (tx, rx) = mpsc::channel(load.inflight + 1);
        tokio::spawn(write_loop(sink, rx));
        let slots: Arc<Slots> = Arc::new(Mutex::new((0..load.inflight).map(|_| None).collect()));
        tokio::spawn(read_acks(frames, slots.clone()));
        for slot in 0..load.inflight {
            let (tx, slots, hists, errors, env, make) = (
                tx.clone(),
                slots.clone(),
                hists.clone(),
                errors.clone(),
                env.clone(),
                make.clone(),
            );
            tasks.spawn(async move {
                let mut seq = 0u64;
                loop {
                    let sent = env.clock.now();
                    if sent >= stop_at {
                        return;
                    }
                    seq += 1;
                    let (frame, kind) = make(conn, slot, seq);
                    let (done_tx, done_rx) = oneshot::channel();
                    slots.lock()[slot] = Some(done_tx);
                    if tx.send(Message::text(frame)).await.is_err() {
                        return;
                    }
                    let Ok(failed) = done_rx.await else { return };
                    let done = env.clock.now();
                    if sent >= measure_from && done <= stop_at {
                        if failed {
                            errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        let us = done.duration_since(sent).as_micros().max(1) as u64;
                        if let Some(h) = hists.get(kind) {
                            let _ = h.lock().record(us);
                        }
                    }
                }
            });
        }
    }
    while tasks.join_next().await.is_some() {}
    let errors = errors.load(std::sync::atomic::Ordering::Relaxed);
    let mut all = new_hist()?;
    let mut out = Vec::with_capacity(kinds + 1);
    for h in hists.iter() {
        let h = h.lock();
        let _ = all.add(&*h);
        out.push(RoundResult::new(&h, 0, load.duration));
    }
    let mut total = RoundResult::new(&all, errors, load.duration);
    if kinds == 1 {
        out[0].errors = errors;
        return Ok(out);
    }
    total.errors = errors;
    out.push(total);
    Ok(out)
}

/// Reads one connection's replies and wakes the loop waiting in each one's slot (the first
/// part of its `u`) with whether it failed.
async fn read_acks<E>(
    mut frames: impl Stream<Item = Result<Message, E>> + Unpin,
    slots: Arc<Slots>,
) {
    while let Some(Ok(msg)) = frames.next().await {
        let data: &[u8] = match &msg {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
            _ => continue,
        };
        let Ok(ack) = serde_json::from_slice::<Ack<'_>>(data) else {
            continue;
        };
        let slot = ack
            .u
            .split('-')
            .next()
            .and_then(|s| s.parse::<usize>().ok());
        let waiter = slot.and_then(|s| slots.lock().get_mut(s)?.take());
        if let Some(w) = waiter {
            let _ = w.send(ack.error.is_some() || ack.status.as_deref() == Some("error"));
        }
    }
    // The connection ended: wake every waiting loop (their calls are lost).
    slots.lock().iter_mut().for_each(|s| drop(s.take()));
}
