//! Topic pub/sub on one node in the original's messages (`pubsub-subscribe`,
//! `pubsub-publish`, `pubsub-notification`, `pubsub-ack`): the exchange the original's
//! protocol notes record, wildcards, once per subscription, order per publisher, bounds,
//! and subscriptions that die with their connection.
#![allow(clippy::disallowed_types)] // tests reach the node from outside, over real sockets

mod common;

use common::{next_json, raw_connect, raw_roundtrip, start_node, test_settings};
use serde_json::{Value, json};

fn subscribe(u: &str, sid: &str, patterns: &[&str]) -> String {
    let patterns: Vec<Value> = patterns
        .iter()
        .map(|p| json!({"pattern": p, "exact_match": !(p.contains('*') || p.contains('#'))}))
        .collect();
    json!({"role": "pubsub-subscribe", "u": u, "subscription": {"subscription_id": sid,
        "patterns": patterns, "subscriber": "raw", "created_at": 0, "get_backlog": false,
        "backlog_seconds": 0}})
    .to_string()
}

/// Settings of a node that joins `first`'s cluster.
fn joining(first: &mpreg::RunningNode) -> mpreg::Settings {
    mpreg::Settings {
        peers: vec![first.url().to_owned()],
        ..test_settings()
    }
}

fn publish(u: &str, topic: &str, id: &str, payload: Value) -> String {
    json!({"role": "pubsub-publish", "u": u, "message": {"topic": topic, "payload": payload,
        "timestamp": 0, "message_id": id, "publisher": "raw", "headers": {}}})
    .to_string()
}

/// The exchange as the original's protocol notes record it, byte for byte where they
/// give bytes: notifications before the publisher's own ack.
#[tokio::test]
async fn the_originals_exchange() {
    let node = start_node(test_settings(), vec![]).await;
    let mut ws = raw_connect(node.url()).await;
    let ack = raw_roundtrip(&mut ws, &subscribe("sub-1", "s1", &["t.*.x", "m.#"])).await;
    assert_eq!(
        ack,
        json!({"role":"pubsub-ack","operation_id":"sub-1","success":true,"error":null,"u":"ack_sub-1"})
    );
    let first = raw_roundtrip(&mut ws, &publish("pub-1", "t.a.x", "m1", json!({"v": 1}))).await;
    assert_eq!(
        first,
        json!({"role":"pubsub-notification","message":{"topic":"t.a.x","payload":{"v":1},"timestamp":0.0,
            "message_id":"m1","publisher":"raw","headers":{},"routing_path":null,"current_hop":null},
            "subscription_id":"s1","u":"notification_m1_s1"})
    );
    assert_eq!(
        next_json(&mut ws).await,
        json!({"role":"pubsub-ack","operation_id":"pub-1","success":true,"error":null,"u":"ack_pub-1"})
    );
    // `m.#` matches `m`; `t.*.x` does not match `t.a.b.x`: only `m` is heard.
    let ack = raw_roundtrip(&mut ws, &publish("pub-2", "t.a.b.x", "m2", json!(2))).await;
    assert_eq!(ack["operation_id"], "pub-2", "no notification first: {ack}");
    let n = raw_roundtrip(&mut ws, &publish("pub-3", "m", "m3", json!(3))).await;
    assert_eq!(
        (&n["message"]["message_id"], &n["subscription_id"]),
        (&json!("m3"), &json!("s1"))
    );
    assert_eq!(next_json(&mut ws).await["operation_id"], "pub-3");
    let ack = raw_roundtrip(
        &mut ws,
        &json!({"role":"pubsub-unsubscribe","u":"uns-1","subscription_id":"s1"}).to_string(),
    )
    .await;
    assert_eq!(
        ack,
        json!({"role":"pubsub-ack","operation_id":"uns-1","success":true,"error":null,"u":"ack_uns-1"})
    );
    let ack = raw_roundtrip(&mut ws, &publish("pub-4", "m", "m4", json!(4))).await;
    assert_eq!(ack["operation_id"], "pub-4", "unsubscribed: {ack}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_hear_matching_topics_once_each_in_the_publishers_order() {
    let node = start_node(test_settings(), vec![]).await;
    let mut sub = raw_connect(node.url()).await;
    let mut other = raw_connect(node.url()).await;
    let mut publisher = raw_connect(node.url()).await;
    for (ws, sid, patterns) in [
        (&mut sub, "orders", &["orders.*.created", "orders.#"][..]),
        (&mut other, "metrics", &["metrics.#"][..]),
    ] {
        let ack = raw_roundtrip(ws, &subscribe("q", sid, patterns)).await;
        assert_eq!(ack["success"], true, "{ack}");
    }
    let topics = [
        "orders.1.created",
        "metrics",
        "orders.1.b.created",
        "metrics.cpu.load",
        "users.1.login",
        "orders.2.created",
    ];
    for (i, t) in topics.iter().enumerate() {
        let ack = raw_roundtrip(
            &mut publisher,
            &publish(&format!("p{i}"), t, &format!("m{i}"), json!(i)),
        )
        .await;
        assert_eq!(ack["success"], true, "{ack}");
    }
    // One notification per message for a subscription with two matching patterns; in order.
    let mut heard = Vec::new();
    for _ in 0..3 {
        let n = next_json(&mut sub).await;
        assert_eq!(n["subscription_id"], "orders");
        heard.push(n["message"]["topic"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        heard,
        ["orders.1.created", "orders.1.b.created", "orders.2.created"]
    );
    for want in ["metrics", "metrics.cpu.load"] {
        assert_eq!(next_json(&mut other).await["message"]["topic"], want);
    }
    // Nothing else was queued for either: a publish both hear arrives next.
    raw_roundtrip(
        &mut publisher,
        &publish("last", "orders.9.created", "m9", json!(9)),
    )
    .await;
    assert_eq!(next_json(&mut sub).await["message"]["message_id"], "m9");
}

/// A publish to a topic no subscription matches reaches no one: it is counted published,
/// nothing is delivered for it, and each subscriber's next notification is the next
/// matching publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_nobody_matches_reaches_no_one() {
    let node = start_node(
        mpreg::Settings {
            monitoring_enabled: true,
            ..test_settings()
        },
        vec![],
    )
    .await;
    let mut subs = Vec::new();
    for (sid, patterns) in [("a", &["orders.*"][..]), ("b", &["metrics.#", "x"][..])] {
        let mut ws = raw_connect(node.url()).await;
        assert_eq!(
            raw_roundtrip(&mut ws, &subscribe("q", sid, patterns)).await["success"],
            true
        );
        subs.push(ws);
    }
    let mut publisher = raw_connect(node.url()).await;
    for (i, topic) in ["users.1.login", "orders", "orders.1.x", "metricsx", "y"]
        .iter()
        .enumerate()
    {
        let ack = raw_roundtrip(
            &mut publisher,
            &publish(&format!("n{i}"), topic, "none", json!(i)),
        )
        .await;
        assert_eq!(ack["success"], true, "{ack}");
    }
    let text = scrape(node.monitoring_url().unwrap()).await;
    assert_eq!(metric(&text, "mpreg_pubsub_published_total"), 5.0);
    assert_eq!(metric(&text, "mpreg_pubsub_delivered_total"), 0.0, "{text}");
    // Messages to each subscriber keep the publisher's order: had any of those reached
    // one, it would come before these.
    for (topic, id) in [("orders.2", "ma"), ("metrics.cpu", "mb")] {
        raw_roundtrip(&mut publisher, &publish("m", topic, id, json!(0))).await;
    }
    for (ws, id) in subs.iter_mut().zip(["ma", "mb"]) {
        assert_eq!(next_json(ws).await["message"]["message_id"], id);
    }
    let text = scrape(node.monitoring_url().unwrap()).await;
    assert_eq!(metric(&text, "mpreg_pubsub_delivered_total"), 2.0);
}

#[tokio::test]
async fn bad_subscriptions_and_publishes_are_refused_in_the_ack() {
    let node = start_node(test_settings(), vec![]).await;
    let mut ws = raw_connect(node.url()).await;
    let long_topic = vec!["w"; 33].join(".");
    let many: Vec<String> = (0..17).map(|i| format!("p{i}.#")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    for (msg, why) in [
        (
            publish("a", "mpreg.discovery.delta", "m", json!(1)),
            "the node's",
        ),
        (publish("b", &long_topic, "m", json!(1)), "words"),
        (publish("c", "", "m", json!(1)), "1 to 256 bytes"),
        (subscribe("d", "s", &many), "patterns per subscription"),
        (subscribe("e", "", &["a.b"]), "subscription_id"),
    ] {
        let ack = raw_roundtrip(&mut ws, &msg).await;
        assert_eq!(ack["success"], false, "{ack}");
        assert!(ack["error"].as_str().unwrap().contains(why), "{why}: {ack}");
    }
    // A publish missing a required field is a malformed message (1006), as a bad register.
    let reply = raw_roundtrip(
        &mut ws,
        &json!({"role":"pubsub-publish","u":"f","message":{"topic":"a"}}).to_string(),
    )
    .await;
    assert_eq!(common::code_of(&reply), 1006, "{reply}");
    // The connection still serves.
    let ack = raw_roundtrip(&mut ws, &subscribe("g", "ok", &["a.b"])).await;
    assert_eq!(ack["success"], true);
}

/// `GET /metrics` on the admin server at `base` (`http://host:port`): the whole response.
async fn scrape(base: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.strip_prefix("http://").expect("http URL");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body
}

/// The value of the sample `name` in a scrape.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in {text}"))
}

/// `/metrics` counts publishes, deliveries and subscriptions; a closed connection's
/// subscriptions are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_die_with_their_connection() {
    let node = start_node(
        mpreg::Settings {
            monitoring_enabled: true,
            ..test_settings()
        },
        vec![],
    )
    .await;
    let base = node.monitoring_url().unwrap().to_owned();
    let mut sub = raw_connect(node.url()).await;
    assert_eq!(
        raw_roundtrip(&mut sub, &subscribe("q", "s", &["x.#"])).await["success"],
        true
    );
    let mut publisher = raw_connect(node.url()).await;
    raw_roundtrip(&mut publisher, &publish("p", "x.y", "m", json!(1))).await;
    assert_eq!(next_json(&mut sub).await["message"]["topic"], "x.y");
    let text = scrape(&base).await;
    assert_eq!(metric(&text, "mpreg_pubsub_published_total"), 1.0);
    assert_eq!(metric(&text, "mpreg_pubsub_delivered_total"), 1.0);
    assert_eq!(metric(&text, "mpreg_pubsub_subscriptions"), 1.0);
    drop(sub);
    let mut polls = 0;
    while metric(&scrape(&base).await, "mpreg_pubsub_subscriptions") != 0.0 {
        polls += 1;
        assert!(polls < 200, "the closed connection's subscription stayed");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    // A publish now reaches no one, and is still acknowledged (accepted by the node).
    let ack = raw_roundtrip(&mut publisher, &publish("p2", "x.y", "m2", json!(2))).await;
    assert_eq!(ack["success"], true);
}

/// The original's own `MPREGPubSubClient`: run on purpose with
/// `MPREG_ORIGINAL_PYTHON=/tmp/mpreg-original/venv/bin/python cargo test --test pubsub --
/// --ignored original` (a venv where the original MPREG package is installed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the original's Python client (MPREG_ORIGINAL_PYTHON)"]
async fn the_original_pubsub_client_works() {
    let a = start_node(test_settings(), vec![]).await;
    let c = start_node(joining(&a), vec![]).await;
    common::wait_routable(&[&a, &c], "echo", 2).await;
    common::run_original_script("original_pubsub_client.py", &[a.url(), c.url()], &[]).await;
    a.shutdown().await;
    c.shutdown().await;
}

/// A publish on one node reaches the matching subscribers on the others, once each and in
/// the publisher's order, once the subscribers' interest has reached the publisher's node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_reach_matching_subscribers_on_every_node() {
    let a = start_node(test_settings(), vec![]).await;
    let b = start_node(joining(&a), vec![]).await;
    let c = start_node(joining(&a), vec![]).await;
    common::wait_routable(&[&a, &b, &c], "echo", 3).await;
    let mut on_a = raw_connect(a.url()).await;
    let mut on_b = raw_connect(b.url()).await;
    let ack = raw_roundtrip(
        &mut on_a,
        &subscribe("q", "orders", &["orders.*.created", "metrics.#", "probe.#"]),
    )
    .await;
    assert_eq!(ack["success"], true);
    let ack = raw_roundtrip(&mut on_b, &subscribe("q", "users", &["users.#", "probe.#"])).await;
    assert_eq!(ack["success"], true);
    let mut publisher = raw_connect(c.url()).await;
    // Interest travels to c within its summary interval: probe until both have heard one.
    let mut heard = [false, false];
    for i in 0..200 {
        raw_roundtrip(
            &mut publisher,
            &publish(
                &format!("p{i}"),
                &format!("probe.{i}"),
                &format!("probe{i}"),
                json!(i),
            ),
        )
        .await;
        for (k, ws) in [&mut on_a, &mut on_b].into_iter().enumerate() {
            if !heard[k]
                && let Ok(n) =
                    tokio::time::timeout(std::time::Duration::from_millis(20), next_json(ws)).await
            {
                assert_eq!(n["role"], "pubsub-notification");
                heard[k] = true;
            }
        }
        if heard == [true, true] {
            break;
        }
    }
    assert_eq!(heard, [true, true], "interest never reached c");
    for (i, t) in [
        "orders.1.created",
        "orders.1.b.created",
        "metrics.cpu",
        "users.1.login",
        "orders.2.created",
        "probe.end",
    ]
    .iter()
    .enumerate()
    {
        let ack = raw_roundtrip(
            &mut publisher,
            &publish(&format!("s{i}"), t, &format!("m{i}"), json!(i)),
        )
        .await;
        assert_eq!(ack["success"], true);
    }
    // Each subscriber: earlier probes (in order, before these), then its matches, once each.
    for (ws, want) in [
        (
            &mut on_a,
            vec!["orders.1.created", "metrics.cpu", "orders.2.created"],
        ),
        (&mut on_b, vec!["users.1.login"]),
    ] {
        let mut got = Vec::new();
        let mut ids = std::collections::BTreeSet::new();
        loop {
            let n = next_json(ws).await;
            let id = n["message"]["message_id"].as_str().unwrap().to_owned();
            assert!(ids.insert(id.clone()), "{id} heard twice");
            let topic = n["message"]["topic"].as_str().unwrap().to_owned();
            if topic == "probe.end" {
                break;
            }
            if !topic.starts_with("probe.") {
                got.push(topic);
            }
        }
        assert_eq!(got, want);
    }
}

/// The Rust client: `subscribe` gives a `Stream` of notifications, `publish` is acked by
/// the node, a refusal is an error, and `unsubscribe` ends it there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_subscribes_and_publishes() {
    use futures_util::StreamExt;
    let node = start_node(test_settings(), vec![]).await;
    let subscriber = mpreg::Client::connect(node.url()).await.unwrap();
    let publisher = mpreg::Client::connect(node.url()).await.unwrap();
    let mut orders = subscriber.subscribe(["orders.#"]).await.unwrap();
    let mut one = subscriber.subscribe(["orders.1.created"]).await.unwrap();
    publisher
        .publish("orders.1.created", json!({"id": 1}))
        .await
        .unwrap();
    publisher
        .publish("users.1.login", json!(null))
        .await
        .unwrap();
    publisher
        .publish("orders.2.created", json!({"id": 2}))
        .await
        .unwrap();
    let n = orders.next().await.unwrap();
    assert_eq!(
        (n.topic.as_str(), &n.payload),
        ("orders.1.created", &json!({"id": 1}))
    );
    assert_eq!(n.subscription_id, orders.id());
    assert_eq!(orders.next().await.unwrap().topic, "orders.2.created");
    assert_eq!(one.next().await.unwrap().payload, json!({"id": 1}));
    // Calls on the same connection still work beside the subscriptions.
    assert_eq!(
        subscriber.call("echo", json!(["x"])).await.unwrap(),
        json!("x")
    );
    match publisher.publish("mpreg.nope", json!(1)).await {
        Err(mpreg::ClientError::PubSub(why)) => assert!(why.contains("the node's"), "{why}"),
        other => panic!("{other:?}"),
    }
    one.unsubscribe().await.unwrap();
    publisher
        .publish("orders.1.created", json!({"id": 3}))
        .await
        .unwrap();
    assert_eq!(orders.next().await.unwrap().payload, json!({"id": 3}));
    assert_eq!(orders.dropped(), 0);
}

/// The Python example that needs only `websockets` (`examples/pubsub_websockets.py`),
/// subscribing on one node and publishing on another. `scripts/test.sh` installs `websockets`;
/// without it the test fails saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_subscribes_on_one_node_and_publishes_on_another() {
    let a = start_node(test_settings(), vec![]).await;
    let b = start_node(joining(&a), vec![]).await;
    common::wait_routable(&[&a, &b], "echo", 2).await;
    let lines = common::python_example("pubsub_websockets.py", &[a.url(), b.url(), "2"]).await;
    assert_eq!(
        lines,
        [
            json!({"topic": "orders.0.created", "payload": {"n": 0}}),
            json!({"topic": "orders.1.created", "payload": {"n": 1}})
        ]
    );
}

/// A subscriber that stops reading never holds up the publisher or another subscriber:
/// its own queue drops the oldest (`drop_oldest`, counted), or, with `disconnect`, its
/// connection is closed with 1008.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_subscriber_slows_no_one() {
    for policy in [
        mpreg::config::SlowSubscriber::DropOldest,
        mpreg::config::SlowSubscriber::Disconnect,
    ] {
        let node = start_node(
            mpreg::Settings {
                monitoring_enabled: true,
                pubsub_queue_bytes: 256 * 1024,
                pubsub_slow_subscriber: policy,
                ..test_settings()
            },
            vec![],
        )
        .await;
        let mut stuck = raw_connect(node.url()).await;
        assert_eq!(
            raw_roundtrip(&mut stuck, &subscribe("q", "s", &["big.#"])).await["success"],
            true
        );
        let mut healthy = raw_connect(node.url()).await;
        assert_eq!(
            raw_roundtrip(&mut healthy, &subscribe("q", "h", &["big.#"])).await["success"],
            true
        );
        let mut publisher = raw_connect(node.url()).await;
        let chunk = "x".repeat(16 * 1024);
        let total = 1500;
        for i in 0..total {
            let ack = raw_roundtrip(
                &mut publisher,
                &publish(&format!("p{i}"), "big.one", &format!("m{i}"), json!(chunk)),
            )
            .await;
            assert_eq!(ack["success"], true);
            // The healthy subscriber keeps up.
            let n = next_json(&mut healthy).await;
            assert_eq!(n["message"]["message_id"], format!("m{i}"));
        }
        let text = scrape(node.monitoring_url().unwrap()).await;
        let dropped = metric(&text, "mpreg_pubsub_dropped_total");
        assert!(
            dropped > 0.0,
            "{policy:?}: the stuck subscriber's queue overflowed"
        );
        // Now read the stuck one: what is left of its messages, then (disconnect) a close.
        use futures_util::StreamExt;
        let mut heard: Vec<usize> = Vec::new();
        let mut closed = None;
        let last = total - 1;
        while let Some(frame) = stuck.next().await {
            match frame {
                Ok(tokio_tungstenite::tungstenite::Message::Text(t)) => {
                    let n: Value = serde_json::from_str(&t).unwrap();
                    let id = n["message"]["message_id"].as_str().unwrap();
                    heard.push(id.trim_start_matches('m').parse().unwrap());
                }
                Ok(tokio_tungstenite::tungstenite::Message::Close(c)) => {
                    closed = c;
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
            if policy == mpreg::config::SlowSubscriber::DropOldest && heard.last() == Some(&last) {
                break;
            }
        }
        assert!(heard.windows(2).all(|w| w[0] < w[1]), "in order: {heard:?}");
        match policy {
            mpreg::config::SlowSubscriber::DropOldest => {
                // What it hears: the oldest it was written before it stopped reading (in
                // its socket's buffers), a gap, then the newest; so the dropped ones are
                // older than what was kept waiting, and the last publish is never lost.
                assert_eq!(heard.last(), Some(&last), "the newest is kept");
                assert_eq!(
                    heard.len() as f64 + dropped,
                    total as f64,
                    "every message heard or counted dropped"
                );
                let gap = heard.windows(2).position(|w| w[1] > w[0] + 1);
                let gap = gap.expect("some were dropped");
                let newest = &heard[gap + 1..];
                assert!(
                    newest.windows(2).all(|w| w[1] == w[0] + 1),
                    "after the dropped ones, the newest run whole: {heard:?}"
                );
                // As many as half the queue's bytes hold at least (a notification is its
                // 16 KiB payload and some 300 bytes).
                assert!(
                    newest.len() >= 256 * 1024 / (2 * (chunk.len() + 512)),
                    "the queue kept the newest it could hold: {heard:?}"
                );
            }
            mpreg::config::SlowSubscriber::Disconnect => {
                let c = closed.expect("a close frame");
                assert_eq!(u16::from(c.code), 1008, "{c:?}");
                assert!(heard.len() < total, "it did not get everything");
            }
        }
    }
}

/// A ClusterClient's subscription moves to another node when its node goes away, and
/// hears what is published after it has moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_subscription_moves_when_its_node_goes() {
    use futures_util::StreamExt;
    use std::time::Duration;
    let a = start_node(test_settings(), vec![]).await;
    let b = start_node(joining(&a), vec![]).await;
    common::wait_routable(&[&a, &b], "echo", 2).await;
    let cluster = mpreg::ClusterClient::connect(&[a.url(), b.url()])
        .await
        .unwrap();
    let mut sub = cluster.subscribe(["orders.#"]).await.unwrap();
    let publisher = mpreg::Client::connect(b.url()).await.unwrap();
    // Publishes on b until one reaches the subscription (wherever it is now).
    async fn probe(publisher: &mpreg::Client, sub: &mut mpreg::ClusterSubscription, tag: &str) {
        for i in 0..200 {
            publisher
                .publish(&format!("orders.probe.{tag}{i}"), json!(i))
                .await
                .unwrap();
            if tokio::time::timeout(Duration::from_millis(25), sub.next())
                .await
                .is_ok_and(|n| n.is_some())
            {
                return;
            }
        }
        panic!("no probe {tag} arrived");
    }
    probe(&publisher, &mut sub, "a").await;
    a.shutdown().await;
    probe(&publisher, &mut sub, "b").await;
    publisher
        .publish("orders.final", json!("after"))
        .await
        .unwrap();
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("the final message arrives")
            .expect("the stream goes on");
        if n.topic == "orders.final" {
            assert_eq!(n.payload, json!("after"));
            break;
        }
        assert!(n.topic.starts_with("orders.probe."), "{n:?}");
    }
}

fn subscribe_with_backlog(u: &str, sid: &str, patterns: &[&str], seconds: u64) -> String {
    let mut s: Value = serde_json::from_str(&subscribe(u, sid, patterns)).unwrap();
    s["subscription"]["get_backlog"] = json!(true);
    s["subscription"]["backlog_seconds"] = json!(seconds);
    s.to_string()
}

/// A late subscriber asking for a backlog hears what the whole cluster kept for its
/// patterns, then live messages: everything a publisher sent while it subscribed, exactly
/// once and in that publisher's order, whichever side of the cut it fell on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_subscriber_hears_the_clusters_backlog_then_live_once_each() {
    let a = start_node(
        mpreg::Settings {
            monitoring_enabled: true,
            ..test_settings()
        },
        vec![],
    )
    .await;
    let b = start_node(joining(&a), vec![]).await;
    let c = start_node(joining(&a), vec![]).await;
    common::wait_routable(&[&a, &b, &c], "echo", 3).await;
    // Before anyone subscribes: kept on b and c (and a topic nobody will ask for).
    let mut on_b = raw_connect(b.url()).await;
    let mut on_c = raw_connect(c.url()).await;
    for i in 0..5 {
        for (ws, node) in [(&mut on_b, "b"), (&mut on_c, "c")] {
            let id = format!("{node}-early-{i}");
            let topic = format!("orders.{node}.created");
            let ack = raw_roundtrip(ws, &publish(&id, &topic, &id, json!(i))).await;
            assert_eq!(ack["success"], true, "{ack}");
            let ack = raw_roundtrip(
                ws,
                &publish("x", "audit.x", &format!("{id}-audit"), json!(i)),
            )
            .await;
            assert_eq!(ack["success"], true, "{ack}");
        }
    }
    // Another subscriber on a, whose interest c already has: so c sends a's matching
    // messages live all along, and some reach the late subscriber both ways (the backlog
    // and live) unless the cut sorts them out.
    let mut watcher = raw_connect(a.url()).await;
    let ack = raw_roundtrip(&mut watcher, &subscribe("w", "w", &["orders.#"])).await;
    assert_eq!(ack["success"], true);
    let mut probe = raw_connect(c.url()).await;
    for i in 0.. {
        assert!(i < 500, "a's interest never reached c");
        let id = format!("probe-{i}");
        raw_roundtrip(&mut probe, &publish("p", "orders.probe", &id, json!(i))).await;
        if tokio::time::timeout(
            std::time::Duration::from_millis(20),
            next_json(&mut watcher),
        )
        .await
        .is_ok()
        {
            break;
        }
    }
    // A publisher on c that keeps going while the subscription is made on a.
    let c_url = c.url().to_owned();
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let streaming = tokio::spawn(async move {
        let mut ws = raw_connect(&c_url).await;
        let (mut sent, mut stopped) = (0u32, false);
        loop {
            let id = format!("live-{sent}");
            let ack = raw_roundtrip(
                &mut ws,
                &publish(&id, "orders.live.created", &id, json!(sent)),
            )
            .await;
            assert_eq!(ack["success"], true, "{ack}");
            sent += 1;
            stopped |= stop_rx.try_recv().is_ok();
            if stopped && sent >= 50 {
                break;
            }
            if sent >= 900 {
                break; // within the topic's 1000 kept
            }
        }
        ws.close(None).await.ok();
        sent
    });
    // Let some live messages be kept before the subscription.
    let _ = raw_roundtrip(
        &mut probe,
        &publish("p", "orders.probe.created", "kept-probe", json!(0)),
    )
    .await;
    let mut sub = raw_connect(a.url()).await;
    let ack = raw_roundtrip(
        &mut sub,
        &subscribe_with_backlog("s", "late", &["orders.*.created"], 300),
    )
    .await;
    assert_eq!(ack["success"], true, "{ack}");
    let _ = stop_tx.send(());
    let sent = streaming.await.unwrap();
    // The end marker, after everything: published on c, heard live.
    let ack = raw_roundtrip(
        &mut probe,
        &publish("e", "orders.end.created", "end", json!(0)),
    )
    .await;
    assert_eq!(ack["success"], true);
    let mut heard = Vec::new();
    loop {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), next_json(&mut sub))
            .await
            .expect("the end marker arrives");
        assert_eq!(n["role"], "pubsub-notification", "{n}");
        let id = n["message"]["message_id"].as_str().unwrap().to_owned();
        if id == "end" {
            break;
        }
        heard.push(id);
    }
    let unique: std::collections::BTreeSet<&String> = heard.iter().collect();
    assert_eq!(unique.len(), heard.len(), "nothing twice: {heard:?}");
    assert!(
        heard.iter().all(|id| !id.ends_with("-audit")),
        "only matching topics"
    );
    let of = |prefix: &str| -> Vec<&String> {
        heard.iter().filter(|id| id.starts_with(prefix)).collect()
    };
    let want = |node: &str| {
        (0..5)
            .map(|i| format!("{node}-early-{i}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        of("b-early"),
        want("b").iter().collect::<Vec<_>>(),
        "b's backlog, in order"
    );
    assert_eq!(
        of("c-early"),
        want("c").iter().collect::<Vec<_>>(),
        "c's backlog, in order"
    );
    let live: Vec<String> = (0..sent).map(|i| format!("live-{i}")).collect();
    assert_eq!(
        of("live-"),
        live.iter().collect::<Vec<_>>(),
        "every live message once, in order"
    );
    assert!(heard.contains(&"kept-probe".to_owned()));
    // The backlog came first: every early message before the last live one heard.
    let last_early = heard.iter().rposition(|id| id.contains("-early-")).unwrap();
    assert!(last_early < heard.len() - 1, "{heard:?}");
    let text = scrape(a.monitoring_url().unwrap()).await;
    assert!(
        metric(&text, "mpreg_pubsub_backlog_delivered_total") >= 11.0,
        "{text}"
    );
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

/// What a node keeps follows `pubsub_backlog_*`, and a subscription that does not ask,
/// or asks for 0 seconds, hears only live messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_follows_the_settings_and_asking_is_up_to_the_subscriber() {
    let node = start_node(
        mpreg::Settings {
            pubsub_backlog_messages: 3,
            monitoring_enabled: true,
            ..test_settings()
        },
        vec![],
    )
    .await;
    let mut publisher = raw_connect(node.url()).await;
    for i in 0..10 {
        for topic in ["t.a", "t.b"] {
            let id = format!("{topic}-{i}");
            raw_roundtrip(&mut publisher, &publish("u", topic, &id, json!(i))).await;
        }
    }
    let heard = |ws: common::Raw| async move {
        let mut ws = ws;
        let mut got = Vec::new();
        loop {
            let n = next_json(&mut ws).await;
            let id = n["message"]["message_id"].as_str().unwrap().to_owned();
            if id == "marker" {
                return got;
            }
            got.push(id);
        }
    };
    let mut asks = raw_connect(node.url()).await;
    let ack = raw_roundtrip(&mut asks, &subscribe_with_backlog("s", "s", &["t.*"], 60)).await;
    assert_eq!(ack["success"], true);
    let mut zero = raw_connect(node.url()).await;
    raw_roundtrip(&mut zero, &subscribe_with_backlog("s", "s", &["t.*"], 0)).await;
    let mut not = raw_connect(node.url()).await;
    raw_roundtrip(&mut not, &subscribe("s", "s", &["t.*"])).await;
    raw_roundtrip(&mut publisher, &publish("u", "t.c", "marker", json!(0))).await;
    let kept = ["t.a-7", "t.b-7", "t.a-8", "t.b-8", "t.a-9", "t.b-9"];
    assert_eq!(
        heard(asks).await,
        kept,
        "the last 3 of each topic, in order"
    );
    assert!(heard(zero).await.is_empty());
    assert!(heard(not).await.is_empty());
    let text = scrape(node.monitoring_url().unwrap()).await;
    assert_eq!(
        metric(&text, "mpreg_pubsub_backlog_messages"),
        7.0,
        "{text}"
    );
    assert_eq!(metric(&text, "mpreg_pubsub_backlog_evicted_total"), 14.0);
    node.shutdown().await;
}

/// A publisher that does not wait for its acks (as a fast one would): its messages still
/// reach the subscriber in the order sent, every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_publishes_keep_their_order() {
    use futures_util::SinkExt;
    let node = start_node(test_settings(), vec![]).await;
    let mut sub = raw_connect(node.url()).await;
    assert_eq!(
        raw_roundtrip(&mut sub, &subscribe("s", "s", &["p.*"])).await["success"],
        true
    );
    let mut publisher = raw_connect(node.url()).await;
    const N: usize = 3000;
    for i in 0..N {
        let frame = publish(
            &format!("u{i}"),
            &format!("p.{}", i % 7),
            &i.to_string(),
            json!(i),
        );
        publisher
            .feed(tokio_tungstenite::tungstenite::Message::text(frame))
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    for i in 0..N {
        let n = next_json(&mut sub).await;
        assert_eq!(n["message"]["message_id"], i.to_string(), "{n}");
    }
    let mut acks = 0;
    while acks < N {
        assert_eq!(next_json(&mut publisher).await["success"], true);
        acks += 1;
    }
    node.shutdown().await;
}
