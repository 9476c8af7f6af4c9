//! The peer endpoint under attack, over real sockets: what an outsider who reaches a node's
//! port can do with nothing but a WebSocket client (issue 12, point 9). Each test attacks a
//! real cluster whose nodes share a secret, then checks that the attack was refused and
//! that the cluster carries on as before.

// The attacker speaks raw WebSocket.
#![allow(clippy::disallowed_types)]

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use mpreg::control::raft::{PeerClient, RaftRequest};
use mpreg::control::{CatalogCommand, QueueEntry, QueueSpec};
use mpreg::data::client::{DataClient, DataRequest};
use mpreg::env::{Env, SharedRng};
use mpreg::fabric::handshake::{self, Side};
use mpreg::fabric::{
    ClusterSecret, Frame as PeerFrame, Hello as PeerHello, MIN_PEER_PROTOCOL, PEER_PATH,
    PEER_PROTOCOL, Plane, codec, decode_frame, encode_frame, hello_transcript,
};
use mpreg::fuzzing::claim_4_gib;
use mpreg::{Client, RunningNode, Settings};
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::{BasicNode, Vote};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// The tests here run one at a time: one of them measures the process's memory, which the
/// clusters of the others would grow at the same moment.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn secret() -> ClusterSecret {
    ClusterSecret::from_bytes(b"the peer attack tests' cluster secret").unwrap()
}

fn settings(name: &str, peers: Vec<String>) -> Settings {
    Settings {
        name: name.to_owned(),
        peers,
        ..test_settings()
    }
}

async fn node(name: &str, peers: Vec<String>) -> RunningNode {
    mpreg::Node::builder(settings(name, peers))
        .cluster_secret(secret())
        .start()
        .await
        .expect("node starts")
}

/// Three nodes with the secret, all registered, the first leading.
async fn cluster() -> Vec<RunningNode> {
    let a = node("a", vec![]).await;
    let b = node("b", vec![a.url().to_owned()]).await;
    let c = node("c", vec![a.url().to_owned()]).await;
    assert!(b.registered().await && c.registered().await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while voters(&a).len() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "no 3 voters");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    vec![a, b, c]
}

fn voters(n: &RunningNode) -> Vec<u64> {
    n.raft_metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect()
}

/// What an attack must leave as it was: who leads, in which term, the voters, and that
/// no queue the attacker named exists.
#[derive(Debug, PartialEq)]
struct Shape {
    leader: Option<u64>,
    term: u64,
    voters: Vec<u64>,
}

fn shape(n: &RunningNode) -> Shape {
    let m = n.raft_metrics().borrow().clone();
    Shape {
        leader: m.current_leader,
        term: m.current_term,
        voters: voters(n),
    }
}

fn has_queue(n: &RunningNode, name: &str) -> bool {
    n.catalog()
        .read(|s| s.catalog.queues().any(|q| q.name == name))
}

/// The cluster still serves: a write commits and a call runs.
async fn still_serves(nodes: &[RunningNode]) {
    let client = Client::connect(nodes[1].url()).await.unwrap();
    let r = client.call("echo", json!(["still up"])).await.unwrap();
    assert_eq!(r, json!("still up"));
    let f = mpreg::Function::new("after_attack", |x: i64| async move { Ok::<_, String>(x) })
        .params(["x"]);
    nodes[2].register(f).await.expect("a catalog write commits");
}

fn addr(n: &RunningNode) -> String {
    n.url().trim_start_matches("ws://").to_owned()
}

async fn raw_peer(n: &RunningNode) -> Raw {
    raw_connect(&format!("{}{PEER_PATH}", n.url())).await
}

fn hello(nonce_seed: u64) -> PeerHello {
    PeerHello {
        protocol: PEER_PROTOCOL,
        min_protocol: MIN_PEER_PROTOCOL,
        cluster: None,
        node: None,
        from: None,
        nonce: handshake::nonce(&SharedRng::seeded(nonce_seed)),
    }
}

async fn send(ws: &mut Raw, frame: &PeerFrame) {
    send_bytes(ws, encode_frame(frame).unwrap()).await;
}

async fn send_bytes(ws: &mut Raw, bytes: Vec<u8>) {
    // The node may already have closed: what matters is what comes back.
    let _ = ws.send(Message::binary(bytes)).await;
}

/// The next peer frame, or `None` once the node closed the connection.
async fn recv(ws: &mut Raw) -> Option<PeerFrame> {
    let wait = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Binary(b)) => return Some(decode_frame(&b).expect("a peer frame")),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
        None
    });
    wait.await.expect("the node neither answered nor closed")
}

/// Reads until the node closes; panics if it answers a request instead.
async fn expect_closed(ws: &mut Raw, what: &str) {
    while let Some(frame) = recv(ws).await {
        match frame {
            PeerFrame::Reply { .. } => panic!("{what}: the node answered a request"),
            PeerFrame::Welcome(Ok(())) => panic!("{what}: the node welcomed the attacker"),
            _ => {}
        }
    }
}

/// The dialler's half of the handshake by hand, proving `secret`: the hello's bytes and the
/// proof frame's bytes it sent.
async fn prove_as(ws: &mut Raw, secret: &ClusterSecret, h: &PeerHello) -> (Vec<u8>, Vec<u8>) {
    let hello_bytes = encode_frame(&PeerFrame::Hello(h.clone())).unwrap();
    send_bytes(ws, hello_bytes.clone()).await;
    let Some(PeerFrame::Challenge {
        protocol,
        nonce,
        proof,
    }) = recv(ws).await
    else {
        panic!("no challenge");
    };
    let t = hello_transcript(&hello_bytes, protocol);
    assert!(handshake::verify(
        secret,
        Side::Acceptor,
        &t,
        &nonce,
        &proof
    ));
    let mine = handshake::prove(secret, Side::Dialler, &t, &nonce);
    let proof_bytes = encode_frame(&PeerFrame::Proof(mine)).unwrap();
    send_bytes(ws, proof_bytes.clone()).await;
    (hello_bytes, proof_bytes)
}

fn create_queue(name: &str) -> CatalogCommand {
    CatalogCommand::CreateQueue(QueueEntry {
        name: name.to_owned(),
        owner: mpreg::ids::NodeId(1),
        incarnation: 1,
        created_ms: 0,
        replicas: Vec::new(),
        spec: QueueSpec {
            visibility_timeout_ms: 30_000,
            max_receives: 0,
            dedup_window_ms: 0,
            ..QueueSpec::default()
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn length_prefixes_claiming_exabytes_cost_the_node_nothing() {
    let _serial = SERIAL.lock().await;
    let nodes = cluster().await;
    let before = shape(&nodes[0]);
    // Before the hello: a hello whose cluster id claims 4 GiB.
    let mut ws = raw_peer(&nodes[0]).await;
    let h = PeerHello {
        cluster: Some("c".repeat(300)),
        ..hello(0)
    };
    send_bytes(
        &mut ws,
        claim_4_gib(&encode_frame(&PeerFrame::Hello(h)).unwrap()),
    )
    .await;
    expect_closed(&mut ws, "lying hello").await;
    // The 15-byte bincode frame that used to abort the node (a hello of the previous
    // encoding whose cluster id claims 2^62 bytes).
    let mut ws = raw_peer(&nodes[0]).await;
    let mut old = vec![0, 4, 1, 253];
    old.extend((1u64 << 62).to_le_bytes());
    send_bytes(&mut ws, old).await;
    expect_closed(&mut ws, "lying bincode hello").await;

    // After a proved hello: a catalog write whose queue name claims 4 GiB.
    let mut ws = raw_peer(&nodes[0]).await;
    prove_as(&mut ws, &secret(), &hello(1)).await;
    assert!(matches!(
        recv(&mut ws).await,
        Some(PeerFrame::Welcome(Ok(())))
    ));
    // The plane's body lies (the frame around it is honest): its decode fails, the
    // request is answered unsupported, nothing is written, the connection stays.
    let name = "q".repeat(300);
    let write = Attack::Raft(RaftRequest::Write {
        cmd: create_queue(&name),
        forward: true,
    });
    let lying_body = claim_4_gib(&write.body());
    send(&mut ws, &write.frame_with(1, lying_body)).await;
    // (The node says `Done` first: it makes no calls on a connection that named no node.)
    let mut answer = recv(&mut ws).await;
    while matches!(answer, Some(PeerFrame::Done)) {
        answer = recv(&mut ws).await;
    }
    match answer {
        Some(PeerFrame::Unsupported { id: 1, .. }) => {}
        other => panic!("a lying body was answered {other:?}"),
    }
    // The frame itself lies (its body's length): the connection ends.
    send_bytes(
        &mut ws,
        claim_4_gib(&encode_frame(&write.frame(2)).unwrap()),
    )
    .await;
    expect_closed(&mut ws, "lying write").await;

    assert!(!has_queue(&nodes[0], &name));
    still_serves(&nodes).await;
    assert_eq!(shape(&nodes[0]), before);
    for n in nodes {
        n.shutdown().await;
    }
}

/// A request of either plane.
enum Attack {
    Raft(RaftRequest),
    Data(DataRequest),
}

impl Attack {
    fn plane(&self) -> Plane {
        match self {
            Attack::Raft(_) => Plane::Raft,
            Attack::Data(_) => Plane::Data,
        }
    }

    fn body(&self) -> Vec<u8> {
        match self {
            Attack::Raft(r) => codec::encode(r).unwrap(),
            Attack::Data(d) => codec::encode(d).unwrap(),
        }
    }

    fn frame(&self, id: u64) -> PeerFrame {
        self.frame_with(id, self.body())
    }

    fn frame_with(&self, id: u64, body: Vec<u8>) -> PeerFrame {
        PeerFrame::Request {
            id,
            plane: self.plane(),
            body,
        }
    }

    /// Sends it with mpreg's own clients, proving `secret`; the error they end with.
    async fn by_client(self, addr: String, secret: ClusterSecret) -> String {
        let ttl = Duration::from_secs(5);
        let env = Env::production();
        match self {
            Attack::Raft(req) => {
                let mut peer = PeerClient::to_addr(env, addr, secret);
                peer.call(req, ttl).await.unwrap_err().to_string()
            }
            Attack::Data(DataRequest::Heartbeat { load }) => {
                let peer = DataClient::to_addr(env, addr, secret);
                peer.heartbeat(load, ttl).await.unwrap_err().to_string()
            }
            Attack::Data(DataRequest::Step(step)) => {
                let peer = DataClient::to_addr(env, addr, secret);
                peer.step(step, ttl).await.unwrap_err().to_string()
            }
            Attack::Data(DataRequest::Publish(messages)) => {
                let peer = DataClient::to_addr(env, addr, secret);
                peer.publish(messages, ttl).await.unwrap_err().to_string()
            }
            Attack::Data(DataRequest::Interest {
                node,
                version,
                patterns,
            }) => {
                let peer = DataClient::to_addr(env, addr, secret);
                peer.interest(node, version, patterns, ttl)
                    .await
                    .unwrap_err()
                    .to_string()
            }
            Attack::Data(DataRequest::Backlog {
                node,
                version,
                interest,
                patterns,
                from_ms_ago,
                max_bytes,
            }) => {
                let peer = DataClient::to_addr(env, addr, secret);
                peer.backlog(
                    node,
                    version,
                    interest,
                    patterns,
                    from_ms_ago,
                    max_bytes,
                    ttl,
                )
                .await
                .unwrap_err()
                .to_string()
            }
            Attack::Data(DataRequest::Queue { op, request }) => {
                let peer = DataClient::to_addr(env, addr, secret);
                peer.queue(&op, request, ttl).await.unwrap_err().to_string()
            }
        }
    }
}

/// Every request a peer may send, as an outsider would send it to take over the cluster:
/// join as a voter, remove a voter, depose the leader, forge an append, write the catalog,
/// poison liveness, run a step.
fn attacks(victim: u64) -> Vec<(&'static str, Attack)> {
    let vote = Vote::new(1000, 0xbad);
    let step = mpreg::rpc::Step {
        fun: "echo".into(),
        function_id: None,
        version: semver::Version::new(1, 0, 0),
        locs: vec![],
        args_json: "[[1],{}]".into(),
        timeout_ms: 1000,
        caller: None,
        trace_id: None,
    };
    let raft = Attack::Raft;
    vec![
        (
            "join",
            raft(RaftRequest::Join {
                id: 0xbad,
                node: BasicNode::new("127.0.0.1:1"),
            }),
        ),
        ("leave", raft(RaftRequest::Leave { id: victim })),
        (
            "vote",
            raft(RaftRequest::Vote(VoteRequest::new(vote, None))),
        ),
        (
            "append",
            raft(RaftRequest::Append(AppendEntriesRequest {
                vote,
                prev_log_id: None,
                entries: vec![],
                leader_commit: None,
            })),
        ),
        (
            "write",
            raft(RaftRequest::Write {
                cmd: create_queue("attacker-queue"),
                forward: true,
            }),
        ),
        (
            "heartbeat",
            Attack::Data(DataRequest::Heartbeat {
                load: Default::default(),
            }),
        ),
        ("step", Attack::Data(DataRequest::Step(step))),
        (
            "publish to its subscribers",
            Attack::Data(DataRequest::Publish(vec![
                mpreg::protocol::pubsub::PeerMessage {
                    topic: "orders.1.created".into(),
                    payload: "{\"forged\":true}".into(),
                    timestamp: 0.0,
                    message_id: "forged".into(),
                    publisher: "attacker".into(),
                    headers: "{}".into(),
                    origin: victim,
                    seq: 1,
                    known_version: None,
                },
            ])),
        ),
        (
            "poison its interest",
            Attack::Data(DataRequest::Interest {
                node: victim,
                version: u64::MAX,
                patterns: vec![("#".into(), false)],
            }),
        ),
        (
            "read its backlog",
            Attack::Data(DataRequest::Backlog {
                node: victim,
                version: u64::MAX,
                interest: vec![("#".into(), false)],
                patterns: vec![("#".into(), false)],
                from_ms_ago: u64::MAX,
                max_bytes: u64::MAX,
            }),
        ),
        (
            "drain a queue",
            Attack::Data(DataRequest::Queue {
                op: "queue_purge".into(),
                request: br#"{"queue_name": "jobs"}"#.to_vec(),
            }),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_without_the_secret_is_refused_every_request() {
    let _serial = SERIAL.lock().await;
    let nodes = cluster().await;
    let before = shape(&nodes[0]);
    let victim = nodes[2].raft_id();
    let wrong = ClusterSecret::from_bytes(b"a guess at the cluster secret").unwrap();
    for (what, attack) in attacks(victim) {
        // By hand: the request right after the hello, skipping the proof.
        let mut ws = raw_peer(&nodes[0]).await;
        send(&mut ws, &PeerFrame::Hello(hello(2))).await;
        send(&mut ws, &attack.frame(1)).await;
        expect_closed(&mut ws, what).await;
    }
    for (what, attack) in attacks(victim) {
        // A proof made with a wrong secret, then the request.
        let mut ws = raw_peer(&nodes[0]).await;
        let h = hello(3);
        let hello_bytes = encode_frame(&PeerFrame::Hello(h)).unwrap();
        send_bytes(&mut ws, hello_bytes.clone()).await;
        let Some(PeerFrame::Challenge {
            protocol, nonce, ..
        }) = recv(&mut ws).await
        else {
            panic!("no challenge");
        };
        let t = hello_transcript(&hello_bytes, protocol);
        let forged = handshake::prove(&wrong, Side::Dialler, &t, &nonce);
        send(&mut ws, &PeerFrame::Proof(forged)).await;
        send(&mut ws, &attack.frame(1)).await;
        match recv(&mut ws).await {
            Some(PeerFrame::Welcome(Err(why))) => assert!(why.contains("secret"), "{why}"),
            other => panic!("{what}: a wrong proof was answered with {other:?}"),
        }
        expect_closed(&mut ws, what).await;
    }
    // mpreg's own peer client, with no secret and with a wrong one: refused at the hello.
    for s in [ClusterSecret::none(), wrong] {
        for (what, attack) in attacks(victim) {
            let err = attack.by_client(addr(&nodes[0]), s.clone()).await;
            assert!(err.contains("cluster secret"), "{what}: {err}");
        }
    }
    assert!(!has_queue(&nodes[0], "attacker-queue"));
    still_serves(&nodes).await;
    assert_eq!(shape(&nodes[0]), before, "the attacks changed the cluster");
    // And a tool holding the secret is served (the refusals above were about the secret).
    let mut tool = PeerClient::to_addr(Env::production(), addr(&nodes[0]), secret());
    tool.ping(Duration::from_secs(5))
        .await
        .expect("a tool with the secret is served");
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_hello_and_proof_are_refused() {
    let _serial = SERIAL.lock().await;
    let a = node("a", vec![]).await;
    // A genuine handshake, recorded.
    let mut ws = raw_peer(&a).await;
    let (hello_bytes, proof_bytes) = prove_as(&mut ws, &secret(), &hello(4)).await;
    assert!(matches!(
        recv(&mut ws).await,
        Some(PeerFrame::Welcome(Ok(())))
    ));
    drop(ws);
    // Replayed byte for byte on a new connection: the node's nonce is new, the proof stale.
    let mut ws = raw_peer(&a).await;
    send_bytes(&mut ws, hello_bytes).await;
    assert!(matches!(
        recv(&mut ws).await,
        Some(PeerFrame::Challenge { .. })
    ));
    send_bytes(&mut ws, proof_bytes).await;
    send(&mut ws, &Attack::Raft(RaftRequest::Ping).frame(1)).await;
    assert!(matches!(
        recv(&mut ws).await,
        Some(PeerFrame::Welcome(Err(_)))
    ));
    expect_closed(&mut ws, "replay").await;
    // The node's own proof, reflected back as the dialler's, fails too.
    let mut ws = raw_peer(&a).await;
    let h = encode_frame(&PeerFrame::Hello(hello(5))).unwrap();
    send_bytes(&mut ws, h).await;
    let Some(PeerFrame::Challenge { proof, .. }) = recv(&mut ws).await else {
        panic!("no challenge");
    };
    send(&mut ws, &PeerFrame::Proof(proof)).await;
    assert!(matches!(
        recv(&mut ws).await,
        Some(PeerFrame::Welcome(Err(_)))
    ));
    expect_closed(&mut ws, "reflection").await;
    a.shutdown().await;
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A peer (holding the secret, even) that sends requests and never reads the replies: the
/// node stops reading it once its replies fill the connection's byte budget, and then
/// disconnects it, instead of buffering replies without limit (3,000,000 unread pings grew
/// a node by 250 MiB before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_is_paused_then_disconnected() {
    let _serial = SERIAL.lock().await;
    let a = node("a", vec![]).await;
    let mut ws = raw_peer(&a).await;
    prove_as(&mut ws, &secret(), &hello(6)).await;
    assert!(matches!(
        recv(&mut ws).await,
        Some(PeerFrame::Welcome(Ok(())))
    ));
    let rss_before = rss_kib();
    let started = tokio::time::Instant::now();
    let mut sent = 0u64;
    let closed = loop {
        let ping = encode_frame(&Attack::Raft(RaftRequest::Ping).frame(sent + 1)).unwrap();
        // Writes block once the node stops reading; they fail once it hangs up.
        match tokio::time::timeout(Duration::from_secs(30), ws.feed(Message::binary(ping))).await {
            Ok(Ok(())) => sent += 1,
            Ok(Err(_)) => break true,
            Err(_) => break false,
        }
        if sent.is_multiple_of(1024)
            && tokio::time::timeout(Duration::from_secs(30), ws.flush())
                .await
                .is_ok_and(|r| r.is_err())
        {
            break true;
        }
        assert!(
            sent < 3_000_000,
            "the node read 3,000,000 pings it never answered"
        );
    };
    let grew_mib = rss_kib().saturating_sub(rss_before) / 1024;
    assert!(closed, "the node neither read nor closed for 30 s");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "disconnected only after {:?}",
        started.elapsed()
    );
    assert!(
        grew_mib < 100,
        "the node grew {grew_mib} MiB for {sent} unread pings"
    );
    eprintln!(
        "{sent} pings sent before the node hung up after {:?}; RSS grew {grew_mib} MiB",
        started.elapsed()
    );
    // The node is fine, and a well-behaved peer is served.
    let mut tool = PeerClient::to_addr(Env::production(), addr(&a), secret());
    tool.ping(Duration::from_secs(5)).await.expect("served");
    a.shutdown().await;
}

/// A chunk of a forged snapshot (the vote is above any the node has seen, so openraft
/// accepts the transfer and writes the chunk).
fn snapshot_chunk(offset: u64, data: Vec<u8>, done: bool) -> RaftRequest {
    RaftRequest::Snapshot(openraft::raft::InstallSnapshotRequest {
        vote: Vote::new_committed(1_000_000, 0xbad),
        meta: openraft::SnapshotMeta {
            last_log_id: None,
            last_membership: Default::default(),
            snapshot_id: "forged".into(),
        },
        offset,
        data,
        done,
    })
}

/// The refusal a snapshot chunk got (its error's text), or a panic if it was accepted.
async fn refused_chunk(peer: &mut PeerClient, req: RaftRequest) -> String {
    match peer.call(req, Duration::from_secs(5)).await {
        Ok(mpreg::control::raft::RaftReply::Snapshot(Err(e))) => e.to_string(),
        other => panic!("the chunk was not refused: {other:?}"),
    }
}

/// A member (it holds the secret) sends a forged `InstallSnapshot`: a chunk at offset 0,
/// then one at offset 2^40. Before, openraft seeked the snapshot's `Cursor<Vec<u8>>` there
/// and the node allocated a terabyte (it aborted). Now each is refused with its reason: an
/// offset past the bytes received, a snapshot over `max_snapshot_bytes`, bytes that do not
/// decode (which used to stop the Raft core at install). The node stays under 64 MiB more
/// than it was, and its replica still commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_snapshot_costs_no_more_than_its_bytes() {
    let _serial = SERIAL.lock().await;
    let a = mpreg::Node::builder(Settings {
        max_snapshot_bytes: 64 * 1024,
        ..settings("a", vec![])
    })
    .cluster_secret(secret())
    .start()
    .await
    .expect("node starts");
    assert!(a.registered().await);
    let rss_before = rss_kib();
    let mut peer = PeerClient::to_addr(Env::production(), addr(&a), secret());
    let first = peer
        .call(
            snapshot_chunk(0, vec![1; 1024], false),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(
        matches!(first, mpreg::control::raft::RaftReply::Snapshot(Ok(_))),
        "the first chunk is taken: {first:?}"
    );
    let far = refused_chunk(&mut peer, snapshot_chunk(1 << 40, vec![2; 1024], false)).await;
    assert!(far.contains("outside the 1024 bytes received"), "{far}");
    let gap = refused_chunk(&mut peer, snapshot_chunk(1025, vec![2; 16], false)).await;
    assert!(gap.contains("outside the 1024 bytes received"), "{gap}");
    let big = refused_chunk(&mut peer, snapshot_chunk(1024, vec![3; 64 * 1024], false)).await;
    assert!(big.contains("max_snapshot_bytes (65536 bytes)"), "{big}");
    let garbage = refused_chunk(&mut peer, snapshot_chunk(1024, vec![0xff; 16], true)).await;
    assert!(garbage.contains("does not decode"), "{garbage}");
    let grew_mib = rss_kib().saturating_sub(rss_before) / 1024;
    assert!(grew_mib < 64, "the node grew {grew_mib} MiB");
    // Its replica is up: a catalog write commits, and a call runs.
    let f = mpreg::Function::new("after_forged_snapshot", |x: i64| async move {
        Ok::<_, String>(x)
    })
    .params(["x"]);
    a.register(f).await.expect("a catalog write commits");
    let client = Client::connect(a.url()).await.unwrap();
    assert_eq!(client.call("echo", json!([7])).await.unwrap(), json!(7));
    a.shutdown().await;
}
