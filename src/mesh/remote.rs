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
/// How far an origin's clock may lag this node's: an update whose `seq`
/// (the origin's unix time in ms when it signed) is older than its TTL plus
/// this is stale, whoever relays it.
pub const CLOCK_GRACE: Duration = Duration::from_secs(600);
/// How long the last `seq` of an origin that withdrew or went silent is
/// remembered: as long as any of its updates could still pass the age check.
const TOMBSTONE_FOR: Duration =
    Duration::from_secs(crate::wire::route::MAX_TTL_SECS as u64 + CLOCK_GRACE.as_secs());
/// Most such origins remembered (the oldest are forgotten first).
const MAX_TOMBSTONES: usize = 4096;
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
    /// Lower `seq` than held or remembered, or older than its TTL: stale or
    /// replayed.
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
    /// When this node first accepted an update of it (kept across updates).
    since: Instant,
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
    /// Origins that withdrew or expired: their last `seq`, and until when it
    /// is kept, so that replays of their older updates stay refused.
    gone: HashMap<PeerId, (u64, Instant)>,
}

/// One origin held, as the API shows it.
#[derive(Debug, Clone)]
pub struct OriginState {
    pub peer: PeerId,
    pub node_name: String,
    pub seq: u64,
    /// When its last accepted update arrived.
    pub received: Instant,
    /// Since when this node has held it: from its first accepted update
    /// until it withdraws or expires.
    pub since: Instant,
    pub capabilities: usize,
}

impl Remote {
    pub fn new(me: PeerId) -> Self {
        Self {
            me,
            origins: HashMap::new(),
            gone: HashMap::new(),
        }
    }

    /// Applies a verified update (`signed` is kept to serve sync requests);
    /// `unix_ms` is this node's wall clock, for the age check.
    pub fn apply(
        &mut self,
        verified: Verified,
        signed: SignedRouteUpdate,
        now: Instant,
        unix_ms: u64,
    ) -> Outcome {
        let Verified { origin, update } = verified;
        if origin == self.me {
            return Outcome::Own;
        }
        let lifetime_ms = (u64::from(update.ttl_secs) + CLOCK_GRACE.as_secs()) * 1000;
        if update.seq.saturating_add(lifetime_ms) < unix_ms {
            return Outcome::Stale;
        }
        if let Some(&(seq, _)) = self.gone.get(&origin) {
            match update.seq.cmp(&seq) {
                std::cmp::Ordering::Less => return Outcome::Stale,
                std::cmp::Ordering::Equal => return Outcome::Duplicate,
                std::cmp::Ordering::Greater => {}
            }
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
            RouteBody::Withdraw => {
                self.origins.remove(&origin);
                self.forget(origin, update.seq, now);
                return Outcome::Withdrawn;
            }
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
                                share: Default::default(),
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
        self.gone.remove(&origin);
        let tokens = self.origins.get(&origin).map_or(BURST - 1.0, |o| o.tokens);
        let since = self.origins.get(&origin).map_or(now, |o| o.since);
        self.origins.insert(
            origin,
            Origin {
                seq: update.seq,
                node_name: update.node_name,
                expires: now + ttl,
                received: now,
                since,
                entries,
                signed: (outcome == Outcome::Accepted).then_some(signed),
                tokens,
                refilled: now,
            },
        );
        outcome
    }

    /// Drops origins whose entries expired; returns them. Their last `seq`
    /// is remembered, as a withdrawn origin's is.
    pub fn expire(&mut self, now: Instant) -> Vec<PeerId> {
        let gone: Vec<(PeerId, u64)> = self
            .origins
            .iter()
            .filter(|(_, o)| o.expires <= now)
            .map(|(p, o)| (*p, o.seq))
            .collect();
        for (p, seq) in &gone {
            self.origins.remove(p);
            self.forget(*p, *seq, now);
        }
        self.gone.retain(|_, (_, until)| *until > now);
        gone.into_iter().map(|(p, _)| p).collect()
    }

    /// Remembers the last `seq` of an origin that is no longer held.
    fn forget(&mut self, origin: PeerId, seq: u64, now: Instant) {
        if self.gone.len() >= MAX_TOMBSTONES
            && !self.gone.contains_key(&origin)
            && let Some(oldest) = self
                .gone
                .iter()
                .min_by_key(|(_, (_, until))| *until)
                .map(|(p, _)| *p)
        {
            self.gone.remove(&oldest);
        }
        self.gone.insert(origin, (seq, now + TOMBSTONE_FOR));
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
                since: o.since,
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
        r.apply(verified, signed, now, CLOCK_MS)
    }

    /// The wall clock of these tests: seqs near 0 are a few seconds old.
    const CLOCK_MS: u64 = 5_000;

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
        let mut r = Remote::new(key(1).public().to_peer_id());
        let peer = key(2);
        let t = Instant::now();
        let now_ms = 10_000_000;
        let old = CLOCK_GRACE.as_millis() as u64 + 30_000 + 1;
        let u = update(now_ms - old, 30, full(&["a/x"]));
        let signed = SignedRouteUpdate::sign(&u, &peer).expect("sign");
        let verified = signed.verify(2).expect("verify");
        assert_eq!(r.apply(verified, signed, t, now_ms), Outcome::Stale);
        let u = update(now_ms - old + 2, 30, full(&["a/x"]));
        let signed = SignedRouteUpdate::sign(&u, &peer).expect("sign");
        let verified = signed.verify(2).expect("verify");
        assert_eq!(r.apply(verified, signed, t, now_ms), Outcome::Accepted);
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
