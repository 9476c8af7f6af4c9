//! `mpreg queue …`: a queue's life from the shell, through the client's queue calls
//! (`client::queue`). Tables by default, `--json` for scripts; `drain` prints each message
//! as a JSON line and keeps a progress line on stderr.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::Subcommand;
use serde_json::{Value, json};

use super::text::{clip, duration, table, text};
use super::text::{fail, print_json};
use super::{Out, Target};
use crate::client::queue::{Delivery, Queue};

#[derive(Subcommand, Debug)]
pub enum QueueCommand {
    /// Create a queue (the same settings again: the queue as it is)
    Create {
        queue: String,
        /// fifo, priority or delay
        #[arg(long = "type")]
        queue_type: Option<String>,
        /// Most messages it holds (a full queue refuses sends)
        #[arg(long)]
        max_size: Option<u64>,
        /// How long a received message stays invisible to others (e.g. 30s)
        #[arg(long, value_parser = duration)]
        visibility_timeout: Option<Duration>,
        /// Deliveries before a message is dead-lettered (0: never)
        #[arg(long)]
        max_receives: Option<u32>,
        /// How long a deduplication id is remembered (0: no deduplication)
        #[arg(long, value_parser = duration)]
        dedup_window: Option<Duration>,
        /// How long a message lives (0: until acknowledged)
        #[arg(long, value_parser = duration)]
        ttl: Option<Duration>,
        /// Nodes that keep it: 1 (the node asked), 3 or 5 (a Raft group; unset: 3 in a
        /// cluster of three or more nodes)
        #[arg(long)]
        replicas: Option<u32>,
        #[command(flatten)]
        out: Out,
    },
    /// Send a message (JSON, or a string); answers once it is stored
    Send {
        queue: String,
        payload: String,
        #[arg(long)]
        dedup_id: Option<String>,
        /// Not receivable before this (up to 15m)
        #[arg(long, value_parser = duration)]
        delay: Option<Duration>,
        /// Higher first, in a priority queue
        #[arg(long)]
        priority: Option<i64>,
        /// Messages of a group are received in order, one at a time
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        topic: Option<String>,
        /// k=v (repeat the flag)
        #[arg(long = "header")]
        headers: Vec<String>,
        /// At most once: gone once received
        #[arg(long, conflicts_with_all = ["broadcast", "quorum"])]
        fire_and_forget: bool,
        /// A copy to every active named consumer
        #[arg(long, conflicts_with = "quorum")]
        broadcast: bool,
        /// Copies to this many distinct active named consumers
        #[arg(long, value_name = "N")]
        quorum: Option<u32>,
        #[command(flatten)]
        out: Out,
    },
    /// Receive messages; prints them with their receipt handles
    Receive {
        queue: String,
        /// Most messages (1 to 10)
        #[arg(long, default_value_t = 1)]
        max: u64,
        /// How long to wait for the first (up to 20s)
        #[arg(long, value_parser = duration)]
        wait: Option<Duration>,
        /// This receive's visibility timeout
        #[arg(long, value_parser = duration)]
        visibility: Option<Duration>,
        #[command(flatten)]
        out: Out,
    },
    /// Acknowledge deliveries by their receipt handles: done
    Ack {
        queue: String,
        #[arg(required = true)]
        receipts: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Give a delivery back, visible again after --delay
    Nack {
        queue: String,
        receipt: String,
        #[arg(long, value_parser = duration, default_value = "0s")]
        delay: Duration,
        #[command(flatten)]
        target: Target,
    },
    /// Keep a delivery invisible for a while longer (change its visibility timeout)
    Extend {
        queue: String,
        receipt: String,
        /// From now (e.g. 60s)
        #[arg(value_parser = duration)]
        timeout: Duration,
        #[command(flatten)]
        target: Target,
    },
    /// A queue's depth, in-flight and dead-lettered counts and totals
    Stats {
        queue: String,
        #[command(flatten)]
        out: Out,
    },
    /// Every queue in the cluster and its owner
    List {
        #[command(flatten)]
        out: Out,
    },
    /// List a queue's dead-lettered messages
    Dlq {
        queue: String,
        #[arg(long, default_value_t = 100)]
        max: usize,
        #[command(flatten)]
        out: Out,
    },
    /// Move every dead-lettered message back to pending
    Redrive {
        queue: String,
        #[command(flatten)]
        target: Target,
    },
    /// Drop every pending message
    Purge {
        queue: String,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a queue and its messages
    Delete {
        queue: String,
        #[command(flatten)]
        target: Target,
    },
    /// Receive and acknowledge until the queue is empty: each message a JSON line on
    /// stdout, progress on stderr
    Drain {
        queue: String,
        /// Stop after this many
        #[arg(long)]
        count: Option<u64>,
        /// Stop once no message came for this long
        #[arg(long, value_parser = duration, default_value = "1s")]
        idle: Duration,
        #[command(flatten)]
        target: Target,
    },
}

/// Sets field `k` when there is a value for it.
fn put(fields: &mut serde_json::Map<String, Value>, k: &str, v: Option<Value>) {
    if let Some(v) = v {
        fields.insert(k.into(), v);
    }
}

/// A duration as the built-ins take it: seconds.
fn seconds(d: Option<Duration>) -> Option<Value> {
    d.map(|d| json!(d.as_secs_f64()))
}

async fn queue_of(target: &Target, name: &str) -> Result<Queue, i32> {
    match target.client().await {
        Ok(c) => Ok(c.queue(name)),
        Err(e) => Err(fail(&e)),
    }
}

/// Opens the queue, runs `f` on it, prints what it answered (`show` as a table, or the
/// JSON), and returns the exit code.
macro_rules! on_queue {
    ($target:expr, $name:expr, |$q:ident| $call:expr, $json:expr, |$v:ident| $show:expr) => {{
        let $q = match queue_of($target, $name).await {
            Ok(q) => q,
            Err(code) => return code,
        };
        match $call.await {
            Ok($v) => {
                if $json {
                    print_json(&serde_json::to_value(&$v).unwrap_or(Value::Null));
                } else {
                    $show;
                }
                0
            }
            Err(e) => fail(&e),
        }
    }};
}

pub async fn run(cmd: QueueCommand) -> i32 {
    match cmd {
        QueueCommand::Create {
            queue,
            queue_type,
            max_size,
            visibility_timeout,
            max_receives,
            dedup_window,
            ttl,
            replicas,
            out,
        } => {
            let mut fields = serde_json::Map::new();
            let mut set = |k: &str, v: Option<Value>| put(&mut fields, k, v);
            set("queue_type", queue_type.map(Value::from));
            set("max_size", max_size.map(Value::from));
            set(
                "default_visibility_timeout_seconds",
                seconds(visibility_timeout),
            );
            match max_receives {
                Some(0) => set("enable_dead_letter_queue", Some(json!(false))),
                n => set("dead_letter_max_receives", n.map(Value::from)),
            }
            set("deduplication_window_seconds", seconds(dedup_window));
            set("message_ttl_seconds", seconds(ttl));
            set("replicas", replicas.map(Value::from));
            on_queue!(
                &out.target,
                &queue,
                |q| q.call("queue_create", fields),
                out.json,
                |v| {
                    let what = if v["created"] == true {
                        "created"
                    } else {
                        "exists, as asked"
                    };
                    match v["replica_nodes"].as_array().filter(|r| !r.is_empty()) {
                        Some(nodes) => {
                            let nodes: Vec<String> = nodes.iter().map(text).collect();
                            println!(
                                "queue {queue} {what} ({} replicas: {})",
                                nodes.len(),
                                nodes.join(", ")
                            );
                        }
                        None => println!("queue {queue} {what} (owner {})", text(&v["owner"])),
                    }
                }
            )
        }
        QueueCommand::Send {
            queue,
            payload,
            dedup_id,
            delay,
            priority,
            group,
            topic,
            headers,
            fire_and_forget,
            broadcast,
            quorum,
            out,
        } => {
            let mut fields = serde_json::Map::new();
            fields.insert("message_payload".into(), super::arg::parse_arg(&payload));
            let mut set = |k: &str, v: Option<Value>| put(&mut fields, k, v);
            set("deduplication_id", dedup_id.map(Value::from));
            set("delay_seconds", seconds(delay));
            set("priority", priority.map(Value::from));
            set("message_group_id", group.map(Value::from));
            set("topic", topic.map(Value::from));
            let guarantee = if fire_and_forget {
                Some("fire_and_forget")
            } else if broadcast {
                Some("broadcast")
            } else {
                quorum.map(|_| "quorum")
            };
            set("delivery_guarantee", guarantee.map(Value::from));
            set("required_acknowledgments", quorum.map(Value::from));
            let mut h = serde_json::Map::new();
            for kv in &headers {
                match kv.split_once('=') {
                    Some((k, v)) => h.insert(k.to_owned(), json!(v)),
                    None => return fail(&format!("--header {kv:?}: expected k=v")),
                };
            }
            if !h.is_empty() {
                fields.insert("headers".into(), Value::Object(h));
            }
            on_queue!(
                &out.target,
                &queue,
                |q| q.call("queue_send", fields),
                out.json,
                |v| {
                    let dup = if v["duplicate"] == true {
                        " (a duplicate: not stored again)"
                    } else {
                        ""
                    };
                    let copies = v["copies"]
                        .as_u64()
                        .map(|n| format!(" ({n} copies)"))
                        .unwrap_or_default();
                    println!("sent {}{copies}{dup}", text(&v["message_id"]));
                }
            )
        }
        QueueCommand::Receive {
            queue,
            max,
            wait,
            visibility,
            out,
        } => {
            let mut fields = serde_json::Map::new();
            fields.insert("max_messages".into(), json!(max));
            put(&mut fields, "wait_seconds", seconds(wait));
            put(
                &mut fields,
                "visibility_timeout_seconds",
                seconds(visibility),
            );
            on_queue!(
                &out.target,
                &queue,
                |q| q.call("queue_receive", fields),
                out.json,
                |v| {
                    let messages = v["messages"].as_array().cloned().unwrap_or_default();
                    if messages.is_empty() {
                        println!("No messages");
                    } else {
                        let rows = messages.iter().map(|m| {
                            vec![
                                text(&m["message_id"]),
                                text(&m["receive_count"]),
                                text(&m["receipt_handle"]),
                                clip(&m["message_payload"].to_string(), 60),
                            ]
                        });
                        println!(
                            "{}",
                            table(&["message_id", "receives", "receipt", "payload"], rows)
                        );
                    }
                }
            )
        }
        QueueCommand::Ack {
            queue,
            receipts,
            target,
        } => {
            let q = match queue_of(&target, &queue).await {
                Ok(q) => q,
                Err(code) => return code,
            };
            let mut failed = 0;
            for r in &receipts {
                match q.ack(r).await {
                    Ok(()) => println!("acknowledged {}", clip(r, 40)),
                    Err(e) => {
                        failed += 1;
                        eprintln!("mpreg: {}: {e}", clip(r, 40));
                    }
                }
            }
            i32::from(failed > 0)
        }
        QueueCommand::Nack {
            queue,
            receipt,
            delay,
            target,
        } => on_queue!(
            &target,
            &queue,
            |q| q.nack(&receipt, delay),
            false,
            |dead| {
                if dead {
                    println!("given back: it had its receives, so it is dead-lettered");
                } else {
                    println!("given back: visible again in {:.1}s", delay.as_secs_f64());
                }
            }
        ),
        QueueCommand::Extend {
            queue,
            receipt,
            timeout,
            target,
        } => on_queue!(
            &target,
            &queue,
            |q| q.change_visibility(&receipt, timeout),
            false,
            |_v| {
                println!("invisible for {:.1}s from now", timeout.as_secs_f64());
            }
        ),
        QueueCommand::Stats { queue, out } => {
            on_queue!(&out.target, &queue, |q| q.stats(), out.json, |s| {
                let v = serde_json::to_value(&s).unwrap_or(Value::Null);
                let rows = v
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| *k != "queue_name")
                    .map(|(k, v)| vec![k.clone(), text(v)]);
                let title = format!("queue {queue}");
                println!("{}", table(&[title.as_str(), "value"], rows));
            })
        }
        QueueCommand::List { out } => {
            let client = match out.target.client().await {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            match client.call("queue_list", json!([{}])).await {
                Ok(v) if out.json => {
                    print_json(&v);
                    0
                }
                Ok(v) => {
                    let queues = v["queues"].as_array().cloned().unwrap_or_default();
                    if queues.is_empty() {
                        println!("No queues");
                        return 0;
                    }
                    let rows = queues.iter().map(|q| {
                        vec![
                            text(&q["queue_name"]),
                            text(&q["queue_type"]),
                            clip(&text(&q["owner"]), 24),
                            text(&q["default_visibility_timeout_seconds"]),
                            text(&q["dead_letter_max_receives"]),
                            text(&q["deduplication_window_seconds"]),
                        ]
                    });
                    let head = [
                        "queue",
                        "type",
                        "owner",
                        "visibility_s",
                        "max_receives",
                        "dedup_s",
                    ];
                    println!("{}", table(&head, rows));
                    0
                }
                Err(e) => fail(&e),
            }
        }
        QueueCommand::Dlq { queue, max, out } => {
            let mut fields = serde_json::Map::new();
            fields.insert("max_messages".into(), json!(max));
            on_queue!(
                &out.target,
                &queue,
                |q| q.call("queue_dlq", fields),
                out.json,
                |v| {
                    let messages = v["messages"].as_array().cloned().unwrap_or_default();
                    println!("{} dead-lettered", text(&v["count"]));
                    if !messages.is_empty() {
                        let rows = messages.iter().map(|m| {
                            vec![
                                text(&m["message_id"]),
                                text(&m["receive_count"]),
                                clip(&m["message_payload"].to_string(), 60),
                            ]
                        });
                        println!("{}", table(&["message_id", "receives", "payload"], rows));
                    }
                }
            )
        }
        QueueCommand::Redrive { queue, target } => {
            on_queue!(&target, &queue, |q| q.redrive(), false, |n| {
                println!("redrove {n} messages to pending");
            })
        }
        QueueCommand::Purge { queue, target } => {
            on_queue!(&target, &queue, |q| q.purge(), false, |n| {
                println!("purged {n} pending messages");
            })
        }
        QueueCommand::Delete { queue, target } => {
            on_queue!(&target, &queue, |q| q.delete(), false, |_v| {
                println!("deleted queue {queue}");
            })
        }
        QueueCommand::Drain {
            queue,
            count,
            idle,
            target,
        } => match queue_of(&target, &queue).await {
            Ok(q) => drain(q, count, idle).await,
            Err(code) => code,
        },
    }
}

/// Receives and acknowledges until `count`, or until a receive that waited `idle` brought
/// nothing; each message a JSON line on stdout, and a progress line on stderr (rewritten
/// in place on a terminal, a line a second otherwise).
async fn drain(q: Queue, count: Option<u64>, idle: Duration) -> i32 {
    let wait = idle.min(Duration::from_secs(20));
    let env = crate::env::Env::production();
    let started = env.clock.now();
    let tty = std::io::stderr().is_terminal();
    let mut shown = started;
    let mut drained = 0u64;
    let progress = |drained: u64, end: &str| {
        let secs = env
            .clock
            .now()
            .duration_since(started)
            .as_secs_f64()
            .max(1e-3);
        let rate = drained as f64 / secs;
        let line = format!("drained {drained} from {} ({rate:.0}/s)", q.name());
        if tty {
            eprint!("\r{line}{end}");
        } else {
            eprintln!("{line}");
        }
    };
    let mut stdout = std::io::stdout().lock();
    'drain: loop {
        let left = count.map_or(10, |c| c.saturating_sub(drained).min(10));
        if left == 0 {
            break;
        }
        let got: Vec<Delivery> = match q.receive().max(left).wait(wait).await {
            Ok(got) if got.is_empty() => break,
            Ok(got) => got,
            Err(e) => {
                progress(drained, "\n");
                return fail(&e);
            }
        };
        for d in got {
            if let Err(e) = d.ack().await {
                progress(drained, "\n");
                return fail(&e);
            }
            drained += 1;
            let line = json!({"message_id": d.message_id, "receive_count": d.receive_count,
                "topic": d.topic, "headers": d.headers, "message_payload": d.payload});
            if writeln!(stdout, "{line}").is_err() {
                break 'drain;
            }
        }
        if env.clock.now().duration_since(shown) >= Duration::from_secs(1) {
            shown = env.clock.now();
            progress(drained, "");
        }
    }
    progress(drained, "\n");
    0
}
