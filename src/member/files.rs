//! What membership keeps on disk: the mesh key (where the operator admits
//! nodes), a node's certificate, and the revocations a node has learnt.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::SigningKey;

use crate::wire::codec;
use crate::wire::member::{Certificate, MAX_HELLO_REVOCATIONS, MAX_SIGNED_BYTES, Revocation};

/// File name of a node's certificate inside its data dir.
pub const CERTIFICATE_FILE: &str = "membership.cert";
/// File name of the revocations a node has learnt, inside its data dir.
pub const REVOCATIONS_FILE: &str = "revocations.bin";
/// Default file name of the mesh key.
pub const MESH_KEY_FILE: &str = "mesh.key";
/// Most revocations a node keeps (one per revoked node).
pub const MAX_REVOCATIONS: usize = 4 * MAX_HELLO_REVOCATIONS;

/// Why a membership file could not be used; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {why}")]
    Invalid { path: PathBuf, why: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |error| Error::Io {
        path: path.to_owned(),
        error,
    }
}

fn invalid(path: &Path, why: impl Into<String>) -> Error {
    Error::Invalid {
        path: path.to_owned(),
        why: why.into(),
    }
}

/// Default file name of a private network's swarm key.
pub const SWARM_KEY_FILE: &str = "swarm.key";

/// Writes a new swarm key (libp2p's `swarm.key` format, mode 0600), never
/// over an existing file.
pub fn create_swarm_key(path: &Path) -> Result<libp2p::pnet::PreSharedKey, Error> {
    if path.exists() {
        return Err(invalid(path, "a file is already there; it is kept"));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let bytes: [u8; 32] = rand::random();
    let key = libp2p::pnet::PreSharedKey::new(bytes);
    crate::identity::write_private(path, key.to_string().as_bytes()).map_err(io(path))?;
    Ok(key)
}

/// Reads a swarm key (`mesh.swarm_key`).
pub fn read_swarm_key(path: &Path) -> Result<libp2p::pnet::PreSharedKey, Error> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    text.parse().map_err(|e| {
        invalid(
            path,
            format!("not a swarm key ({e}); `atmosphere mesh swarm-key` makes one"),
        )
    })
}

/// Creates a new mesh key at `path` (never over an existing file).
pub fn create_mesh_key(path: &Path) -> Result<SigningKey, Error> {
    if path.exists() {
        return Err(invalid(
            path,
            "a mesh key is already there; it is kept (move it away to make a new mesh)",
        ));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let secret = libp2p::identity::ed25519::SecretKey::generate();
    let bytes: [u8; 32] = secret
        .as_ref()
        .try_into()
        .map_err(|_| invalid(path, "key generation gave no 32-byte secret"))?;
    crate::identity::write_private(path, &bytes).map_err(io(path))?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// Loads the mesh key (32 raw bytes, as `atmosphere mesh init` wrote it).
pub fn load_mesh_key(path: &Path) -> Result<SigningKey, Error> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let bytes: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        invalid(
            path,
            format!("not a mesh key ({} bytes, expected 32)", bytes.len()),
        )
    })?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// A certificate or revocation as text: one line of base64.
pub fn to_text(signed: &Certificate) -> Result<String, codec::Error> {
    Ok(STANDARD.encode(codec::encode(signed, MAX_SIGNED_BYTES)?) + "\n")
}

/// Reads [`to_text`]'s output.
pub fn from_text(text: &str) -> Result<Certificate, String> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|e| format!("not base64: {e}"))?;
    codec::decode(&bytes, MAX_SIGNED_BYTES).map_err(|e| e.to_string())
}

/// Reads a certificate file.
pub fn read_certificate(path: &Path) -> Result<Certificate, Error> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    from_text(&text).map_err(|why| invalid(path, format!("not a certificate: {why}")))
}

/// Writes a certificate file (readable by anyone: it is not secret).
pub fn write_certificate(path: &Path, cert: &Certificate) -> Result<(), Error> {
    let text = to_text(cert).map_err(|e| invalid(path, e.to_string()))?;
    write_atomic(path, text.as_bytes())
}

/// Writes through a temporary file and a rename: a crash leaves the old
/// file or the new, never half of one.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Reads the revocations a node has kept; none when the file is missing.
pub fn read_revocations(path: &Path) -> Result<Vec<Revocation>, Error> {
    match std::fs::read(path) {
        Ok(bytes) => codec::decode(&bytes, (MAX_REVOCATIONS + 1) * MAX_SIGNED_BYTES)
            .map_err(|e| invalid(path, format!("not a revocation list: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(path)(e)),
    }
}

/// Writes the revocations atomically (a crash leaves the old list or the new).
pub fn write_revocations(path: &Path, revocations: &[Revocation]) -> Result<(), Error> {
    let bytes = codec::encode(&revocations, (MAX_REVOCATIONS + 1) * MAX_SIGNED_BYTES)
        .map_err(|e| invalid(path, e.to_string()))?;
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mesh_key_is_made_once_and_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys/mesh.key");
        let key = create_mesh_key(&path).expect("created");
        assert_eq!(
            load_mesh_key(&path).expect("loads").to_bytes(),
            key.to_bytes()
        );
        assert!(create_mesh_key(&path).is_err());
        assert_eq!(
            load_mesh_key(&path).expect("kept").to_bytes(),
            key.to_bytes()
        );
        std::fs::write(&path, b"short").expect("write");
        let err = load_mesh_key(&path).unwrap_err().to_string();
        assert!(err.contains("not a mesh key"), "{err}");
    }

    #[test]
    fn a_swarm_key_is_made_once_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(SWARM_KEY_FILE);
        let key = create_swarm_key(&path).expect("created");
        assert_eq!(
            read_swarm_key(&path)
                .expect("reads")
                .fingerprint()
                .to_string(),
            key.fingerprint().to_string()
        );
        assert!(create_swarm_key(&path).is_err());
        std::fs::write(&path, "nonsense").expect("write");
        let err = read_swarm_key(&path).unwrap_err().to_string();
        assert!(err.contains("not a swarm key"), "{err}");
    }

    #[test]
    fn certificates_and_revocations_survive_their_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = crate::wire::member::Signed {
            body: vec![1, 2, 3],
            signature: vec![7; 64],
        };
        let path = dir.path().join(CERTIFICATE_FILE);
        write_certificate(&path, &cert).expect("write");
        assert_eq!(read_certificate(&path).expect("read"), cert);
        std::fs::write(&path, "not base64!").expect("write");
        assert!(read_certificate(&path).is_err());

        let path = dir.path().join(REVOCATIONS_FILE);
        assert!(
            read_revocations(&path)
                .expect("missing is empty")
                .is_empty()
        );
        write_revocations(&path, std::slice::from_ref(&cert)).expect("write");
        assert_eq!(read_revocations(&path).expect("read"), vec![cert]);
    }
}
