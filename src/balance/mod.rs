//! Spreading requests over the providers of one service. A *group* is the
//! set of providers a request may equally go to (the copies of one
//! capability id on several nodes, the backends of one local capability, or
//! for `auto` the capabilities within a small margin of the best: see
//! `exec::resolve`); the [`Balancer`] orders a group for one request, and
//! what happens to the request (time to its first byte, failure) feeds back
//! through the [`Lease`] the attempt holds.
//!
//! The shipped rule (`least_cost`): each provider's cost is the peak-EWMA of
//! its time to first byte times (requests in flight to it from this node +
//! 1), raised by its recent error rate; the request goes to the cheapest (a
//! random one of those within 20% of the cheapest), the rest follow as
//! failover in order of cost. (`power_of_two`, the cheaper of two drawn at
//! random, is there to compare: with few providers it sends a third of the
//! requests past the fastest; see BENCHMARKS.md.)
//!
//! Other nodes' requests count too: a node says in its route updates how
//! many requests run on each of its capabilities, and what that figure holds
//! beyond this node's own (time-averaged) requests adds to the provider's
//! in flight (see [`load`]).
//!
//! A provider that fails (unreachable, busy, a 5xx, a timeout) is backed off
//! for 1 s, doubling on each further failure up to 30 s (the requests that
//! were under way when it failed count as one failure); when its time is up
//! one request probes it, and its first success ends the backoff. A session
//! key, when the client gives one, keeps its requests on one healthy
//! provider (rendezvous hashing), so a backend's prompt cache stays warm.

mod explain;
mod load;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::capability::CapabilityId;
use crate::config::{BalanceConfig, Strategy};
use crate::routing::Entry;
pub use explain::{Choice, Member};
pub use load::{Loads, load_gap, moved};
use parking_lot::Mutex;
use rand::Rng;

/// First backoff after a failure; doubled for each further failure in a row.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// Longest backoff: a provider that comes back is tried again within this.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How fast the time-to-first-byte average forgets a slow answer once
/// answers are fast again (a slower one counts at once: peak EWMA).
const TTFB_DECAY: Duration = Duration::from_secs(2);
/// Over about how long this node averages its own requests in flight to a
/// provider (what they add to the load its node advertises: a half-second
/// average, up to a few seconds old).
const IN_FLIGHT_DECAY: Duration = Duration::from_secs(1);
/// Costs this close (the higher within 20% of the lower) count as equal:
/// times to first byte vary by more than that from one answer to the next,
/// and idle providers that differ by less share the requests instead of the
/// one measured faster by chance getting them all.
const TIE: f64 = 0.2;
/// Weight of each outcome in the error rate.
const ERROR_WEIGHT: f64 = 0.1;
/// Providers whose numbers are kept; beyond it, those idle longest go.
const MAX_PROVIDERS: usize = 16_384;
/// A provider unused this long may be forgotten.
const IDLE: Duration = Duration::from_secs(600);

/// One place a request can run: a capability on a node and, on this node,
/// one of its backends.
#[derive(Debug, Clone)]
pub struct Provider {
    pub entry: Arc<Entry>,
    /// The backend, for a capability of this node.
    pub backend: Option<String>,
    /// Routing score, for `auto`.
    pub score: Option<f32>,
}

impl Provider {
    fn key(&self) -> Key {
        Key {
            node: self.entry.node.clone(),
            capability: self.entry.capability.id.clone(),
            backend: self.backend.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    node: String,
    capability: CapabilityId,
    backend: Option<String>,
}

/// What this node has seen of one provider.
#[derive(Debug)]
struct Stats {
    in_flight: u32,
    /// Its time average (about the last [`IN_FLIGHT_DECAY`]), up to `mean_at`:
    /// what this node's own requests add to what the provider's node
    /// advertises, which is an average too.
    mean_in_flight: f64,
    mean_at: Instant,
    /// Peak-EWMA of the time to first byte, ms; none before the first answer.
    ttfb_ms: Option<f64>,
    ttfb_at: Instant,
    /// EWMA of failures (1) and successes (0).
    errors: f64,
    /// Failures in a row.
    failures: u32,
    backoff_until: Option<Instant>,
    /// When the last failure that set the backoff happened.
    backoff_since: Option<Instant>,
    /// A probe of a backed-off provider is under way.
    probing: bool,
    requests: u64,
    last_used: Instant,
}

impl Stats {
    fn new(now: Instant) -> Self {
        Self {
            in_flight: 0,
            mean_in_flight: 0.0,
            mean_at: now,
            ttfb_ms: None,
            ttfb_at: now,
            errors: 0.0,
            failures: 0,
            backoff_until: None,
            backoff_since: None,
            probing: false,
            requests: 0,
            last_used: now,
        }
    }

    fn answered(&mut self, ttfb: Duration, now: Instant) {
        let sample = ttfb.as_secs_f64() * 1e3;
        self.ttfb_ms = Some(match self.ttfb_ms {
            Some(old) if sample < old => {
                let elapsed = now.saturating_duration_since(self.ttfb_at).as_secs_f64();
                let w = (-elapsed / TTFB_DECAY.as_secs_f64()).exp();
                old * w + sample * (1.0 - w)
            }
            _ => sample,
        });
        self.ttfb_at = now;
        self.errors *= 1.0 - ERROR_WEIGHT;
        self.failures = 0;
        self.backoff_until = None;
        self.probing = false;
    }

    /// An attempt begun at `started` failed at `now`.
    fn failed(&mut self, started: Instant, now: Instant) {
        self.errors = self.errors * (1.0 - ERROR_WEIGHT) + ERROR_WEIGHT;
        // The other requests that were under way when the provider went
        // down fail too: one backoff for all of them, not one doubling each.
        if self.backoff_until.is_some() && self.backoff_since.is_some_and(|t| started < t) {
            return;
        }
        self.backoff_since = Some(now);
        self.failures = self.failures.saturating_add(1);
        let doublings = self.failures.saturating_sub(1).min(16);
        self.backoff_until = Some(now + (BACKOFF_FIRST * (1 << doublings)).min(BACKOFF_MAX));
        self.probing = false;
    }

    /// Where the provider stands at `now`.
    fn health(&self, now: Instant) -> Health {
        match self.backoff_until {
            Some(until) if until > now => Health::BackedOff(until - now),
            Some(_) if self.probing => Health::BackedOff(Duration::ZERO),
            Some(_) => Health::Probe,
            None => Health::Up,
        }
    }

    /// The time average of `in_flight` at `now`.
    fn mean_in_flight(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.mean_at).as_secs_f64();
        let w = (-elapsed / IN_FLIGHT_DECAY.as_secs_f64()).exp();
        self.mean_in_flight * w + f64::from(self.in_flight) * (1.0 - w)
    }

    /// `in_flight` changes by `by` at `now`.
    fn add_in_flight(&mut self, by: i32, now: Instant) {
        self.mean_in_flight = self.mean_in_flight(now);
        self.mean_at = now;
        self.in_flight = self.in_flight.saturating_add_signed(by);
    }

    /// Lower is better. Unknown latency counts as `unknown_ttfb`; `others`:
    /// requests it runs for other nodes, as far as this node knows.
    fn cost(&self, unknown_ttfb: f64, others: f64) -> f64 {
        let ttfb = self.ttfb_ms.unwrap_or(unknown_ttfb).max(0.001);
        ttfb * (f64::from(self.in_flight) + others + 1.0) / (1.0 - self.errors.min(0.9))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Health {
    Up,
    /// Its backoff is over and nobody is probing it: the next request does.
    Probe,
    /// Not to be tried before this much longer (zero: a probe is under way).
    BackedOff(Duration),
}

/// A provider and its numbers at one moment.
struct Rated {
    provider: Provider,
    health: Health,
    cost: f64,
    in_flight: u32,
    advertised: Option<u32>,
    ttfb_ms: Option<f64>,
    errors: f64,
    requests: u64,
}

/// The attempt on one provider; counted in flight until dropped.
pub struct Lease {
    stats: Arc<Mutex<Stats>>,
    started: Instant,
    /// It probes a provider whose backoff is over.
    probe: bool,
    /// For a backend of this node: the node's load, and the capability.
    local: Option<(Arc<Loads>, Arc<Entry>)>,
}

impl Lease {
    /// The provider's answer began (a whole answer, or a stream's head).
    pub fn answered(&self) {
        let now = Instant::now();
        self.stats.lock().answered(now - self.started, now);
    }

    /// It could not serve the request: unreachable, busy, failed or timed out.
    pub fn failed(&self) {
        self.stats.lock().failed(self.started, Instant::now());
    }

    /// An answer that broke off after it began: counts in the error rate, no
    /// backoff.
    pub fn broke(&self) {
        let mut s = self.stats.lock();
        s.errors = s.errors * (1.0 - ERROR_WEIGHT) + ERROR_WEIGHT;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut s = self.stats.lock();
        s.add_in_flight(-1, Instant::now());
        // A probe given up without an outcome (the client left) must not
        // leave the provider marked as being probed.
        if self.probe {
            s.probing = false;
        }
        drop(s);
        if let Some((loads, entry)) = &self.local {
            loads.ended(&entry.capability.id);
        }
    }
}

/// The numbers of every provider this node has sent requests to.
pub struct Balancer {
    config: BalanceConfig,
    loads: Arc<Loads>,
    stats: Mutex<HashMap<Key, Arc<Mutex<Stats>>>>,
    turn: AtomicUsize,
}

impl Balancer {
    /// `loads`: this node's load, counted here, and other nodes', heard by
    /// the mesh.
    pub fn new(config: BalanceConfig, loads: Arc<Loads>) -> Self {
        Self {
            config,
            loads,
            stats: Mutex::new(HashMap::new()),
            turn: AtomicUsize::new(0),
        }
    }

    pub fn config(&self) -> &BalanceConfig {
        &self.config
    }

    fn stats_of(&self, key: &Key) -> Option<Arc<Mutex<Stats>>> {
        self.stats.lock().get(key).cloned()
    }

    /// Each provider with its standing and cost now.
    fn rate(&self, group: Vec<Provider>, now: Instant) -> Vec<Rated> {
        let known: Vec<Option<Arc<Mutex<Stats>>>> =
            group.iter().map(|p| self.stats_of(&p.key())).collect();
        // A provider not yet measured is assumed as fast as the fastest
        // measured one: it gets tried, and its own numbers take over.
        let unknown_ttfb = known
            .iter()
            .flatten()
            .filter_map(|s| s.lock().ttfb_ms)
            .fold(f64::INFINITY, f64::min);
        let unknown_ttfb = if unknown_ttfb.is_finite() {
            unknown_ttfb
        } else {
            1.0
        };
        group
            .into_iter()
            .zip(known)
            .map(|(provider, stats)| {
                let fresh = Stats::new(now);
                let guard = stats.as_ref().map(|s| s.lock());
                let s = guard.as_deref().unwrap_or(&fresh);
                // What others send it counts too, as its node says.
                let advertised = provider
                    .backend
                    .is_none()
                    .then(|| {
                        let e = &provider.entry;
                        self.loads.advertised(&e.node, &e.capability.id)
                    })
                    .flatten();
                let counted = advertised.filter(|_| self.config.advertised_load);
                Rated {
                    health: s.health(now),
                    // The node's figure counts this node's requests too
                    // (averaged, as the figure is): the rest are others'.
                    cost: s.cost(
                        unknown_ttfb,
                        counted.map_or(0.0, |n| (f64::from(n) - s.mean_in_flight(now)).max(0.0)),
                    ),
                    in_flight: s.in_flight,
                    advertised,
                    ttfb_ms: s.ttfb_ms,
                    errors: s.errors,
                    requests: s.requests,
                    provider,
                }
            })
            .collect()
    }

    /// Orders `group` for one request: the provider to try first, then the
    /// others to fail over to. `session`: the client's session key, if any.
    pub fn order(&self, group: Vec<Provider>, session: Option<&str>) -> Vec<Provider> {
        // One provider (most requests): nothing to choose, nothing to read.
        if group.len() < 2 {
            return group;
        }
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        self.pick(self.rate(group, Instant::now()), session, turn).0
    }

    /// What [`Balancer::order`] goes by for `group` now, as `POST /v1/route`
    /// shows it: every provider's numbers, and why the first would be first.
    pub fn explain(&self, group: &[Provider], session: Option<&str>) -> Choice {
        let rated = self.rate(group.to_vec(), Instant::now());
        let members = rated.iter().map(Rated::member).collect();
        // Round robin's turn is read, not taken: explaining moves nothing.
        let turn = self.turn.load(Ordering::Relaxed);
        let (_, reason) = self.pick(rated, session, turn);
        Choice {
            strategy: self.config.strategy,
            reason,
            members,
        }
    }

    /// The numbers of providers outside a group (fallbacks).
    pub fn members(&self, providers: &[Provider]) -> Vec<Member> {
        self.rate(providers.to_vec(), Instant::now())
            .iter()
            .map(Rated::member)
            .collect()
    }

    /// The order of `rated`, and why the first is first; `turn`: round
    /// robin's counter.
    fn pick(
        &self,
        rated: Vec<Rated>,
        session: Option<&str>,
        turn: usize,
    ) -> (Vec<Provider>, &'static str) {
        let (mut usable, mut resting): (Vec<_>, Vec<_>) = rated
            .into_iter()
            .partition(|r| !matches!(r.health, Health::BackedOff(_)));
        resting.sort_by_key(|r| match r.health {
            Health::BackedOff(left) => left,
            _ => Duration::ZERO,
        });
        let resting = resting.into_iter().map(|r| r.provider);
        if usable.is_empty() {
            return (resting.collect(), "backed_off");
        }
        let strategy = self.config.strategy;
        let probe = usable.iter().position(|r| r.health == Health::Probe);
        let (first, reason) = match (strategy, probe, session) {
            (Strategy::First, _, _) => (0, "first"),
            // A provider whose backoff is over is probed by this request.
            (_, Some(i), _) => (i, "probe"),
            (_, None, Some(key)) if !key.is_empty() => {
                let i = (0..usable.len())
                    .max_by_key(|&i| rendezvous_weight(key, &usable[i].provider))
                    .unwrap_or(0);
                (i, "session")
            }
            (Strategy::RoundRobin, _, _) => (turn % usable.len(), "round_robin"),
            (Strategy::LeastCost, _, _) => {
                // The cheapest; a random one of those as good as the cheapest.
                let cheapest = usable.iter().map(|r| r.cost).fold(f64::INFINITY, f64::min);
                let near: Vec<usize> = (0..usable.len())
                    .filter(|&i| usable[i].cost <= cheapest * (1.0 + TIE))
                    .collect();
                (near[rand::thread_rng().gen_range(0..near.len())], "cost")
            }
            (Strategy::PowerOfTwo, _, _) => {
                // The cheaper of two drawn at random.
                let n = usable.len();
                let i = if n == 1 {
                    0
                } else {
                    let mut rng = rand::thread_rng();
                    let a = rng.gen_range(0..n);
                    let b = (a + 1 + rng.gen_range(0..n - 1)) % n;
                    let (ca, cb) = (usable[a].cost, usable[b].cost);
                    if cb < ca && cb * (1.0 + TIE) < ca {
                        b
                    } else {
                        a
                    }
                };
                (i, "cost")
            }
        };
        let chosen = usable.remove(first);
        // The others in order of cost, for failover (`first` keeps its order).
        if strategy != Strategy::First {
            usable.sort_by(|a, b| a.cost.total_cmp(&b.cost));
        }
        let order = std::iter::once(chosen.provider)
            .chain(usable.into_iter().map(|r| r.provider))
            .chain(resting)
            .collect();
        (order, reason)
    }

    /// Starts an attempt on `provider`: it counts as in flight until the lease
    /// is dropped.
    pub fn lease(&self, provider: &Provider) -> Lease {
        let now = Instant::now();
        let stats = {
            let mut all = self.stats.lock();
            if all.len() >= MAX_PROVIDERS {
                forget_idle(&mut all, now);
            }
            all.entry(provider.key())
                .or_insert_with(|| Arc::new(Mutex::new(Stats::new(now))))
                .clone()
        };
        let probe = {
            let mut s = stats.lock();
            s.add_in_flight(1, now);
            s.requests += 1;
            s.last_used = now;
            let probe = s.health(now) == Health::Probe;
            s.probing |= probe;
            probe
        };
        let local = provider.backend.is_some().then(|| {
            self.loads.started(&provider.entry.capability.id);
            (self.loads.clone(), provider.entry.clone())
        });
        Lease {
            stats,
            started: now,
            probe,
            local,
        }
    }
}

/// Drops the numbers of providers idle longest (and never those in use).
fn forget_idle(all: &mut HashMap<Key, Arc<Mutex<Stats>>>, now: Instant) {
    all.retain(|_, s| {
        let s = s.lock();
        s.in_flight > 0 || now.saturating_duration_since(s.last_used) < IDLE
    });
    if all.len() >= MAX_PROVIDERS {
        let mut idle: Vec<(Key, Instant)> = all
            .iter()
            .filter(|(_, s)| s.lock().in_flight == 0)
            .map(|(k, s)| (k.clone(), s.lock().last_used))
            .collect();
        idle.sort_by_key(|(_, at)| *at);
        for (key, _) in idle.into_iter().take(MAX_PROVIDERS / 4) {
            all.remove(&key);
        }
    }
}

/// The weight of `provider` for session `key` (highest wins).
fn rendezvous_weight(key: &str, provider: &Provider) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    provider.entry.node.hash(&mut h);
    provider.entry.capability.id.hash(&mut h);
    provider.backend.hash(&mut h);
    h.finish()
}
