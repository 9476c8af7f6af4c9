//! Bytes in and out, every decode bounded by the bytes received.
//!
//! **Peer frames** ([`encode`], [`decode`]) are MessagePack with named fields (rmp-serde):
//! self-describing, so a later build may add a field (`#[serde(default)]` on the reading
//! side; a reader ignores fields it does not know) or a message kind (a reader that does not
//! know it says so, see `Frame::Unsupported`), and nodes of both builds still run one
//! cluster. Before serde sees a frame, [`claims_fit`] walks it once and refuses any string,
//! byte string, array or map whose claimed length exceeds the bytes after its header (every
//! element takes at least one byte), and nesting beyond [`MAX_DEPTH`]. So no length a frame
//! claims is larger than the frame: a prefix claiming 4 GiB in a 20-byte frame is an error,
//! not an allocation, and the most serde reserves for a sequence is its element size times
//! the bytes actually received (capped at 1 MiB by serde whatever the claim).
//!
//! **Stored values** ([`encode_stored`], [`decode_stored`]: catalog snapshots, which also
//! travel inside a snapshot frame as opaque bytes) stay bincode 2, the data directory's
//! format. bincode allocates what a length prefix claims before reading it, so those decodes
//! run under `with_limit`, sized from the input: bincode counts against it the claimed bytes
//! of every string and buffer and the in-memory size of every number (a one-byte varint
//! counts as up to 8), so a limit of 8× the input admits every honest value and refuses any
//! claim beyond that before allocating. The limit is a type-level constant in bincode, so it
//! comes from a ladder of powers of 8: a claim never exceeds 64× the input (4 KiB for small
//! inputs).

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why bytes are not a frame.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("frame of {len} bytes is over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
    #[error("cannot encode frame: {0}")]
    Encode(String),
}

/// The largest frame or stored value any decode here accepts (a catalog snapshot travels
/// in one frame).
pub const MAX_DECODE_BYTES: usize = 64 << 20;

/// Deepest nesting a peer frame may have: frames are a few levels of structs, and function
/// arguments travel as JSON text, so anything deeper is hostile (and would cost stack).
pub const MAX_DEPTH: usize = 64;

/// A peer frame as bytes.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    rmp_serde::to_vec_named(value).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes a peer frame of at most `max` bytes (see the module doc).
pub fn decode<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, CodecError> {
    let max = max.min(MAX_DECODE_BYTES);
    if bytes.len() > max {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    claims_fit(bytes)?;
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_DEPTH);
    T::deserialize(&mut de).map_err(|e| CodecError::Malformed(e.to_string()))
}

/// Checks that every length in the MessagePack `bytes` fits in the bytes after it, and that
/// nothing nests deeper than [`MAX_DEPTH`]. One pass, no allocation but the nesting stack:
/// each container's claimed elements must fit in what remains, so the work is linear in the
/// frame's length.
pub fn claims_fit(bytes: &[u8]) -> Result<(), CodecError> {
    let bad = |what: &str| CodecError::Malformed(what.to_owned());
    let mut rd = bytes;
    // Values still to read at each open nesting level (the top level holds one).
    let mut open: Vec<u64> = vec![1];
    while let Some(left) = open.last_mut() {
        if *left == 0 {
            open.pop();
            continue;
        }
        *left -= 1;
        let (&marker, rest) = rd.split_first().ok_or_else(|| bad("truncated"))?;
        rd = rest;
        let (skip, children) = sizes(marker, &mut rd)?;
        if skip > rd.len() as u64 {
            return Err(bad("a length claims more bytes than the frame holds"));
        }
        rd = &rd[skip as usize..];
        if children > 0 {
            if children > rd.len() as u64 {
                return Err(bad("a container claims more elements than the frame holds"));
            }
            if open.len() > MAX_DEPTH {
                return Err(bad("nested too deep"));
            }
            open.push(children);
        }
    }
    Ok(())
}

/// For the value whose `marker` was just read: the bytes to skip past it and how many values
/// it contains; reads any length that follows the marker from `rd`.
fn sizes(marker: u8, rd: &mut &[u8]) -> Result<(u64, u64), CodecError> {
    let mut len = |n: usize| -> Result<u64, CodecError> {
        if rd.len() < n {
            return Err(CodecError::Malformed("truncated length".into()));
        }
        let (head, rest) = rd.split_at(n);
        *rd = rest;
        Ok(head.iter().fold(0u64, |v, b| (v << 8) | u64::from(*b)))
    };
    Ok(match marker {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
        0x80..=0x8f => (0, 2 * u64::from(marker & 0x0f)),
        0x90..=0x9f => (0, u64::from(marker & 0x0f)),
        0xa0..=0xbf => (u64::from(marker & 0x1f), 0),
        0xc4 | 0xd9 => (len(1)?, 0),
        0xc5 | 0xda => (len(2)?, 0),
        0xc6 | 0xdb => (len(4)?, 0),
        // ext: a type byte, then the data
        0xc7 => (len(1)? + 1, 0),
        0xc8 => (len(2)? + 1, 0),
        0xc9 => (len(4)? + 1, 0),
        0xcc | 0xd0 => (1, 0),
        0xcd | 0xd1 => (2, 0),
        0xca | 0xce | 0xd2 => (4, 0),
        0xcb | 0xcf | 0xd3 => (8, 0),
        0xd4 => (2, 0),
        0xd5 => (3, 0),
        0xd6 => (5, 0),
        0xd7 => (9, 0),
        0xd8 => (17, 0),
        0xdc => (0, len(2)?),
        0xdd => (0, len(4)?),
        0xde => (0, 2 * len(2)?),
        0xdf => (0, 2 * len(4)?),
        _ => return Err(CodecError::Malformed("reserved marker 0xc1".into())),
    })
}

/// A stored value as bytes (bincode 2, standard config).
pub fn encode_stored<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes all of `bytes` as a stored `T`, under a limit sized from them (module doc).
pub fn decode_stored<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    decode_stored_within(bytes, MAX_DECODE_BYTES)
}

/// [`decode_stored`] of at most `max` bytes (a limit of its own, such as a snapshot's).
pub fn decode_stored_within<T: DeserializeOwned>(
    bytes: &[u8],
    max: usize,
) -> Result<T, CodecError> {
    if bytes.len() > max {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    let (value, read) = decode_stored_prefix(bytes)?;
    match bytes.len() - read {
        0 => Ok(value),
        n => Err(CodecError::Trailing(n)),
    }
}

/// Decodes a stored `T` from the start of `bytes` (any bytes after it are left), under the
/// limit; also reads the bincode hellos of builds before peer protocol 5.
pub fn decode_stored_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), CodecError> {
    use bincode::config::standard;
    macro_rules! under {
        ($limit:expr) => {
            bincode::serde::decode_from_slice(bytes, standard().with_limit::<{ $limit }>())
        };
    }
    // 8 bytes of claim per byte of input (see the module doc), rounded up the ladder.
    let claim = bytes.len().saturating_mul(8);
    let decoded = match claim {
        0..=0x1000 => under!(0x1000),
        0x1001..=0x8000 => under!(0x8000),
        0x8001..=0x4_0000 => under!(0x4_0000),
        0x4_0001..=0x20_0000 => under!(0x20_0000),
        0x20_0001..=0x100_0000 => under!(0x100_0000),
        0x100_0001..=0x800_0000 => under!(0x800_0000),
        _ => under!(0x4000_0000),
    };
    decoded.map_err(|e| CodecError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// bincode's varint for `n` (standard config): marker 253, then the u64.
    fn varint(n: u64) -> Vec<u8> {
        let mut v = vec![253];
        v.extend(n.to_le_bytes());
        v
    }

    #[test]
    fn a_length_prefix_claiming_more_than_the_frame_is_refused_before_allocating() {
        // MessagePack str32 claiming 4 GiB, bin32 the same, an array32 of 4 Gi elements.
        for lying in [
            vec![0xdb, 0xff, 0xff, 0xff, 0xff, b'x'],
            vec![0xc6, 0xff, 0xff, 0xff, 0xff, 1],
            vec![0xdd, 0xff, 0xff, 0xff, 0xff, 1],
        ] {
            assert!(decode::<String>(&lying, 1024).is_err());
            assert!(decode::<Vec<u8>>(&lying, 1024).is_err());
            assert!(decode::<Vec<String>>(&lying, 1024).is_err());
        }
        // Stored values: Some(String) whose length claims 2^62 bytes.
        let mut frame = vec![1];
        frame.extend(varint(1 << 62));
        let r = decode_stored::<Option<String>>(&frame);
        assert!(matches!(r, Err(CodecError::Malformed(_))), "{r:?}");
        assert!(decode_stored::<Vec<u8>>(&varint(1 << 40)).is_err());
    }

    #[test]
    fn every_claimed_length_must_fit_in_what_follows_it() {
        // (bytes, fits?)
        let table: &[(&[u8], bool)] = &[
            (&[0x92, 0x01, 0x02], true),                    // [1, 2]
            (&[0x93, 0x01, 0x02], false),                   // [1, 2, <missing>]
            (&[0xdc, 0x00, 0x02, 0xc0, 0xc0], true),        // array16 of 2 nils
            (&[0xdc, 0xff, 0xff, 0xc0], false),             // array16 claiming 65535
            (&[0xdf, 0xff, 0xff, 0xff, 0xff], false),       // map32 claiming 2^32 - 1 pairs
            (&[0x81, 0xa1, b'a', 0x01], true),              // {"a": 1}
            (&[0x81, 0xa1, b'a'], false),                   // {"a": <missing>}
            (&[0xd9, 0x03, b'a', b'b'], false),             // str8 of 3, 2 there
            (&[0xc6, 0xff, 0xff, 0xff, 0xff, 0x00], false), // bin32 claiming 4 GiB
            (&[0xcf, 0, 0, 0, 0, 0, 0, 0, 1], true),        // u64 1
            (&[0xcf, 0, 0], false),
            (&[0xd4, 0x01, 0x02], true), // fixext1
            (&[0xc1], false),            // reserved
            (&[], false),
        ];
        for (i, (bytes, fits)) in table.iter().enumerate() {
            assert_eq!(claims_fit(bytes).is_ok(), *fits, "row {i}: {bytes:02x?}");
        }
        // Whatever rmp-serde writes fits.
        let value = (
            vec!["x".repeat(300); 3],
            Some(7u64),
            -3i64,
            1.5f64,
            vec![0u8; 70_000],
        );
        assert!(claims_fit(&encode(&value).unwrap()).is_ok());
    }

    #[test]
    fn nesting_beyond_the_depth_limit_is_refused() {
        // 100 nested one-element arrays around a 0.
        let mut deep = vec![0x91; 100];
        deep.push(0);
        let r = decode::<serde_json::Value>(&deep, 1024);
        assert!(r.is_err(), "{r:?}");
        let mut shallow = vec![0x91; 10];
        shallow.push(0);
        assert!(decode::<serde_json::Value>(&shallow, 1024).is_ok());
    }

    #[test]
    fn honest_values_of_every_size_decode() {
        for len in [0usize, 1, 100, 5000, 70_000, 3 << 20] {
            let s = "x".repeat(len);
            let v: Vec<u64> = (0..(len as u64 / 64)).map(|i| i << 40).collect();
            let value = (s.clone(), v.clone(), u64::MAX);
            let bytes = encode(&value).unwrap();
            let back: (String, Vec<u64>, u64) = decode(&bytes, MAX_DECODE_BYTES).unwrap();
            assert_eq!(back, value);
            let stored = encode_stored(&value).unwrap();
            assert_eq!(
                decode_stored::<(String, Vec<u64>, u64)>(&stored).unwrap(),
                value
            );
            // Numbers only: every varint counts as 8 bytes against bincode's limit.
            let nums: Vec<u64> = (0..len as u64).collect();
            let bytes = encode_stored(&nums).unwrap();
            assert_eq!(decode_stored::<Vec<u64>>(&bytes).unwrap(), nums);
        }
    }

    #[test]
    fn fields_a_reader_does_not_know_are_ignored_and_missing_ones_defaulted() {
        #[derive(Serialize, serde::Deserialize, Debug, PartialEq)]
        struct Old {
            a: u32,
        }
        #[derive(Serialize, serde::Deserialize, Debug, PartialEq)]
        struct New {
            a: u32,
            #[serde(default)]
            b: Option<String>,
        }
        let new = encode(&New {
            a: 1,
            b: Some("x".into()),
        })
        .unwrap();
        assert_eq!(decode::<Old>(&new, 100).unwrap(), Old { a: 1 });
        let old = encode(&Old { a: 2 }).unwrap();
        assert_eq!(decode::<New>(&old, 100).unwrap(), New { a: 2, b: None });
    }

    #[test]
    fn oversized_and_trailing_values_are_refused() {
        let bytes = encode(&"hello").unwrap();
        assert!(matches!(
            decode::<String>(&bytes, 3),
            Err(CodecError::TooLarge { len: 6, max: 3 })
        ));
        let stored = encode_stored(&"hello").unwrap();
        let mut long = stored.clone();
        long.push(0);
        assert!(matches!(
            decode_stored::<String>(&long),
            Err(CodecError::Trailing(1))
        ));
        assert_eq!(
            decode_stored_prefix::<String>(&long).unwrap().1,
            stored.len()
        );
    }
}
