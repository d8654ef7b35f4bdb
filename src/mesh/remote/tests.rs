//! The store's rules on hand-made updates.

use super::*;
use crate::wire::route::{CapabilityRecord, RouteUpdate, VERSION, WireVector};

fn key(seed: u8) -> libp2p::identity::Keypair {
    let secret =
        libp2p::identity::ed25519::SecretKey::try_from_bytes([seed; 32]).expect("32 bytes");
    libp2p::identity::ed25519::Keypair::from(secret).into()
}

fn update(seq: u64, ttl: u32, body: RouteBody) -> RouteUpdate {
    RouteUpdate {
        version: VERSION,
        seq,
        ttl_secs: ttl,
        node_name: "peer".into(),
        addrs: Vec::new(),
        dim: 2,
        body,
        certificate: None,
    }
}

fn full(ids: &[&str]) -> RouteBody {
    RouteBody::Full(
        ids.iter()
            .map(|id| CapabilityRecord {
                id: (*id).into(),
                kind: "llm/chat".into(),
                domain: String::new(),
                topics: Vec::new(),
                description: String::new(),
                vector: WireVector::quantize(&[1.0, 0.0]),
                prototypes: Vec::new(),
                available: true,
                in_flight: 0,
                reference: None,
                examples: Vec::new(),
                input_schema: None,
                inputs: Vec::new(),
            })
            .collect(),
    )
}

fn apply(r: &mut Remote, k: &libp2p::identity::Keypair, u: RouteUpdate, now: Instant) -> Outcome {
    let via = k.public().to_peer_id();
    relayed(r, k, via, u, now)
}

/// Applies `u`, signed by `k`, as relayed by `via`.
fn relayed(
    r: &mut Remote,
    k: &libp2p::identity::Keypair,
    via: PeerId,
    u: RouteUpdate,
    now: Instant,
) -> Outcome {
    let signed = SignedRouteUpdate::sign(&u, k).expect("sign");
    let verified = signed.verify(2).expect("verify");
    r.apply(verified, signed, via, now, CLOCK_MS)
}

/// The wall clock of these tests: seqs near 0 are a few seconds old.
const CLOCK_MS: u64 = 5_000;

#[test]
fn newer_replaces_same_is_duplicate_older_is_stale() {
    let me = key(1).public().to_peer_id();
    let peer = key(2);
    let mut r = Remote::new(me, HashSet::new());
    let t = Instant::now();
    assert_eq!(
        apply(&mut r, &peer, update(10, 30, full(&["a/x", "a/y"])), t),
        Outcome::Accepted
    );
    assert_eq!(r.entries().count(), 2);
    assert_eq!(
        apply(&mut r, &peer, update(10, 30, full(&["a/x"])), t),
        Outcome::Duplicate
    );
    assert_eq!(
        apply(&mut r, &peer, update(9, 30, full(&["a/x"])), t),
        Outcome::Stale
    );
    assert_eq!(
        apply(&mut r, &peer, update(11, 30, full(&["a/z"])), t),
        Outcome::Accepted
    );
    let ids: Vec<_> = r.entries().map(|e| e.capability.id.to_string()).collect();
    assert_eq!(ids, vec!["a/z"]);
    assert!(r.entries().all(|e| !e.local));
    assert_eq!(r.snapshot().len(), 1);
}

#[test]
fn expiry_and_withdrawal() {
    let mut r = Remote::new(key(1).public().to_peer_id(), HashSet::new());
    let peer = key(2);
    let t = Instant::now();
    apply(&mut r, &peer, update(1, 5, full(&["a/x"])), t);
    assert!(r.expire(t + Duration::from_secs(4)).is_empty());
    assert_eq!(
        r.expire(t + Duration::from_secs(5)),
        vec![peer.public().to_peer_id()]
    );
    assert_eq!(r.entries().count(), 0);
    apply(&mut r, &peer, update(2, 30, full(&["a/x"])), t);
    assert_eq!(
        apply(&mut r, &peer, update(3, 30, RouteBody::Withdraw), t),
        Outcome::Withdrawn
    );
    assert_eq!(r.entries().count(), 0);
    assert!(r.origins().is_empty(), "a withdrawn origin is not listed");
    // A replay of the older full update cannot resurrect it, even after
    // the withdrawal's own TTL.
    let later = t + Duration::from_secs(40);
    r.expire(later);
    assert_eq!(
        apply(&mut r, &peer, update(2, 30, full(&["a/x"])), later),
        Outcome::Stale
    );
    // Nor can a replay of an expired origin's last update.
    let other = key(3);
    apply(&mut r, &other, update(7, 5, full(&["b/x"])), t);
    r.expire(t + Duration::from_secs(6));
    assert_eq!(
        apply(
            &mut r,
            &other,
            update(7, 5, full(&["b/x"])),
            t + Duration::from_secs(7)
        ),
        Outcome::Duplicate
    );
    // The node itself coming back, with a newer seq, is welcome.
    assert_eq!(
        apply(&mut r, &peer, update(4, 30, full(&["a/x"])), later),
        Outcome::Accepted
    );
}

#[test]
fn updates_older_than_their_ttl_are_stale_wherever_they_come_from() {
    let mut r = Remote::new(key(1).public().to_peer_id(), HashSet::new());
    let peer = key(2);
    let t = Instant::now();
    let now_ms = 10_000_000;
    let old = CLOCK_GRACE.as_millis() as u64 + 30_000 + 1;
    let u = update(now_ms - old, 30, full(&["a/x"]));
    let signed = SignedRouteUpdate::sign(&u, &peer).expect("sign");
    let verified = signed.verify(2).expect("verify");
    assert_eq!(
        r.apply(verified, signed, peer.public().to_peer_id(), t, now_ms),
        Outcome::Stale
    );
    let u = update(now_ms - old + 2, 30, full(&["a/x"]));
    let signed = SignedRouteUpdate::sign(&u, &peer).expect("sign");
    let verified = signed.verify(2).expect("verify");
    assert_eq!(
        r.apply(verified, signed, peer.public().to_peer_id(), t, now_ms),
        Outcome::Accepted
    );
}

#[test]
fn own_updates_and_floods_are_not_taken() {
    let me = key(1);
    let mut r = Remote::new(me.public().to_peer_id(), HashSet::new());
    let t = Instant::now();
    assert_eq!(
        apply(&mut r, &me, update(1, 30, full(&["a/x"])), t),
        Outcome::Own
    );
    let peer = key(2);
    let mut limited = 0;
    for seq in 1..=20 {
        if apply(&mut r, &peer, update(seq, 30, full(&["a/x"])), t) == Outcome::RateLimited {
            limited += 1;
        }
    }
    assert_eq!(
        limited, 15,
        "burst of 5, then nothing within the same instant"
    );
    let later = t + Duration::from_secs(3);
    assert_eq!(
        apply(&mut r, &peer, update(100, 30, full(&["a/x"])), later),
        Outcome::Accepted
    );
}

/// A key per number, for more origins than a `u8` seed gives.
fn wide_key(n: u32) -> libp2p::identity::Keypair {
    let mut seed = [7u8; 32];
    seed[..4].copy_from_slice(&n.to_le_bytes());
    let secret = libp2p::identity::ed25519::SecretKey::try_from_bytes(seed).expect("32 bytes");
    libp2p::identity::ed25519::Keypair::from(secret).into()
}

#[test]
fn one_relay_cannot_fill_the_table_nor_push_out_other_origins() {
    let mut r = Remote::new(key(1).public().to_peer_id(), HashSet::new());
    let t = Instant::now();
    let sybil = key(2).public().to_peer_id();
    // An honest node learnt through another peer first.
    let early = key(3);
    assert_eq!(
        relayed(
            &mut r,
            &early,
            key(4).public().to_peer_id(),
            update(1, 30, full(&["h/early"])),
            t
        ),
        Outcome::Accepted
    );
    // One peer relays 600 fresh origins: it gets MAX_PER_RELAY of them.
    let mut accepted = 0;
    for n in 0..600 {
        let k = wide_key(n);
        match relayed(&mut r, &k, sybil, update(1, 30, full(&["s/x"])), t) {
            Outcome::Accepted => accepted += 1,
            Outcome::RelayFull => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(accepted, MAX_PER_RELAY);
    // Others keep coming, each through its own relay, until the table is
    // full; then the sybil relay's newest origins make way, down to one
    // (a relay of one does not give way to another of none: no churn).
    for n in 0..(MAX_ORIGINS as u32 - 2) {
        let k = wide_key(10_000 + n);
        let via = wide_key(20_000 + n).public().to_peer_id();
        assert_eq!(
            relayed(
                &mut r,
                &k,
                via,
                update(1, 30, full(&["h/x"])),
                t + Duration::from_millis(1)
            ),
            Outcome::Accepted,
            "origin {n} through its own relay"
        );
    }
    assert_eq!(r.origins().len(), MAX_ORIGINS);
    assert!(
        r.holds(&early.public().to_peer_id()),
        "the early node stays"
    );
    assert_eq!(
        r.take_evicted().len(),
        MAX_PER_RELAY - 1,
        "the sybils made way"
    );
    // A full table refuses a further sybil: its relay has nothing to give way to.
    let late = wide_key(599_999);
    let outcome = relayed(&mut r, &late, sybil, update(1, 30, full(&["s/x"])), t);
    assert!(
        matches!(outcome, Outcome::Full | Outcome::RelayFull),
        "{outcome:?}"
    );
}

#[test]
fn protected_origins_are_kept_and_capabilities_are_capped_in_total() {
    let trusted = key(9);
    let mut r = Remote::new(
        key(1).public().to_peer_id(),
        HashSet::from([trusted.public().to_peer_id()]),
    );
    let t = Instant::now();
    let ids: Vec<String> = (0..256).map(|i| format!("c/x{i}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    // 32 origins of 256 capabilities through 32 relays fill the capability cap.
    for n in 0..32 {
        let k = wide_key(n);
        let via = wide_key(1000 + n).public().to_peer_id();
        assert_eq!(
            relayed(&mut r, &k, via, update(1, 30, full(&ids)), t),
            Outcome::Accepted
        );
    }
    assert_eq!(r.entries().count(), MAX_REMOTE_CAPABILITIES);
    // A newcomer through a relay already holding one cannot take a place;
    let k = wide_key(77);
    let outcome = relayed(
        &mut r,
        &k,
        wide_key(1000).public().to_peer_id(),
        update(1, 30, full(&["n/x"])),
        t,
    );
    assert_eq!(outcome, Outcome::Full);
    // a trusted origin, or one sending its own update, can.
    assert_eq!(
        relayed(
            &mut r,
            &trusted,
            wide_key(1000).public().to_peer_id(),
            update(1, 30, full(&["t/x"])),
            t
        ),
        Outcome::Accepted
    );
    let direct = key(10);
    assert_eq!(
        apply(&mut r, &direct, update(1, 30, full(&["d/x"])), t),
        Outcome::Accepted
    );
    assert!(r.entries().count() <= MAX_REMOTE_CAPABILITIES);
    assert_eq!(
        r.take_evicted().len(),
        1,
        "one origin of 256 made room for both"
    );
}

#[test]
fn a_newcomer_that_cannot_get_room_evicts_nobody() {
    let mut r = Remote::new(key(1).public().to_peer_id(), HashSet::new());
    let t = Instant::now();
    let ids: Vec<String> = (0..128).map(|i| format!("c/x{i}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    // 64 origins of 128 capabilities: the first relay brought two, the
    // others one each.
    for n in 0..64u32 {
        let via = wide_key(1000 + n.max(1)).public().to_peer_id();
        let outcome = relayed(&mut r, &wide_key(n), via, update(1, 30, full(&ids)), t);
        assert_eq!(outcome, Outcome::Accepted);
    }
    assert_eq!(r.entries().count(), MAX_REMOTE_CAPABILITIES);
    // 256 capabilities need two to go; only one may (the first relay's
    // second): nobody is evicted.
    let big: Vec<String> = (0..256).map(|i| format!("n/x{i}")).collect();
    let big: Vec<&str> = big.iter().map(String::as_str).collect();
    let via = wide_key(5000).public().to_peer_id();
    let outcome = relayed(&mut r, &wide_key(77), via, update(1, 30, full(&big)), t);
    assert_eq!(outcome, Outcome::Full);
    assert!(r.take_evicted().is_empty());
    assert_eq!(r.origins().len(), 64);
}
