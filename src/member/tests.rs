use std::time::Duration;

use ed25519_dalek::SigningKey;
use libp2p::PeerId;

use super::*;
use crate::wire::member::{Grant, Revoke, Signed};

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn cert(mesh: &SigningKey, peer: PeerId, issued_ms: u64, expires_ms: Option<u64>) -> Certificate {
    let grant = Grant {
        version: member::VERSION,
        mesh: mesh.verifying_key().to_bytes(),
        peer: peer.to_bytes(),
        roles: vec!["edge".into()],
        issued_ms,
        expires_ms,
    };
    Signed::certify(&grant, mesh).expect("sign")
}

fn revocation(mesh: &SigningKey, peer: PeerId, before_ms: u64) -> Revocation {
    let revoke = Revoke {
        version: member::VERSION,
        mesh: mesh.verifying_key().to_bytes(),
        peer: peer.to_bytes(),
        before_ms,
    };
    Signed::revoke(&revoke, mesh).expect("sign")
}

fn gate(mesh: &SigningKey, me: PeerId, store: Option<PathBuf>) -> Result<Gate, Error> {
    Gate::new(mesh.verifying_key(), cert(mesh, me, 1, None), me, store)
}

#[test]
fn a_node_starts_only_with_its_own_valid_certificate() {
    let mesh = key(1);
    let me = PeerId::random();
    assert!(gate(&mesh, me, None).is_ok());
    let other = Gate::new(
        mesh.verifying_key(),
        cert(&mesh, PeerId::random(), 1, None),
        me,
        None,
    );
    assert!(
        other
            .err()
            .expect("refused")
            .to_string()
            .contains("not for this node")
    );
    let foreign = Gate::new(key(2).verifying_key(), cert(&mesh, me, 1, None), me, None);
    assert!(
        foreign
            .err()
            .expect("refused")
            .to_string()
            .contains("mesh.authority")
    );
    let expired = Gate::new(mesh.verifying_key(), cert(&mesh, me, 1, Some(2)), me, None);
    assert!(
        expired
            .err()
            .expect("refused")
            .to_string()
            .contains("expired")
    );
}

#[test]
fn peers_are_judged_by_key_peer_expiry_and_revocation() {
    let mesh = key(1);
    let gate = gate(&mesh, PeerId::random(), None).expect("gate");
    let peer = PeerId::random();
    let good = cert(&mesh, peer, 1_000, Some(10_000));
    assert!(gate.judge(Some(&good), peer, 5_000).is_ok());
    assert_eq!(gate.judge(None, peer, 5_000), Err(Refusal::NoCertificate));
    assert_eq!(
        gate.judge(Some(&cert(&key(2), peer, 1_000, None)), peer, 5_000),
        Err(Refusal::BadCertificate)
    );
    assert_eq!(
        gate.judge(Some(&good), PeerId::random(), 5_000),
        Err(Refusal::WrongPeer)
    );
    assert_eq!(gate.judge(Some(&good), peer, 10_000), Err(Refusal::Expired));

    // Revoked: that certificate is void; one issued later stands.
    assert_eq!(gate.learn(&revocation(&mesh, peer, 1_000)), Ok(Some(peer)));
    assert_eq!(gate.learn(&revocation(&mesh, peer, 1_000)), Ok(None));
    assert_eq!(gate.learn(&revocation(&mesh, peer, 500)), Ok(None));
    assert_eq!(gate.judge(Some(&good), peer, 5_000), Err(Refusal::Revoked));
    let again = cert(&mesh, peer, 2_000, None);
    assert!(gate.judge(Some(&again), peer, 5_000).is_ok());
    // Another mesh's revocation is refused.
    assert!(gate.learn(&revocation(&key(2), peer, 9_000)).is_err());
    assert_eq!(gate.revocations(), 1);
    assert_eq!(gate.hello().revocations.len(), 1);
}

#[test]
fn revocations_are_kept_across_restarts() {
    let mesh = key(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join(files::REVOCATIONS_FILE);
    let me = PeerId::random();
    let peer = PeerId::random();
    let first = gate(&mesh, me, Some(store.clone())).expect("gate");
    first
        .learn(&revocation(&mesh, peer, 1_000))
        .expect("learnt");
    drop(first);
    let again = gate(&mesh, me, Some(store.clone())).expect("gate");
    assert_eq!(
        again.judge(Some(&cert(&mesh, peer, 1_000, None)), peer, 5_000),
        Err(Refusal::Revoked)
    );
    // A node revoked itself cannot start.
    again.learn(&revocation(&mesh, me, 1)).expect("learnt");
    let err = gate(&mesh, me, Some(store)).err().expect("refused");
    assert!(err.to_string().contains("revoked"), "{err}");
}

#[tokio::test]
async fn requests_wait_for_the_peers_hello_and_revocation_ends_membership() {
    let mesh = key(1);
    let gate = std::sync::Arc::new(gate(&mesh, PeerId::random(), None).expect("gate"));
    let peer = PeerId::random();
    gate.settle(peer, Standing::Pending);
    let waiting = {
        let gate = gate.clone();
        tokio::spawn(async move { gate.admitted(peer, Duration::from_secs(5)).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let member = gate.judge(Some(&cert(&mesh, peer, 1_000, None)), peer, 5_000);
    gate.settle(peer, Standing::Member(member.expect("member")));
    assert!(waiting.await.expect("joined").is_ok());

    gate.learn(&revocation(&mesh, peer, 1_000)).expect("learnt");
    assert_eq!(
        gate.admitted(peer, Duration::from_millis(10)).await,
        Err(Refusal::Revoked)
    );
    let silent = PeerId::random();
    gate.settle(silent, Standing::Pending);
    assert_eq!(
        gate.admitted(silent, Duration::from_millis(10)).await,
        Err(Refusal::NoHello)
    );
}

#[test]
fn lapsed_members_are_found() {
    let mesh = key(1);
    let gate = gate(&mesh, PeerId::random(), None).expect("gate");
    let (short, long) = (PeerId::random(), PeerId::random());
    for (peer, expires) in [(short, 2_000), (long, 9_000)] {
        let m = gate
            .judge(Some(&cert(&mesh, peer, 1_000, Some(expires))), peer, 1_500)
            .expect("member");
        gate.settle(peer, Standing::Member(m));
    }
    assert_eq!(gate.lapsed(1_500), Vec::<PeerId>::new());
    assert_eq!(gate.lapsed(2_000), vec![short]);
}
