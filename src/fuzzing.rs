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
    let mut buf = SnapshotBuf::receiving(LIMIT);
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
