//! The cluster secret: bytes every member of a cluster holds (one file, copied to each
//! node), with which peers prove to each other who they are. It never crosses the wire.

use std::path::Path;
use std::sync::Arc;

/// Fewest bytes a secret may have: 16 random bytes (32 hex digits) resist guessing; a
/// shorter one is a password, and the handshake offers an offline guess to whoever records
/// it.
pub const MIN_SECRET_BYTES: usize = 16;

/// The largest secret file read (a secret is a line; a large file is the wrong file).
const MAX_SECRET_FILE_BYTES: u64 = 4096;

/// A cluster's shared secret, or none (development: every node proves the empty secret, so
/// nodes without one still talk to each other, and to nothing that has one).
#[derive(Clone, Default)]
pub struct ClusterSecret(Option<Arc<[u8]>>);

/// Why a secret cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the cluster secret file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the cluster secret file {path} is over {MAX_SECRET_FILE_BYTES} bytes: a secret is one line"
    )]
    TooLarge { path: String },
    #[error(
        "the cluster secret has {len} bytes, fewer than {MIN_SECRET_BYTES}: use e.g. \
         `openssl rand -hex 32 > cluster.secret`"
    )]
    TooShort { len: usize },
}

impl ClusterSecret {
    /// No secret (development only).
    pub fn none() -> ClusterSecret {
        ClusterSecret(None)
    }

    /// `bytes` without surrounding ASCII whitespace (a trailing newline in the file is not
    /// part of the secret).
    pub fn from_bytes(bytes: &[u8]) -> Result<ClusterSecret, SecretError> {
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < MIN_SECRET_BYTES {
            return Err(SecretError::TooShort { len: trimmed.len() });
        }
        Ok(ClusterSecret(Some(Arc::from(trimmed))))
    }

    /// The secret in the file at `path`. Warns when others than its owner may read it.
    pub fn from_file(path: &Path) -> Result<ClusterSecret, SecretError> {
        let shown = path.display().to_string();
        let read = |source| SecretError::Read {
            path: shown.clone(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read)?;
        if meta.len() > MAX_SECRET_FILE_BYTES {
            return Err(SecretError::TooLarge { path: shown });
        }
        warn_if_readable_by_others(&shown, &meta);
        ClusterSecret::from_bytes(&std::fs::read(path).map_err(read)?)
    }

    /// Whether a secret is set.
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// The key proofs are computed with (empty without a secret).
    pub(crate) fn key(&self) -> &[u8] {
        self.0.as_deref().unwrap_or_default()
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &str, meta: &std::fs::Metadata) {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            file = path,
            mode = format!("{:o}", mode & 0o777),
            "the cluster secret file is readable by others than its owner (chmod 600 it)"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_: &str, _: &std::fs::Metadata) {}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the bytes: settings and errors are logged.
        f.write_str(match self.0 {
            Some(_) => "ClusterSecret(set)",
            None => "ClusterSecret(none)",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_trimmed_long_enough_and_never_shown() {
        let s = ClusterSecret::from_bytes(b"  0123456789abcdef0123\n").unwrap();
        assert_eq!(s.key(), b"0123456789abcdef0123");
        assert_eq!(format!("{s:?}"), "ClusterSecret(set)");
        assert!(matches!(
            ClusterSecret::from_bytes(b"short\n"),
            Err(SecretError::TooShort { len: 5 })
        ));
        assert!(ClusterSecret::none().key().is_empty());
    }

    #[test]
    fn a_missing_or_oversized_file_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("mpreg-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = ClusterSecret::from_file(&dir.join("nope")).unwrap_err();
        assert!(missing.to_string().contains("cannot read"), "{missing}");
        let big = dir.join("big");
        std::fs::write(&big, vec![b'a'; 5000]).unwrap();
        assert!(matches!(
            ClusterSecret::from_file(&big),
            Err(SecretError::TooLarge { .. })
        ));
        let good = dir.join("good");
        std::fs::write(&good, "00112233445566778899aabbccddeeff\n").unwrap();
        assert!(ClusterSecret::from_file(&good).unwrap().is_set());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
