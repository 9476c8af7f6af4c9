//! The peer hello, both halves: the dialler's (`say_hello`) and the acceptor's (`welcome`).
//! They agree on a peer protocol (`frame::negotiate`) and prove to each other that they hold
//! the cluster secret (`fabric::handshake`); only then does the acceptor check that the
//! hello is for its cluster and for it, so an outsider learns neither.

use std::io;

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use super::codec;
use super::endpoint::Endpoint;
use super::frame::{
    Caller, Frame, Hello, PeerWs, decode, encode, encode_frame, negotiate, next_binary, next_frame,
};
use super::handshake::{self, Nonce, Side};
use super::secret::ClusterSecret;

/// The largest hello or proof frame read before a peer has proved itself: a hello is a
/// cluster id, two addresses and a nonce, so anything bigger is not one.
pub(crate) const MAX_HELLO_BYTES: usize = 4096;

/// What both proofs cover: the hello's exact bytes and the protocol the acceptor chose, so
/// that neither can be changed in flight (a downgrade included).
pub fn transcript(hello: &[u8], protocol: u32) -> Vec<u8> {
    let mut t = hello.to_vec();
    t.extend(protocol.to_le_bytes());
    t
}

/// The dialler's half: sends `hello`, checks that the node at `addr` proves it holds
/// `secret` and chose a protocol this side speaks, proves the same, and waits to be
/// welcomed. Returns the protocol the connection speaks.
pub(crate) async fn say_hello(
    ws: &mut PeerWs,
    hello: &Hello,
    secret: &ClusterSecret,
    addr: &str,
) -> io::Result<u32> {
    let denied = |why: String| io::Error::new(io::ErrorKind::PermissionDenied, why);
    let bytes = encode_frame(&Frame::Hello(hello.clone()))?;
    ws.send(Message::binary(bytes.clone()))
        .await
        .map_err(io::Error::other)?;
    let protocol = match next_frame(ws).await {
        Ok(Some(Frame::Challenge {
            protocol,
            nonce,
            proof,
        })) => {
            let t = transcript(&bytes, protocol);
            if !handshake::verify(secret, Side::Acceptor, &t, &nonce, &proof) {
                return Err(denied(format!(
                    "the node at {addr} and this process do not hold the same cluster \
                     secret (do both read the same --cluster-secret-file?)"
                )));
            }
            if !(hello.min_protocol..=hello.protocol).contains(&protocol) {
                return Err(denied(format!(
                    "the node at {addr} chose peer protocol {protocol}, which this build \
                     does not speak"
                )));
            }
            let mine = handshake::prove(secret, Side::Dialler, &t, &nonce);
            ws.send(encode(&Frame::Proof(mine))?)
                .await
                .map_err(io::Error::other)?;
            protocol
        }
        Ok(Some(Frame::Welcome(Err(why)))) => return Err(denied(why)),
        other => return Err(unanswered(other)),
    };
    match next_frame(ws).await {
        Ok(Some(Frame::Welcome(Ok(())))) => Ok(protocol),
        Ok(Some(Frame::Welcome(Err(why)))) => Err(denied(why)),
        other => Err(unanswered(other)),
    }
}

/// A hello the peer did not answer as this build expects: a build that cannot read it
/// drops the connection without a word.
fn unanswered(got: io::Result<Option<Frame>>) -> io::Error {
    let what = match got {
        Err(e) => e.to_string(),
        Ok(None) => "it closed the link".to_owned(),
        Ok(Some(_)) => "it sent another frame".to_owned(),
    };
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "the peer did not answer the hello ({what}): is it an mpreg node of a build \
             speaking another peer protocol?"
        ),
    )
}

/// Who was welcomed: who dialled (if it said) and the protocol agreed.
pub(crate) struct Welcomed {
    pub(crate) from: Option<Caller>,
    pub(crate) protocol: u32,
}

/// The acceptor's half: reads the hello (nothing else), agrees on a protocol, answers with
/// this node's nonce and proof, reads the dialler's proof (nothing else), and welcomes it
/// if the proof holds and the hello is for this cluster and node. A refused dialler is told
/// why, except that a failed proof is answered with no detail.
pub(crate) async fn welcome(endpoint: &Endpoint, ws: &mut PeerWs) -> Result<Welcomed, String> {
    let hello_bytes = next_small_frame(ws).await?;
    let hello = match parse_hello(&hello_bytes) {
        Some(Ok(hello)) => hello,
        Some(Err(why)) => return Err(refuse(ws, why).await),
        None => return Err("the first frame was not a hello".into()),
    };
    let protocol = match negotiate(endpoint.protocols(), (hello.min_protocol, hello.protocol)) {
        Ok(p) => p,
        Err(why) => return Err(refuse(ws, why).await),
    };
    let nonce: Nonce = handshake::nonce(&endpoint.env.rng);
    let t = transcript(&hello_bytes, protocol);
    let proof = handshake::prove(endpoint.secret(), Side::Acceptor, &t, &nonce);
    let challenge = Frame::Challenge {
        protocol,
        nonce,
        proof,
    };
    send(ws, &challenge).await?;
    let answer = next_small_frame(ws).await?;
    let proved = match decode::<Frame>(&answer, MAX_HELLO_BYTES) {
        Ok(Frame::Proof(p)) => handshake::verify(endpoint.secret(), Side::Dialler, &t, &nonce, &p),
        _ => return Err("the frame after the hello was not a proof".into()),
    };
    if !proved {
        let why = "the caller did not prove it holds the cluster secret";
        return Err(refuse(ws, why.into()).await);
    }
    let me = endpoint.me().map(|m| m.id);
    match admit(&hello, endpoint.cluster.as_deref(), me) {
        Ok(from) => {
            send(ws, &Frame::Welcome(Ok(()))).await?;
            Ok(Welcomed { from, protocol })
        }
        Err(why) => Err(refuse(ws, why).await),
    }
}

/// The next frame of a peer not yet admitted: at most [`MAX_HELLO_BYTES`].
async fn next_small_frame(ws: &mut PeerWs) -> Result<Bytes, String> {
    match next_binary(ws).await {
        Ok(Some(b)) if b.len() <= MAX_HELLO_BYTES => Ok(b),
        Ok(Some(b)) => Err(format!("a {}-byte frame before the proof", b.len())),
        Ok(None) => Err("closed during the hello".into()),
        Err(e) => Err(format!("unreadable during the hello: {e}")),
    }
}

async fn send(ws: &mut PeerWs, frame: &Frame) -> Result<(), String> {
    let frame = encode(frame).map_err(|e| e.to_string())?;
    ws.send(frame).await.map_err(|e| e.to_string())
}

/// Tells the dialler why it is refused, and returns the reason.
async fn refuse(ws: &mut PeerWs, why: String) -> String {
    let _ = send(ws, &Frame::Welcome(Err(why.clone()))).await;
    let _ = ws.close(None).await;
    why
}

/// The hello in `bytes`: `None` if the bytes are no hello at all, `Err` for the hello of a
/// build before peer protocol 5 (bincode: variant 0, then its version), which cannot be
/// answered in its own encoding.
pub fn parse_hello(bytes: &[u8]) -> Option<Result<Hello, String>> {
    match decode::<Frame>(bytes, MAX_HELLO_BYTES) {
        Ok(Frame::Hello(hello)) => Some(Ok(hello)),
        Ok(_) => None,
        Err(_) => match codec::decode_stored_prefix::<(u32, u32)>(bytes) {
            Ok(((0, protocol @ 1..=4), _)) => Some(Err(format!(
                "the caller speaks peer protocol {protocol}, of an mpreg build before \
                 MessagePack frames; this node speaks {}..={}: stop the old nodes and start \
                 them on this build (the last upgrade that needs a full stop)",
                super::frame::MIN_PEER_PROTOCOL,
                super::frame::PEER_PROTOCOL
            ))),
            _ => None,
        },
    }
}

/// Whether a proved `hello` is for this node (`id`, serving `cluster_id`; either `None`
/// while unknown): if so, who dialled, if it said.
fn admit(
    hello: &Hello,
    cluster_id: Option<&str>,
    id: Option<u64>,
) -> Result<Option<Caller>, String> {
    let mine = cluster_id.unwrap_or_default();
    if let Some(c) = hello.cluster.as_ref().filter(|c| *c != mine) {
        Err(format!("this node is in cluster `{mine}`, not `{c}`"))
    } else if let Some(n) = hello.node.filter(|n| Some(*n) != id) {
        Err(format!(
            "this is node {}, not {}",
            crate::ids::NodeId(id.unwrap_or(0)),
            crate::ids::NodeId(n)
        ))
    } else {
        Ok(hello.from.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::super::frame::PEER_PROTOCOL;
    use super::*;
    use crate::ids::NodeId;

    fn hello(protocol: u32, cluster: Option<&str>, node: Option<u64>) -> Hello {
        Hello {
            protocol,
            min_protocol: protocol,
            cluster: cluster.map(str::to_owned),
            node,
            from: None,
            nonce: [3; handshake::NONCE_BYTES],
        }
    }

    fn bytes(h: &Hello) -> Vec<u8> {
        encode_frame(&Frame::Hello(h.clone())).unwrap()
    }

    #[test]
    fn a_hello_is_admitted_only_for_this_cluster_and_this_node() {
        let ok = hello(PEER_PROTOCOL, Some("c"), Some(7));
        assert_eq!(parse_hello(&bytes(&ok)), Some(Ok(ok.clone())));
        assert_eq!(admit(&ok, Some("c"), Some(7)), Ok(None));
        // Tools name neither cluster nor node.
        assert_eq!(
            admit(&hello(PEER_PROTOCOL, None, None), Some("c"), Some(7)),
            Ok(None)
        );
        // A node that says who it is is admitted as that node.
        let from = Caller {
            id: 9,
            addr: "127.0.0.1:9".into(),
        };
        let introduced = Hello {
            from: Some(from.clone()),
            ..ok
        };
        assert_eq!(admit(&introduced, Some("c"), Some(7)), Ok(Some(from)));
        assert_eq!(
            admit(&hello(PEER_PROTOCOL, Some("d"), None), Some("c"), Some(7)),
            Err("this node is in cluster `c`, not `d`".into())
        );
        assert_eq!(
            admit(
                &hello(PEER_PROTOCOL, Some("c"), Some(8)),
                Some("c"),
                Some(7)
            ),
            Err(format!("this is node {}, not {}", NodeId(7), NodeId(8)))
        );
    }

    #[test]
    fn the_bincode_hellos_of_earlier_builds_are_refused_by_their_version() {
        // Protocol 4's hello: variant 0, version 4, then its fields.
        let four = codec::encode_stored(&(0u32, 4u32, Some("c".to_owned()), Some(7u64))).unwrap();
        let Some(Err(why)) = parse_hello(&four) else {
            panic!("protocol 4's hello was not refused");
        };
        assert!(
            why.contains("peer protocol 4") && why.contains("full stop"),
            "{why}"
        );
        // Frames that are no hello are not answered at all.
        let cancel = encode_frame(&Frame::Cancel { id: 1 }).unwrap();
        assert_eq!(parse_hello(&cancel), None);
        assert_eq!(parse_hello(&[0xc1]), None);
    }

    #[test]
    fn a_hello_whose_lengths_lie_is_no_hello_and_costs_nothing() {
        // A hello whose cluster id (300 bytes: str16) is replaced by a str32 claiming 4 GiB.
        let honest = bytes(&hello(PEER_PROTOCOL, Some(&"c".repeat(300)), None));
        let lying = crate::fuzzing::claim_4_gib(&honest);
        assert_eq!(parse_hello(&lying), None);
        assert!(super::super::frame::decode_frame(&lying).is_err());
    }
}
