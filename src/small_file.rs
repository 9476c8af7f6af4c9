//! Reading the small files settings name (keys, certificates, secrets), under a limit.
//! A floor below `config`, `tls` and `auth`, so that none of them imports another for it.

use std::path::Path;

/// Why [`read_small_file`] read nothing.
#[derive(Debug)]
pub enum SmallFileError {
    Io(std::io::Error),
    /// The file holds more than the limit (it is not the file the setting meant).
    TooLarge,
}

/// The bytes of a file a setting names (a key, a certificate, a secret), read only up to
/// `max_bytes`: a setting pointing at a large file costs no more than that.
pub fn read_small_file(path: &Path, max_bytes: u64) -> Result<Vec<u8>, SmallFileError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(SmallFileError::Io)?;
    let mut bytes = Vec::new();
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(SmallFileError::Io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(SmallFileError::TooLarge);
    }
    Ok(bytes)
}
