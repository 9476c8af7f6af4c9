//! Tokens, roles and TLS over real sockets: every refusal path, and what is let through.
#![allow(clippy::disallowed_types)] // tests reach the node from outside, over real sockets

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::pki::{Ca, jwt_secret, temp_dir, token};
use common::{code_of, start_node, test_settings};
use futures_util::{SinkExt, StreamExt};
use mpreg::client::{ConnectOptions, open_websocket};
use mpreg::tls::ClientTlsFiles;
use mpreg::{Client, ClientError, Env, Function, RunningNode, Settings};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "the jwt secret of these tests, 32+ bytes";
const CLUSTER_SECRET: &str = "the cluster secret of these tests";

/// Settings of a node that requires tokens signed with `secret_file` (a cluster secret
/// beside it: a node refuses tokens without one).
fn authed(secret_file: &std::path::Path) -> Settings {
    let cluster = secret_file.with_file_name("cluster.secret");
    std::fs::write(&cluster, CLUSTER_SECRET).unwrap();
    Settings {
        auth_required: true,
        jwt_secret_file: Some(secret_file.to_owned()),
        cluster_secret_file: Some(cluster),
        ..test_settings()
    }
}

fn with_token(t: &str) -> ConnectOptions {
    ConnectOptions::new().token(t)
}

async fn connect(url: &str, options: &ConnectOptions) -> Result<Client, ClientError> {
    Client::connect_with_options(&Env::production(), url, options).await
}

/// The status and reason of a refused upgrade (panics on anything else).
fn refusal(r: Result<Client, ClientError>) -> (u16, String) {
    match r {
        Err(ClientError::Refused { status, reason, .. }) => (status, reason),
        Err(other) => panic!("not refused at the upgrade: {other}"),
        Ok(_) => panic!("connected"),
    }
}

fn rpc_code(r: Result<Value, ClientError>) -> Option<i64> {
    match r {
        Err(ClientError::Rpc { code, .. }) => Some(code),
        Err(other) => panic!("not an RPC error: {other}"),
        Ok(v) => panic!("succeeded: {v}"),
    }
}

#[tokio::test]
async fn an_upgrade_without_a_valid_token_is_refused_with_401() {
    let dir = temp_dir("auth-401");
    let secret = jwt_secret(&dir, SECRET);
    let other = jwt_secret(
        &temp_dir("auth-401-other"),
        "another secret, as long as the first",
    );
    let node = start_node(
        Settings {
            allowed_clients: ["svc-a".to_owned(), "svc-b".to_owned()].into(),
            ..authed(&secret)
        },
        vec![],
    )
    .await;
    let url = node.url().to_owned();
    // (what is presented) -> (status, a word of the reason)
    let cases = [
        (ConnectOptions::new(), "no token"),
        (
            with_token(&token(&other, "svc-a", &[], 60)),
            "bad signature",
        ),
        (with_token(&token(&secret, "svc-a", &[], -10)), "expired"),
        (
            with_token(&token(&secret, "svc-z", &[], 60)),
            "not among allowed_clients",
        ),
        (with_token("not-a-jwt"), "not a JWT"),
        (with_token(&"x".repeat(10_000)), "over the limit"),
    ];
    for (options, why) in cases {
        let (status, reason) = refusal(connect(&url, &options).await);
        assert_eq!(status, 401, "{why}: {reason}");
        assert!(reason.contains(why), "expected `{why}` in `{reason}`");
    }
    // The token in the URL, as the original's clients send it, and in the header.
    let good = token(&secret, "svc-a", &["caller"], 60);
    let by_query = connect(&format!("{url}/?token={good}"), &ConnectOptions::new())
        .await
        .expect("a token in the query is taken");
    assert_eq!(
        by_query.call("echo", json!(["q"])).await.unwrap(),
        json!("q")
    );
    let by_header = connect(&url, &with_token(&good)).await.unwrap();
    assert_eq!(
        by_header.call("echo", json!(["h"])).await.unwrap(),
        json!("h")
    );
    // A token that expires beyond any timer (its signer's choice) is served, untimed.
    let forever = connect(&url, &with_token(&token(&secret, "svc-b", &[], i64::MAX)))
        .await
        .unwrap();
    assert_eq!(
        forever.call("echo", json!(["f"])).await.unwrap(),
        json!("f")
    );
    // A plain HTTP look at the refusal: a 401 with a reason, before any WebSocket.
    let raw = tokio_tungstenite::connect_async(url.as_str()).await;
    match raw {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 401);
            assert_eq!(
                resp.headers().get("www-authenticate").map(|v| v.as_bytes()),
                Some(&b"Bearer"[..])
            );
        }
        other => panic!("expected an HTTP 401, got {other:?}"),
    }
    node.shutdown().await;
}

#[tokio::test]
async fn tokens_without_a_cluster_secret_are_refused_at_start() {
    let dir = temp_dir("auth-nosecret");
    let settings = Settings {
        cluster_secret_file: None,
        ..authed(&jwt_secret(&dir, SECRET))
    };
    let e = mpreg::Node::builder(settings)
        .start()
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains("cluster secret"), "{e}");
}

#[tokio::test]
async fn without_auth_required_nothing_changes() {
    let node = start_node(
        test_settings(),
        vec![
            Function::new("payroll", || async { Ok::<_, String>("paid") }).requires_role("finance"),
        ],
    )
    .await;
    let client = Client::connect(node.url()).await.unwrap();
    assert_eq!(
        client.call("payroll", json!([])).await.unwrap(),
        json!("paid")
    );
    let _ = client.call("cluster_map", json!([])).await.unwrap();
    node.shutdown().await;
}

/// Polls `catalog_query` as `client` until `fun` is offered (a Raft commit away).
async fn wait_offered(client: &Client, fun: &str) {
    for _ in 0..400 {
        let found = client
            .call("catalog_query", json!([{"name": fun}]))
            .await
            .unwrap();
        if found["functions"].as_array().is_some_and(|f| !f.is_empty()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{fun} never reached the catalog");
}

fn cluster_secret(dir: &std::path::Path) -> PathBuf {
    let p = dir.join("cluster.secret");
    std::fs::write(&p, CLUSTER_SECRET).unwrap();
    p
}

#[tokio::test]
async fn roles_are_checked_on_the_node_that_runs_the_function() {
    let dir = temp_dir("auth-roles");
    let secret = jwt_secret(&dir, SECRET);
    let cluster = cluster_secret(&dir);
    let settings = || Settings {
        cluster_secret_file: Some(cluster.clone()),
        introspection_role: Some("admin".into()),
        ..authed(&secret)
    };
    let a = start_node(
        settings(),
        vec![
            Function::new("payroll", || async { Ok::<_, String>("paid") })
                .requires_role("finance")
                .requires_role("admin"),
            Function::new("weather", || async { Ok::<_, String>("sunny") }),
        ],
    )
    .await;
    let b = start_node(
        Settings {
            peers: vec![a.url().to_owned()],
            ..settings()
        },
        vec![],
    )
    .await;
    let admin = connect(b.url(), &with_token(&token(&secret, "ops", &["admin"], 60)))
        .await
        .unwrap();
    wait_offered(&admin, "payroll").await;
    let caller = connect(
        b.url(),
        &with_token(&token(&secret, "svc", &["caller"], 60)),
    )
    .await
    .unwrap();
    let finance = connect(
        b.url(),
        &with_token(&token(&secret, "acct", &["finance"], 60)),
    )
    .await
    .unwrap();
    // Forwarded from b to a: a checks the identity b carried.
    assert_eq!(
        rpc_code(caller.call("payroll", json!([])).await),
        Some(1021)
    );
    assert_eq!(
        finance.call("payroll", json!([])).await.unwrap(),
        json!("paid")
    );
    assert_eq!(
        admin.call("payroll", json!([])).await.unwrap(),
        json!("paid")
    );
    assert_eq!(
        caller.call("weather", json!([])).await.unwrap(),
        json!("sunny")
    );
    // On a itself (a local call).
    let local = connect(
        a.url(),
        &with_token(&token(&secret, "svc", &["caller"], 60)),
    )
    .await
    .unwrap();
    let refused = local.call("payroll", json!([])).await;
    match &refused {
        Err(ClientError::Rpc { details, .. }) => {
            let why = details.as_str().unwrap_or_default();
            assert!(
                why.contains("client `svc`") && why.contains("admin, finance"),
                "{why}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rpc_code(refused), Some(1021));
    // The cluster's layout is for `introspection_role` only.
    for fun in [
        "cluster_map",
        "list_peers",
        "catalog_query",
        "cluster_map_v2",
        "rpc_describe",
        "rpc_report",
        "catalog_watch",
    ] {
        assert_eq!(
            rpc_code(caller.call(fun, json!([])).await),
            Some(1021),
            "{fun}"
        );
    }
    assert!(admin.call("cluster_map", json!([])).await.is_ok());
    // rpc_describe asks a for its function's parameters: the question carries the role.
    let described = admin
        .call("rpc_describe", json!([{"function_name": "payroll"}]))
        .await
        .unwrap();
    assert_eq!(described["errors"], json!([]), "{described}");
    assert_eq!(
        described["items"][0]["spec"]["parameters"],
        json!([]),
        "{described}"
    );
    // So are the catalog's topics.
    let subscribe = json!({"role": "pubsub-subscribe", "u": "q1", "subscription": {
        "subscription_id": "s1", "patterns": [{"pattern": "mpreg.discovery.delta", "exact_match": true}]}})
    .to_string();
    for (token, allowed) in [
        (token(&secret, "svc", &["caller"], 60), false),
        (token(&secret, "ops", &["admin"], 60), true),
    ] {
        let mut ws = raw(b.url(), &token).await;
        ws.send(Message::text(subscribe.clone())).await.unwrap();
        let ack = next_json(&mut ws).await;
        assert_eq!(ack["success"], allowed, "{ack}");
    }
    b.shutdown().await;
    a.shutdown().await;
}

/// A raw WebSocket to `url` presenting `token`.
async fn raw(url: &str, token: &str) -> tokio_tungstenite::WebSocketStream<mpreg::env::BoxStream> {
    open_websocket(&Env::production(), url, &with_token(token), 1 << 20)
        .await
        .expect("upgrade")
}

async fn next_json<S>(ws: &mut S) -> Value
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match ws.next().await.expect("open").expect("frame") {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn registering_a_worker_needs_the_worker_role_and_its_roles_guard_its_functions() {
    let dir = temp_dir("auth-worker");
    let secret = jwt_secret(&dir, SECRET);
    let node = start_node(authed(&secret), vec![]).await;
    let register = json!({"role": "register", "u": "reg", "functions": [
        {"name": "vault", "roles": ["gold"]}
    ]})
    .to_string();
    let mut intruder = raw(node.url(), &token(&secret, "svc", &["caller"], 60)).await;
    intruder
        .send(Message::text(register.clone()))
        .await
        .unwrap();
    let reply = next_json(&mut intruder).await;
    assert_eq!(code_of(&reply), 1021, "{reply}");
    assert!(
        reply["error"]["details"]
            .as_str()
            .unwrap()
            .contains("`worker` role")
    );
    let mut worker = raw(node.url(), &token(&secret, "w", &["worker"], 60)).await;
    worker.send(Message::text(register)).await.unwrap();
    let reply = next_json(&mut worker).await;
    assert!(reply["error"].is_null(), "{reply}");
    // Without `gold` the node refuses the call; the worker never sees it.
    let plain = connect(
        node.url(),
        &with_token(&token(&secret, "svc", &["caller"], 60)),
    )
    .await
    .unwrap();
    assert_eq!(rpc_code(plain.call("vault", json!([1])).await), Some(1021));
    let gold = connect(
        node.url(),
        &with_token(&token(&secret, "vip", &["gold"], 60)),
    )
    .await
    .unwrap();
    let call = tokio::spawn(async move { gold.call("vault", json!([2])).await });
    let asked = next_json(&mut worker).await;
    assert_eq!(asked["role"], "call");
    assert_eq!(
        asked["args"],
        json!([2]),
        "the refused call never reached the worker"
    );
    let answer = json!({"role": "call-result", "u": asked["u"], "r": "opened"});
    worker
        .send(Message::text(answer.to_string()))
        .await
        .unwrap();
    assert_eq!(call.await.unwrap().unwrap(), json!("opened"));
    node.shutdown().await;
}

/// Issue 23, point 3: roles travel with the function. `payroll` needs `finance` on node a;
/// a worker on node b, holding only the `worker` role, registers `payroll` at a higher
/// version without roles, to be routed payroll's callers (the highest version wins). Its
/// registration is refused with 1006, before and without reaching the catalog; callers
/// still reach a's payroll; declaring the roles, the same registration is accepted.
#[tokio::test]
async fn a_protected_name_cannot_be_taken_over_without_its_roles() {
    let dir = temp_dir("auth-takeover");
    let secret = jwt_secret(&dir, SECRET);
    let cluster = cluster_secret(&dir);
    let settings = || Settings {
        cluster_secret_file: Some(cluster.clone()),
        ..authed(&secret)
    };
    let a = start_node(
        settings(),
        vec![
            Function::new("payroll", || async { Ok::<_, String>("paid") }).requires_role("finance"),
        ],
    )
    .await;
    let b = start_node(
        Settings {
            peers: vec![a.url().to_owned()],
            ..settings()
        },
        vec![],
    )
    .await;
    assert!(b.registered().await);
    let finance = connect(
        b.url(),
        &with_token(&token(&secret, "acct", &["finance"], 60)),
    )
    .await
    .unwrap();
    wait_offered(&finance, "payroll").await;
    let mut worker = raw(b.url(), &token(&secret, "w", &["worker"], 60)).await;
    let takeover = json!({"role": "register", "u": "take", "functions": [
        {"name": "payroll", "version": "9.0.0"}
    ]});
    worker
        .send(Message::text(takeover.to_string()))
        .await
        .unwrap();
    let reply = next_json(&mut worker).await;
    assert_eq!(code_of(&reply), 1006, "{reply}");
    let details = reply["error"]["details"].as_str().unwrap();
    assert!(
        details.contains("payroll") && details.contains("finance"),
        "{details}"
    );
    // Nothing changed: the catalog has a's payroll only, and callers reach it.
    let versions: Vec<String> = b.catalog().read(|s| {
        s.catalog
            .functions()
            .filter(|(_, f)| f.name == "payroll")
            .map(|(_, f)| f.version.to_string())
            .collect()
    });
    assert_eq!(versions, ["1.0.0"]);
    assert_eq!(
        finance.call("payroll", json!([])).await.unwrap(),
        json!("paid")
    );
    // The worker also may not register it on b under another function's roles; with the
    // roles the name requires, it may.
    let with_roles = json!({"role": "register", "u": "ok", "functions": [
        {"name": "payroll", "version": "9.0.0", "roles": ["finance", "audit"]}
    ]});
    worker
        .send(Message::text(with_roles.to_string()))
        .await
        .unwrap();
    let reply = next_json(&mut worker).await;
    assert!(reply["error"].is_null(), "{reply}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_connection_closes_with_4401_when_its_token_expires() {
    let dir = temp_dir("auth-expiry");
    let secret = jwt_secret(&dir, SECRET);
    let node = start_node(authed(&secret), vec![]).await;
    let mut ws = raw(node.url(), &token(&secret, "svc", &[], 2)).await;
    let echo =
        json!({"role": "rpc", "u": "1", "cmds": [{"name": "e", "fun": "echo", "args": [1]}]});
    ws.send(Message::text(echo.to_string())).await.unwrap();
    assert_eq!(next_json(&mut ws).await["r"]["e"], json!(1));
    // Nothing more is sent: the node ends the connection at expiry (within 2 s; the
    // deadline only stops a broken node from hanging the test).
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("no close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("closed at expiry")
    .expect("a close frame");
    assert_eq!(u16::from(ended.code), 4401);
    assert_eq!(ended.reason.as_str(), "token expired");
    node.shutdown().await;
}

/// `s` serving TLS with `leaf`.
fn with_tls(s: Settings, leaf: &common::pki::Leaf) -> Settings {
    Settings {
        tls_cert_file: Some(leaf.cert.clone()),
        tls_key_file: Some(leaf.key.clone()),
        ..s
    }
}

fn tls_settings(leaf: &common::pki::Leaf) -> Settings {
    with_tls(test_settings(), leaf)
}

fn trusting(ca: &std::path::Path) -> ConnectOptions {
    ConnectOptions::new()
        .tls(&ClientTlsFiles {
            ca: Some(ca.to_owned()),
            ..ClientTlsFiles::default()
        })
        .unwrap()
}

#[tokio::test]
async fn tls_serves_clients_that_trust_its_ca_and_refuses_the_rest() {
    let ca = Ca::new("tls");
    let stranger = Ca::new("tls-stranger");
    let secret = jwt_secret(&ca.dir, SECRET);
    let node = start_node(with_tls(authed(&secret), &ca.leaf("node")), vec![]).await;
    let url = node.url().to_owned();
    assert!(url.starts_with("wss://"), "{url}");
    let t = token(&secret, "svc", &[], 60);
    let client = connect(&url, &trusting(&ca.cert).token(t.clone()))
        .await
        .unwrap();
    assert_eq!(
        client.call("echo", json!(["over tls"])).await.unwrap(),
        json!("over tls")
    );
    match connect(&url, &trusting(&stranger.cert).token(t.clone())).await {
        Err(ClientError::Tls(why)) => assert!(why.contains("certificate"), "{why}"),
        other => panic!(
            "a client trusting another CA connected: {:?}",
            other.map(|_| ())
        ),
    }
    let plain = url.replacen("wss://", "ws://", 1);
    assert!(
        connect(&plain, &with_token(&t)).await.is_err(),
        "plain WebSocket on a TLS port"
    );
    // The token through the query over TLS, as the original's clients send it.
    let q = connect(&format!("{url}/?token={t}"), &trusting(&ca.cert))
        .await
        .unwrap();
    assert_eq!(q.call("echo", json!([1])).await.unwrap(), json!(1));
    node.shutdown().await;
}

#[tokio::test]
async fn mtls_needs_a_client_certificate_of_the_client_ca() {
    let ca = Ca::new("mtls");
    let stranger = Ca::new("mtls-stranger");
    let node = start_node(
        Settings {
            tls_client_ca_file: Some(ca.cert.clone()),
            ..tls_settings(&ca.leaf("node"))
        },
        vec![],
    )
    .await;
    let url = node.url().to_owned();
    let with_cert = |leaf: Option<&common::pki::Leaf>| {
        ConnectOptions::new()
            .tls(&ClientTlsFiles {
                ca: Some(ca.cert.clone()),
                cert: leaf.map(|l| l.cert.clone()),
                key: leaf.map(|l| l.key.clone()),
            })
            .unwrap()
    };
    assert!(
        connect(&url, &with_cert(None)).await.is_err(),
        "no certificate"
    );
    let foreign = stranger.leaf("foreign");
    assert!(
        connect(&url, &with_cert(Some(&foreign))).await.is_err(),
        "a certificate of another CA"
    );
    let mine = ca.leaf("client");
    let client = connect(&url, &with_cert(Some(&mine))).await.unwrap();
    assert_eq!(client.call("echo", json!(["m"])).await.unwrap(), json!("m"));
    node.shutdown().await;
}

/// A node's TLS as a peer would have it: its certificate, checking others against `peer_ca`.
fn peer_tls(leaf: &common::pki::Leaf, peer_ca: &std::path::Path) -> mpreg::tls::NodeTls {
    let files = mpreg::tls::NodeTlsFiles {
        cert: Some(leaf.cert.clone()),
        key: Some(leaf.key.clone()),
        peer_ca: Some(peer_ca.to_owned()),
        client_ca: None,
    };
    mpreg::tls::NodeTls::from_files(&files, Env::production().clock)
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn peers_over_tls_verify_each_other_against_the_peer_ca() {
    let ca = Ca::new("peers");
    let stranger = Ca::new("peers-stranger");
    let dir = temp_dir("peers-secret");
    let cluster = cluster_secret(&dir);
    let settings = |name: &str| Settings {
        cluster_secret_file: Some(cluster.clone()),
        tls_peer_ca_file: Some(ca.cert.clone()),
        ..tls_settings(&ca.leaf(name))
    };
    let a: RunningNode = start_node(
        settings("a"),
        vec![Function::new("where", || async { Ok::<_, String>("on a") })],
    )
    .await;
    let b = start_node(
        Settings {
            peers: vec![a.url().to_owned()],
            ..settings("b")
        },
        vec![],
    )
    .await;
    let client = connect(b.url(), &trusting(&ca.cert)).await.unwrap();
    wait_offered(&client, "where").await;
    assert_eq!(
        client.call("where", json!([])).await.unwrap(),
        json!("on a"),
        "forwarded over TLS"
    );
    // The peer endpoint, as another node would dial it (the node's own dialling code).
    let addr = a.local_addr().to_string();
    let secret = mpreg::fabric::ClusterSecret::from_bytes(CLUSTER_SECRET.as_bytes()).unwrap();
    let ping = |tls: mpreg::tls::NodeTls| {
        let mut peer = mpreg::control::raft::PeerClient::to_addr_over_tls(
            Env::production(),
            addr.clone(),
            secret.clone(),
            tls,
        );
        async move { peer.ping(Duration::from_secs(5)).await }
    };
    ping(peer_tls(&ca.leaf("c"), &ca.cert))
        .await
        .expect("a peer with a certificate of the peer CA");
    let foreign = stranger.leaf("intruder");
    assert!(
        ping(peer_tls(&foreign, &ca.cert)).await.is_err(),
        "a peer whose certificate is from another CA is refused by the node"
    );
    assert!(
        ping(peer_tls(&ca.leaf("d"), &stranger.cert)).await.is_err(),
        "a peer that trusts another CA refuses the node"
    );
    // A TLS client without a certificate asking for the peer path: 403 at the upgrade.
    let peer_url = format!("wss://{addr}/_mpreg/raft");
    match open_websocket(&Env::production(), &peer_url, &trusting(&ca.cert), 1 << 20).await {
        Err(ClientError::Refused { status, reason, .. }) => {
            assert_eq!(status, 403);
            assert!(reason.contains("peer CA"), "{reason}");
        }
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    b.shutdown().await;
    a.shutdown().await;
}

/// The original's Python client, over TLS with a token: run on purpose with
/// `MPREG_ORIGINAL_PYTHON=/tmp/mpreg-original/venv/bin/python cargo test --test auth_tls --
/// --ignored original` (a venv where the original MPREG package is installed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the original's Python client (MPREG_ORIGINAL_PYTHON)"]
async fn the_original_python_client_authenticates_by_query() {
    let ca = Ca::new("original");
    let secret = jwt_secret(&ca.dir, SECRET);
    let node = start_node(with_tls(authed(&secret), &ca.leaf("node")), vec![]).await;
    let token = token(&secret, "python", &[], 60);
    common::run_original_script(
        "original_token_client.py",
        &[node.url(), &token],
        &[("SSL_CERT_FILE", &ca.cert)],
    )
    .await;
    node.shutdown().await;
}

/// RS256: a node holding only the public key takes tokens signed with the private one,
/// and no others (keys made by openssl, as an operator would).
#[tokio::test]
async fn a_node_with_a_public_key_takes_rs256_tokens() {
    let dir = temp_dir("auth-rs256");
    let private = dir.join("jwt.key");
    let public = dir.join("jwt.pub");
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (private_s, public_s) = (private.to_str().unwrap(), public.to_str().unwrap());
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        private_s,
    ]);
    openssl(&["pkey", "-in", private_s, "-pubout", "-out", public_s]);
    let node = start_node(
        Settings {
            jwt_secret_file: None,
            jwt_public_key_file: Some(public.clone()),
            ..authed(&dir.join("unused.secret"))
        },
        vec![],
    )
    .await;
    let issuer = mpreg::auth::TokenIssuer::from_private_key_file(&private).unwrap();
    assert_eq!(issuer.algorithm(), jsonwebtoken::Algorithm::RS256);
    let now = Env::production().clock.wall_ms() / 1000;
    let claims = mpreg::auth::Claims {
        sub: "svc".into(),
        exp: now + 60,
        roles: vec![],
        iat: None,
        nbf: None,
        iss: None,
        aud: None,
    };
    let client = connect(node.url(), &with_token(&issuer.issue(&claims).unwrap()))
        .await
        .unwrap();
    assert_eq!(
        client.call("echo", json!(["rsa"])).await.unwrap(),
        json!("rsa")
    );
    // An HS256 token whose secret is the public key's PEM (algorithm confusion).
    let pem = std::fs::read(&public).unwrap();
    let forged = mpreg::auth::TokenIssuer::from_secret(&pem)
        .unwrap()
        .issue(&claims)
        .unwrap();
    let (status, reason) = refusal(connect(node.url(), &with_token(&forged)).await);
    assert_eq!(status, 401);
    assert!(reason.contains("another algorithm"), "{reason}");
    node.shutdown().await;
}

/// With `queue_role` set, every queue built-in and a queue subscription (by the call and by
/// the queue's topic) need that role; a token with it drives the queue.
#[tokio::test]
async fn queue_calls_need_the_queue_role() {
    let dir = temp_dir("auth-queue");
    let secret = jwt_secret(&dir, SECRET);
    let node = start_node(
        Settings {
            queue_role: Some("queue".into()),
            ..authed(&secret)
        },
        vec![],
    )
    .await;
    assert!(node.registered().await);
    let worker = connect(
        node.url(),
        &with_token(&token(&secret, "w", &["queue"], 60)),
    )
    .await
    .unwrap();
    let other = connect(node.url(), &with_token(&token(&secret, "o", &[], 60)))
        .await
        .unwrap();
    worker.queue("jobs").create().await.unwrap();
    worker.queue("jobs").send(json!(1)).await.unwrap();
    for (fun, req) in [
        (
            "queue_send",
            json!({"queue_name": "jobs", "message_payload": 2}),
        ),
        ("queue_receive", json!({"queue_name": "jobs"})),
        ("queue_create", json!({"queue_name": "mine"})),
    ] {
        let code = rpc_code(other.call(fun, json!([req])).await);
        assert_eq!(code, Some(1021), "{fun} without the role");
    }
    let refused = other.queue("jobs").subscribe(1).await.expect_err("no role");
    assert!(refused.to_string().contains("`queue` role"), "{refused}");
    let Err(topic) = other.subscribe(["mpreg.queue.jobs"]).await else {
        panic!("subscribed to a queue's topic without the role");
    };
    assert!(topic.to_string().contains("`queue` role"), "{topic}");
    // The holder of the role is fed.
    let mut sub = worker.queue("jobs").subscribe(1).await.unwrap();
    let d = futures_util::StreamExt::next(&mut sub).await.unwrap();
    assert_eq!(d.payload, json!(1));
    d.ack().await.unwrap();
}
