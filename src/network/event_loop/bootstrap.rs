//! Bootstrap peers: dialled until connected, with a backoff that doubles up
//! to a minute and starts over when a new interface address appears.

use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use libp2p::identity::PeerId;
use libp2p::multiaddr::Protocol;

use super::EventLoop;

/// How often unreachable bootstrap peers are tried again, at first; doubles on
/// every failure up to [`REDIAL_MAX`].
const REDIAL_MIN: Duration = Duration::from_secs(1);
const REDIAL_MAX: Duration = Duration::from_secs(60);

/// One bootstrap address and when to dial it next.
pub(super) struct Redial {
    addr: Multiaddr,
    peer: Option<PeerId>,
    /// The address named the peer (`/p2p/<id>`); otherwise `peer` is whoever
    /// answered there last.
    named: bool,
    next: Instant,
    backoff: Duration,
}

pub(super) fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

/// The bootstrap addresses, all due now.
pub(super) fn redials(addrs: &[Multiaddr]) -> Vec<Redial> {
    let now = Instant::now();
    addrs
        .iter()
        .map(|addr| Redial {
            peer: peer_of(addr),
            named: peer_of(addr).is_some(),
            addr: addr.clone(),
            next: now,
            backoff: REDIAL_MIN,
        })
        .collect()
}

impl EventLoop {
    pub(super) fn redial(&mut self) {
        let now = Instant::now();
        for i in 0..self.bootstrap.len() {
            let r = &self.bootstrap[i];
            if r.next > now {
                continue;
            }
            if r.peer.is_some_and(|p| self.swarm.is_connected(&p)) {
                continue;
            }
            let addr = r.addr.clone();
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::debug!(%addr, error = %e, "bootstrap dial failed");
            }
            let r = &mut self.bootstrap[i];
            r.next = now + r.backoff;
            r.backoff = (r.backoff * 2).min(REDIAL_MAX);
        }
    }

    /// A connection is up: a bootstrap address given without `/p2p/<id>` (a
    /// DNS name of a service) learns whose it is, so it is not dialled again
    /// while connected (a restarted peer may have a new id); the peer's
    /// backoff starts over.
    pub(super) fn bootstrap_connected(&mut self, peer: PeerId, dialled: Option<&Multiaddr>) {
        for r in &mut self.bootstrap {
            if !r.named && Some(&r.addr) == dialled {
                r.peer = Some(peer);
            }
            if r.peer == Some(peer) {
                r.backoff = REDIAL_MIN;
            }
        }
    }

    /// A new interface address often means the network is back (a cable, a
    /// Wi-Fi join, a container reattached): try the bootstrap peers now
    /// instead of after a long backoff.
    pub(super) fn redial_now(&mut self) {
        let now = Instant::now();
        for r in &mut self.bootstrap {
            r.next = now;
            r.backoff = REDIAL_MIN;
        }
    }
}
