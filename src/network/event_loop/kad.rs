//! Kademlia: the keys this node provides (announced again on a timer and
//! after bootstraps) and provider lookups (`protocols/kad.md`).

use std::time::{Duration, Instant};

use libp2p::identity::PeerId;
use libp2p::{Multiaddr, kad};
use tokio::sync::oneshot;

use super::EventLoop;
use crate::wire::route::Verified;

/// Provider records are announced again this often (other nodes come and go;
/// the records they hold last 48 h by the library default).
pub(super) const REPROVIDE_EVERY: Duration = Duration::from_secs(600);
/// A bootstrap (the library runs one every 5 minutes and when its routing
/// table grows) announces the provider records again if the last
/// announcement is older than this.
const REPROVIDE_AFTER_BOOTSTRAP: Duration = Duration::from_secs(60);
/// Lookups in flight; more are answered at once with no providers.
const MAX_LOOKUPS: usize = 4;
/// Providers kept per lookup (the library's default per key, too).
const MAX_PROVIDERS: usize = 20;

/// A provider lookup over one or more keys.
pub(super) struct Lookup {
    /// Queries not finished yet.
    remaining: usize,
    found: Vec<PeerId>,
    reply: oneshot::Sender<Vec<PeerId>>,
}

impl EventLoop {
    /// Replaces the provided keys and announces them.
    pub(super) fn set_provided(&mut self, keys: Vec<kad::RecordKey>) {
        let kad = &mut self.swarm.behaviour_mut().kad;
        for old in &self.provided {
            if !keys.contains(old) {
                kad.stop_providing(old);
            }
        }
        self.provided = keys;
        self.provide_all();
    }

    /// Starts a lookup of who provides any of `keys`.
    pub(super) fn lookup(
        &mut self,
        keys: Vec<kad::RecordKey>,
        reply: oneshot::Sender<Vec<PeerId>>,
    ) {
        if self.lookups.len() >= MAX_LOOKUPS || keys.is_empty() {
            let _ = reply.send(Vec::new());
            return;
        }
        let id = self.next_lookup;
        self.next_lookup += 1;
        for key in &keys {
            let query = self.swarm.behaviour_mut().kad.get_providers(key.clone());
            self.lookup_queries.insert(query, id);
        }
        self.lookups.insert(
            id,
            Lookup {
                remaining: keys.len(),
                found: Vec::new(),
                reply,
            },
        );
    }

    /// Announces every provided key to the closest peers (stored locally too,
    /// so a lookup from this node finds it).
    pub(super) fn provide_all(&mut self) {
        if self.provided.is_empty() {
            return;
        }
        let kad = &mut self.swarm.behaviour_mut().kad;
        self.provided_to_peers = kad.kbuckets().any(|b| b.num_entries() > 0);
        for key in &self.provided {
            if let Err(e) = kad.start_providing(key.clone()) {
                tracing::warn!(error = %e, "cannot provide a capability key");
            }
        }
        self.last_provide = Some(Instant::now());
    }

    /// The first peer in the routing table: announce what was so far only
    /// stored locally.
    pub(super) fn provide_if_unannounced(&mut self) {
        if !self.provided_to_peers && !self.provided.is_empty() {
            self.provide_all();
        }
    }

    pub(super) fn on_kad(&mut self, event: kad::Event) {
        let kad::Event::OutboundQueryProgressed {
            id, result, step, ..
        } = event
        else {
            return;
        };
        match result {
            kad::QueryResult::Bootstrap(Ok(_))
                if step.last
                    && (!self.provided_to_peers
                        || self
                            .last_provide
                            .is_none_or(|t| t.elapsed() >= REPROVIDE_AFTER_BOOTSTRAP)) =>
            {
                self.provide_all();
            }
            kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                providers,
                ..
            })) => {
                let me = *self.swarm.local_peer_id();
                let Some(lookup) = self
                    .lookup_queries
                    .get(&id)
                    .and_then(|l| self.lookups.get_mut(l))
                else {
                    return;
                };
                let mut new = Vec::new();
                for p in providers {
                    if p != me && !lookup.found.contains(&p) && lookup.found.len() < MAX_PROVIDERS {
                        lookup.found.push(p);
                        new.push(p);
                    }
                }
                // Dial now: the query knows the provider's addresses only
                // while it runs.
                for p in new {
                    if !self.swarm.is_connected(&p) {
                        let _ = self.swarm.dial(p);
                    }
                }
            }
            kad::QueryResult::StartProviding(Err(e)) => {
                tracing::debug!(error = %e, "providing a key reached no peer");
            }
            _ => {}
        }
        if step.last
            && let Some(lookup_id) = self.lookup_queries.remove(&id)
            && let Some(lookup) = self.lookups.get_mut(&lookup_id)
        {
            lookup.remaining = lookup.remaining.saturating_sub(1);
            if lookup.remaining == 0
                && let Some(done) = self.lookups.remove(&lookup_id)
            {
                let _ = done.reply.send(done.found);
            }
        }
    }

    /// Addresses an origin signed for itself go into the DHT routing table, so
    /// that a forwarded request can dial an origin known only by gossip.
    pub(super) fn learn_addresses(&mut self, verified: &Verified) {
        if verified.origin == *self.swarm.local_peer_id() {
            return;
        }
        for a in &verified.update.addrs {
            if let Ok(addr) = a.parse::<Multiaddr>() {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&verified.origin, addr);
            }
        }
    }
}
