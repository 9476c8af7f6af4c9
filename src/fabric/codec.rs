//! Peer frames as bytes: bincode 2 (standard config), decoded under a limit.
//!
//! bincode allocates a string or byte buffer as long as the length prefix claims before it
//! reads the bytes, so without a limit a 15-byte frame claiming 2^62 bytes aborts the
//! process. Every decode here runs under `with_limit`, sized from the frame: bincode counts
//! against it the claimed bytes of every string and buffer and the in-memory size of every
//! number (a varint of one byte counts as up to 8), so a limit of 8× the frame admits every
//! frame a peer can honestly send, and refuses any claim of more than that before
//! allocating. The limit is a type-level constant in bincode, so it comes from a ladder of
//! powers of 8: a claim can never exceed 64× the frame's length (4 KiB for small frames).
//!
//! Sequences are the one thing the limit does not count (bincode's serde adapter leaves them
//! to serde): serde preallocates at most 1 MiB for a claimed length, and then grows with the
//! elements actually read, so a lying sequence costs at most that, briefly.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why bytes are not a frame.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("frame of {len} bytes is over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("{0} trailing bytes after the frame")]
    Trailing(usize),
    #[error("cannot encode frame: {0}")]
    Encode(String),
}

/// The largest frame any decode here accepts (a catalog snapshot travels in one frame).
pub const MAX_DECODE_BYTES: usize = 64 << 20;

/// `value` as bytes.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes all of `bytes` as a `T`, refusing frames over `max` bytes and claims the frame
/// cannot back (see the module doc).
pub fn decode<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, CodecError> {
    let max = max.min(MAX_DECODE_BYTES);
    if bytes.len() > max {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    let (value, read) = decode_prefix(bytes)?;
    match bytes.len() - read {
        0 => Ok(value),
        n => Err(CodecError::Trailing(n)),
    }
}

/// Decodes a `T` from the start of `bytes` (any bytes after it are left), under the limit.
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), CodecError> {
    use bincode::config::standard;
    macro_rules! under {
        ($limit:expr) => {
            bincode::serde::decode_from_slice(bytes, standard().with_limit::<{ $limit }>())
        };
    }
    // 8 bytes of claim per byte of frame (see the module doc), rounded up the ladder.
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

    /// bincode's varint for `n` (standard config): one byte below 251, else a marker and
    /// the little-endian value.
    fn varint(n: u64) -> Vec<u8> {
        let mut v = vec![253];
        v.extend(n.to_le_bytes());
        v
    }

    #[test]
    fn a_length_prefix_claiming_more_than_the_frame_is_refused_before_allocating() {
        // Some(String) whose length claims 2^62 bytes: without the limit this aborts the
        // process (allocation failure), here it is a clean error.
        let mut frame = vec![1];
        frame.extend(varint(1 << 62));
        let r = decode::<Option<String>>(&frame, 1024);
        assert!(matches!(r, Err(CodecError::Malformed(_))), "{r:?}");
        // A byte buffer the same way.
        let r = decode::<Vec<u8>>(&varint(1 << 40), 1024);
        assert!(r.is_err());
    }

    #[test]
    fn honest_frames_of_every_size_decode() {
        for len in [0usize, 1, 100, 5000, 70_000, 3 << 20] {
            let s = "x".repeat(len);
            let v: Vec<u64> = (0..(len as u64 / 64)).map(|i| i << 40).collect();
            let bytes = encode(&(s.clone(), v.clone(), u64::MAX)).unwrap();
            let back: (String, Vec<u64>, u64) = decode(&bytes, MAX_DECODE_BYTES).unwrap();
            assert_eq!(back, (s, v, u64::MAX));
            // Numbers only: every varint counts as 8 bytes against the limit.
            let nums: Vec<u64> = (0..len as u64).collect();
            let bytes = encode(&nums).unwrap();
            assert_eq!(decode::<Vec<u64>>(&bytes, MAX_DECODE_BYTES).unwrap(), nums);
        }
    }

    #[test]
    fn oversized_and_trailing_frames_are_refused() {
        let bytes = encode(&"hello").unwrap();
        assert!(matches!(
            decode::<String>(&bytes, 3),
            Err(CodecError::TooLarge { len: 6, max: 3 })
        ));
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            decode::<String>(&long, 100),
            Err(CodecError::Trailing(1))
        ));
        assert_eq!(decode_prefix::<String>(&long).unwrap().1, bytes.len());
    }
}
