//! Membership of a closed mesh: the certificate the mesh key signs for each
//! admitted node, the revocation it signs to take one back, and the hello
//! two nodes exchange when they connect. Spec: `protocols/membership.md`.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use super::codec::{self, Error};
use crate::capability::{MAX_ROLE, is_role};

pub const VERSION: u8 = 1;
/// Domain separation: a mesh-key signature of one kind is never valid as
/// another kind, nor as a route update's (whose context differs too).
pub const CERTIFICATE_CONTEXT: &[u8] = b"atmosphere/member/1\0";
pub const REVOCATION_CONTEXT: &[u8] = b"atmosphere/revoke/1\0";
/// Roles a certificate may carry (each a [`crate::capability::is_role`] name).
pub const MAX_ROLES: usize = 8;
/// Largest encoded certificate or revocation.
pub const MAX_SIGNED_BYTES: usize = 1024;
/// Most revocations one hello carries (the newest), and the hello's size.
pub const MAX_HELLO_REVOCATIONS: usize = 1024;
pub const MAX_HELLO_BYTES: usize = (MAX_HELLO_REVOCATIONS + 2) * MAX_SIGNED_BYTES;

/// What the mesh key says about a node: it belongs, with these roles, from
/// `issued_ms` until `expires_ms` (unix milliseconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    pub version: u8,
    /// The mesh key's ed25519 public key.
    pub mesh: [u8; 32],
    /// The admitted node's PeerId (its multihash bytes).
    pub peer: Vec<u8>,
    pub roles: Vec<String>,
    pub issued_ms: u64,
    pub expires_ms: Option<u64>,
}

/// What the mesh key says about a node it takes back: every certificate of
/// `peer` issued at or before `before_ms` is void.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revoke {
    pub version: u8,
    pub mesh: [u8; 32],
    pub peer: Vec<u8>,
    pub before_ms: u64,
}

/// A [`Grant`] or [`Revoke`], encoded, with the mesh key's signature of
/// `context || body`: what travels and what is stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Signed {
    pub body: Vec<u8>,
    pub signature: Vec<u8>,
}

/// A signed [`Grant`].
pub type Certificate = Signed;
/// A signed [`Revoke`].
pub type Revocation = Signed;

/// A certificate that checked out against the mesh key.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub peer: PeerId,
    pub roles: Vec<String>,
    pub issued_ms: u64,
    pub expires_ms: Option<u64>,
}

impl Member {
    /// Whether the certificate is in force at `now_ms` (revocations aside).
    pub fn valid_at(&self, now_ms: u64) -> bool {
        self.expires_ms.is_none_or(|e| now_ms < e)
    }
}

/// A revocation that checked out against the mesh key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Revoked {
    pub peer: PeerId,
    pub before_ms: u64,
}

impl Revoked {
    /// Whether it voids `member`'s certificate.
    pub fn voids(&self, member: &Member) -> bool {
        self.peer == member.peer && member.issued_ms <= self.before_ms
    }
}

/// Sent by each side when two nodes of a closed mesh connect (request and
/// answer alike): its own certificate, and the revocations it knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u8,
    /// None from a node of an open mesh.
    pub certificate: Option<Certificate>,
    pub revocations: Vec<Revocation>,
}

impl super::Message for Hello {
    const MAX_BYTES: usize = MAX_HELLO_BYTES;
    fn version(&self) -> Option<u8> {
        Some(self.version)
    }
    fn check(&self) -> Result<(), Error> {
        if self.revocations.len() > MAX_HELLO_REVOCATIONS {
            return Err(Error::Invalid(format!(
                "{} revocations (max {MAX_HELLO_REVOCATIONS})",
                self.revocations.len()
            )));
        }
        Ok(())
    }
}

/// A revocation as gossiped on the membership topic.
impl super::Message for Signed {
    const MAX_BYTES: usize = MAX_SIGNED_BYTES;
    fn version(&self) -> Option<u8> {
        None
    }
}

fn signed_message(context: &[u8], body: &[u8]) -> Vec<u8> {
    [context, body].concat()
}

fn sign<T: Serialize>(context: &[u8], value: &T, key: &SigningKey) -> Result<Signed, Error> {
    let body = codec::encode(value, MAX_SIGNED_BYTES - 72)?;
    let signature = key
        .sign(&signed_message(context, &body))
        .to_bytes()
        .to_vec();
    Ok(Signed { body, signature })
}

impl Signed {
    /// The mesh key's signature over `context || body`, checked strictly;
    /// then the body decoded.
    fn open<T: serde::de::DeserializeOwned>(
        &self,
        context: &[u8],
        mesh: &VerifyingKey,
    ) -> Result<T, Error> {
        let sig: [u8; 64] = self
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| Error::Invalid("signature is not 64 bytes".into()))?;
        mesh.verify_strict(
            &signed_message(context, &self.body),
            &Signature::from_bytes(&sig),
        )
        .map_err(|_| Error::Invalid("not signed by this mesh's key".into()))?;
        codec::decode(&self.body, MAX_SIGNED_BYTES)
    }

    /// Signs a certificate with the mesh key.
    pub fn certify(grant: &Grant, key: &SigningKey) -> Result<Certificate, Error> {
        sign(CERTIFICATE_CONTEXT, grant, key)
    }

    /// Signs a revocation with the mesh key.
    pub fn revoke(revoke: &Revoke, key: &SigningKey) -> Result<Revocation, Error> {
        sign(REVOCATION_CONTEXT, revoke, key)
    }

    /// The mesh key a certificate says it is from (not yet checked: verify
    /// with [`Signed::member`]).
    pub fn mesh_key(&self) -> Result<VerifyingKey, Error> {
        let grant: Grant = codec::decode(&self.body, MAX_SIGNED_BYTES)?;
        VerifyingKey::from_bytes(&grant.mesh)
            .map_err(|_| Error::Invalid("the mesh key is not an ed25519 key".into()))
    }

    /// Checks a certificate against the mesh key and the rules of the spec
    /// (expiry is the caller's: it depends on the time).
    pub fn member(&self, mesh: &VerifyingKey) -> Result<Member, Error> {
        let grant: Grant = self.open(CERTIFICATE_CONTEXT, mesh)?;
        if grant.version != VERSION {
            return Err(Error::Version(grant.version));
        }
        if grant.mesh != mesh.to_bytes() {
            return Err(Error::Invalid("certificate of another mesh".into()));
        }
        check_roles(&grant.roles)?;
        let peer = PeerId::from_bytes(&grant.peer)
            .map_err(|_| Error::Invalid("certificate names no valid PeerId".into()))?;
        Ok(Member {
            peer,
            roles: grant.roles,
            issued_ms: grant.issued_ms,
            expires_ms: grant.expires_ms,
        })
    }

    /// Checks a revocation against the mesh key.
    pub fn revoked(&self, mesh: &VerifyingKey) -> Result<Revoked, Error> {
        let revoke: Revoke = self.open(REVOCATION_CONTEXT, mesh)?;
        if revoke.version != VERSION {
            return Err(Error::Version(revoke.version));
        }
        if revoke.mesh != mesh.to_bytes() {
            return Err(Error::Invalid("revocation of another mesh".into()));
        }
        let peer = PeerId::from_bytes(&revoke.peer)
            .map_err(|_| Error::Invalid("revocation names no valid PeerId".into()))?;
        Ok(Revoked {
            peer,
            before_ms: revoke.before_ms,
        })
    }
}

/// Roles are short names: letters, digits, `-` and `_`.
pub fn check_roles(roles: &[String]) -> Result<(), Error> {
    if roles.len() > MAX_ROLES {
        return Err(Error::Invalid(format!(
            "{} roles (max {MAX_ROLES})",
            roles.len()
        )));
    }
    for role in roles {
        if !is_role(role) {
            return Err(Error::Invalid(format!(
                "role {role:?}: 1 to {MAX_ROLE} letters, digits, `-` or `_`"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh_key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn grant(key: &SigningKey, peer: PeerId) -> Grant {
        Grant {
            version: VERSION,
            mesh: key.verifying_key().to_bytes(),
            peer: peer.to_bytes(),
            roles: vec!["gpu".into()],
            issued_ms: 1_000,
            expires_ms: Some(5_000),
        }
    }

    #[test]
    fn a_certificate_checks_out_only_against_its_own_mesh_key() {
        let key = mesh_key(1);
        let peer = PeerId::random();
        let cert = Signed::certify(&grant(&key, peer), &key).expect("sign");
        let member = cert.member(&key.verifying_key()).expect("valid");
        assert_eq!(member.peer, peer);
        assert_eq!(member.roles, ["gpu"]);
        assert!(member.valid_at(4_999));
        assert!(!member.valid_at(5_000));
        assert!(cert.member(&mesh_key(2).verifying_key()).is_err());

        // Tampered with: another peer, or a revocation signature reused.
        let mut tampered = cert.clone();
        tampered.body[40] ^= 1;
        assert!(tampered.member(&key.verifying_key()).is_err());
        assert!(cert.revoked(&key.verifying_key()).is_err());

        // Signed by the right key but naming another mesh.
        let other = Grant {
            mesh: [9; 32],
            ..grant(&key, peer)
        };
        let cert = Signed::certify(&other, &key).expect("sign");
        assert!(cert.member(&key.verifying_key()).is_err());
    }

    #[test]
    fn a_revocation_voids_certificates_issued_up_to_its_time() {
        let key = mesh_key(1);
        let peer = PeerId::random();
        let revocation = Signed::revoke(
            &Revoke {
                version: VERSION,
                mesh: key.verifying_key().to_bytes(),
                peer: peer.to_bytes(),
                before_ms: 2_000,
            },
            &key,
        )
        .expect("sign");
        let revoked = revocation.revoked(&key.verifying_key()).expect("valid");
        let member = Signed::certify(&grant(&key, peer), &key)
            .and_then(|c| c.member(&key.verifying_key()))
            .expect("valid");
        assert!(revoked.voids(&member));
        // Admitted again afterwards: the new certificate stands.
        let again = Member {
            issued_ms: 2_001,
            ..member.clone()
        };
        assert!(!revoked.voids(&again));
        assert!(!revoked.voids(&Member {
            peer: PeerId::random(),
            ..member
        }));
        assert!(revocation.member(&key.verifying_key()).is_err());
    }

    #[test]
    fn roles_are_short_plain_names() {
        assert!(check_roles(&["gpu".into(), "edge_2".into(), "a-b".into()]).is_ok());
        for bad in ["", "has space", "ünï", &"x".repeat(33)] {
            assert!(check_roles(&[bad.into()]).is_err(), "{bad:?}");
        }
        assert!(check_roles(&vec!["r".into(); 9]).is_err());
    }
}
