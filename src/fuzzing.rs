//! The bodies of the fuzz targets in `fuzz/` (cargo-fuzz, nightly), here so that the same
//! code replays their committed corpora as ordinary tests on stable
//! (`tests/fuzz_corpora.rs`). Each takes arbitrary bytes, must never panic, hang or
//! allocate beyond what the bytes back, and checks what must hold of what it decoded.

use crate::config::{Settings, SettingsLayer};
use crate::fabric::{decode_frame, encode_frame, parse_hello};
use crate::protocol::{Incoming, RpcCommand};
use crate::rpc::plan::{Plan, plan};

/// `honest`, a MessagePack value holding one 300-byte string, with that string's header
/// (a str16) replaced by a str32 header claiming 4 GiB, the most MessagePack can claim, and
/// the string's bytes dropped: a frame of a few dozen bytes that lies about its length (the
/// attack tests and the seed corpora use it).
pub fn claim_4_gib(honest: &[u8]) -> Vec<u8> {
    let header = [0xda, 0x01, 0x2c];
    let at = honest
        .windows(3)
        .position(|w| w == header)
        .expect("a 300-byte string's header");
    let mut v = honest[..at].to_vec();
    v.extend([0xdb, 0xff, 0xff, 0xff, 0xff]);
    v.extend(&honest[at + 3 + 300..]);
    v
}

/// A peer's first frame, as the acceptor reads it before any proof.
pub fn peer_hello(data: &[u8]) {
    if let Some(Ok(hello)) = parse_hello(data) {
        let again = encode_frame(&crate::fabric::Frame::Hello(hello.clone()))
            .expect("a decoded hello encodes");
        assert_eq!(parse_hello(&again), Some(Ok(hello)), "a hello round-trips");
    }
}

/// Any frame of an admitted peer, and the data-plane request a `Data` request carries
/// (a published message's JSON parts are checked as the receiving node checks them).
pub fn peer_frame(data: &[u8]) {
    if let Ok(crate::fabric::Frame::Request {
        plane: crate::fabric::Plane::Data,
        body,
        ..
    }) = decode_frame(data)
        && let Ok(crate::data::client::DataRequest::Publish(messages)) =
            crate::fabric::codec::decode(&body, body.len())
    {
        for m in messages {
            if let Ok(m) = m.into_message() {
                let _ = m.check();
            }
        }
    }
    // A queue group's RPC, as `GroupHost` reads it.
    if let Ok(crate::fabric::Frame::Request {
        plane: crate::fabric::Plane::Groups,
        body,
        ..
    }) = decode_frame(data)
    {
        let _ = crate::fabric::codec::decode::<crate::queue::group_network::GroupRequest>(
            &body,
            body.len(),
        );
    }
    if let Ok(frame) = decode_frame(data) {
        let bytes = encode_frame(&frame).expect("a decoded frame encodes");
        let again = decode_frame(&bytes).expect("an encoded frame decodes");
        assert_eq!(
            encode_frame(&again).expect("encodes"),
            bytes,
            "a frame round-trips"
        );
    }
}

/// A client's frame (JSON), and the plan of the request it holds.
pub fn client_frame(data: &[u8]) {
    match crate::protocol::decode_frame(data) {
        // A queue subscription call is read by the connection itself.
        Ok(Incoming::Rpc(req)) if crate::builtins::queue::is_subscription_call(&req) => {
            let _ = crate::builtins::queue::subscription_call(&req);
        }
        Ok(Incoming::Rpc(req)) => check_plan(&req.cmds, 1000),
        // A subscription within its bounds goes into a matcher; a message within its
        // bounds is matched and encoded as notifications carry it.
        Ok(Incoming::Subscribe(req)) if req.subscription.check(0).is_ok() => {
            let mut m = crate::pubsub::matcher::TopicMatcher::default();
            for p in &req.subscription.patterns {
                m.insert(&p.pattern, p.exact_match, 0u8);
            }
            let _ = m.matches(&req.subscription.patterns[0].pattern);
        }
        // A cache request is read and answered by a small memory-only cache (every path
        // without L2 completes on its first poll).
        Ok(Incoming::Cache(text)) => {
            if let Ok(req) = crate::cache::request::decode(&text) {
                use futures_util::FutureExt;
                let cache = fuzz_cache();
                let answered = match cache.answer_now(&req) {
                    Some(a) => Some(a),
                    None => cache.handle(req).now_or_never(),
                };
                if let Some(a) = answered {
                    assert!(
                        serde_json::from_str::<serde::de::IgnoredAny>(&a).is_ok(),
                        "a cache-response is JSON: {a}"
                    );
                }
            }
        }
        Ok(Incoming::Publish(req)) if req.message.check().is_ok() => {
            let body = req.message.notified_json();
            let n = crate::protocol::pubsub::notification(&body, &req.message, "s");
            assert!(
                serde_json::from_str::<serde::de::IgnoredAny>(&n).is_ok(),
                "a notification is JSON"
            );
        }
        _ => {}
    }
}

/// The cache the fuzzer's cache requests go to: 64 KiB of L1, wall time fixed.
fn fuzz_cache() -> &'static crate::cache::CacheService {
    struct Fixed;
    impl crate::env::Clock for Fixed {
        fn wall_ms(&self) -> u64 {
            1_700_000_000_000
        }
    }
    static CACHE: std::sync::OnceLock<crate::cache::CacheService> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| {
        let limits = crate::cache::CacheLimits {
            memory_bytes: 64 << 10,
            ..Default::default()
        };
        crate::cache::CacheService::in_memory(limits, std::sync::Arc::new(Fixed), "f".into(), 1)
    })
}

/// The client-side JSON text machinery: `find_u` on any bytes; `check` agrees with
/// serde_json on what is JSON at all; references resolve into valid JSON.
pub fn json_text(data: &[u8]) {
    use crate::protocol::Json;
    use crate::protocol::jscan::{self, Defect};
    use crate::rpc::resolve::{Budget, resolve};
    let _ = jscan::find_u(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let serde_reads = serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
    match jscan::check(text) {
        Ok(()) => assert!(serde_reads, "check passed what serde_json refuses"),
        Err(Defect::Syntax(e)) => assert!(!serde_reads, "check refused valid JSON: {e}"),
        Err(_) => return,
    }
    let Ok(json) = Json::from_text(text.to_owned()) else {
        return;
    };
    let names: crate::rpc::plan::NameIndex<'_> = [("a", 0), ("b", 1)].into_iter().collect();
    let results = [
        Some(Json::from(serde_json::json!(1))),
        Some(Json::from(serde_json::json!({"x": [2, {"y": "z"}]}))),
    ];
    let mut budget = Budget {
        bytes_left: 1 << 20,
    };
    if let Ok(out) = resolve(&json, &names, &results, &mut budget, 1 << 20) {
        assert!(
            serde_json::from_str::<serde::de::IgnoredAny>(out.get()).is_ok(),
            "resolved text is not JSON: {out}"
        );
    }
}

/// The DAG planner fed a JSON list of commands.
pub fn dag_plan(data: &[u8]) {
    if let Ok(cmds) = serde_json::from_slice::<Vec<RpcCommand>>(data) {
        check_plan(&cmds, 64);
    }
}

/// What every plan must be: each command at exactly one level, after all it needs; the
/// dependency lists mirror each other; the sinks are exactly the commands nobody needs.
fn check_plan(cmds: &[RpcCommand], max: usize) {
    let Ok(Plan {
        deps,
        dependents,
        levels,
        sinks,
    }) = plan(cmds, max)
    else {
        return;
    };
    let n = cmds.len();
    assert_eq!((deps.len(), dependents.len()), (n, n));
    let mut level_of = vec![usize::MAX; n];
    for (k, level) in levels.iter().enumerate() {
        for &i in level {
            assert_eq!(level_of[i], usize::MAX, "command {i} planned twice");
            level_of[i] = k;
        }
    }
    for (i, d) in deps.iter().enumerate() {
        assert!(level_of[i] != usize::MAX, "command {i} never planned");
        for &j in d {
            assert!(level_of[j] < level_of[i], "{i} runs before its input {j}");
            assert!(dependents[j].contains(&i));
        }
    }
    let expected: Vec<usize> = (0..n).filter(|&i| dependents[i].is_empty()).collect();
    assert_eq!(sinks, expected);
}

/// The settings loader: a TOML file, and `KEY=VALUE` lines as the environment.
pub fn settings(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = text.lines().filter_map(|l| l.split_once('='));
    let layers: Vec<SettingsLayer> = [
        SettingsLayer::from_toml_str(text, "fuzz").ok(),
        SettingsLayer::from_env(env).ok(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let s = Settings::layered(&layers);
    if s.validate().is_ok() {
        let _ = (
            s.bind_addr(),
            crate::rpc::ExecLimits::from_settings(&s),
            s.loopback_only(),
        );
        let _ = s.check_peer_exposure(false);
    }
}

/// The HS256 secret of the `upgrade_token` target (its seed tokens are signed with it, so
/// that mutations reach the claims' checks too).
pub const FUZZ_JWT_SECRET: &[u8] = b"the upgrade_token fuzz target's secret";

/// A client's upgrade, as the node reads it before anything is authenticated: the first
/// byte says where the rest goes (even: the `Authorization` header; odd: the query), then
/// the token found is verified.
pub fn upgrade_token(data: &[u8]) {
    use crate::auth::upgrade::presented_token;
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let presented = if which % 2 == 0 {
        presented_token(Some(rest), None)
    } else {
        match std::str::from_utf8(rest) {
            Ok(query) => presented_token(None, Some(query)),
            Err(_) => return,
        }
    };
    let Ok(Some(token)) = presented else {
        return;
    };
    let verifier =
        crate::auth::TokenVerifier::with_hmac_secret(FUZZ_JWT_SECRET, Default::default())
            .expect("an HMAC key from any bytes");
    if let Ok(v) = verifier.verify(&token, 1_000_000) {
        assert!(v.identity.within_bounds(), "a verified identity is bounded");
        assert!(v.exp > 1_000_000, "a verified token has not expired");
    }
}

/// A snapshot arriving from a leader, as openraft hands it to the state machine: the first
/// byte cuts the rest into chunks, each written at the offset its position gives, moved by
/// the second byte (so some seek into, or past, what arrived), under a small limit; then the
/// shutdown decodes the state. A decoded state must encode and decode to itself. Never an
/// allocation beyond the bytes written, whatever the offsets.
pub fn snapshot(data: &[u8]) {
    use std::io::SeekFrom;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};
    use tokio::io::{AsyncSeek, AsyncWrite};

    use crate::control::raft::SnapshotBuf;

    const LIMIT: usize = 64 * 1024;
    let [cut, shift, rest @ ..] = data else {
        return;
    };
    let chunk = usize::from(*cut).max(1);
    let mut cx = Context::from_waker(Waker::noop());
    fn ready<T>(p: Poll<std::io::Result<T>>) -> std::io::Result<T> {
        match p {
            Poll::Ready(r) => r,
            Poll::Pending => panic!("a snapshot buffer never waits"),
        }
    }
    // A queue group's snapshot, decoded as its replica reads one: what decodes encodes.
    {
        use crate::control::raft::SnapshotState;
        use crate::queue::group::GroupState;
        if let Ok(state) = GroupState::decode_snapshot(rest, LIMIT) {
            let bytes = crate::fabric::codec::encode_stored(&state).expect("encodes");
            GroupState::decode_snapshot(&bytes, bytes.len()).expect("an encoded state decodes");
        }
    }
    let mut buf: SnapshotBuf = SnapshotBuf::receiving(LIMIT);
    for (i, part) in rest.chunks(chunk).enumerate() {
        // Honest offsets, except every chunk that the shift byte's bits pick.
        let honest = (i * chunk) as u64;
        let offset = if (shift >> (i % 8)) & 1 == 1 {
            honest.wrapping_mul(u64::from(*shift)).wrapping_add(1 << 40)
        } else {
            honest
        };
        if Pin::new(&mut buf)
            .start_seek(SeekFrom::Start(offset))
            .is_err()
        {
            assert!(
                offset > buf.len() as u64,
                "a seek within what arrived is allowed"
            );
            return;
        }
        let _ = ready(Pin::new(&mut buf).poll_complete(&mut cx));
        if ready(Pin::new(&mut buf).poll_write(&mut cx, part)).is_err() {
            return;
        }
        assert!(buf.len() <= LIMIT, "a snapshot grew past its limit");
    }
    if ready(Pin::new(&mut buf).poll_shutdown(&mut cx)).is_err() {
        return;
    }
    let (_, Some(state)) = buf.into_parts() else {
        panic!("a snapshot that shut down cleanly has its state");
    };
    let bytes = bincode::serde::encode_to_vec(&state, bincode::config::standard())
        .expect("a decoded state encodes");
    let mut again = SnapshotBuf::receiving(bytes.len().max(1));
    let _ = ready(Pin::new(&mut again).poll_write(&mut cx, &bytes)).expect("fits");
    ready(Pin::new(&mut again).poll_shutdown(&mut cx)).expect("an encoded state decodes");
    assert_eq!(again.into_parts().1, Some(state), "a state round-trips");
}

/// The DNS gateway's query path on any packet, over UDP and TCP, with no IO: the answer
/// cache's scan, the parser, the answer from a small catalog and the reply's encoding. What
/// must hold: an error reply is never larger than a header and the question's bytes (no
/// amplification); every reply decodes, echoes the id, and over UDP fits the size the
/// query allows; a cached answer, patched for this packet, is byte for byte the reply the
/// full path made; a packet differing only in id, RD and the question name's case has the
/// same cache key and gets the same rcode; a slipped (truncated) reply decodes.
pub fn dns_query(data: &[u8]) {
    use crate::dns::answer::{Facts, answer};
    use crate::dns::cache::{AnswerCache, KEY_MAX, scan};
    use crate::dns::wire::{Parsed, Transport, parse, reply, truncate_in_place};
    use hickory_proto::op::{Message, ResponseCode};
    for transport in [Transport::Udp, Transport::Tcp] {
        let full = |packet: &[u8]| -> Option<(Vec<u8>, ResponseCode)> {
            match parse(packet, transport) {
                Parsed::Drop => None,
                Parsed::Reply(bytes, rcode) => {
                    assert!(
                        bytes.len() <= packet.len().max(12),
                        "an error reply larger than its query"
                    );
                    Some((bytes, rcode))
                }
                Parsed::Ask(q) => {
                    let (zones, catalog) = dns_fixture();
                    let down = std::collections::BTreeSet::new();
                    let facts = Facts {
                        catalog,
                        down: &down,
                        serial: 1,
                        viewer: "c",
                    };
                    let a = answer(zones, &facts, q.query.name(), q.query.query_type(), 7);
                    let rcode = a.rcode;
                    let (bytes, _) = reply(&q, a, transport);
                    if transport == Transport::Udp {
                        assert!(bytes.len() <= usize::from(q.limit), "a UDP reply too big");
                    }
                    Some((bytes, rcode))
                }
            }
        };
        let Some((bytes, rcode)) = full(data) else {
            continue;
        };
        assert_eq!(bytes[..2], data[..2], "the reply echoes the id");
        assert!(bytes[2] & 0x80 != 0, "a reply is a response");
        if rcode != ResponseCode::FormErr {
            Message::from_vec(&bytes).expect("a reply decodes");
        }
        let mut slipped = bytes.clone();
        truncate_in_place(&mut slipped);
        if !slipped.is_empty() && rcode != ResponseCode::FormErr {
            Message::from_vec(&slipped).expect("a slipped reply decodes");
        }
        let mut key = [0u8; KEY_MAX];
        let Some(scanned) = scan(data, transport, &mut key) else {
            continue;
        };
        let key = key[..scanned.key_len].to_vec();
        // The same question asked differently: another id, RD flipped, the name's case
        // swapped. Same key, same rcode.
        let mut other = data.to_vec();
        other[0] ^= 0x5a;
        other[2] ^= 0x01;
        for b in &mut other[12..scanned.qname_end] {
            if b.is_ascii_alphabetic() {
                *b ^= 0x20;
            }
        }
        let mut other_key = [0u8; KEY_MAX];
        let Some(other_scan) = scan(&other, transport, &mut other_key) else {
            panic!("case, id and RD made a cacheable query uncacheable");
        };
        assert_eq!(
            other_key[..other_scan.key_len],
            key[..],
            "case, id and RD change the key"
        );
        let other_full = full(&other);
        assert_eq!(
            other_full.as_ref().map(|o| o.1),
            Some(rcode),
            "the same question, another rcode"
        );
        if rcode == ResponseCode::NoError {
            // Kept for `data`, served to `other`: what the full path gives `other`.
            let mut cache = AnswerCache::default();
            cache.keep(&key, vec![bytes.clone()], 1, 0);
            let mut out = Vec::new();
            assert!(cache.answer(&key, other_scan, &other, 1, 0, &mut out));
            let want = other_full.map(|o| o.0).unwrap_or_default();
            // Names compare without case (a cached answer's owner names may point at the
            // question, so they take its case; the full path may write the zone's).
            assert_eq!(out[..12], want[..12], "a cached answer's header differs");
            let (got, want) = (
                Message::from_vec(&out).expect("a cached answer decodes"),
                Message::from_vec(&want).expect("a reply decodes"),
            );
            assert_eq!(
                (
                    &got.queries,
                    &got.answers,
                    &got.authorities,
                    &got.additionals
                ),
                (
                    &want.queries,
                    &want.answers,
                    &want.authorities,
                    &want.additionals
                ),
                "a cached answer differs from the full path's"
            );
        }
    }
}

/// The DNS fuzz target's zones and catalog: two members and two services.
fn dns_fixture() -> &'static (crate::dns::answer::Zones, crate::control::Catalog) {
    use crate::control::{CatalogCommand, DnsService, Member, NodeId, Role, ServiceKey};
    static FIXTURE: std::sync::OnceLock<(crate::dns::answer::Zones, crate::control::Catalog)> =
        std::sync::OnceLock::new();
    FIXTURE.get_or_init(|| {
        let zones =
            crate::dns::answer::Zones::new(&["mpreg".into(), "Example.com".into()], 1, 60, false)
                .expect("valid zones");
        let mut c = crate::control::Catalog::default();
        let member = |id: u64, url: &str| Member {
            id: NodeId(id),
            name: format!("n{id}"),
            cluster_id: "c".into(),
            advertised_urls: vec![url.into()],
            resources: Default::default(),
            role: Role::Voter,
        };
        let service = |name: &str, by: u64, targets: &[&str]| DnsService {
            key: ServiceKey {
                namespace: "shop".into(),
                name: name.into(),
                protocol: "tcp".into(),
                port: 80,
            },
            targets: targets.iter().map(|t| (*t).to_owned()).collect(),
            scope: "zone".into(),
            tags: Default::default(),
            capabilities: Default::default(),
            metadata: [("k".to_owned(), "\"v\"".to_owned())].into_iter().collect(),
            priority: 1,
            weight: 2,
            ttl_seconds: 300,
            registered_by: NodeId(by),
            cluster_id: "c".into(),
            registration_id: "r".into(),
            registered_at_ms: 0,
        };
        let many: Vec<String> = (0..40).map(|i| format!("10.0.1.{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        for cmd in [
            CatalogCommand::UpsertMember(member(1, "ws://127.0.0.1:9001")),
            CatalogCommand::UpsertMember(member(2, "ws://[::1]:9002")),
            CatalogCommand::RegisterService(service(
                "web",
                1,
                &["10.0.0.7", "fd00::7", "web.example.com"],
            )),
            CatalogCommand::RegisterService(service("big", 2, &many)),
        ] {
            c.apply(cmd).expect("the fixture applies");
        }
        (zones, c)
    })
}
