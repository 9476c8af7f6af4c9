//! Reading a snapshot's bytes back as the state they carry, of this build's format or of
//! format 1 (`format_v1`), under a size limit: where a snapshot is received
//! (`snapshot_buf`) and where one is loaded or installed (`store`).

use openraft::{StorageError, StorageIOError};

use super::format_v1::StoredStateV1;
use super::stored_state::StoredState;
use crate::fabric::codec::decode_stored_within;

/// A state machine's storage error for `e` (openraft's storage methods all return one).
pub(super) fn io_error(e: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::read_state_machine(&e).into()
}

/// Decodes a snapshot's state: at most `max` bytes, and no claimed length inside may
/// allocate more than a small multiple of them (`codec::decode_stored_prefix`).
#[allow(clippy::result_large_err)] // openraft's storage methods all return this error
pub(super) fn decode_state(bytes: &[u8], max: usize) -> Result<StoredState, StorageError<u64>> {
    // A snapshot of the format before roles (a leader of the older build during a rolling
    // upgrade) reads too: its layout does not decode as this one's, nor this one's as it.
    decode_stored_within::<StoredState>(bytes, max)
        .or_else(|e| {
            decode_stored_within::<StoredStateV1>(bytes, max)
                .map(Into::into)
                .map_err(|_| e)
        })
        .map_err(io_error)
}
