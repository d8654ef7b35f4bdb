//! Capabilities of other nodes, learnt from verified route updates (gossip or
//! sync): the per-origin sequence check, expiry, withdrawal and the caps that
//! keep one origin from flooding the table. Synchronous and free of I/O: the
//! network feeds it verified updates and reads the entries back.
//! Spec: `protocols/route-gossip.md`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::identity::PeerId;

use crate::capability::{Capability, Source};
use crate::routing::Entry;
use crate::wire::route::{RouteBody, SignedRouteUpdate, Verified};

/// Most origins held; updates from further origins are ignored.
pub const MAX_ORIGINS: usize = 512;
/// Sustained updates accepted per origin and second, and the burst allowed.
const RATE_PER_SEC: f64 = 1.0;
const BURST: f64 = 5.0;

/// What became of an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// New information: the table changed.
    Accepted,
    /// The origin withdrew: its entries are gone.
    Withdrawn,
    /// Same `seq` as held: nothing new (no penalty; gossip delivers duplicates).
    Duplicate,
    /// Lower `seq` than held: stale or replayed.
    Stale,
    /// The origin sent too many updates too fast.
    RateLimited,
    /// The table already holds [`MAX_ORIGINS`] other origins.
    Full,
    /// This node's own update came back.
    Own,
}

impl Outcome {
    /// Label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Withdrawn => "withdrawn",
            Outcome::Duplicate => "duplicate",
            Outcome::Stale => "stale",
            Outcome::RateLimited => "rate_limited",
            Outcome::Full => "full",
            Outcome::Own => "own",
        }
    }

    /// Whether the table changed.
    pub fn changed(self) -> bool {
        matches!(self, Outcome::Accepted | Outcome::Withdrawn)
    }
}

struct Origin {
    seq: u64,
    node_name: String,
    expires: Instant,
    received: Instant,
    entries: Vec<Entry>,
    /// The update as received, for sync.
    signed: Option<SignedRouteUpdate>,
    tokens: f64,
    refilled: Instant,
}

/// Remote origins and their capabilities.
pub struct Remote {
    me: PeerId,
    origins: HashMap<PeerId, Origin>,
}

/// One origin held, as the API shows it.
#[derive(Debug, Clone)]
pub struct OriginState {
    pub peer: PeerId,
    pub node_name: String,
    pub seq: u64,
    /// When its last accepted update arrived.
    pub received: Instant,
    pub capabilities: usize,
}

impl Remote {
    pub fn new(me: PeerId) -> Self {
        Self {
            me,
            origins: HashMap::new(),
        }
    }

    /// Applies a verified update (`signed` is kept to serve sync requests).
    pub fn apply(
        &mut self,
        verified: Verified,
        signed: SignedRouteUpdate,
        now: Instant,
    ) -> Outcome {
        let Verified { origin, update } = verified;
        if origin == self.me {
            return Outcome::Own;
        }
        if let Some(held) = self.origins.get_mut(&origin) {
            if update.seq == held.seq {
                return Outcome::Duplicate;
            }
            if update.seq < held.seq {
                return Outcome::Stale;
            }
            let elapsed = now.saturating_duration_since(held.refilled).as_secs_f64();
            held.tokens = (held.tokens + elapsed * RATE_PER_SEC).min(BURST);
            held.refilled = now;
            if held.tokens < 1.0 {
                return Outcome::RateLimited;
            }
            held.tokens -= 1.0;
        } else if self.origins.len() >= MAX_ORIGINS {
            return Outcome::Full;
        }
        let ttl = Duration::from_secs(u64::from(update.ttl_secs));
        let (entries, outcome) = match update.body {
            RouteBody::Withdraw => (Vec::new(), Outcome::Withdrawn),
            RouteBody::Full(records) => {
                let node = origin.to_base58();
                let entries = records
                    .into_iter()
                    .filter_map(|r| {
                        Some(Entry {
                            capability: Capability {
                                id: r.id.parse().ok()?,
                                kind: r.kind.parse().ok()?,
                                domain: r.domain,
                                topics: r.topics,
                                description: r.description,
                                examples: Vec::new(),
                                backend: String::new(),
                                model: r.id,
                                source: Source::Remote,
                            },
                            node: node.clone(),
                            local: false,
                            available: r.available,
                            vector: r.vector.dequantize(),
                            prototypes: r.prototypes.iter().map(|p| p.dequantize()).collect(),
                            reference: r.reference,
                        })
                    })
                    .collect();
                (entries, Outcome::Accepted)
            }
        };
        let tokens = self.origins.get(&origin).map_or(BURST - 1.0, |o| o.tokens);
        self.origins.insert(
            origin,
            Origin {
                seq: update.seq,
                node_name: update.node_name,
                expires: now + ttl,
                received: now,
                entries,
                signed: (outcome == Outcome::Accepted).then_some(signed),
                tokens,
                refilled: now,
            },
        );
        outcome
    }

    /// Drops origins whose entries expired; returns them.
    ///
    /// A withdrawn origin is kept (with no entries) until its TTL passes, so that
    /// a replay of an older update cannot bring it back.
    pub fn expire(&mut self, now: Instant) -> Vec<PeerId> {
        let gone: Vec<PeerId> = self
            .origins
            .iter()
            .filter(|(_, o)| o.expires <= now)
            .map(|(p, _)| *p)
            .collect();
        for p in &gone {
            self.origins.remove(p);
        }
        gone
    }

    /// Whether routes of `peer` are held.
    pub fn holds(&self, peer: &PeerId) -> bool {
        self.origins.contains_key(peer)
    }

    /// Every remote entry.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.origins.values().flat_map(|o| o.entries.iter())
    }

    /// The latest accepted update of every origin with entries, for sync.
    pub fn snapshot(&self) -> Vec<SignedRouteUpdate> {
        self.origins
            .values()
            .filter_map(|o| o.signed.clone())
            .collect()
    }

    /// Every origin held, ordered by PeerId.
    pub fn origins(&self) -> Vec<OriginState> {
        let mut out: Vec<OriginState> = self
            .origins
            .iter()
            .map(|(p, o)| OriginState {
                peer: *p,
                node_name: o.node_name.clone(),
                seq: o.seq,
                received: o.received,
                capabilities: o.entries.len(),
            })
            .collect();
        out.sort_by_key(|o| o.peer);
        out
    }
}

#[cfg(test)]
mod tests {
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
                })
                .collect(),
        )
    }

    fn apply(
        r: &mut Remote,
        k: &libp2p::identity::Keypair,
        u: RouteUpdate,
        now: Instant,
    ) -> Outcome {
        let signed = SignedRouteUpdate::sign(&u, k).expect("sign");
        let verified = signed.verify(2).expect("verify");
        r.apply(verified, signed, now)
    }

    #[test]
    fn newer_replaces_same_is_duplicate_older_is_stale() {
        let me = key(1).public().to_peer_id();
        let peer = key(2);
        let mut r = Remote::new(me);
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
        let mut r = Remote::new(key(1).public().to_peer_id());
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
        // A replay of the older full update cannot resurrect it.
        assert_eq!(
            apply(&mut r, &peer, update(2, 30, full(&["a/x"])), t),
            Outcome::Stale
        );
    }

    #[test]
    fn own_updates_and_floods_are_not_taken() {
        let me = key(1);
        let mut r = Remote::new(me.public().to_peer_id());
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
}
