//! The node's side of the mesh. One task announces this node's capabilities
//! (signed; at start, on every change, every `ttl / 3`; withdrawn on a clean
//! shutdown), applies other nodes' updates to the [`Remote`] store and reports
//! each verdict to gossipsub, answers sync requests with the latest update of
//! every origin, expires origins that stopped refreshing, and publishes the
//! remote entries for the route table through a watch channel.

mod announce;
mod lookup;
pub mod remote;

pub use announce::{announced, record};

use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::identity::{Keypair, PeerId};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::capability::Share;
// Sequence numbers read the wall clock as certificates do.
use crate::member::now_ms as unix_ms;
use crate::metrics::Metrics;
use crate::network::{self, Event, Verdict};
use crate::routing::Entry;
use crate::wire::route::{self, CapabilityRecord, RouteBody, RouteUpdate, SignedRouteUpdate};
use crate::wire::sync::{self, SyncResponse};
use remote::{Outcome, Remote};

/// How often expiry is checked.
const EXPIRY_TICK: Duration = Duration::from_millis(500);
/// How often this node checks whether its load moved enough to announce.
const LOAD_TICK: Duration = Duration::from_millis(500);
/// Least time between two announcements of this node's routes; receivers
/// accept one update per origin and second on average (burst 5).
const MIN_ANNOUNCE_GAP: Duration = Duration::from_secs(1);
/// Longest a withdrawal may hold up shutdown.
const WITHDRAW_WAIT: Duration = Duration::from_millis(500);
#[cfg(test)]
mod tests;

/// What other nodes offer, as last changed.
#[derive(Clone, Default)]
pub struct View {
    pub entries: Arc<Vec<Entry>>,
    pub origins: Arc<Vec<OriginState>>,
    /// Counts changes of `entries`: a view whose entries differ from the last
    /// one has a larger number; a view that only updates `origins` keeps it.
    pub generation: u64,
}

pub use lookup::{Discovery, LOOKUP_WAIT, Lookups, Wanted};
use lookup::{Found, LOOKUP_CAPACITY};
pub use remote::OriginState;

/// Everything the mesh task needs.
pub struct Setup {
    pub key: Keypair,
    pub client: network::Client,
    pub events: mpsc::Receiver<Event>,
    /// This node's own entries (from the catalog), announced on every change.
    pub local: watch::Receiver<Arc<Vec<Entry>>>,
    pub node_name: String,
    pub ttl: Duration,
    pub dim: usize,
    pub metrics: Arc<Metrics>,
    /// Where forwarded requests go to be served (see [`Inbound`]).
    pub intents: mpsc::Sender<Inbound>,
    /// Origins kept first when the table is full (`mesh.trusted`).
    pub trusted: std::collections::HashSet<PeerId>,
    /// Origins whose announced vectors their texts do not explain (base58),
    /// found by the catalog: dropped, and not passed on in sync.
    pub refuted: mpsc::Receiver<String>,
    /// The certificate this node's updates carry, in a closed mesh.
    pub certificate: Option<crate::wire::member::Certificate>,
    /// Requests running on this node's capabilities, announced in its
    /// updates; other nodes' figures, as heard (see `balance::load`).
    pub loads: Arc<crate::balance::Loads>,
}

/// Refuted origins waiting for the mesh task; when full, a report is
/// dropped: the origin's capabilities stay out of the table all the same,
/// but the origin stays held (and passed on in sync) until it expires.
pub const REFUTED_CAPACITY: usize = 256;

/// A request forwarded by a peer, to be answered with
/// [`network::Client::answer_intent`].
#[derive(Debug)]
pub struct Inbound {
    pub id: network::InboundId,
    pub peer: PeerId,
    /// The request, or why it could not be read (answered as a refusal).
    pub request: Result<crate::wire::intent::IntentRequest, crate::wire::Error>,
}

/// Forwarded requests waiting to be served; when full, new ones are answered
/// 503 at once.
pub const INBOUND_CAPACITY: usize = 256;

/// Starts the mesh task; the returned receiver follows what other nodes offer.
pub fn start(
    setup: Setup,
    cancel: CancellationToken,
) -> (watch::Receiver<View>, Lookups, tokio::task::JoinHandle<()>) {
    let (view_tx, view_rx) = watch::channel(View::default());
    let (lookup_tx, lookup_rx) = mpsc::channel(LOOKUP_CAPACITY);
    let (found_tx, found_rx) = mpsc::channel(LOOKUP_CAPACITY);
    let me = setup.key.public().to_peer_id();
    let task = Task {
        remote: Remote::new(me, setup.trusted.clone()),
        logged: lru::LruCache::new(LOGGED_REFUSALS),
        view: view_tx,
        own: None,
        seq: 0,
        generation: 0,
        provided: Vec::new(),
        lookups: lookup_rx,
        found_tx,
        found_rx,
        running: tokio::task::JoinSet::new(),
        waiting: std::collections::HashMap::new(),
        looked_up: std::collections::HashMap::new(),
        unreachable: std::collections::HashMap::new(),
        announced: std::collections::HashMap::new(),
        announced_bytes: 0,
        load: std::collections::HashMap::new(),
        setup,
    };
    (
        view_rx,
        Lookups { tx: lookup_tx },
        tokio::spawn(task.run(cancel)),
    )
}

/// Refusals (origin or relay, reason) logged, so each is logged once.
const LOGGED_REFUSALS: std::num::NonZeroUsize = std::num::NonZeroUsize::new(1024).expect("not 0");

struct Task {
    setup: Setup,
    remote: Remote,
    logged: lru::LruCache<(PeerId, &'static str), ()>,
    view: watch::Sender<View>,
    /// This node's latest signed update, served by sync.
    own: Option<SignedRouteUpdate>,
    seq: u64,
    generation: u64,
    /// Key texts this node provides in the DHT.
    provided: Vec<String>,
    lookups: mpsc::Receiver<(Wanted, oneshot::Sender<Discovery>)>,
    found_tx: mpsc::Sender<Found>,
    found_rx: mpsc::Receiver<Found>,
    /// Lookups under way; aborted when the task ends (their requests are
    /// being cancelled with the node).
    running: tokio::task::JoinSet<()>,
    /// Requests waiting for a lookup in flight, by what they want.
    waiting: std::collections::HashMap<Wanted, Vec<oneshot::Sender<Discovery>>>,
    /// When each key text was last looked up.
    looked_up: std::collections::HashMap<String, Instant>,
    /// Providers whose sync failed, and when (see [`UNREACHABLE_FOR`]).
    unreachable: std::collections::HashMap<PeerId, Instant>,
    /// The load figures of this node's last update, and its size.
    announced: std::collections::HashMap<crate::capability::CapabilityId, u32>,
    announced_bytes: usize,
    /// This node's load over the last [`LOAD_TICK`] (`Loads::sample`).
    load: std::collections::HashMap<crate::capability::CapabilityId, u32>,
}

impl Task {
    async fn run(mut self, cancel: CancellationToken) {
        let refresh_every = (self.setup.ttl / 3).max(Duration::from_secs(1));
        let mut refresh = tokio::time::interval(refresh_every);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut expiry = tokio::time::interval(EXPIRY_TICK);
        expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut load_tick = tokio::time::interval(LOAD_TICK);
        load_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut local_alive = true;
        // Changes closer together than MIN_ANNOUNCE_GAP are coalesced into one
        // update at the end of the gap (peers rate-limit each origin).
        let mut last_announce: Option<Instant> = None;
        let mut pending = false;
        let announce_due = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(announce_due);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    self.withdraw().await;
                    break;
                }
                event = self.setup.events.recv() => match event {
                    Some(e) => self.on_event(e).await,
                    None => break,
                },
                Some(found) = self.found_rx.recv() => self.on_found(found),
                Some(node) = self.setup.refuted.recv() => {
                    if let Ok(peer) = node.parse::<PeerId>()
                        && self.remote.refute(&peer, Instant::now())
                    {
                        self.publish_view();
                    }
                }
                // Reaps finished lookups (a JoinSet keeps them until joined).
                Some(_) = self.running.join_next(), if !self.running.is_empty() => {}
                Some((wanted, reply)) = self.lookups.recv() => self.on_lookup(wanted, reply),
                changed = self.setup.local.changed(), if local_alive => {
                    if changed.is_err() {
                        // The catalog stopped (shutdown): keep the last entries.
                        local_alive = false;
                        continue;
                    }
                    match last_announce {
                        Some(t) if t.elapsed() < MIN_ANNOUNCE_GAP => {
                            if !pending {
                                pending = true;
                                announce_due.as_mut().reset((t + MIN_ANNOUNCE_GAP).into());
                            }
                        }
                        _ => {
                            self.announce().await;
                            last_announce = Some(Instant::now());
                        }
                    }
                }
                _ = &mut announce_due, if pending => {
                    pending = false;
                    self.announce().await;
                    last_announce = Some(Instant::now());
                }
                _ = refresh.tick() => {
                    self.announce().await;
                    last_announce = Some(Instant::now());
                }
                // Load that moved goes out early, as often as its bounds allow.
                _ = load_tick.tick() => {
                    self.load = self.setup.loads.sample();
                    let due = !pending && last_announce
                        .is_none_or(|t| t.elapsed() >= crate::balance::load_gap(self.announced_bytes));
                    if due && announce::load_moved(&self.announced, &self.load) {
                        self.announce().await;
                        last_announce = Some(Instant::now());
                    }
                }
                _ = expiry.tick() => {
                    let gone = self.remote.expire(Instant::now());
                    if !gone.is_empty() {
                        tracing::info!(origins = gone.len(), "routes of silent nodes expired");
                        self.publish_view();
                    }
                }
            }
        }
        self.running.shutdown().await;
    }

    fn next_update(&mut self, body: RouteBody, addrs: Vec<String>) -> RouteUpdate {
        self.seq = (self.seq + 1).max(unix_ms());
        RouteUpdate {
            version: route::VERSION,
            seq: self.seq,
            ttl_secs: self.setup.ttl.as_secs().clamp(
                u64::from(route::MIN_TTL_SECS),
                u64::from(route::MAX_TTL_SECS),
            ) as u32,
            node_name: route::clip(&self.setup.node_name, route::MAX_NODE_NAME),
            addrs,
            dim: self.setup.dim as u16,
            body,
            certificate: self.setup.certificate.clone(),
        }
    }

    async fn announce(&mut self) {
        // What is shared with no peer is not announced either.
        let local: Vec<Entry> = self
            .setup
            .local
            .borrow_and_update()
            .iter()
            .filter(|e| e.capability.share != Share::Local)
            .cloned()
            .collect();
        self.provide(&local).await;
        let load = &self.load;
        let mut records: Vec<CapabilityRecord> = local
            .iter()
            .take(route::MAX_CAPABILITIES)
            .map(|e| record(e, load.get(&e.capability.id).copied().unwrap_or(0)))
            .collect();
        let addrs = self.announced_addrs().await;
        let mut update = self.next_update(RouteBody::Full(Vec::new()), addrs);
        // Texts of many capabilities can exceed what one update may carry:
        // announce the first ones that fit rather than none.
        let signed = loop {
            let count = records.len();
            update.body = RouteBody::Full(std::mem::take(&mut records));
            match SignedRouteUpdate::sign(&update, &self.setup.key) {
                Err(crate::wire::Error::TooLarge { .. }) if count > 1 => {
                    let RouteBody::Full(all) = &mut update.body else {
                        unreachable!("set above")
                    };
                    records = std::mem::take(all);
                    records.truncate(count * 3 / 4);
                    tracing::warn!(
                        announced = records.len(),
                        of = local.len(),
                        "this node's capabilities do not fit in one route update; announcing the first"
                    );
                }
                other => break other,
            }
        };
        match signed {
            Ok(signed) => {
                // Alone, publishing fails; peers that join get the update by sync.
                match self.setup.client.publish(&signed).await {
                    Ok(()) => tracing::debug!(seq = update.seq, "route update published"),
                    Err(e) => tracing::debug!(error = %e, "route update not published"),
                }
                self.announced = announce::figures(&update).into_iter().collect();
                self.announced_bytes = signed.payload.len();
                self.own = Some(signed);
            }
            Err(e) => tracing::warn!(error = %e, "cannot sign this node's route update"),
        }
    }

    /// Where this node can be reached: its external addresses (configured, or
    /// where it listens), unspecified and oversized ones left out.
    async fn announced_addrs(&self) -> Vec<String> {
        let addrs = self.setup.client.external_addrs().await.unwrap_or_default();
        addrs
            .iter()
            .map(ToString::to_string)
            .filter(|a| {
                !a.contains("/0.0.0.0/") && !a.contains("/::/") && a.len() <= route::MAX_ADDR
            })
            .take(route::MAX_ADDRS)
            .collect()
    }

    async fn withdraw(&mut self) {
        let update = self.next_update(RouteBody::Withdraw, Vec::new());
        let Ok(signed) = SignedRouteUpdate::sign(&update, &self.setup.key) else {
            return;
        };
        // A peer that connected moments ago may not have told us its
        // subscription yet: retry briefly rather than leave it to the TTL.
        let client = self.setup.client.clone();
        let attempt = async {
            loop {
                match client.publish(&signed).await {
                    Ok(()) => return true,
                    Err(network::Error::Stopped) => return false,
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        };
        let sent = tokio::time::timeout(WITHDRAW_WAIT, attempt)
            .await
            .unwrap_or(false);
        tracing::debug!(sent, "withdrawal announced");
    }

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::Route {
                verified,
                signed,
                message,
            } => {
                let origin = verified.origin;
                let figures = announce::figures(&verified.update);
                let outcome =
                    self.remote
                        .apply(*verified, signed, message.source, Instant::now(), unix_ms());
                if outcome == Outcome::Accepted {
                    self.setup.loads.advertise(origin, figures);
                }
                tracing::debug!(%origin, outcome = outcome.as_str(), "route update");
                self.counted(outcome, origin, message.source);
                let verdict = match outcome {
                    Outcome::Accepted | Outcome::Withdrawn => Verdict::Accept,
                    Outcome::Stale => Verdict::Reject,
                    Outcome::Duplicate
                    | Outcome::Own
                    | Outcome::RateLimited
                    | Outcome::Full
                    | Outcome::RelayFull => Verdict::Ignore,
                };
                let _ = self.setup.client.report(message, verdict).await;
                if outcome.changed() {
                    self.publish_view();
                }
            }
            Event::Synced { peer, updates } => {
                let now = Instant::now();
                let mut changed = false;
                for (verified, signed) in updates {
                    let origin = verified.origin;
                    let figures = announce::figures(&verified.update);
                    let outcome = self.remote.apply(verified, signed, peer, now, unix_ms());
                    if outcome == Outcome::Accepted {
                        self.setup.loads.advertise(origin, figures);
                    }
                    self.counted(outcome, origin, peer);
                    changed |= outcome.changed();
                }
                tracing::debug!(%peer, changed, "synced with a peer");
                if changed {
                    self.publish_view();
                }
            }
            Event::SyncRequested { id, peer } => {
                // This node's own update first, then what it holds, most
                // trusted and longest known first, up to what one answer
                // may carry.
                let mut updates: Vec<SignedRouteUpdate> = self.own.clone().into_iter().collect();
                let mut bytes = updates.iter().map(|u| u.payload.len() + 128).sum::<usize>();
                let held = self.remote.snapshot();
                let total = held.len();
                for u in held {
                    let size = u.payload.len() + 128;
                    if updates.len() >= sync::MAX_ORIGINS || bytes + size > sync::MAX_RESPONSE_BYTES
                    {
                        break;
                    }
                    bytes += size;
                    updates.push(u);
                }
                if updates.len() < total + usize::from(self.own.is_some()) {
                    tracing::info!(%peer, sent = updates.len(), held = total, "sync answer holds the first origins that fit");
                }
                let response = SyncResponse {
                    version: sync::VERSION,
                    updates,
                };
                let _ = self.setup.client.answer_sync(id, response).await;
            }
            Event::Intent { id, peer, request } => {
                if let Err(
                    mpsc::error::TrySendError::Full(inbound)
                    | mpsc::error::TrySendError::Closed(inbound),
                ) = self.setup.intents.try_send(Inbound { id, peer, request })
                {
                    let body = serde_json::json!({"error": {
                        "message": "The node is too busy to take forwarded requests.",
                        "type": "api_error", "param": null, "code": "overloaded"}});
                    let response = crate::wire::intent::IntentResponse {
                        version: crate::wire::intent::VERSION,
                        status: 503,
                        body: serde_json::to_vec(&body).unwrap_or_default(),
                    };
                    let _ = self.setup.client.answer_intent(inbound.id, response).await;
                }
            }
            Event::PeerConnected(peer) => {
                self.remote.set_connected(peer, true);
                self.setup.metrics.peers.inc();
            }
            Event::PeerDisconnected(peer) => {
                self.remote.set_connected(peer, false);
                self.setup.metrics.peers.dec();
            }
            Event::Revoked(origin) => {
                if self.remote.refute(&origin, Instant::now()) {
                    tracing::info!(%origin, "routes of a revoked node dropped");
                    self.publish_view();
                }
            }
        }
    }

    /// Counts an update's outcome, and origins it evicted; logs each kind of
    /// refusal once per origin or relay.
    fn counted(&mut self, outcome: Outcome, origin: PeerId, via: PeerId) {
        self.setup.metrics.gossip(outcome.as_str());
        let refused = match outcome {
            Outcome::Full => Some((origin, "the table is full")),
            Outcome::RelayFull => Some((via, "the relay brought as many origins as one peer may")),
            _ => None,
        };
        if let Some((who, why)) = refused {
            let reason = outcome.as_str();
            self.setup
                .metrics
                .remote_refusal(if outcome == Outcome::Full {
                    "table_full"
                } else {
                    reason
                });
            if self.logged.put((who, reason), ()).is_none() {
                tracing::warn!(%origin, relay = %via, "route update refused: {why}");
            }
        }
        for evicted in self.remote.take_evicted() {
            self.setup.metrics.remote_refusal("evicted");
            if self.logged.put((evicted, "evicted"), ()).is_none() {
                tracing::info!(origin = %evicted, "routes dropped to make way for a trusted, direct or better-spread origin");
            }
        }
    }

    /// Publishes the origins (sequence numbers, ages) and, when they differ
    /// from the last published ones, the entries under a new generation. A
    /// refresh that repeats an origin's capabilities keeps the generation, so
    /// the catalog does not rebuild the route table for it.
    fn publish_view(&mut self) {
        let entries: Vec<Entry> = self.remote.entries().cloned().collect();
        let previous = self.view.borrow().entries.clone();
        let entries = if *previous == entries {
            previous
        } else {
            self.generation += 1;
            Arc::new(entries)
        };
        let origins = self.remote.origins();
        self.setup.metrics.remote_origins.set(origins.len() as i64);
        self.setup.loads.retain(|p| self.remote.holds(p));
        self.view.send_replace(View {
            entries,
            origins: Arc::new(origins),
            generation: self.generation,
        });
    }
}
