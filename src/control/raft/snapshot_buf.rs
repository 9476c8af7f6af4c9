//! The bytes of one snapshot as openraft reads and writes them: a buffer that grows only by
//! the bytes written into it, never by where a peer says to write them.
//!
//! openraft receives a snapshot in chunks (`InstallSnapshot`), and before writing a chunk it
//! seeks to the chunk's `offset`. With a `Cursor<Vec<u8>>` a forged offset of 2^40 made
//! the node allocate a terabyte of zeros. Here a seek past the bytes received so far is
//! refused (chunks come in order: openraft's sender reads the snapshot front to back), and
//! a write that would take the snapshot past `max_snapshot_bytes` is refused, each with its
//! reason. Those errors end the transfer, not the replica: openraft returns them to the
//! request, outside the Raft core.
//!
//! When the last chunk has arrived openraft shuts the buffer down, and only then hands it to
//! the state machine, whose install must not fail (a storage error there stops the Raft
//! core). So the shutdown decodes the state (under the limit) and keeps it: a snapshot that
//! does not decode is refused as the transfer's error, and the install does not decode again.

use std::io::{self, SeekFrom};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

use super::snapshot_decode::decode_state;
use super::stored_state::StoredState;

/// What a received snapshot decodes to (the catalog's `StoredState`, a queue group's
/// `QueueMachine`), under a byte limit.
pub trait SnapshotState: Sized {
    fn decode_snapshot(bytes: &[u8], limit: usize) -> Result<Self, String>;
}

impl SnapshotState for StoredState {
    fn decode_snapshot(bytes: &[u8], limit: usize) -> Result<Self, String> {
        decode_state(bytes, limit).map_err(|e| e.to_string())
    }
}

/// A snapshot's bytes, read by openraft when sending and written when receiving.
#[derive(Debug)]
pub struct SnapshotBuf<S = StoredState> {
    bytes: Vec<u8>,
    pos: usize,
    /// Most bytes a received snapshot may hold.
    limit: usize,
    /// Whether this buffer is being received (its shutdown checks what arrived).
    receiving: bool,
    /// The state decoded from a received snapshot at shutdown.
    decoded: Option<S>,
}

impl<S> Default for SnapshotBuf<S> {
    fn default() -> Self {
        SnapshotBuf {
            bytes: Vec::new(),
            pos: 0,
            limit: 0,
            receiving: false,
            decoded: None,
        }
    }
}

impl<S> SnapshotBuf<S> {
    /// A snapshot this node has, to be read (sent to a peer or installed here).
    pub fn of(bytes: Vec<u8>) -> SnapshotBuf<S> {
        SnapshotBuf {
            limit: bytes.len(),
            bytes,
            ..SnapshotBuf::default()
        }
    }

    /// An empty buffer for a snapshot arriving from the leader, of at most `limit` bytes.
    pub fn receiving(limit: usize) -> SnapshotBuf<S> {
        SnapshotBuf {
            limit,
            receiving: true,
            ..SnapshotBuf::default()
        }
    }

    /// The bytes, and the state decoded from them if this buffer was received and shut down.
    pub fn into_parts(self) -> (Vec<u8>, Option<S>) {
        (self.bytes, self.decoded)
    }

    /// The bytes written so far.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

fn refused(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, why)
}

impl<S: Unpin> AsyncRead for SnapshotBuf<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let rest = me.bytes.get(me.pos..).unwrap_or_default();
        let n = rest.len().min(out.remaining());
        out.put_slice(&rest[..n]);
        me.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl<S: Unpin> AsyncSeek for SnapshotBuf<S> {
    fn start_seek(self: Pin<&mut Self>, to: SeekFrom) -> io::Result<()> {
        let me = self.get_mut();
        let len = me.bytes.len() as i128;
        let target = match to {
            SeekFrom::Start(n) => i128::from(n),
            SeekFrom::End(d) => len + i128::from(d),
            SeekFrom::Current(d) => me.pos as i128 + i128::from(d),
        };
        if !(0..=len).contains(&target) {
            return Err(refused(format!(
                "snapshot offset {target} is outside the {len} bytes received so far \
                 (chunks must arrive in order)"
            )));
        }
        // In 0..=len, and len is a usize.
        me.pos = target as usize;
        Ok(())
    }

    fn poll_complete(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Poll::Ready(Ok(self.pos as u64))
    }
}

impl<S: SnapshotState + Unpin> AsyncWrite for SnapshotBuf<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let end = me.pos.saturating_add(data.len());
        if end > me.limit {
            return Poll::Ready(Err(refused(format!(
                "snapshot is larger than max_snapshot_bytes ({} bytes)",
                me.limit
            ))));
        }
        // pos <= len (seeks are checked), so this overwrites and then extends in place.
        let overlap = me.bytes.len().min(end) - me.pos;
        me.bytes[me.pos..me.pos + overlap].copy_from_slice(&data[..overlap]);
        me.bytes.extend_from_slice(&data[overlap..]);
        me.pos = end;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.receiving && me.decoded.is_none() {
            let state = S::decode_snapshot(&me.bytes, me.limit)
                .map_err(|e| refused(format!("the snapshot received does not decode: {e}")))?;
            me.decoded = Some(state);
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

    use super::*;

    fn encoded(state: &StoredState) -> Vec<u8> {
        bincode::serde::encode_to_vec(state, bincode::config::standard()).unwrap()
    }

    /// Chunks in order build the snapshot; a resent chunk overwrites; the shutdown decodes.
    #[tokio::test]
    async fn chunks_in_order_make_the_snapshot() {
        let bytes = encoded(&StoredState::default());
        let mut buf = SnapshotBuf::<StoredState>::receiving(1 << 20);
        let (a, b) = bytes.split_at(bytes.len() / 2);
        buf.write_all(a).await.unwrap();
        buf.seek(SeekFrom::Start(0)).await.unwrap();
        buf.write_all(a).await.unwrap();
        buf.write_all(b).await.unwrap();
        buf.shutdown().await.unwrap();
        let (got, state) = buf.into_parts();
        assert_eq!(got, bytes);
        assert!(state.is_some());
    }

    /// The attack: a seek far past what arrived is refused, and nothing was allocated for it.
    #[tokio::test]
    async fn a_seek_past_what_arrived_is_refused() {
        let mut buf = SnapshotBuf::<StoredState>::receiving(1 << 20);
        buf.write_all(b"abc").await.unwrap();
        let err = buf.seek(SeekFrom::Start(1 << 40)).await.unwrap_err();
        assert!(err.to_string().contains("outside the 3 bytes"), "{err}");
        assert!(buf.seek(SeekFrom::Start(4)).await.is_err());
        assert_eq!(buf.seek(SeekFrom::Start(3)).await.unwrap(), 3);
        assert_eq!(buf.len(), 3);
        assert!(buf.bytes.capacity() < 1024);
    }

    #[tokio::test]
    async fn a_snapshot_over_the_limit_is_refused() {
        let mut buf = SnapshotBuf::<StoredState>::receiving(10);
        buf.write_all(&[0; 10]).await.unwrap();
        let err = buf.write_all(&[0]).await.unwrap_err();
        assert!(
            err.to_string().contains("max_snapshot_bytes (10 bytes)"),
            "{err}"
        );
        assert_eq!(buf.len(), 10);
    }

    #[tokio::test]
    async fn bytes_that_do_not_decode_are_refused_at_shutdown() {
        let mut buf = SnapshotBuf::<StoredState>::receiving(1 << 20);
        buf.write_all(&[0xff; 64]).await.unwrap();
        let err = buf.shutdown().await.unwrap_err();
        assert!(err.to_string().contains("does not decode"), "{err}");
    }

    /// What this node sends reads back whole, from any offset openraft seeks to.
    #[tokio::test]
    async fn a_snapshot_reads_back_from_any_offset() {
        let mut buf = SnapshotBuf::<StoredState>::of(b"0123456789".to_vec());
        assert_eq!(buf.seek(SeekFrom::End(0)).await.unwrap(), 10);
        buf.seek(SeekFrom::Start(4)).await.unwrap();
        let mut rest = String::new();
        buf.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "456789");
    }
}
