//! Provider lookups: when nothing known fits a request, the DHT is asked who
//! provides what it needs (`protocols/kad.md`), and the routes of providers
//! not known yet are fetched by sync; and the keys this node provides.

use std::time::{Duration, Instant};

use libp2p::identity::PeerId;
use tokio::sync::{mpsc, oneshot};

use super::Task;
use crate::routing::Entry;
use crate::wire::kad;
use crate::wire::route::{SignedRouteUpdate, Verified};

/// Longest a provider lookup may hold up the request that needed it: the DHT
/// query, then the syncs with the providers found, each bounded by this.
pub const LOOKUP_WAIT: Duration = Duration::from_secs(3);
/// The same keys are not looked up again sooner than this (a node with no
/// fitting capability would otherwise query the DHT on every request).
const LOOKUP_COOLDOWN: Duration = Duration::from_secs(30);
/// A provider that could not be synced with is not tried by lookups again for
/// this long: provider records outlive the nodes that made them (48 h), and a
/// node that is gone would otherwise cost every lookup the full wait. A node
/// that comes back syncs on connecting anyway.
const UNREACHABLE_FOR: Duration = Duration::from_secs(300);
/// Lookups waiting for the mesh task.
pub(super) const LOOKUP_CAPACITY: usize = 64;

/// What a request needs that the table has nothing good enough for: the DHT
/// keys to look up (`protocols/kad.md`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Wanted {
    /// Key texts, e.g. `kind:llm/chat`, `domain:camelids`.
    pub keys: Vec<String>,
}

impl Wanted {
    pub fn kind(kind: &str) -> Self {
        Self {
            keys: vec![kad::kind_text(kind)],
        }
    }

    pub fn and_domain(mut self, domain: &str) -> Self {
        self.keys.extend(kad::domain_text(domain));
        self
    }
}

/// What a lookup found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Discovery {
    /// The keys were looked up recently; nothing was asked this time.
    pub skipped: bool,
    /// Providers the DHT named (other than this node).
    pub providers: usize,
    /// Providers whose routes were not held and were fetched now.
    pub synced: usize,
    /// Whether the route table changed; if so, the view with this generation
    /// (or a later one) holds the new routes.
    pub changed: bool,
    pub generation: u64,
}

/// Asks the mesh task to look up providers (see [`Discovery`]).
#[derive(Clone)]
pub struct Lookups {
    pub(super) tx: mpsc::Sender<(Wanted, oneshot::Sender<Discovery>)>,
}

impl Lookups {
    /// Looks up providers of `wanted` and fetches the routes of those not
    /// known yet; answers within about [`LOOKUP_WAIT`] twice.
    pub async fn discover(&self, wanted: Wanted) -> Discovery {
        let (reply, rx) = oneshot::channel();
        if self.tx.try_send((wanted, reply)).is_err() {
            return Discovery {
                skipped: true,
                ..Discovery::default()
            };
        }
        rx.await.unwrap_or(Discovery {
            skipped: true,
            ..Discovery::default()
        })
    }
}

/// A finished lookup, back in the mesh task.
pub(super) struct Found {
    wanted: Wanted,
    providers: usize,
    /// Updates fetched, with the provider that answered each.
    synced: Vec<(Verified, SignedRouteUpdate, PeerId)>,
    /// Providers whose routes were not held when the lookup started.
    unknown: Vec<PeerId>,
    fetched: usize,
    /// Providers that did not answer the sync.
    unreachable: Vec<PeerId>,
}

impl Task {
    /// Hands the DHT the keys of this node's kinds and domains when they change.
    pub(super) async fn provide(&mut self, local: &[Entry]) {
        let mut texts: Vec<String> = Vec::new();
        for e in local {
            let c = &e.capability;
            let mut wanted = Wanted::kind(c.kind.as_str()).and_domain(&c.domain);
            for k in wanted.keys.drain(..) {
                if !texts.contains(&k) {
                    texts.push(k);
                }
            }
        }
        texts.truncate(crate::wire::kad::MAX_PROVIDED);
        if texts == self.provided {
            return;
        }
        let keys = texts.iter().map(|t| kad::record_key(t)).collect();
        if self.setup.client.provide(keys).await.is_ok() {
            tracing::debug!(keys = ?texts, "providing capability keys");
            self.provided = texts;
        }
    }

    /// Starts a lookup, joins one in flight for the same keys, or answers at
    /// once when the keys were looked up recently.
    pub(super) fn on_lookup(&mut self, wanted: Wanted, reply: oneshot::Sender<Discovery>) {
        if let Some(waiters) = self.waiting.get_mut(&wanted) {
            waiters.push(reply);
            return;
        }
        let now = Instant::now();
        let recent = wanted.keys.iter().all(|k| {
            self.looked_up
                .get(k)
                .is_some_and(|t| now.duration_since(*t) < LOOKUP_COOLDOWN)
        });
        if recent {
            self.setup.metrics.lookup("skipped");
            let _ = reply.send(Discovery {
                skipped: true,
                generation: self.generation,
                ..Discovery::default()
            });
            return;
        }
        self.looked_up
            .retain(|_, t| now.duration_since(*t) < LOOKUP_COOLDOWN);
        for k in &wanted.keys {
            self.looked_up.insert(k.clone(), now);
        }
        self.waiting.insert(wanted.clone(), vec![reply]);
        let client = self.setup.client.clone();
        self.unreachable
            .retain(|_, t| now.duration_since(*t) < UNREACHABLE_FOR);
        let mut skip: Vec<PeerId> = self.remote.origins().iter().map(|o| o.peer).collect();
        skip.extend(self.unreachable.keys().copied());
        let found_tx = self.found_tx.clone();
        self.running.spawn(async move {
            let keys = wanted.keys.iter().map(|t| kad::record_key(t)).collect();
            let providers = tokio::time::timeout(LOOKUP_WAIT, client.lookup(keys))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            let unknown: Vec<PeerId> = providers
                .iter()
                .filter(|p| !skip.contains(p))
                .copied()
                .collect();
            let answers = futures::future::join_all(unknown.iter().map(|p| {
                let client = client.clone();
                async move { tokio::time::timeout(LOOKUP_WAIT, client.sync(*p)).await }
            }))
            .await;
            let mut synced = Vec::new();
            let mut fetched = 0;
            let mut unreachable = Vec::new();
            for (peer, answer) in unknown.iter().zip(answers) {
                match answer {
                    Ok(Ok(updates)) => {
                        fetched += 1;
                        synced.extend(updates.into_iter().map(|(v, s)| (v, s, *peer)));
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "provider sync failed");
                        unreachable.push(*peer);
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "provider sync timed out");
                        unreachable.push(*peer);
                    }
                }
            }
            let _ = found_tx
                .send(Found {
                    wanted,
                    providers: providers.len(),
                    synced,
                    unknown,
                    fetched,
                    unreachable,
                })
                .await;
        });
    }

    /// Applies what a lookup fetched and answers everyone who waited for it.
    pub(super) fn on_found(&mut self, found: Found) {
        let now = Instant::now();
        for peer in &found.unreachable {
            self.unreachable.insert(*peer, now);
        }
        let mut changed = false;
        for (verified, signed, via) in found.synced {
            let origin = verified.origin;
            let outcome = self
                .remote
                .apply(verified, signed, via, now, super::unix_ms());
            self.counted(outcome, origin, via);
            changed |= outcome.changed();
        }
        if changed {
            self.publish_view();
        }
        // A provider dialled during the lookup also syncs on connecting, and
        // that answer may have been applied first.
        changed |= found.unknown.iter().any(|p| self.remote.holds(p));
        self.setup.metrics.lookup(match (found.providers, changed) {
            (0, _) => "no_providers",
            (_, true) => "found",
            (_, false) => "nothing_new",
        });
        tracing::debug!(keys = ?found.wanted.keys, providers = found.providers, fetched = found.fetched, changed, "provider lookup finished");
        let discovery = Discovery {
            skipped: false,
            providers: found.providers,
            synced: found.fetched,
            changed,
            generation: self.generation,
        };
        for reply in self.waiting.remove(&found.wanted).unwrap_or_default() {
            let _ = reply.send(discovery);
        }
    }
}
