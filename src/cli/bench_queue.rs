//! `mpreg bench --queue`: a work queue measured as natsbench's `js-work` measures a
//! JetStream work-queue stream, so the two can be set side by side
//! (`scripts/bench_queue.sh` runs both in one go).
//!
//! Each round creates a fresh queue on `--url`. P producer connections × N in flight send
//! 16-byte payloads (the send time, 16 hex digits), each slot awaiting the node's answer
//! (stored, and fsynced when the node runs sqlite) before sending the next; K consumer
//! connections receive batches (long polls) and acknowledge each batch in one call
//! (`receipt_handles`). Counted in the
//! measured window (after the warm-up): sends answered, with send→answer latency; messages
//! received, with send→delivery latency (natsbench's end to end with `--ack async`, whose
//! ack is not waited for); messages acknowledged, with end-to-end latency (send time → ack
//! answered). After the window the
//! producers stop and the consumers drain the queue; every message id a send was answered
//! with is checked off as received: `missing` (acknowledged sends never received) must be 0,
//! `duplicates` (received more than once) are counted.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::json;

use super::bench_round::median;
use crate::client::{Client, ClientError};
use crate::env::Env;

/// How long the consumers may take to drain what the producers left.
const DRAIN_WITHIN: Duration = Duration::from_secs(60);

/// What a round is.
#[derive(Debug, Clone)]
pub struct QueueLoad {
    pub url: String,
    pub producers: usize,
    pub inflight: usize,
    pub consumers: usize,
    /// Messages a receive asks for (1 to 10).
    pub batch: u64,
    pub max_size: u64,
    /// The queue's replicas (`None`: the cluster's default).
    pub replicas: Option<u32>,
    /// Total sends a second (0: as fast as answers allow).
    pub rate: f64,
    pub warmup: Duration,
    pub duration: Duration,
    pub connect: crate::client::ConnectOptions,
}

/// One round's figures.
#[derive(Debug, Clone, Serialize)]
pub struct QueueRound {
    pub sent_per_sec: f64,
    pub acked_per_sec: f64,
    pub send_p50_us: f64,
    pub send_p99_us: f64,
    pub deliver_p50_us: f64,
    pub deliver_p99_us: f64,
    pub e2e_p50_us: f64,
    pub e2e_p99_us: f64,
    /// Messages in the queue when the window ended.
    pub backlog: u64,
    /// Sends answered over the whole round (warm-up and drain included).
    pub sent_total: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub redelivered: u64,
    pub errors: u64,
    pub durable: bool,
}

fn hist() -> Histogram<u64> {
    // Microseconds, 1 µs to 60 s.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static bounds")
}

/// Figures both sides collect, merged over their tasks.
#[derive(Default)]
struct Tally {
    send: Option<Histogram<u64>>,
    /// Send time → the consumer has the message (what a consumer that acks without
    /// waiting, as natsbench's `--ack async`, would call end to end).
    deliver: Option<Histogram<u64>>,
    e2e: Option<Histogram<u64>>,
    sent_in_window: u64,
    acked_in_window: u64,
    /// Message ids answered to sends, and received (with repeats).
    sent_ids: Vec<String>,
    got_ids: Vec<String>,
    redelivered: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn error(&mut self, e: &ClientError) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| e.to_string());
    }
    fn merge(&mut self, other: Tally) {
        for (mine, theirs) in [
            (&mut self.send, other.send),
            (&mut self.deliver, other.deliver),
            (&mut self.e2e, other.e2e),
        ] {
            if let Some(t) = theirs {
                match mine {
                    Some(m) => drop(m.add(&t)),
                    None => *mine = Some(t),
                }
            }
        }
        self.sent_in_window += other.sent_in_window;
        self.acked_in_window += other.acked_in_window;
        self.sent_ids.extend(other.sent_ids);
        self.got_ids.extend(other.got_ids);
        self.redelivered += other.redelivered;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// The round's clock: µs since its base, and the measured window in it.
#[derive(Clone, Copy)]
struct Window {
    base: tokio::time::Instant,
    from_us: u64,
    to_us: u64,
}

impl Window {
    fn us(&self) -> u64 {
        self.base.elapsed().as_micros() as u64
    }
    fn measured(&self, t: u64) -> bool {
        (self.from_us..self.to_us).contains(&t)
    }
}

async fn connect(env: &Env, load: &QueueLoad) -> Result<Client, String> {
    Client::connect_with_options(env, &load.url, &load.connect)
        .await
        .map_err(|e| format!("{}: {e}", load.url))
}

/// One producer slot: sends until `stop`, each send awaited.
async fn produce(
    queue: crate::client::Queue,
    window: Window,
    stop: Arc<AtomicBool>,
    pace: Option<Arc<tokio::sync::Semaphore>>,
) -> Tally {
    let mut t = Tally {
        send: Some(hist()),
        ..Tally::default()
    };
    while !stop.load(Ordering::Relaxed) {
        if let Some(p) = &pace {
            match p.acquire().await {
                Ok(permit) => permit.forget(),
                Err(_) => break,
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        let t0 = window.us();
        match queue.send(json!(format!("{t0:016x}"))).await {
            Ok(sent) => {
                let t1 = window.us();
                if window.measured(t1) {
                    t.sent_in_window += 1;
                    if let Some(h) = &mut t.send {
                        h.saturating_record((t1 - t0).max(1));
                    }
                }
                t.sent_ids.push(sent.message_id);
            }
            Err(e) => t.error(&e),
        }
    }
    t
}

/// One consumer: receives and acknowledges until the producers have stopped and a
/// receive comes back empty (or the drain's deadline passes).
async fn consume(
    queue: crate::client::Queue,
    window: Window,
    batch: u64,
    producing: Arc<AtomicBool>,
    drain_until: Arc<Mutex<Option<tokio::time::Instant>>>,
) -> Tally {
    let mut t = Tally {
        deliver: Some(hist()),
        e2e: Some(hist()),
        ..Tally::default()
    };
    loop {
        let wait = if producing.load(Ordering::Relaxed) {
            Duration::from_secs(1)
        } else {
            Duration::from_millis(200)
        };
        let got = match queue.receive().max(batch).wait(wait).await {
            Ok(got) => {
                let at = window.us();
                if window.measured(at)
                    && let Some(h) = &mut t.deliver
                {
                    for d in &got {
                        if let Some(s) = d
                            .payload
                            .as_str()
                            .and_then(|s| u64::from_str_radix(s, 16).ok())
                        {
                            h.saturating_record(at.saturating_sub(s).max(1));
                        }
                    }
                }
                got
            }
            Err(e) => {
                t.error(&e);
                if queue_closed(&e) {
                    break;
                }
                continue;
            }
        };
        if got.is_empty() && !producing.load(Ordering::Relaxed) {
            break;
        }
        if drain_until
            .lock()
            .is_some_and(|d| tokio::time::Instant::now() > d)
        {
            break;
        }
        if got.is_empty() {
            continue;
        }
        // One batch ack for what one receive brought (SQS's DeleteMessageBatch).
        let receipts: Vec<&str> = got.iter().map(|d| d.receipt_handle.as_str()).collect();
        let acked = queue.ack_batch(&receipts).await;
        let done = window.us();
        let refused: BTreeSet<&str> = match &acked {
            Ok(a) => a
                .failed
                .iter()
                .filter_map(|f| f["receipt_handle"].as_str())
                .collect(),
            Err(e) => {
                t.error(e);
                continue;
            }
        };
        for d in &got {
            if refused.contains(d.receipt_handle.as_str()) {
                t.errors += 1;
                continue;
            }
            if d.receive_count > 1 {
                t.redelivered += 1;
            }
            let sent = d
                .payload
                .as_str()
                .and_then(|s| u64::from_str_radix(s, 16).ok());
            if window.measured(done) {
                t.acked_in_window += 1;
                if let (Some(h), Some(s)) = (&mut t.e2e, sent) {
                    h.saturating_record(done.saturating_sub(s).max(1));
                }
            }
            t.got_ids.push(d.message_id.clone());
        }
    }
    t
}

fn queue_closed(e: &ClientError) -> bool {
    matches!(e, ClientError::Closed)
}

/// Runs one round on a fresh queue `name`.
pub async fn run_round(env: &Env, load: &QueueLoad, name: &str) -> Result<QueueRound, String> {
    let admin = connect(env, load).await?;
    let queue = admin.queue(name);
    let mut create = queue
        .create()
        .visibility_timeout(Duration::from_secs(30))
        .max_receives(0)
        .max_size(load.max_size);
    if let Some(r) = load.replicas {
        create = create.replicas(r);
    }
    create
        .await
        .map_err(|e| format!("queue_create {name}: {e}"))?;
    let base = env.clock.now();
    let from_us = load.warmup.as_micros() as u64;
    let window = Window {
        base,
        from_us,
        to_us: from_us + load.duration.as_micros() as u64,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let producing = Arc::new(AtomicBool::new(true));
    let drain_until = Arc::new(Mutex::new(None));
    // Pacing: a ticker hands out permits at `rate` a second, in 1 ms ticks.
    let pace = (load.rate > 0.0).then(|| Arc::new(tokio::sync::Semaphore::new(0)));
    let ticker = pace.clone().map(|p| {
        let rate = load.rate;
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(1));
            let mut owed = 0.0f64;
            while !stop.load(Ordering::Relaxed) {
                every.tick().await;
                owed += rate / 1000.0;
                let n = owed.floor();
                owed -= n;
                p.add_permits(n as usize);
            }
            p.close();
        })
    });
    let mut producers = Vec::new();
    for _ in 0..load.producers {
        let c = connect(env, load).await?;
        for _ in 0..load.inflight {
            producers.push(tokio::spawn(produce(
                c.queue(name),
                window,
                stop.clone(),
                pace.clone(),
            )));
        }
    }
    let mut consumers = Vec::new();
    for _ in 0..load.consumers {
        let c = connect(env, load).await?;
        consumers.push(tokio::spawn(consume(
            c.queue(name),
            window,
            load.batch,
            producing.clone(),
            drain_until.clone(),
        )));
    }
    tokio::time::sleep_until(base + load.warmup + load.duration).await;
    stop.store(true, Ordering::Relaxed);
    let backlog = queue.stats().await.map(|s| s.depth).unwrap_or(0);
    let mut tally = Tally::default();
    for p in producers {
        tally.merge(p.await.map_err(|e| e.to_string())?);
    }
    if let Some(t) = ticker {
        drop(t.await);
    }
    producing.store(false, Ordering::Relaxed);
    *drain_until.lock() = Some(tokio::time::Instant::now() + DRAIN_WITHIN);
    for c in consumers {
        tally.merge(c.await.map_err(|e| e.to_string())?);
    }
    let stats = queue.stats().await.map_err(|e| e.to_string())?;
    drop(queue.delete().await);
    let got: BTreeSet<&str> = tally.got_ids.iter().map(String::as_str).collect();
    // Without consumers nothing was received: there is nothing to check off.
    let missing = if load.consumers == 0 {
        0
    } else {
        tally
            .sent_ids
            .iter()
            .filter(|id| !got.contains(id.as_str()))
            .count() as u64
    };
    let duplicates = (tally.got_ids.len() - got.len()) as u64;
    if let Some(e) = &tally.first_error {
        eprintln!("mpreg bench: {} calls failed, the first: {e}", tally.errors);
    }
    let q = |h: &Option<Histogram<u64>>, p: f64| {
        h.as_ref()
            .filter(|h| !h.is_empty())
            .map_or(0.0, |h| h.value_at_quantile(p) as f64)
    };
    let secs = load.duration.as_secs_f64();
    Ok(QueueRound {
        sent_per_sec: tally.sent_in_window as f64 / secs,
        acked_per_sec: tally.acked_in_window as f64 / secs,
        send_p50_us: q(&tally.send, 0.5),
        send_p99_us: q(&tally.send, 0.99),
        deliver_p50_us: q(&tally.deliver, 0.5),
        deliver_p99_us: q(&tally.deliver, 0.99),
        e2e_p50_us: q(&tally.e2e, 0.5),
        e2e_p99_us: q(&tally.e2e, 0.99),
        backlog,
        sent_total: tally.sent_ids.len() as u64,
        missing,
        duplicates,
        redelivered: tally.redelivered,
        errors: tally.errors,
        durable: stats.durable,
    })
}

/// Medians over rounds; counts summed.
#[derive(Debug, Clone, Serialize)]
pub struct QueueSummary {
    pub sent_per_sec: f64,
    pub acked_per_sec: f64,
    pub send_p50_us: f64,
    pub send_p99_us: f64,
    pub deliver_p50_us: f64,
    pub deliver_p99_us: f64,
    pub e2e_p50_us: f64,
    pub e2e_p99_us: f64,
    pub backlog: f64,
    pub missing: u64,
    pub duplicates: u64,
    pub errors: u64,
    pub durable: bool,
    pub rounds: Vec<QueueRound>,
}

impl QueueSummary {
    pub fn new(rounds: Vec<QueueRound>) -> QueueSummary {
        let med = |f: &dyn Fn(&QueueRound) -> f64| median(rounds.iter().map(f).collect());
        QueueSummary {
            sent_per_sec: med(&|r| r.sent_per_sec),
            acked_per_sec: med(&|r| r.acked_per_sec),
            send_p50_us: med(&|r| r.send_p50_us),
            send_p99_us: med(&|r| r.send_p99_us),
            deliver_p50_us: med(&|r| r.deliver_p50_us),
            deliver_p99_us: med(&|r| r.deliver_p99_us),
            e2e_p50_us: med(&|r| r.e2e_p50_us),
            e2e_p99_us: med(&|r| r.e2e_p99_us),
            backlog: med(&|r| r.backlog as f64),
            missing: rounds.iter().map(|r| r.missing).sum(),
            duplicates: rounds.iter().map(|r| r.duplicates).sum(),
            errors: rounds.iter().map(|r| r.errors).sum(),
            durable: rounds.iter().all(|r| r.durable),
            rounds,
        }
    }
}

pub fn describe(round: usize, rounds: usize, r: &QueueRound) -> String {
    format!(
        "round {round}/{rounds} mpreg-queue sent {:>8.0}/s (answered p50 {:.0} µs p99 {:.0} µs)  acked {:>8.0}/s (delivered p50 {:.0} µs p99 {:.0} µs; acked, end to end, p50 {:.0} µs p99 {:.0} µs)  backlog {}  {} sent, missing {}, duplicates {}, redelivered {}, errors {}",
        r.sent_per_sec,
        r.send_p50_us,
        r.send_p99_us,
        r.acked_per_sec,
        r.deliver_p50_us,
        r.deliver_p99_us,
        r.e2e_p50_us,
        r.e2e_p99_us,
        r.backlog,
        r.sent_total,
        r.missing,
        r.duplicates,
        r.redelivered,
        r.errors
    )
}
