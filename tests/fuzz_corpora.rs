//! The fuzz targets' committed corpora (`fuzz/corpus/<target>/`), replayed through the same
//! bodies the targets run (`mpreg::fuzzing`), so that CI checks on stable that no input
//! the fuzzers kept makes a decoder panic. `write_seed_corpora` (ignored, run on purpose)
//! writes the seeds the corpora started from.

use std::path::{Path, PathBuf};

use mpreg::control::raft::{RaftReply, RaftRequest};
use mpreg::control::{CatalogCommand, QueueEntry, QueueSpec};
use mpreg::data::client::DataRequest;
use mpreg::fabric::codec;
use mpreg::fabric::{
    Caller, Frame as PeerFrame, Hello as PeerHello, MIN_PEER_PROTOCOL, PEER_PROTOCOL, Plane,
    encode_frame,
};
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::{BasicNode, Vote};

type Target = (&'static str, fn(&[u8]));

const TARGETS: [Target; 9] = [
    ("peer_hello", mpreg::fuzzing::peer_hello),
    ("peer_frame", mpreg::fuzzing::peer_frame),
    ("client_frame", mpreg::fuzzing::client_frame),
    ("dag_plan", mpreg::fuzzing::dag_plan),
    ("settings", mpreg::fuzzing::settings),
    ("json_text", mpreg::fuzzing::json_text),
    ("upgrade_token", mpreg::fuzzing::upgrade_token),
    ("snapshot", mpreg::fuzzing::snapshot),
    ("dns_query", mpreg::fuzzing::dns_query),
];

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

#[test]
fn every_fuzz_corpus_replays_without_a_panic() {
    for (target, body) in TARGETS {
        let dir = corpus(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(files.len() >= 3, "{target}: only {} seeds", files.len());
        for f in files {
            let bytes = std::fs::read(&f).unwrap();
            let replay = std::panic::catch_unwind(|| body(&bytes));
            assert!(replay.is_ok(), "{target}: {} panics", f.display());
        }
    }
}

fn hello(cluster: Option<&str>, node: Option<u64>, from: bool) -> PeerHello {
    PeerHello {
        protocol: PEER_PROTOCOL,
        min_protocol: MIN_PEER_PROTOCOL,
        cluster: cluster.map(str::to_owned),
        node,
        from: from.then(|| Caller {
            id: 0x1234_5678_9abc_def1,
            addr: "10.0.0.5:9000".into(),
        }),
        nonce: [0x5a; 32],
    }
}

fn queue(name: &str) -> CatalogCommand {
    CatalogCommand::CreateQueue(QueueEntry {
        name: name.into(),
        owner: mpreg::ids::NodeId(7),
        incarnation: 1,
        created_ms: 0,
        replicas: vec![
            mpreg::ids::NodeId(7),
            mpreg::ids::NodeId(8),
            mpreg::ids::NodeId(9),
        ],
        spec: QueueSpec {
            visibility_timeout_ms: 30_000,
            max_receives: 3,
            dedup_window_ms: 0,
            ..QueueSpec::default()
        },
    })
}

fn peer_frames() -> Vec<(&'static str, PeerFrame)> {
    let vote = Vote::new(3, 7);
    let req = |id, req: RaftRequest| PeerFrame::Request {
        id,
        plane: Plane::Raft,
        body: codec::encode(&req).unwrap(),
    };
    let data = |id, req: DataRequest| PeerFrame::Request {
        id,
        plane: Plane::Data,
        body: codec::encode(&req).unwrap(),
    };
    vec![
        ("hello", PeerFrame::Hello(hello(Some("c"), Some(7), true))),
        ("welcome", PeerFrame::Welcome(Ok(()))),
        ("refused", PeerFrame::Welcome(Err("no".into()))),
        (
            "challenge",
            PeerFrame::Challenge {
                protocol: PEER_PROTOCOL,
                nonce: [1; 32],
                proof: [2; 32],
            },
        ),
        ("proof", PeerFrame::Proof([3; 32])),
        ("ping", req(1, RaftRequest::Ping)),
        (
            "group_vote",
            PeerFrame::Request {
                id: 9,
                plane: Plane::Groups,
                body: codec::encode(&mpreg::queue::group_network::GroupRequest {
                    group: 7,
                    rpc: mpreg::queue::group_network::GroupRpc::Vote(VoteRequest::new(vote, None)),
                })
                .unwrap(),
            },
        ),
        (
            "write_batch",
            req(
                10,
                RaftRequest::Write {
                    cmd: CatalogCommand::Batch(vec![queue("jobs")]),
                    forward: true,
                },
            ),
        ),
        ("read_index", req(2, RaftRequest::ReadIndex)),
        (
            "write",
            req(
                3,
                RaftRequest::Write {
                    cmd: queue("jobs"),
                    forward: true,
                },
            ),
        ),
        (
            "vote",
            req(4, RaftRequest::Vote(VoteRequest::new(vote, None))),
        ),
        (
            "append",
            req(
                5,
                RaftRequest::Append(AppendEntriesRequest {
                    vote,
                    prev_log_id: None,
                    entries: vec![],
                    leader_commit: None,
                }),
            ),
        ),
        (
            "join",
            req(
                6,
                RaftRequest::Join {
                    id: 9,
                    node: BasicNode::new("127.0.0.1:9001"),
                },
            ),
        ),
        ("leave", req(7, RaftRequest::Leave { id: 9 })),
        (
            "heartbeat",
            data(
                8,
                DataRequest::Heartbeat {
                    load: Default::default(),
                },
            ),
        ),
        (
            "step",
            data(
                9,
                DataRequest::Step(mpreg::rpc::Step {
                    fun: "echo".into(),
                    function_id: Some("f1".into()),
                    version: semver::Version::new(1, 2, 3),
                    locs: vec!["gpu".into()],
                    args_json: r#"[["x"],{"k":1}]"#.into(),
                    timeout_ms: 500,
                    caller: Some(mpreg::auth::Identity {
                        sub: "svc-a".into(),
                        roles: ["caller".to_owned()].into(),
                    }),
                    trace_id: Some("trace-1".into()),
                }),
            ),
        ),
        (
            "publish",
            data(
                10,
                DataRequest::Publish(vec![mpreg::protocol::pubsub::PeerMessage {
                    topic: "orders.1.created".into(),
                    payload: r#"{"id":1}"#.into(),
                    timestamp: 0.0,
                    message_id: "m1".into(),
                    publisher: "node-a".into(),
                    headers: "{}".into(),
                    origin: 7,
                    seq: 42,
                    known_version: Some(3),
                }]),
            ),
        ),
        (
            "interest",
            data(
                11,
                DataRequest::Interest {
                    node: 7,
                    version: 3,
                    patterns: vec![("orders.#".into(), false), ("a.b".into(), true)],
                },
            ),
        ),
        (
            "backlog",
            data(
                12,
                DataRequest::Backlog {
                    node: 7,
                    version: 4,
                    interest: vec![("orders.#".into(), false)],
                    patterns: vec![("orders.*.created".into(), false)],
                    from_ms_ago: 300_000,
                    max_bytes: 512 * 1024,
                },
            ),
        ),
        (
            "reply_pong",
            PeerFrame::Reply {
                id: 1,
                body: codec::encode(&RaftReply::Pong).unwrap(),
            },
        ),
        ("cancel", PeerFrame::Cancel { id: 9 }),
        (
            "busy",
            PeerFrame::Busy {
                id: 9,
                why: "busy".into(),
            },
        ),
        (
            "unsupported",
            PeerFrame::Unsupported {
                id: 9,
                why: "a later kind".into(),
            },
        ),
        ("done", PeerFrame::Done),
        ("retire", PeerFrame::Retire),
    ]
}

/// Snapshot seeds: a chunk size and an offset shift (0: honest), then a state's bytes.
fn snapshots() -> Vec<(&'static str, Vec<u8>)> {
    let mut catalog = mpreg::control::Catalog::default();
    let member = mpreg::control::Member {
        id: mpreg::ids::NodeId(5),
        name: "n".into(),
        cluster_id: "c".into(),
        advertised_urls: vec!["ws://127.0.0.1:9000".into()],
        resources: ["cpu".to_owned()].into(),
        role: mpreg::control::Role::Voter,
    };
    catalog.apply(CatalogCommand::UpsertMember(member)).unwrap();
    catalog
        .apply(CatalogCommand::RegisterFunctions {
            node: mpreg::ids::NodeId(5),
            functions: vec![mpreg::control::FunctionEntry {
                name: "payroll".into(),
                function_id: "payroll".into(),
                version: semver::Version::new(1, 2, 3),
                resources: ["cpu".to_owned()].into(),
                idempotent: true,
                roles: ["finance".to_owned()].into(),
            }],
        })
        .unwrap();
    let state = |catalog| mpreg::control::raft::StoredState {
        last_applied: None,
        membership: Default::default(),
        catalog,
    };
    let encode = |s: &mpreg::control::raft::StoredState| {
        bincode::serde::encode_to_vec(s, bincode::config::standard()).unwrap()
    };
    let with = |cut: u8, shift: u8, bytes: Vec<u8>| [vec![cut, shift], bytes].concat();
    let full = encode(&state(catalog));
    vec![
        ("empty", with(255, 0, encode(&state(Default::default())))),
        ("catalog", with(16, 0, full.clone())),
        ("catalog_far_offset", with(16, 0b100, full.clone())),
        (
            "catalog_truncated",
            with(64, 0, full[..full.len() / 2].to_vec()),
        ),
    ]
}

/// DNS queries: every name form the gateway answers, EDNS0, ANY, a big answer, names outside
/// the zones, and malformed packets.
fn dns_queries() -> Vec<(&'static str, Vec<u8>)> {
    use hickory_proto::rr::{Name, RecordType};
    use mpreg::dns::wire::query;
    let q = |name: &str, t, edns| query(0x1234, &Name::from_ascii(name).unwrap(), t, edns);
    let mut out = vec![
        (
            "srv",
            q("_svc._tcp.web.shop.mpreg.", RecordType::SRV, Some(1232)),
        ),
        (
            "srv_no_edns",
            q("_svc._tcp.web.shop.mpreg.", RecordType::SRV, None),
        ),
        ("a", q("web.shop.mpreg.", RecordType::A, Some(4096))),
        ("txt", q("Web.Shop.MPREG.", RecordType::TXT, None)),
        ("any", q("web.shop.mpreg.", RecordType::ANY, Some(1232))),
        ("big", q("_svc._tcp.big.shop.mpreg.", RecordType::SRV, None)),
        (
            "function",
            q("_mpreg._tcp.echo.mpreg.", RecordType::SRV, Some(1232)),
        ),
        ("node", q("n1.node.mpreg.", RecordType::AAAA, None)),
        ("addr", q("ip4-10-0-0-7.addr.mpreg.", RecordType::A, None)),
        ("soa", q("mpreg.", RecordType::SOA, None)),
        ("nxdomain", q("nothing.shop.mpreg.", RecordType::A, None)),
        ("outside", q("example.org.", RecordType::A, None)),
        (
            "second_zone",
            q("web.shop.example.com.", RecordType::A, None),
        ),
    ];
    let mut response = q("web.shop.mpreg.", RecordType::A, None);
    response[2] |= 0x80;
    out.push(("response", response));
    let mut badvers = q("web.shop.mpreg.", RecordType::A, Some(1232));
    let n = badvers.len();
    badvers[n - 5] = 1; // the OPT record's EDNS version (TTL: rcode, version, flags)
    out.push(("badvers", badvers));
    let mut two = q("web.shop.mpreg.", RecordType::A, None);
    two[5] = 2; // QDCOUNT 2, one question present
    out.push(("qdcount_lies", two));
    out.push((
        "header_only",
        vec![0x12, 0x34, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ));
    out.push(("short", vec![0x12, 0x34, 1]));
    out
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = corpus(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

#[test]
#[ignore = "writes the seed corpora; run on purpose after a frame changes"]
fn write_seed_corpora() {
    let h = |c, n, f| encode_frame(&PeerFrame::Hello(hello(c, n, f))).unwrap();
    write("peer_hello", "node", &h(Some("cluster-a"), Some(7), true));
    write("peer_hello", "tool", &h(None, None, false));
    write("peer_hello", "join", &h(Some("cluster-a"), None, false));
    let mut lying = vec![0, 4, 1, 253];
    lying.extend((1u64 << 62).to_le_bytes());
    write("peer_hello", "bincode_lying_length", &lying);
    write(
        "peer_hello",
        "bincode_protocol_3",
        &[0, 3, 1, 1, b'c', 1, 7, 0],
    );
    // A MessagePack hello whose cluster id claims 4 GiB (str32).
    let mut h = hello(Some("c"), None, false);
    h.cluster = Some("c".repeat(300));
    let honest = encode_frame(&PeerFrame::Hello(h)).unwrap();
    let lying = mpreg::fuzzing::claim_4_gib(&honest);
    write("peer_hello", "lying_length", &lying);
    for (name, frame) in peer_frames() {
        write("peer_frame", name, &encode_frame(&frame).unwrap());
    }
    let client = [
        (
            "call",
            r#"{"role":"rpc","u":"1","cmds":[{"name":"a","fun":"echo","args":[1],"locs":[]}]}"#,
        ),
        (
            "dag",
            r#"{"role":"rpc","u":"2","cmds":[{"name":"a","fun":"echo","args":[1]},{"name":"b","fun":"echos","args":["a",{"x":"a"}],"kwargs":{"y":"a"}},{"name":"c","fun":"echo","args":["b"],"version_constraint":">=1.0.0"}],"return_intermediate_results":true}"#,
        ),
        ("bad_role", r#"{"role":"nope","u":"3","cmds":[]}"#),
        (
            "register",
            r#"{"role":"register","u":"4","functions":[{"name":"f","function_id":"f","version":"1.0.0","resources":["cpu"]}]}"#,
        ),
        ("call_result", r#"{"role":"call-result","u":"5","r":42}"#),
        (
            "subscribe",
            r#"{"role":"pubsub-subscribe","u":"7","subscription":{"subscription_id":"s1","patterns":[{"pattern":"t.*.x","exact_match":false},{"pattern":"m.#","exact_match":false}],"subscriber":"raw","created_at":0,"get_backlog":false,"backlog_seconds":0}}"#,
        ),
        (
            "subscribe_backlog",
            r#"{"role":"pubsub-subscribe","u":"7b","subscription":{"subscription_id":"s2","patterns":[{"pattern":"orders.#","exact_match":false}],"get_backlog":true,"backlog_seconds":300}}"#,
        ),
        (
            "publish",
            r#"{"role":"pubsub-publish","u":"8","message":{"topic":"t.a.x","payload":{"v":[1,"a"]},"timestamp":0,"message_id":"m1","publisher":"raw","headers":{"h":1}}}"#,
        ),
        (
            "unsubscribe",
            r#"{"role":"pubsub-unsubscribe","u":"9","subscription_id":"s1"}"#,
        ),
        ("truncated", r#"{"role":"rpc","u":"6","cmds":[{"name""#),
        (
            "type_create_queue",
            r#"{"type":"create_queue","queue_name":"q","payload":{"max_size":10}}"#,
        ),
        (
            "queue_send",
            r#"{"role":"rpc","u":"10","cmds":[{"name":"s","fun":"queue_send","args":[{"queue_name":"q","message_payload":{"id":1},"deduplication_id":"d1","message_group_id":"g","headers":{"h":"v"}}]}]}"#,
        ),
        (
            "queue_subscribe",
            r#"{"role":"rpc","u":"11","cmds":[{"name":"s","fun":"queue_subscribe","args":[{"queue_name":"q","subscription_id":"w1","max_in_flight":2}]}]}"#,
        ),
        (
            "queue_topic",
            r#"{"role":"pubsub-subscribe","u":"12","subscription":{"subscription_id":"w2","patterns":[{"pattern":"mpreg.queue.q","exact_match":true}]}}"#,
        ),
    ];
    for (name, json) in client {
        write("client_frame", name, json.as_bytes());
    }
    for (name, bytes) in dns_queries() {
        write("dns_query", name, &bytes);
    }
    for (name, bytes) in snapshots() {
        write("snapshot", name, &bytes);
    }
    let plans = [
        ("one", r#"[{"name":"a","fun":"f","args":[1]}]"#),
        (
            "chain",
            r#"[{"name":"a","fun":"f"},{"name":"b","fun":"f","args":["a"]},{"name":"c","fun":"f","kwargs":{"k":"b"}}]"#,
        ),
        (
            "diamond",
            r#"[{"name":"a","fun":"f"},{"name":"b","fun":"f","args":["a"]},{"name":"c","fun":"f","args":["a"]},{"name":"d","fun":"f","args":["b","c"]}]"#,
        ),
        (
            "cycle",
            r#"[{"name":"a","fun":"f","args":["b"]},{"name":"b","fun":"f","args":["a"]}]"#,
        ),
        ("self", r#"[{"name":"a","fun":"f","args":["a"]}]"#),
        (
            "duplicate",
            r#"[{"name":"a","fun":"f"},{"name":"a","fun":"g"}]"#,
        ),
    ];
    for (name, json) in plans {
        write("dag_plan", name, json.as_bytes());
    }
    let settings = [
        (
            "seed",
            "[mpreg]\nhost = \"127.0.0.1\"\nport = 0\nname = \"n\"\ncluster_id = \"c\"\nresources = [\"cpu\"]\npeers = [\"ws://127.0.0.1:9001\"]\nmonitoring_enabled = false\n\n[mpreg.persistence_config]\nmode = \"sqlite\"\ndata_dir = \"/tmp/d\"\n",
        ),
        (
            "exposed",
            "[mpreg]\nhost = \"0.0.0.0\"\ninsecure_peers = false\n",
        ),
        (
            "env",
            "MPREG_PORT=9000\nMPREG_PEERS=ws://a:1,ws://b:2\nMPREG_INSECURE_PEERS=yes\nMPREG_CLUSTER_SECRET_FILE=/etc/s\n",
        ),
        ("bad", "[mpreg]\nport = 99999\n"),
        (
            "secure",
            "[mpreg]\nauth_required = true\njwt_secret_file = \"/etc/mpreg/jwt.secret\"\nallowed_clients = [\"svc-a\"]\nintrospection_role = \"admin\"\ntls_cert_file = \"/etc/mpreg/node.pem\"\ntls_key_file = \"/etc/mpreg/node.key\"\ntls_peer_ca_file = \"/etc/mpreg/ca.pem\"\n",
        ),
    ];
    for (name, text) in settings {
        write("settings", name, text.as_bytes());
    }
    // Upgrades: 0 + an Authorization header, or 1 + a query string.
    let issuer = mpreg::auth::TokenIssuer::from_secret(mpreg::fuzzing::FUZZ_JWT_SECRET).unwrap();
    let token = |exp: u64, roles: &[&str]| {
        issuer
            .issue(&mpreg::auth::Claims {
                sub: "svc-a".into(),
                exp,
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                iat: None,
                nbf: None,
                iss: None,
                aud: None,
            })
            .unwrap()
    };
    let valid = token(2_000_000, &["caller", "worker"]);
    let upgrades: [(&str, Vec<u8>); 5] = [
        (
            "header",
            [&[0u8][..], format!("Bearer {valid}").as_bytes()].concat(),
        ),
        (
            "query",
            [&[1u8][..], format!("a=1&token={valid}").as_bytes()].concat(),
        ),
        (
            "expired",
            [&[0u8][..], format!("Bearer {}", token(10, &[])).as_bytes()].concat(),
        ),
        ("basic", [&[0u8][..], &b"Basic dXNlcjpwYXNz"[..]].concat()),
        ("escaped", [&[1u8][..], &b"token=a%2Eb%2Ec"[..]].concat()),
    ];
    for (name, bytes) in upgrades {
        write("upgrade_token", name, &bytes);
    }
}
