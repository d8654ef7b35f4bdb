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

use crate::capability::{Capability, Inputs, Source};
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
    /// Directly connected, heard from itself or allow-listed: kept over
    /// fresh unknown keys when the table is full, and checked first.
    pub protected: bool,
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
                        let kind: crate::capability::Kind = r.kind.parse().ok()?;
                        // None named: what its kind takes.
                        let inputs = if r.inputs.is_empty() {
                            Inputs::of_kind(&kind)
                        } else {
                            Inputs::known(&r.inputs)
                        };
                        Some(Entry {
                            capability: std::sync::Arc::new(Capability {
                                id: r.id.parse().ok()?,
                                kind,
                                domain: r.domain,
                                topics: r.topics,
                                description: r.description,
                                examples: r.examples,
                                backends: Vec::new(),
                                model: r.id,
                                source: Source::Remote,
                                share: Default::default(),
                                inputs,
                                // Checked to be a JSON object on receipt.
                                input_schema: r
                                    .input_schema
                                    .and_then(|s| serde_json::from_str(&s).ok())
                                    .map(std::sync::Arc::new),
                            }),
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

    /// Every remote entry, by origin in PeerId order: the same entries come
    /// in the same order whatever else the table learnt or forgot (the mesh
    /// tells a change of entries by comparing them).
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        let mut held: Vec<(&PeerId, &Origin)> = self.origins.iter().collect();
        held.sort_unstable_by_key(|(p, _)| **p);
        held.into_iter().flat_map(|(_, o)| o.entries.iter())
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
                protected: self.protected(p, o),
            })
            .collect();
        out.sort_by_key(|o| o.peer);
        out
    }
}

#[cfg(test)]
mod tests;
