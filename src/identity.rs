//! The node's ed25519 identity, kept in the data dir so the PeerId survives restarts.

use std::io::Write;
use std::path::{Path, PathBuf};

use libp2p::identity::{Keypair, PeerId, ed25519};

/// File name of the secret key inside the data dir (32 raw bytes, mode 0600).
pub const KEY_FILE: &str = "identity.ed25519";

/// Why the identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading, creating or writing the key file failed.
    #[error("identity key {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file exists but does not hold a 32-byte ed25519 secret.
    #[error(
        "identity key {path} is corrupt ({len} bytes, expected 32); move it away to create a new identity"
    )]
    Corrupt { path: PathBuf, len: usize },
}

/// Loads the key from `data_dir`, creating the directory and a new key on first use.
pub fn load_or_create(data_dir: &Path) -> Result<Keypair, Error> {
    let path = data_dir.join(KEY_FILE);
    let io = |source| Error::Io {
        path: path.clone(),
        source,
    };
    match std::fs::read(&path) {
        Ok(mut bytes) => {
            let len = bytes.len();
            let secret =
                ed25519::SecretKey::try_from_bytes(&mut bytes).map_err(|_| Error::Corrupt {
                    path: path.clone(),
                    len,
                })?;
            Ok(ed25519::Keypair::from(secret).into())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir).map_err(io)?;
            let keypair = ed25519::Keypair::generate();
            write_private(&path, keypair.secret().as_ref()).map_err(io)?;
            tracing::info!(path = %path.display(), "created a new node identity");
            Ok(keypair.into())
        }
        Err(e) => Err(io(e)),
    }
}

/// Writes a file readable by its owner only, atomically (temp file + rename), so a
/// crash never leaves a half-written key behind.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The PeerId of a keypair.
pub fn peer_id(keypair: &Keypair) -> PeerId {
    keypair.public().to_peer_id()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reused_with_private_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("nested/data");
        let a = peer_id(&load_or_create(&data).expect("create"));
        let b = peer_id(&load_or_create(&data).expect("reload"));
        assert_eq!(a, b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(data.join(KEY_FILE))
                .expect("key exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn corrupt_key_is_reported_not_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(KEY_FILE), b"short").expect("write");
        let err = load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, Error::Corrupt { len: 5, .. }), "{err}");
        assert_eq!(
            std::fs::read(dir.path().join(KEY_FILE)).expect("kept"),
            b"short"
        );
    }
}
