//! What travels on a peer link, and how it is read: MessagePack with named fields
//! (`fabric::codec`), so that a later build can add a field or a message kind without
//! stopping the cluster (see [`PEER_PROTOCOL`] and `Frame::Unsupported`).

use std::io;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use super::codec;
use super::handshake::{Nonce, Proof};
use crate::env::BoxStream;

/// Largest frame on a peer link (snapshots travel in one).
pub(crate) const MAX_FRAME_BYTES: usize = 64 << 20;

/// The path a peer's WebSocket handshake asks for; it marks the connection as a peer's.
pub const PEER_PATH: &str = "/_mpreg/raft";

/// Which part of the node a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Plane {
    /// The control plane: Raft RPCs, catalog writes, membership (`control::raft`).
    Raft,
    /// The data plane: heartbeats and forwarded steps (`data::plane`).
    Data,
    /// Queue groups' Raft RPCs, each naming its group (`queue::group_network`). A
    /// build without it answers `Unsupported` and keeps the connection.
    Groups,
}

pub(crate) type PeerWs = WebSocketStream<BoxStream>;

/// The newest peer protocol this build speaks. Frames are self-describing, so a build may
/// add a field (readers ignore fields they do not know, and default ones that are missing)
/// or a message kind (answered `Unsupported` by a build that does not know it) without a
/// new protocol; the number goes up when what a message *means* changes, and the hello
/// settles on the highest version both ends speak (see [`negotiate`]).
pub const PEER_PROTOCOL: u32 = 7;

/// The first peer protocol whose builds read batched catalog entries
/// (`CatalogCommand::Batch`): a leader batches only when every member speaks it with it.
pub const BATCH_PROTOCOL: u32 = 6;

/// The first peer protocol whose builds read queue entries with replicas
/// (`CatalogCommand::CreateQueue` of data format 7) and run queue groups: a queue is created
/// replicated only while every member speaks it.
pub const REPLICAS_PROTOCOL: u32 = 7;

/// The oldest peer protocol this build still speaks. 5 is the first in MessagePack: the
/// builds before (1 to 4) spoke bincode and are told so (`hello::parse_hello`), so moving
/// from them is the last upgrade that needs the whole cluster stopped.
pub const MIN_PEER_PROTOCOL: u32 = 5;

/// A node introducing itself in its hello: its Raft id and the address its peers know it
/// by, so that the node it dialled can use the connection as its own link back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub id: u64,
    pub addr: String,
}

/// The dialler's first frame: the newest and oldest peer protocols it speaks, its cluster
/// id (`None`: a tool, not a node), the node it means to reach (`None`: whichever node is at
/// the address), who it is (`None`: a tool, or a node that wants no calls back on this
/// connection, such as a join), and its fresh nonce for the challenge-response
/// (`fabric::handshake`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    pub min_protocol: u32,
    pub cluster: Option<String>,
    pub node: Option<u64>,
    pub from: Option<Caller>,
    pub nonce: Nonce,
}

/// What travels on a link. Before the dialler has proved itself the acceptor reads only
/// `Hello` and then `Proof`; anything else closes the connection.
#[derive(Debug, Serialize, Deserialize)]
pub enum Frame {
    Hello(Hello),
    /// The answer to `Hello`: accepted, or why not.
    Welcome(Result<(), String>),
    /// The acceptor's answer to a hello it can speak: the protocol both will use, its
    /// nonce, and its proof that it holds the cluster secret.
    Challenge {
        protocol: u32,
        nonce: Nonce,
        proof: Proof,
    },
    /// The dialler's proof that it holds the cluster secret.
    Proof(Proof),
    /// A request for `plane`, whose handler reads `body`.
    Request {
        id: u64,
        plane: Plane,
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    Reply {
        id: u64,
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    /// The answer to request `id` when it is of a kind (or for a plane) this build does not
    /// know, a newer build's: nothing was done.
    Unsupported {
        id: u64,
        why: String,
    },
    /// The answer to request `id` when the node runs as much as it may for this peer:
    /// nothing was done, the caller may try elsewhere.
    Busy {
        id: u64,
        why: String,
    },
    /// The sender no longer waits for its request `id`: a forwarded step stops running.
    Cancel {
        id: u64,
    },
    /// The sender waits for nothing more on this connection and will send no request on
    /// it (it talks to this peer on another one).
    Done,
    /// As `Done`, because a call of the sender's missed its deadline here: the receiver
    /// sends no new request on it either (both move to a new connection), but still gets
    /// answers to the ones it sent.
    Retire,
}

/// The protocol two nodes speak: the newest both know, or why they share none.
pub fn negotiate(mine: (u32, u32), theirs: (u32, u32)) -> Result<u32, String> {
    let (lo, hi) = (mine.0.max(theirs.0), mine.1.min(theirs.1));
    if lo <= hi {
        Ok(hi)
    } else {
        Err(format!(
            "this node speaks peer protocols {}..={}, the caller {}..={}: upgrade one \
             build at a time (each speaks its predecessor's protocol)",
            mine.0, mine.1, theirs.0, theirs.1
        ))
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> io::Result<Message> {
    codec::encode(value)
        .map(Message::binary)
        .map_err(io::Error::other)
}

/// Decodes `bytes` of at most `max` bytes, every claimed length bounded by the frame
/// (`fabric::codec`).
pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], max: usize) -> io::Result<T> {
    codec::decode(bytes, max).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// A peer frame as bytes (tests and tools that speak the peer protocol by hand).
pub fn encode_frame(frame: &Frame) -> io::Result<Vec<u8>> {
    codec::encode(frame).map_err(io::Error::other)
}

/// The frame in `bytes`, decoded as a node decodes it.
pub fn decode_frame(bytes: &[u8]) -> io::Result<Frame> {
    decode(bytes, MAX_FRAME_BYTES)
}

/// A frame as an admitted peer's connection reads it.
#[derive(Debug)]
pub(crate) enum Incoming {
    Frame(Frame),
    /// A request this build cannot read (a plane it does not know): it is answered
    /// `Unsupported`, the connection stays.
    Unknown {
        id: u64,
        why: String,
    },
}

/// What a request looks like to a build that cannot read its body.
#[derive(Deserialize)]
enum Peek {
    Request { id: u64 },
}

/// Reads `bytes` as an admitted peer's frame: a frame, an unknown request, or an error
/// (which ends the connection).
pub(crate) fn incoming(bytes: &[u8]) -> io::Result<Incoming> {
    match decode::<Frame>(bytes, MAX_FRAME_BYTES) {
        Ok(frame) => Ok(Incoming::Frame(frame)),
        Err(e) => match decode::<Peek>(bytes, MAX_FRAME_BYTES) {
            Ok(Peek::Request { id }) => Ok(Incoming::Unknown {
                id,
                why: e.to_string(),
            }),
            Err(_) => Err(e),
        },
    }
}

/// The next binary frame, decoded; `None` when the peer closed.
pub(crate) async fn next_frame<S>(ws: &mut S) -> io::Result<Option<Frame>>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    next_binary(ws)
        .await?
        .map(|b| decode(&b, MAX_FRAME_BYTES))
        .transpose()
}

/// The next binary frame of an admitted peer; `None` when the peer closed.
pub(crate) async fn next_incoming<S>(
    ws: &mut S,
    traffic: &super::budget::Traffic,
) -> io::Result<Option<Incoming>>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let Some(bytes) = next_binary(ws).await? else {
        return Ok(None);
    };
    use std::sync::atomic::Ordering::Relaxed;
    traffic.bytes_in.fetch_add(bytes.len() as u64, Relaxed);
    let read = incoming(&bytes)?;
    traffic.frames_in.fetch_add(1, Relaxed);
    match &read {
        Incoming::Frame(Frame::Request { .. }) | Incoming::Unknown { .. } => {
            traffic.requests_in.fetch_add(1, Relaxed);
        }
        Incoming::Frame(Frame::Reply { .. } | Frame::Unsupported { .. } | Frame::Busy { .. }) => {
            traffic.replies_in.fetch_add(1, Relaxed);
        }
        Incoming::Frame(_) => {}
    }
    Ok(Some(read))
}

/// The next binary frame's bytes; `None` when the peer closed.
pub(crate) async fn next_binary<S>(ws: &mut S) -> io::Result<Option<Bytes>>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    while let Some(msg) = ws.next().await {
        match msg.map_err(io::Error::other)? {
            Message::Binary(b) => return Ok(Some(b)),
            Message::Close(_) => return Ok(None),
            _ => {}
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_builds_speak_the_newest_protocol_both_know() {
        // (mine, theirs) -> agreed
        let table = [
            ((5, 5), (5, 5), Ok(5)),
            ((5, 6), (5, 5), Ok(5)), // N+1 talking to N
            ((5, 5), (5, 6), Ok(5)), // N talking to N+1
            ((5, 6), (5, 6), Ok(6)),
            ((6, 7), (5, 5), Err(())), // two upgrades apart
            ((5, 5), (6, 7), Err(())),
        ];
        for (i, (mine, theirs, want)) in table.into_iter().enumerate() {
            assert_eq!(negotiate(mine, theirs).map_err(|_| ()), want, "row {i}");
        }
        let why = negotiate((5, 5), (6, 7)).unwrap_err();
        assert!(why.contains("5..=5") && why.contains("6..=7"), "{why}");
    }

    #[test]
    fn a_request_for_an_unknown_plane_is_told_apart_from_a_broken_frame() {
        // A later build's plane: a Request whose plane this build does not know.
        #[derive(Serialize)]
        enum Later {
            Request {
                id: u64,
                plane: &'static str,
                body: Vec<u8>,
            },
        }
        let later = codec::encode(&Later::Request {
            id: 7,
            plane: "Gossip",
            body: vec![1],
        })
        .unwrap();
        let Ok(Incoming::Unknown { id: 7, .. }) = incoming(&later) else {
            panic!("an unknown plane was not answered as unsupported");
        };
        // A known frame reads as itself; garbage is an error (the connection ends).
        let ping = encode_frame(&Frame::Request {
            id: 1,
            plane: Plane::Raft,
            body: vec![1, 2, 3],
        })
        .unwrap();
        assert!(matches!(
            incoming(&ping),
            Ok(Incoming::Frame(Frame::Request {
                id: 1,
                plane: Plane::Raft,
                ..
            }))
        ));
        assert!(incoming(&[0xc1, 0, 0]).is_err());
    }
}
