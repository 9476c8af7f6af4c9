//! Reading a snapshot's bytes back as the state they carry, of this build's format, of
//! formats 2–3 (`format_v3`) or of format 1 (`format_v1`), under a size limit: where a snapshot is received
//! (`snapshot_buf`) and where one is loaded or installed (`store`).

use openraft::{StorageError, StorageIOError};

use super::format_v1::StoredStateV1;
use super::format_v3::StoredStateV3;
use super::format_v4::StoredStateV4;
use super::format_v6::StoredStateV6;
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
    // A snapshot of an older format (a leader of the older build during a rolling upgrade)
    // reads too: before replicas (formats 5–6), queue entries end early; before queue settings (format 4), queue entries differ; before the policy
    // (formats 2–3), a catalog ends early; before roles (format 1), function entries differ.
    decode_stored_within::<StoredState>(bytes, max)
        .or_else(|e| {
            decode_stored_within::<StoredStateV6>(bytes, max)
                .map(Into::into)
                .map_err(|_| e)
        })
        .or_else(|e| {
            decode_stored_within::<StoredStateV4>(bytes, max)
                .map(Into::into)
                .map_err(|_| e)
        })
        .or_else(|e| {
            decode_stored_within::<StoredStateV3>(bytes, max)
                .map(Into::into)
                .map_err(|_| e)
        })
        .or_else(|e| {
            decode_stored_within::<StoredStateV1>(bytes, max)
                .map(Into::into)
                .map_err(|_| e)
        })
        .map_err(io_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::policy::{NamespacePolicy, PolicyRule};
    use crate::control::{CatalogCommand, Member, Role};
    use crate::fabric::codec::encode_stored;

    #[test]
    fn snapshots_of_this_format_and_of_format_3_install() {
        let member = Member {
            id: crate::ids::NodeId(3),
            name: "n3".into(),
            cluster_id: "c".into(),
            advertised_urls: vec!["ws://n3:1".into()],
            resources: Default::default(),
            role: Role::Voter,
        };
        let mut old = super::super::format_v3::StoredStateV3::default();
        old.catalog.members.insert(member.id, member.clone());
        let state = decode_state(&encode_stored(&old).unwrap(), 1 << 20).expect("format 3");
        assert_eq!(state.catalog.members().next(), Some(&member));
        assert_eq!(*state.catalog.policy(), NamespacePolicy::default());
        // This format, with a policy: read back as it was, not as the older layout.
        let mut now = state.clone();
        let policy = NamespacePolicy {
            enabled: true,
            default_allow: false,
            rules: vec![PolicyRule {
                namespace: "svc".into(),
                visibility: vec!["c".into()],
                ..PolicyRule::default()
            }],
        };
        now.catalog
            .apply(CatalogCommand::SetNamespacePolicy(policy.clone()))
            .unwrap();
        let back = decode_state(&encode_stored(&now).unwrap(), 1 << 20).expect("format 4");
        assert_eq!(*back.catalog.policy(), policy);
        assert_eq!(back.catalog, now.catalog);
    }
}
