//! Capabilities of other nodes, learnt from verified route updates (gossip or
//! sync): the per-origin sequence check, expiry, withdrawal and the caps that
//! keep one origin, or one peer relaying many origins, from flooding the
//! table. Synchronous and free of I/O: the network feeds it verified updates
//! and reads the entries back. Spec: `protocols/route-gossip.md`.
//!
//! Sybil resistance. Every origin is held on behalf of the peer that relayed
//! its first accepted update (gossip's propagation source, or the peer that
//! answered a sync). An origin is *protected* when it is trusted
//! (`mesh.trusted`), sent its own update, or is connected to this node;
//! unprotected origins count against their relay, which may hold at most
//! [`MAX_PER_RELAY`] of them and [`MAX_CAPABILITIES_PER_RELAY`]
//! capabilities. When the table is full ([`MAX_ORIGINS`] origins or
//! [`MAX_REMOTE_CAPABILITIES`] capabilities), a newcomer takes the place of
//! the most recently learnt unprotected origin of the relay holding the
//! most, if it is protected itself or its relay holds fewer: fresh keys from
//! one peer can never push out origins that came another way.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::identity::PeerId;

use crate::capability::{Capability, Source};
use crate::routing::{Entry, Trust};
use crate::wire::route::{RouteBody, SignedRouteUpdate, Verified};

/// Most origins held.
pub const MAX_ORIGINS: usize = 512;
/// Most capabilities held over all origins.
pub const MAX_REMOTE_CAPABILITIES: usize = 8192;
/// Most unprotected origins one relaying peer may bring, and their
/// capabilities.
pub const MAX_PER_RELAY: usize = MAX_ORIGINS / 2;
pub const MAX_CAPABILITIES_PER_RELAY: usize = MAX_REMOTE_CAPABILITIES / 2;
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
    /// The table is full and nothing may make way for it.
    Full,
    /// Its relay already brought as many unprotected origins or capabilities
    /// as one relay may.
    RelayFull,
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
            Outcome::RelayFull => "relay_full",
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
    /// The peer that relayed its first accepted update.
    via: PeerId,
    /// Whether an update came from the origin itself.
    direct: bool,
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
    /// Origins kept first (`mesh.trusted`).
    trusted: HashSet<PeerId>,
    /// Peers connected now.
    connected: HashSet<PeerId>,
    /// Origins evicted to make way for others, since the last call to
    /// [`Remote::take_evicted`].
    evicted: Vec<PeerId>,
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
    pub fn new(me: PeerId, trusted: HashSet<PeerId>) -> Self {
        Self {
            me,
            origins: HashMap::new(),
            gone: HashMap::new(),
            trusted,
            connected: HashSet::new(),
            evicted: Vec::new(),
        }
    }

    /// Notes that a peer connected or disconnected.
    pub fn set_connected(&mut self, peer: PeerId, connected: bool) {
        if connected {
            self.connected.insert(peer);
        } else {
            self.connected.remove(&peer);
        }
    }

    /// Origins evicted since the last call.
    pub fn take_evicted(&mut self) -> Vec<PeerId> {
        std::mem::take(&mut self.evicted)
    }

    /// Drops an origin this node will not route to (its announced vectors
    /// did not match its texts); its `seq` is remembered, so the same update
    /// is not taken again from gossip or sync. Says whether it was held.
    pub fn refute(&mut self, origin: &PeerId, now: Instant) -> bool {
        match self.origins.remove(origin) {
            Some(o) => {
                self.forget(*origin, o.seq, now);
                true
            }
            None => false,
        }
    }

    fn protected(&self, peer: &PeerId, origin: &Origin) -> bool {
        origin.direct || self.trusted.contains(peer) || self.connected.contains(peer)
    }

    /// Unprotected origins and their capabilities held for `relay`.
    fn relay_load(&self, relay: &PeerId) -> (usize, usize) {
        self.origins
            .iter()
            .filter(|(p, o)| o.via == *relay && !self.protected(p, o))
            .fold((0, 0), |(n, c), (_, o)| (n + 1, c + o.entries.len()))
    }

    /// Whether a new origin (or a grown one) with `capabilities` entries may
    /// be held, making way for it when the table is full.
    fn admit(
        &mut self,
        origin: &PeerId,
        via: &PeerId,
        capabilities: usize,
        held_before: usize,
    ) -> Result<(), Outcome> {
        let protected = via == origin
            || self.trusted.contains(origin)
            || self.connected.contains(origin)
            || self.origins.get(origin).is_some_and(|o| o.direct);
        let relay = self.origins.get(origin).map_or(*via, |o| o.via);
        let is_new = !self.origins.contains_key(origin);
        if !protected {
            let (n, c) = self.relay_load(&relay);
            let n = n + usize::from(is_new);
            if n > MAX_PER_RELAY
                || c - held_before.min(c) + capabilities > MAX_CAPABILITIES_PER_RELAY
            {
                return Err(Outcome::RelayFull);
            }
        }
        // Choose every origin that must make way first, and evict only if
        // they make enough room.
        let mut origins = self.origins.len() + usize::from(is_new);
        let mut total: usize = self
            .origins
            .values()
            .map(|o| o.entries.len())
            .sum::<usize>()
            - held_before;
        let mut victims: HashSet<PeerId> = HashSet::new();
        while origins > MAX_ORIGINS || total + capabilities > MAX_REMOTE_CAPABILITIES {
            let victim = self
                .victim(origin, &relay, protected, &victims)
                .ok_or(Outcome::Full)?;
            origins -= 1;
            total -= self.origins.get(&victim).map_or(0, |o| o.entries.len());
            victims.insert(victim);
        }
        let now = Instant::now();
        for victim in victims {
            if let Some(o) = self.origins.remove(&victim) {
                self.forget(victim, o.seq, now);
            }
            self.evicted.push(victim);
        }
        Ok(())
    }

    /// The origin to evict for `origin` (relayed by `relay`): the most
    /// recently learnt unprotected origin of the relay holding the most
    /// unprotected ones, unless `origin` is unprotected and its own relay
    /// holds as many.
    /// Origins in `chosen` count as gone already.
    fn victim(
        &self,
        origin: &PeerId,
        relay: &PeerId,
        protected: bool,
        chosen: &HashSet<PeerId>,
    ) -> Option<PeerId> {
        let candidate =
            |p: &PeerId, o: &Origin| p != origin && !chosen.contains(p) && !self.protected(p, o);
        let mut load: HashMap<PeerId, usize> = HashMap::new();
        for (p, o) in &self.origins {
            if candidate(p, o) {
                *load.entry(o.via).or_default() += 1;
            }
        }
        let (&biggest, &most) = load.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))?;
        let mine = load.get(relay).copied().unwrap_or(0);
        if !protected && mine + 1 >= most {
            return None;
        }
        self.origins
            .iter()
            .filter(|(p, o)| o.via == biggest && candidate(p, o))
            .max_by(|a, b| a.1.since.cmp(&b.1.since).then(a.0.cmp(b.0)))
            .map(|(p, _)| *p)
    }

    /// Applies a verified update relayed by `via` (`signed` is kept to serve
    /// sync requests); `unix_ms` is this node's wall clock, for the age check.
    pub fn apply(
        &mut self,
        verified: Verified,
        signed: SignedRouteUpdate,
        via: PeerId,
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
                let entries: Vec<Entry> = records
                    .into_iter()
                    .filter_map(|r| {
                        Some(Entry {
                            capability: Capability {
                                id: r.id.parse().ok()?,
                                kind: r.kind.parse().ok()?,
                                domain: r.domain,
                                topics: r.topics,
                                description: r.description,
                                examples: r.examples,
                                backend: String::new(),
                                model: r.id,
                                source: Source::Remote,
                                share: Default::default(),
                            },
                            node: node.clone(),
                            local: false,
                            available: r.available,
                            vector: r.vector.dequantize(),
                            // Receivers build their own from the texts
                            // (`catalog`); announced ones are not kept.
                            prototypes: Vec::new(),
                            reference: r.reference,
                            trust: Trust::Stranger,
                        })
                    })
                    .collect();
                (entries, Outcome::Accepted)
            }
        };
        let held_before = self.origins.get(&origin).map_or(0, |o| o.entries.len());
        if let Err(refused) = self.admit(&origin, &via, entries.len(), held_before) {
            return refused;
        }
        self.gone.remove(&origin);
        let held = self.origins.get(&origin);
        let tokens = held.map_or(BURST - 1.0, |o| o.tokens);
        let since = held.map_or(now, |o| o.since);
        let relay = held.map_or(via, |o| o.via);
        let direct = via == origin || held.is_some_and(|o| o.direct);
        self.origins.insert(
            origin,
            Origin {
                seq: update.seq,
                node_name: update.node_name,
                expires: now + ttl,
                received: now,
                since,
                via: relay,
                direct,
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

    /// The latest accepted update of every origin with entries, for sync:
    /// protected origins first, then by how long they have been held.
    pub fn snapshot(&self) -> Vec<SignedRouteUpdate> {
        let mut held: Vec<(&PeerId, &Origin)> = self.origins.iter().collect();
        held.sort_by_key(|(p, o)| (!self.protected(p, o), o.since, **p));
        held.into_iter()
            .filter_map(|(_, o)| o.signed.clone())
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
                    examples: Vec::new(),
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
}
