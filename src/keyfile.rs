//! `ntmtun keygen --out PATH`: a private key written straight into a new
//! file that only its owner can read. The file is created with mode 0600 in
//! the same `open` (O_CREAT|O_EXCL), so the key is never readable by others,
//! not even for a moment, and an existing file, which may be the only copy of
//! a node's identity, is never overwritten.

use crate::keys::PrivateKey;
use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Why a key file could not be written; the message names the path and the fix.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error(
        "{path} already exists: keygen never overwrites a key file (it may be the only copy of a \
         host's identity); use another path, or check that the old key is unused and remove it first"
    )]
    Exists { path: String },
    #[error("cannot create the key file {path}: {error}; check that its directory exists and is writable")]
    Create { path: String, error: std::io::Error },
    #[error("cannot write the key file {path}: {error}; check the file system, then remove the partial file")]
    Write { path: String, error: std::io::Error },
    #[error(
        "{path} holds a private key and is readable by every user (mode {mode:o}); expected mode \
         600: run `chmod 600 {path}` (the key may already be exposed: consider a new one)"
    )]
    WorldReadable { path: String, mode: u32 },
}

/// Refuses a private key read from a file (stdin redirected from it) that
/// every user on the host can read. Pipes and terminals pass.
pub fn refuse_world_readable_stdin() -> Result<(), KeyFileError> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata("/proc/self/fd/0") else {
        return Ok(());
    };
    let mode = meta.permissions().mode() & 0o777;
    if !meta.is_file() || mode & 0o004 == 0 {
        return Ok(());
    }
    let path = std::fs::read_link("/proc/self/fd/0")
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "the file on stdin".into());
    Err(KeyFileError::WorldReadable { path, mode })
}

/// Creates `path` (mode 0600; must not exist) holding `key` in base64 and a newline.
pub fn create(path: &Path, key: &PrivateKey) -> Result<(), KeyFileError> {
    let name = || path.display().to_string();
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|error| match error.kind() {
            ErrorKind::AlreadyExists => KeyFileError::Exists { path: name() },
            _ => KeyFileError::Create {
                path: name(),
                error,
            },
        })?;
    file.write_all(format!("{}\n", key.to_base64()).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|error| KeyFileError::Write {
            path: name(),
            error,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_an_owner_only_file_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let key = PrivateKey::generate();
        create(&path, &key).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            PrivateKey::from_base64(text.trim()).unwrap().public_key(),
            key.public_key()
        );

        let err = create(&path, &PrivateKey::generate()).unwrap_err();
        assert!(matches!(err, KeyFileError::Exists { .. }), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "overwritten");

        let err = create(&dir.path().join("no/such/dir/k"), &key).unwrap_err();
        assert!(matches!(err, KeyFileError::Create { .. }), "{err}");
    }
}
