//! Queues end to end, through the built-ins as any client calls them: a queue created on
//! one node and driven from another (forwarded to its owner), receipts and their
//! staleness, nack and visibility, dead letters and redrive, long polls woken by a send,
//! bad input refused with a clear error, an owner out of reach failing fast, and a sqlite
//! owner restarted without losing an acknowledged send.

mod common;

use common::*;
use mpreg::{Client, RunningNode, Settings};
use serde_json::{Value, json};

async fn call(c: &Client, name: &str, req: Value) -> Value {
    c.call(name, json!([req]))
        .await
        .unwrap_or_else(|e| panic!("{name} {req}: {e}"))
}

async fn refused(c: &Client, name: &str, req: Value) -> (i64, String) {
    match c.call(name, json!([req.clone()])).await {
        Ok(v) => panic!("{name} {req} answered {v}"),
        Err(mpreg::client::ClientError::Rpc {
            code,
            message,
            details,
        }) => (code, format!("{message}: {details}")),
        Err(e) => panic!("{name} {req}: {e}"),
    }
}

async fn pair() -> (RunningNode, RunningNode) {
    let a = start_node(
        Settings {
            name: "a".into(),
            ..test_settings()
        },
        vec![],
    )
    .await;
    assert!(a.registered().await);
    let b = start_node(
        Settings {
            name: "b".into(),
            peers: vec![a.url().to_owned()],
            ..test_settings()
        },
        vec![],
    )
    .await;
    assert!(b.registered().await);
    (a, b)
}

fn handles(received: &Value) -> Vec<String> {
    received["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["receipt_handle"].as_str().expect("a receipt").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_on_one_node_is_driven_from_another() {
    let (a, b) = pair().await;
    let on_a = Client::connect(a.url()).await.unwrap();
    let on_b = Client::connect(b.url()).await.unwrap();
    let created = call(
        &on_a,
        "queue_create",
        json!({"queue_name": "orders", "default_visibility_timeout_seconds": 30,
               "dead_letter_max_receives": 2, "deduplication_window_seconds": 300}),
    )
    .await;
    assert_eq!(created["created"], true);
    assert_eq!(created["owner"], a.node_id());
    // The same settings again: the queue as it is; other settings: refused.
    let again = call(
        &on_b,
        "queue_create",
        json!({"queue_name": "orders", "default_visibility_timeout_seconds": 30,
               "dead_letter_max_receives": 2, "deduplication_window_seconds": 300}),
    )
    .await;
    assert_eq!(again["created"], false);
    let (code, msg) = refused(&on_b, "queue_create", json!({"queue_name": "orders"})).await;
    assert_eq!(
        (code, msg.contains("[queue_exists]")),
        (1003, true),
        "{msg}"
    );

    // Sent through b (forwarded to a), with a dedup id repeated.
    let first = call(
        &on_b,
        "queue_send",
        json!({"queue_name": "orders", "message_payload": {"id": 1}, "deduplication_id": "o-1",
               "topic": "orders.new", "headers": {"k": "v"}}),
    )
    .await;
    assert_eq!(first["duplicate"], false);
    let repeat = call(
        &on_b,
        "queue_send",
        json!({"queue_name": "orders", "message_payload": {"id": 1}, "deduplication_id": "o-1"}),
    )
    .await;
    assert_eq!(
        (repeat["duplicate"].clone(), repeat["message_id"].clone()),
        (json!(true), first["message_id"].clone())
    );
    call(
        &on_a,
        "queue_send",
        json!({"queue_name": "orders", "message_payload": "two"}),
    )
    .await;
    let stats = call(&on_b, "queue_stats", json!({"queue_name": "orders"})).await;
    assert_eq!(
        (stats["depth"].clone(), stats["in_flight"].clone()),
        (json!(2), json!(0))
    );

    let got = call(
        &on_b,
        "queue_receive",
        json!({"queue_name": "orders", "max_messages": 10}),
    )
    .await;
    let messages = got["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{got}");
    assert_eq!(messages[0]["message_payload"], json!({"id": 1}));
    assert_eq!(messages[0]["topic"], "orders.new");
    assert_eq!(messages[0]["headers"], json!({"k": "v"}));
    assert_eq!(messages[0]["receive_count"], 1);
    assert_eq!(messages[1]["message_payload"], "two");
    let h = handles(&got);
    let stats = call(&on_a, "queue_stats", json!({"queue_name": "orders"})).await;
    assert_eq!(
        (stats["depth"].clone(), stats["in_flight"].clone()),
        (json!(0), json!(2))
    );

    // Ack the first; acking it again is refused (its receipt is no longer current).
    call(
        &on_b,
        "queue_ack",
        json!({"queue_name": "orders", "receipt_handle": h[0]}),
    )
    .await;
    let (code, msg) = refused(
        &on_b,
        "queue_ack",
        json!({"queue_name": "orders", "receipt_handle": h[0]}),
    )
    .await;
    assert_eq!(
        (code, msg.contains("[stale_receipt]")),
        (1003, true),
        "{msg}"
    );

    // Nack the second: received again (receive 2 of 2), then nacked once more it is dead.
    call(
        &on_a,
        "queue_nack",
        json!({"queue_name": "orders", "receipt_handle": h[1]}),
    )
    .await;
    let got = call(&on_b, "queue_receive", json!({"queue_name": "orders"})).await;
    let h2 = handles(&got);
    assert_eq!(got["messages"][0]["receive_count"], 2);
    // The first delivery's receipt cannot act on the second.
    let (code, _) = refused(
        &on_b,
        "queue_nack",
        json!({"queue_name": "orders", "receipt_handle": h[1]}),
    )
    .await;
    assert_eq!(code, 1003);
    call(
        &on_b,
        "queue_change_visibility",
        json!({"queue_name": "orders", "receipt_handle": h2[0], "visibility_timeout_seconds": 60}),
    )
    .await;
    let nacked = call(
        &on_b,
        "queue_nack",
        json!({"queue_name": "orders", "receipt_handle": h2[0]}),
    )
    .await;
    assert_eq!(nacked["dead_lettered"], true);
    let dlq = call(&on_b, "queue_dlq", json!({"queue_name": "orders"})).await;
    assert_eq!(dlq["count"], 1);
    assert_eq!(dlq["messages"][0]["message_payload"], "two");
    let redriven = call(&on_b, "queue_redrive", json!({"queue_name": "orders"})).await;
    assert_eq!(redriven["redriven"], 1);
    let got = call(&on_b, "queue_receive", json!({"queue_name": "orders"})).await;
    assert_eq!(got["messages"][0]["message_payload"], "two");
    assert_eq!(
        got["messages"][0]["receive_count"], 1,
        "redrive resets receives"
    );

    let stats = call(&on_b, "queue_stats", json!({"queue_name": "orders"})).await;
    assert_eq!(stats["total_messages_sent"], 2);
    assert_eq!(stats["duplicate_sends"], 1);
    assert_eq!(stats["total_messages_acknowledged"], 1);
    assert_eq!(stats["total_messages_dead_lettered"], 1);

    let list = call(&on_b, "queue_list", json!({})).await;
    assert_eq!(list["count"], 1);
    assert_eq!(list["queues"][0]["queue_name"], "orders");
    assert_eq!(list["queues"][0]["dead_letter_max_receives"], 2);

    // Deleted through b: gone from the catalog, and calls to it say so.
    call(&on_b, "queue_delete", json!({"queue_name": "orders"})).await;
    let (code, msg) = refused(
        &on_a,
        "queue_send",
        json!({"queue_name": "orders", "message_payload": 1}),
    )
    .await;
    assert_eq!(
        (code, msg.contains("[queue_not_found]")),
        (1003, true),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_a_full_queue_keeps_what_it_holds() {
    let node = start_node(test_settings(), vec![]).await;
    assert!(node.registered().await);
    let c = Client::connect(node.url()).await.unwrap();
    call(
        &c,
        "queue_create",
        json!({"queue_name": "small", "max_size": 2}),
    )
    .await;
    for (req, says) in [
        (json!({"queue_name": "no such"}), "queue_name"),
        (
            json!({"queue_name": "small", "delay_seconds": 901}),
            "delay_seconds",
        ),
        (
            json!({"queue_name": "small", "delivery_guarantee": "twice"}),
            "delivery_guarantee",
        ),
        (
            json!({"queue_name": "small", "message_payload": "x".repeat(300 * 1024)}),
            "max_message_bytes",
        ),
        (json!({"message_payload": 1}), "queue_name"),
    ] {
        let (code, msg) = refused(&c, "queue_send", req.clone()).await;
        assert_eq!(code, 1007, "{req}: {msg}");
        assert!(msg.contains(says), "{req}: {msg}");
    }
    let (code, msg) = refused(&c, "queue_send", json!({"queue_name": "nosuch"})).await;
    assert_eq!(
        (code, msg.contains("[queue_not_found]")),
        (1003, true),
        "{msg}"
    );
    for i in 0..2 {
        call(
            &c,
            "queue_send",
            json!({"queue_name": "small", "message_payload": i}),
        )
        .await;
    }
    let (code, msg) = refused(
        &c,
        "queue_send",
        json!({"queue_name": "small", "message_payload": 2}),
    )
    .await;
    assert_eq!((code, msg.contains("[queue_full]")), (1003, true), "{msg}");
    let got = call(
        &c,
        "queue_receive",
        json!({"queue_name": "small", "max_messages": 10}),
    )
    .await;
    let payloads: Vec<&Value> = got["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["message_payload"])
        .collect();
    assert_eq!(
        payloads,
        [&json!(0), &json!(1)],
        "the full queue kept the oldest"
    );
    for (req, says) in [
        (
            json!({"queue_name": "small", "max_messages": 11}),
            "max_messages",
        ),
        (
            json!({"queue_name": "small", "wait_seconds": 21}),
            "wait_seconds",
        ),
    ] {
        let (code, msg) = refused(&c, "queue_receive", req.clone()).await;
        assert_eq!(code, 1007, "{req}: {msg}");
        assert!(msg.contains(says), "{req}: {msg}");
    }
    let (code, msg) = refused(
        &c,
        "queue_ack",
        json!({"queue_name": "small", "receipt_handle": "nonsense"}),
    )
    .await;
    assert_eq!(
        (code, msg.contains("receipt_handle")),
        (1007, true),
        "{msg}"
    );
    let (code, msg) = refused(&c, "queue_create", json!({"queue_name": "-bad"})).await;
    assert_eq!(code, 1007, "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_receive_is_woken_by_a_send_on_another_node() {
    let (a, b) = pair().await;
    let on_a = Client::connect(a.url()).await.unwrap();
    let on_b = Client::connect(b.url()).await.unwrap();
    call(&on_a, "queue_create", json!({"queue_name": "jobs"})).await;
    // Nothing there: a short wait answers empty.
    let empty = call(
        &on_b,
        "queue_receive",
        json!({"queue_name": "jobs", "wait_seconds": 0.2}),
    )
    .await;
    assert_eq!(empty["messages"], json!([]));
    // A receive that waits up to 20 s (through b) gets a message sent meanwhile (to a);
    // were it not woken, it would wait the whole 20 s and the test would time out first.
    let waiting = tokio::spawn(async move {
        call(
            &on_b,
            "queue_receive",
            json!({"queue_name": "jobs", "wait_seconds": 20}),
        )
        .await
    });
    // A send before the receive waits is fine too: either way the receive gets it.
    call(
        &on_a,
        "queue_send",
        json!({"queue_name": "jobs", "message_payload": "wake"}),
    )
    .await;
    let got = tokio::time::timeout(std::time::Duration::from_secs(15), waiting)
        .await
        .expect("woken by the send, not by its 20 s deadline")
        .unwrap();
    assert_eq!(got["messages"][0]["message_payload"], "wake");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_whose_owner_is_gone_fails_fast_and_says_why() {
    let (a, b) = pair().await;
    let on_a = Client::connect(a.url()).await.unwrap();
    call(&on_a, "queue_create", json!({"queue_name": "far"})).await;
    drop(on_a);
    let on_b = Client::connect(b.url()).await.unwrap();
    a.shutdown().await;
    // Answered well within a client's patience, not after a long retry.
    let (code, msg) = tokio::time::timeout(
        std::time::Duration::from_secs(15),
        refused(
            &on_b,
            "queue_send",
            json!({"queue_name": "far", "message_payload": 1}),
        ),
    )
    .await
    .expect("fails fast");
    assert_eq!(code, 1017, "{msg}");
    assert!(msg.contains("[queue_owner_down]"), "{msg}");
    assert!(
        msg.contains("answers again when that node is back"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_sqlite_owner_loses_no_acknowledged_send() {
    let dir = common::pki::temp_dir("queue-restart");
    let settings = || sqlite_settings(&dir);
    let node = start_node(settings(), vec![]).await;
    assert!(node.registered().await);
    let c = Client::connect(node.url()).await.unwrap();
    call(
        &c,
        "queue_create",
        json!({"queue_name": "kept", "dead_letter_max_receives": 1,
               "default_visibility_timeout_seconds": 1}),
    )
    .await;
    let mut sent = std::collections::BTreeSet::new();
    for i in 0..50 {
        call(
            &c,
            "queue_send",
            json!({"queue_name": "kept", "message_payload": i, "deduplication_id": format!("d{i}")}),
        )
        .await;
        sent.insert(i);
    }
    // 5 in flight, 2 of them acked (gone for good), 1 nacked to the dead letters.
    let got = call(
        &c,
        "queue_receive",
        json!({"queue_name": "kept", "max_messages": 5}),
    )
    .await;
    let h = handles(&got);
    for (i, handle) in h.iter().enumerate().take(2) {
        call(
            &c,
            "queue_ack",
            json!({"queue_name": "kept", "receipt_handle": handle}),
        )
        .await;
        sent.remove(&got["messages"][i]["message_payload"].as_i64().unwrap());
    }
    call(
        &c,
        "queue_nack",
        json!({"queue_name": "kept", "receipt_handle": h[2]}),
    )
    .await;
    let dead = got["messages"][2]["message_payload"].as_i64().unwrap();
    sent.remove(&dead);
    drop(c);
    node.shutdown().await;

    let node = start_node(settings(), vec![]).await;
    assert!(node.registered().await);
    let c = Client::connect(node.url()).await.unwrap();
    // An earlier run's receipt is stale.
    let (code, msg) = refused(
        &c,
        "queue_ack",
        json!({"queue_name": "kept", "receipt_handle": h[3]}),
    )
    .await;
    assert_eq!(
        (code, msg.contains("[stale_receipt]")),
        (1003, true),
        "{msg}"
    );
    // A dedup id from before the restart is still within its window.
    let repeat = call(
        &c,
        "queue_send",
        json!({"queue_name": "kept", "message_payload": 7, "deduplication_id": "d7"}),
    )
    .await;
    assert_eq!(repeat["duplicate"], true);
    let dlq = call(&c, "queue_dlq", json!({"queue_name": "kept"})).await;
    assert_eq!(
        dlq["messages"][0]["message_payload"], dead,
        "dead letters survive"
    );
    // Everything else comes back: the two that were in flight after their deadline.
    let mut back = std::collections::BTreeSet::new();
    while back.len() < sent.len() {
        let got = call(
            &c,
            "queue_receive",
            json!({"queue_name": "kept", "max_messages": 10, "wait_seconds": 5}),
        )
        .await;
        let messages = got["messages"].as_array().unwrap();
        assert!(
            !messages.is_empty(),
            "still missing {:?}",
            sent.difference(&back)
        );
        for m in messages {
            assert!(
                back.insert(m["message_payload"].as_i64().unwrap()),
                "once: {m}"
            );
            call(
                &c,
                "queue_ack",
                json!({"queue_name": "kept", "receipt_handle": m["receipt_handle"]}),
            )
            .await;
        }
    }
    assert_eq!(back, sent);
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// The Rust client's queue calls: create through one node, send (a dedup id twice, a
/// batch), a consumer `Stream` on the other node acking, nacking and extending its
/// deliveries, stats, dead letters and redrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_drives_a_queue() {
    use futures_util::StreamExt;
    use std::time::Duration;
    let (a, b) = pair().await;
    let on_a = Client::connect(a.url()).await.unwrap();
    let on_b = Client::connect(b.url()).await.unwrap();
    let jobs = on_a.queue("jobs");
    let created = jobs
        .create()
        .visibility_timeout(Duration::from_secs(30))
        .max_receives(2)
        .dedup_window(Duration::from_secs(300))
        .await
        .unwrap();
    assert!(created.created);
    assert_eq!(created.owner, a.node_id());
    let first = jobs.send(json!({"n": 0})).dedup_id("job-0").await.unwrap();
    let again = jobs.send(json!({"n": 0})).dedup_id("job-0").await.unwrap();
    assert!(!first.duplicate && again.duplicate);
    assert_eq!(first.message_id, again.message_id);
    let batch = jobs
        .send_batch((1..=3).map(|n| json!({"n": n})).collect())
        .await
        .unwrap();
    assert_eq!(batch.len(), 3);
    jobs.send(json!({"n": 4}))
        .topic("jobs.urgent")
        .header("trace", "t-1")
        .await
        .unwrap();

    // From the other node: a consumer. n=1 is nacked (and comes back), n=2 extended, the
    // rest acked.
    let mut consumer = on_b
        .queue("jobs")
        .consumer()
        .max(3)
        .wait(Duration::from_secs(2));
    let mut done = Vec::new();
    let mut nacked = false;
    while done.len() < 5 {
        let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("a delivery within 10 s")
            .expect("the stream goes on")
            .expect("a delivery");
        let n = d.payload["n"].as_i64().unwrap();
        if n == 1 && !nacked {
            nacked = true;
            assert!(!d.nack(Duration::ZERO).await.unwrap(), "one receive of two");
            continue;
        }
        if n == 1 {
            assert_eq!(d.receive_count, 2, "redelivered after its nack");
        }
        if n == 2 {
            d.extend(Duration::from_secs(60)).await.unwrap();
        }
        if n == 4 {
            assert_eq!(d.topic.as_deref(), Some("jobs.urgent"));
            assert_eq!(d.headers.get("trace").map(String::as_str), Some("t-1"));
        }
        d.ack().await.unwrap();
        // Acked: its receipt is no longer current.
        let err = d.ack().await.expect_err("a second ack is refused");
        assert!(err.to_string().contains("stale_receipt"), "{err}");
        done.push(n);
    }
    done.sort_unstable();
    assert_eq!(done, [0, 1, 2, 3, 4]);
    let stats = jobs.stats().await.unwrap();
    assert_eq!((stats.depth, stats.in_flight), (0, 0), "{stats:?}");
    assert_eq!(stats.total_messages_acknowledged, 5);
    assert_eq!(stats.total_messages_nacked, 1);
    assert_eq!(stats.duplicate_sends, 1);

    // Two nacks: dead-lettered; listed; redriven; received again.
    jobs.send(json!({"n": 9})).await.unwrap();
    for dead in [false, true] {
        let got = jobs.receive().wait(Duration::from_secs(2)).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].nack(Duration::ZERO).await.unwrap(), dead);
    }
    let dead = jobs.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].payload["n"].as_i64(), dead[0].receive_count),
        (Some(9), 2)
    );
    assert_eq!(jobs.redrive().await.unwrap(), 1);
    let got = jobs.receive().max(10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, json!({"n": 9}));
    // A batch ack: each receipt on its own, a stale one refused alone.
    jobs.send(json!({"n": 10})).await.unwrap();
    let more = jobs.receive().max(10).await.unwrap();
    let stale = "0-1-1";
    let batch = jobs
        .ack_batch(&[&got[0].receipt_handle, &more[0].receipt_handle, stale])
        .await
        .unwrap();
    assert_eq!(batch.acknowledged, 2);
    assert_eq!(batch.failed.len(), 1, "{:?}", batch.failed);
    assert_eq!(batch.failed[0]["receipt_handle"], stale);
    assert_eq!(jobs.stats().await.unwrap().in_flight, 0);
    jobs.delete().await.unwrap();
    let err = jobs.stats().await.expect_err("deleted");
    assert!(err.to_string().contains("queue_not_found"), "{err}");
}

/// The Python example that needs only `websockets` (`examples/queue_websockets.py`):
/// creates a queue on one node, sends and drains it through the other. `scripts/test.sh`
/// installs `websockets`; without it the test fails saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_drives_a_queue_across_two_nodes() {
    let (a, b) = pair().await;
    let lines = python_example("queue_websockets.py", &[a.url(), b.url(), "3"]).await;
    assert_eq!(lines.len(), 4, "{lines:?}");
    let mut orders: Vec<i64> = lines[..3]
        .iter()
        .map(|l| l["order"].as_i64().expect("an order"))
        .collect();
    orders.sort_unstable();
    assert_eq!(orders, [0, 1, 2]);
    assert_eq!(
        lines[3],
        json!({"depth": 0, "in_flight": 0, "total_messages_sent": 3,
               "total_messages_acknowledged": 3, "duplicate_sends": 1})
    );
}

/// A consumer naming itself (`consumer_id`) holds at most `max_in_flight` messages: a
/// receive beyond that answers fewer (or waits until an ack makes room); the Rust
/// consumer's `max_in_flight` asks the same. `max_in_flight` alone, or beyond the node's
/// bound, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_consumer_holds_at_most_its_max_in_flight() {
    use futures_util::StreamExt;
    let (a, b) = pair().await;
    // Created through a: owned there; driven through b (forwarded).
    let on_a = Client::connect(a.url()).await.unwrap();
    call(&on_a, "queue_create", json!({"queue_name": "held"})).await;
    let c = Client::connect(b.url()).await.unwrap();
    for n in 0..6 {
        call(
            &c,
            "queue_send",
            json!({"queue_name": "held", "message_payload": n}),
        )
        .await;
    }
    let w1 = |max: u64, wait: u64| {
        json!({"queue_name": "held", "max_messages": max, "wait_seconds": wait,
               "consumer_id": "w1", "max_in_flight": 2})
    };
    let held = handles(&call(&c, "queue_receive", w1(10, 0)).await);
    assert_eq!(held.len(), 2);
    assert_eq!(
        handles(&call(&c, "queue_receive", w1(10, 0)).await).len(),
        0
    );
    // Another consumer is not bound by w1's holdings.
    let w2 = json!({"queue_name": "held", "max_messages": 1, "consumer_id": "w2",
                    "max_in_flight": 2});
    assert_eq!(handles(&call(&c, "queue_receive", w2).await).len(), 1);
    // w1 waits, full; its ack (through the other node) makes room and wakes it.
    let waiting = {
        let c = c.clone();
        tokio::spawn(async move { call(&c, "queue_receive", w1(1, 10)).await })
    };
    call(
        &on_a,
        "queue_ack",
        json!({"queue_name": "held", "receipt_handle": held[0]}),
    )
    .await;
    assert_eq!(handles(&waiting.await.unwrap()).len(), 1, "woken with one");
    call(
        &c,
        "queue_nack",
        json!({"queue_name": "held", "receipt_handle": held[1]}),
    )
    .await;
    let stats = call(&c, "queue_stats", json!({"queue_name": "held"})).await;
    assert_eq!(
        (&stats["in_flight"], &stats["depth"]),
        (&json!(2), &json!(3)),
        "{stats}"
    );
    // The Rust consumer, one at a time: the next comes once the last is acked.
    let mut consumer = on_a.queue("held").consumer().max(10).max_in_flight(1);
    let mut seen = Vec::new();
    for _ in 0..3 {
        let d = consumer.next().await.unwrap().unwrap();
        seen.push(d.message_id.clone());
        d.ack().await.unwrap();
    }
    seen.dedup();
    assert_eq!(seen.len(), 3);
    let (code, why) = refused(
        &c,
        "queue_receive",
        json!({"queue_name": "held", "max_in_flight": 3}),
    )
    .await;
    assert_eq!(code, 1007, "{why}");
    assert!(why.contains("consumer_id"), "{why}");
    let (code, why) = refused(
        &c,
        "queue_receive",
        json!({"queue_name": "held", "consumer_id": "w3", "max_in_flight": 1_000_000}),
    )
    .await;
    assert_eq!(code, 1007, "{why}");
    assert!(why.contains("queue_max_in_flight"), "{why}");
}

/// A queue subscription (push): the node feeds the connection deliveries, never more than
/// `max_in_flight` unacknowledged; an ack makes room, a nack brings the message back; the
/// original's `pubsub-subscribe` to `mpreg.queue.<queue>` is fed too; the call inside a
/// larger request, or for no queue, is refused; deleting the queue ends the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_is_fed_no_more_than_its_max_in_flight() {
    use futures_util::StreamExt;
    use std::time::Duration;
    let (a, b) = pair().await;
    let on_a = Client::connect(a.url()).await.unwrap();
    let owner = on_a.queue("pushed");
    owner.create().await.unwrap();
    // Subscribed through b: fed from a's queue over the data plane.
    let on_b = Client::connect(b.url()).await.unwrap();
    let mut sub = on_b.queue("pushed").subscribe(2).await.unwrap();
    for n in 0..5 {
        owner.send(json!({"n": n})).await.unwrap();
    }
    let d0 = next(&mut sub).await;
    let d1 = next(&mut sub).await;
    assert_eq!(
        (d0.payload["n"].as_i64(), d1.payload["n"].as_i64()),
        (Some(0), Some(1))
    );
    // Two held: the node feeds no third until one is acked.
    let stats = owner.stats().await.unwrap();
    assert_eq!((stats.in_flight, stats.depth), (2, 3), "{stats:?}");
    d0.ack().await.unwrap();
    let d2 = next(&mut sub).await;
    assert_eq!(d2.payload["n"], 2);
    assert!(!d1.nack(Duration::ZERO).await.unwrap());
    let again = next(&mut sub).await;
    assert_eq!(
        (again.payload["n"].as_i64(), again.receive_count),
        (Some(1), 2)
    );
    for d in [d2, again] {
        d.ack().await.unwrap();
    }
    let (d3, d4) = (next(&mut sub).await, next(&mut sub).await);
    for d in [d3, d4] {
        d.ack().await.unwrap();
    }
    let stats = owner.stats().await.unwrap();
    assert_eq!(
        (
            stats.in_flight,
            stats.depth,
            stats.total_messages_acknowledged
        ),
        (0, 0, 5)
    );
    sub.unsubscribe().await.unwrap();

    // The original's way in: a pub/sub subscription to the queue's topic.
    let mut topic = on_b.subscribe(["mpreg.queue.pushed"]).await.unwrap();
    owner.send(json!({"n": 5})).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(10), topic.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n.topic, "mpreg.queue.pushed");
    assert_eq!(n.payload["message_payload"], json!({"n": 5}));
    owner
        .ack(n.payload["receipt_handle"].as_str().unwrap())
        .await
        .unwrap();
    topic.unsubscribe().await.unwrap();

    // Refused: inside a larger request; for a queue that is not there.
    let dag = on_b
        .request(vec![
            mpreg::RpcCommand::new("s", "queue_subscribe").args(json!([{"queue_name": "pushed"}])),
            mpreg::RpcCommand::new("e", "echo").args(json!(["x"])),
        ])
        .await
        .expect_err("refused");
    assert!(dag.to_string().contains("single command"), "{dag}");
    let none = on_b
        .queue("nothing")
        .subscribe(1)
        .await
        .expect_err("no queue");
    assert!(none.to_string().contains("queue_not_found"), "{none}");

    // Deleting the queue ends its subscriptions.
    let mut sub = on_b.queue("pushed").subscribe(1).await.unwrap();
    owner.delete().await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .expect("the stream ends");
    assert!(ended.is_none());
}

async fn next(s: &mut mpreg::client::QueueSubscription) -> mpreg::client::Delivery {
    use futures_util::StreamExt;
    tokio::time::timeout(std::time::Duration::from_secs(10), s.next())
        .await
        .expect("a delivery within 10 s")
        .expect("the subscription goes on")
}

/// `broadcast` copies a message to every active named consumer and `quorum` to
/// `required_acknowledgments` of them, each copy for its consumer alone and acked on its
/// own; with none (or too few) active the send is refused, never kept for nobody; a
/// broadcast's dedup id makes no second set of copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_and_quorum_copy_to_active_consumers() {
    let (a, b) = pair().await;
    let on_a = Client::connect(a.url()).await.unwrap();
    call(&on_a, "queue_create", json!({"queue_name": "fan"})).await;
    let on_b = Client::connect(b.url()).await.unwrap();
    let send = |guarantee: &str, extra: Value| {
        let mut r = json!({"queue_name": "fan", "message_payload": guarantee,
                           "delivery_guarantee": guarantee});
        if let (Some(r), Value::Object(e)) = (r.as_object_mut(), extra) {
            r.extend(e);
        }
        r
    };
    let (code, why) = refused(&on_b, "queue_send", send("broadcast", json!({}))).await;
    assert_eq!(code, 1003, "{why}");
    assert!(why.contains("no_consumers"), "{why}");
    // Three named consumers ask (and find nothing): they are active.
    let receive = |c: &str| json!({"queue_name": "fan", "consumer_id": c, "max_messages": 10});
    for c in ["c1", "c2", "c3"] {
        assert!(handles(&call(&on_b, "queue_receive", receive(c)).await).is_empty());
    }
    let sent = call(
        &on_b,
        "queue_send",
        send("broadcast", json!({"deduplication_id": "b1"})),
    )
    .await;
    assert_eq!(
        (&sent["copies"], &sent["duplicate"]),
        (&json!(3), &json!(false))
    );
    let again = call(
        &on_b,
        "queue_send",
        send("broadcast", json!({"deduplication_id": "b1"})),
    )
    .await;
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["message_id"], sent["message_id"]);
    // Anyone's receive gets none of them; each consumer its own copy, once.
    let anyone = json!({"queue_name": "fan", "max_messages": 10});
    assert!(handles(&call(&on_b, "queue_receive", anyone.clone()).await).is_empty());
    for c in ["c1", "c2", "c3"] {
        let got = call(&on_b, "queue_receive", receive(c)).await;
        assert_eq!(
            got["messages"][0]["message_payload"], "broadcast",
            "{c}: {got}"
        );
        let h = handles(&got);
        assert_eq!(h.len(), 1, "{c}: {got}");
        let acked = call(
            &on_a,
            "queue_ack",
            json!({"queue_name": "fan", "receipt_handles": h}),
        )
        .await;
        assert_eq!(acked["acknowledged"], 1);
    }
    // Quorum: copies to two of the three; four is more than are active.
    let q = call(
        &on_b,
        "queue_send",
        send("quorum", json!({"required_acknowledgments": 2})),
    )
    .await;
    assert_eq!(q["copies"], 2, "{q}");
    let mut got = 0;
    for c in ["c1", "c2", "c3"] {
        got += handles(&call(&on_b, "queue_receive", receive(c)).await).len();
    }
    assert_eq!(got, 2, "two copies, to two consumers");
    let (code, why) = refused(
        &on_b,
        "queue_send",
        send("quorum", json!({"required_acknowledgments": 4})),
    )
    .await;
    assert_eq!(code, 1003, "{why}");
    assert!(why.contains("quorum_unavailable"), "{why}");
    let stats = call(&on_a, "queue_stats", json!({"queue_name": "fan"})).await;
    assert_eq!(stats["total_messages_sent"], 5, "3 copies, then 2: {stats}");
    // The Rust client asks the same.
    let fan = on_b.queue("fan");
    assert_eq!(
        fan.send(json!(1)).broadcast().await.unwrap().copies,
        Some(3)
    );
    assert_eq!(fan.send(json!(2)).quorum(1).await.unwrap().copies, Some(1));
    assert_eq!(fan.send(json!(3)).await.unwrap().copies, None);
}
