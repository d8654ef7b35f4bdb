//! Membership of a closed mesh (`mesh.authority`). The mesh key signs a
//! certificate for each admitted node; a node of a closed mesh presents its
//! own in a hello to every peer it connects to and in every route update it
//! signs, and hears only peers and origins whose certificate is in force:
//! signed by the mesh key, for that PeerId, unexpired, not revoked.
//! Revocations are signed by the mesh key too, spread by gossip and hellos,
//! and kept on disk. The [`Gate`] holds what this node knows: its own
//! certificate, the revocations, and each connected peer's standing, which
//! the network sets and the request core waits on.

pub mod files;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use libp2p::PeerId;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::wire::member::{self, Certificate, Hello, Member, Revocation};

/// Why a peer or an origin is not heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// It presented no certificate (a node of an open mesh, or a stranger).
    NoCertificate,
    /// Not signed by this mesh's key, or malformed.
    BadCertificate,
    /// A certificate of another node.
    WrongPeer,
    Expired,
    Revoked,
    /// It sent no hello (does not speak the protocol, or too late).
    NoHello,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NoCertificate => "no_certificate",
            Refusal::BadCertificate => "bad_certificate",
            Refusal::WrongPeer => "wrong_peer",
            Refusal::Expired => "expired",
            Refusal::Revoked => "revoked",
            Refusal::NoHello => "no_hello",
        }
    }
}

/// Where a connected peer stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Standing {
    /// Connected; its hello has not been judged yet.
    Pending,
    Member(Member),
    Refused(Refusal),
}

/// A revocation and what it says, as kept.
struct Kept {
    before_ms: u64,
    signed: Revocation,
    /// Order learnt: the newest go into hellos.
    learnt: u64,
}

/// This node's membership of a closed mesh.
pub struct Gate {
    authority: VerifyingKey,
    own: Certificate,
    own_member: Member,
    revocations: Mutex<(HashMap<PeerId, Kept>, u64)>,
    /// Where the revocations are kept; none in tests.
    store: Option<PathBuf>,
    standings: Mutex<HashMap<PeerId, Standing>>,
    changed: watch::Sender<u64>,
}

/// Why the node cannot take part in its closed mesh.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    File(#[from] files::Error),
    #[error("{0}")]
    Certificate(String),
}

/// The wall clock in unix milliseconds, as certificates (and route
/// updates' sequence numbers) read it.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Gate {
    /// The gate of node `me`, with its certificate and the revocations kept
    /// at `store` (read now, written on each new one). Fails, saying what to
    /// do, when the certificate is not this node's, not of this mesh, expired
    /// or revoked.
    pub fn new(
        authority: VerifyingKey,
        own: Certificate,
        me: PeerId,
        store: Option<PathBuf>,
    ) -> Result<Self, Error> {
        let kept = match &store {
            Some(path) => files::read_revocations(path)?,
            None => Vec::new(),
        };
        let own_member = own.member(&authority).map_err(|e| {
            Error::Certificate(format!(
                "this node's certificate does not check out against mesh.authority: {e}"
            ))
        })?;
        if own_member.peer != me {
            return Err(Error::Certificate(format!(
                "the certificate is for {}, not for this node ({me})",
                own_member.peer
            )));
        }
        let (tx, _) = watch::channel(0);
        let gate = Self {
            authority,
            own,
            own_member,
            revocations: Mutex::new((HashMap::new(), 0)),
            store: None,
            standings: Mutex::new(HashMap::new()),
            changed: tx,
        };
        for r in &kept {
            // A list this node wrote; an entry that no longer checks out
            // (another mesh's) is left out.
            let _ = gate.learn(r);
        }
        let gate = Self { store, ..gate };
        match gate.judge(Some(&gate.own), me, now_ms()) {
            Ok(_) => Ok(gate),
            Err(r) => Err(Error::Certificate(format!(
                "this node's certificate is {}",
                match r {
                    Refusal::Expired => "expired",
                    Refusal::Revoked => "revoked",
                    _ => "not valid",
                }
            ))),
        }
    }

    /// The mesh key's public half.
    pub fn authority(&self) -> &VerifyingKey {
        &self.authority
    }

    /// This node's own standing: its roles and expiry.
    pub fn own(&self) -> &Member {
        &self.own_member
    }

    /// The certificate this node presents.
    pub fn certificate(&self) -> &Certificate {
        &self.own
    }

    /// What this node says when it connects: its certificate and the newest
    /// revocations it knows.
    pub fn hello(&self) -> Hello {
        let guard = self.revocations.lock();
        let mut kept: Vec<&Kept> = guard.0.values().collect();
        kept.sort_by_key(|k| std::cmp::Reverse(k.learnt));
        Hello {
            version: member::VERSION,
            certificate: Some(self.own.clone()),
            revocations: kept
                .into_iter()
                .take(member::MAX_HELLO_REVOCATIONS)
                .map(|k| k.signed.clone())
                .collect(),
        }
    }

    /// Whether `cert` admits `peer` at `now_ms`.
    pub fn judge(
        &self,
        cert: Option<&Certificate>,
        peer: PeerId,
        now_ms: u64,
    ) -> Result<Member, Refusal> {
        let cert = cert.ok_or(Refusal::NoCertificate)?;
        let member = cert
            .member(&self.authority)
            .map_err(|_| Refusal::BadCertificate)?;
        self.in_force(member, peer, now_ms)
    }

    fn in_force(&self, member: Member, peer: PeerId, now_ms: u64) -> Result<Member, Refusal> {
        if member.peer != peer {
            return Err(Refusal::WrongPeer);
        }
        if !member.valid_at(now_ms) {
            return Err(Refusal::Expired);
        }
        let revoked = self
            .revocations
            .lock()
            .0
            .get(&peer)
            .is_some_and(|k| member.issued_ms <= k.before_ms);
        if revoked {
            return Err(Refusal::Revoked);
        }
        Ok(member)
    }

    /// Takes in a revocation: `Ok(Some(peer))` when it is new and voids more
    /// than was known (kept, and written to the store), `Ok(None)` when
    /// nothing new, an error when it does not check out or no room is left.
    pub fn learn(&self, revocation: &Revocation) -> Result<Option<PeerId>, String> {
        let revoked = revocation
            .revoked(&self.authority)
            .map_err(|e| e.to_string())?;
        let list = {
            let mut guard = self.revocations.lock();
            let (kept, next) = &mut *guard;
            if kept
                .get(&revoked.peer)
                .is_some_and(|k| k.before_ms >= revoked.before_ms)
            {
                return Ok(None);
            }
            if !kept.contains_key(&revoked.peer) && kept.len() >= files::MAX_REVOCATIONS {
                return Err(format!(
                    "{} revocations kept already; no room for another",
                    files::MAX_REVOCATIONS
                ));
            }
            *next += 1;
            kept.insert(
                revoked.peer,
                Kept {
                    before_ms: revoked.before_ms,
                    signed: revocation.clone(),
                    learnt: *next,
                },
            );
            let mut list: Vec<(u64, Revocation)> = kept
                .values()
                .map(|k| (k.learnt, k.signed.clone()))
                .collect();
            list.sort_by_key(|(learnt, _)| *learnt);
            list
        };
        if let Some(path) = &self.store {
            let list: Vec<Revocation> = list.into_iter().map(|(_, r)| r).collect();
            if let Err(e) = files::write_revocations(path, &list) {
                tracing::error!(error = %e, "cannot keep a revocation on disk; it holds until restart");
            }
        }
        // A connected peer it voids is no longer a member.
        let mut standings = self.standings.lock();
        if let Some(Standing::Member(m)) = standings.get(&revoked.peer)
            && revoked.voids(m)
        {
            standings.insert(revoked.peer, Standing::Refused(Refusal::Revoked));
            self.changed.send_modify(|g| *g += 1);
        }
        Ok(Some(revoked.peer))
    }

    /// How many revocations are kept.
    pub fn revocations(&self) -> usize {
        self.revocations.lock().0.len()
    }

    /// Sets a connected peer's standing.
    pub fn settle(&self, peer: PeerId, standing: Standing) {
        self.standings.lock().insert(peer, standing);
        self.changed.send_modify(|g| *g += 1);
    }

    /// Forgets a peer that disconnected.
    pub fn forget(&self, peer: &PeerId) {
        self.standings.lock().remove(peer);
    }

    /// A connected peer's standing at `now_ms` (expiry and revocations
    /// applied); `None` when not connected.
    pub fn standing(&self, peer: &PeerId, now_ms: u64) -> Option<Standing> {
        let standing = self.standings.lock().get(peer).cloned()?;
        Some(match standing {
            Standing::Member(m) => match self.in_force(m, *peer, now_ms) {
                Ok(m) => Standing::Member(m),
                Err(r) => Standing::Refused(r),
            },
            other => other,
        })
    }

    /// Members among the connected peers whose certificate is no longer in
    /// force at `now_ms`.
    pub fn lapsed(&self, now_ms: u64) -> Vec<PeerId> {
        let members: Vec<(PeerId, Member)> = self
            .standings
            .lock()
            .iter()
            .filter_map(|(p, s)| match s {
                Standing::Member(m) => Some((*p, m.clone())),
                _ => None,
            })
            .collect();
        members
            .into_iter()
            .filter(|(p, m)| self.in_force(m.clone(), *p, now_ms).is_err())
            .map(|(p, _)| p)
            .collect()
    }

    /// Waits up to `wait` for a connected peer's hello to be judged: its
    /// membership, or why it has none.
    pub async fn admitted(&self, peer: PeerId, wait: Duration) -> Result<Member, Refusal> {
        let mut changed = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.standing(&peer, now_ms()) {
                Some(Standing::Member(m)) => return Ok(m),
                Some(Standing::Refused(r)) => return Err(r),
                Some(Standing::Pending) | None => {}
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                return Err(Refusal::NoHello);
            }
        }
    }
}

/// The gate of a closed mesh (`mesh.authority` set), with the certificate
/// and revocations in `data_dir`; `None` for an open mesh.
pub fn load(
    mesh: &crate::config::MeshConfig,
    data_dir: &std::path::Path,
    me: PeerId,
) -> Result<Option<Gate>, Error> {
    let Some(authority) = &mesh.authority else {
        return Ok(None);
    };
    let authority = crate::config::parse_authority(authority).map_err(Error::Certificate)?;
    let path = mesh.certificate.as_deref().map_or_else(
        || data_dir.join(files::CERTIFICATE_FILE),
        crate::config::expand_home,
    );
    let own = match files::read_certificate(&path) {
        Ok(cert) => cert,
        Err(files::Error::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Certificate(format!(
                "mesh.authority is set but this node has no certificate ({} is missing): \
                 run `atmosphere mesh admit {me}` where the mesh key is, then \
                 `atmosphere mesh join FILE` here",
                path.display()
            )));
        }
        Err(e) => return Err(e.into()),
    };
    Gate::new(
        authority,
        own,
        me,
        Some(data_dir.join(files::REVOCATIONS_FILE)),
    )
    .map(Some)
}

#[cfg(test)]
mod tests;
