//! Load told between nodes. A node counts the requests running on each of
//! its own capabilities (on every backend, from its clients and from peers
//! alike) and says in its route updates (`in_flight`) how many ran on
//! average over the last [`sample`](Loads::sample) (half a second: a count
//! read at one instant can fall in the gap between one request and the
//! next of the same clients); the nodes that
//! hear it keep the latest figure of each origin, and a router adds what
//! others send a provider to what it sends itself: the figure less its own
//! requests to it (averaged over about a second, as the figure is an
//! average), never below zero. An origin can so make itself look busier
//! than a router sees it, never idler.
//!
//! Updates are signed whole route updates, so load must not flood gossip:
//! an origin announces early only when a figure moved by at least
//! [`MIN_MOVE`] and by a quarter, at most every [`LOAD_GAP`] and within
//! [`LOAD_BYTES_PER_SEC`] of updates on average (otherwise its figures ride
//! on the regular refreshes); receivers take an update that changes only
//! load without rebuilding their route table (the entries compare equal).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use parking_lot::Mutex;

use crate::capability::CapabilityId;

/// Least change of a figure worth an early update.
pub const MIN_MOVE: u32 = 2;
/// Least time between a node's updates sent for load alone.
pub const LOAD_GAP: Duration = Duration::from_secs(2);
/// Bytes of updates a node may send for load alone per second, on average:
/// a node with many capabilities (a big update) announces load less often.
pub const LOAD_BYTES_PER_SEC: usize = 8 * 1024;

/// This node's load and what other nodes advertise of theirs; shared by the
/// balancer (which counts and reads) and the mesh task (which announces and
/// hears).
#[derive(Debug, Default)]
pub struct Loads {
    /// Requests running on each of this node's capabilities.
    local: Mutex<Local>,
    /// The last figures each origin advertised, nonzero ones only; an origin
    /// with none is not held.
    advertised: Mutex<HashMap<PeerId, HashMap<CapabilityId, u32>>>,
}

#[derive(Debug, Default)]
struct Local {
    counts: HashMap<CapabilityId, Count>,
    /// When [`Loads::sample`] last ran.
    sampled: Option<Instant>,
}

/// Requests running on one capability, and their sum over time since the
/// last sample.
#[derive(Debug)]
struct Count {
    running: u32,
    /// Request-seconds since the last sample, up to `at`.
    area: f64,
    at: Instant,
}

impl Count {
    fn settle(&mut self, now: Instant) {
        self.area += f64::from(self.running) * now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
    }
}

impl Loads {
    /// Requests running on this node's capability `id` now.
    pub fn local(&self, id: &CapabilityId) -> u32 {
        self.local.lock().counts.get(id).map_or(0, |c| c.running)
    }

    pub(super) fn started(&self, id: &CapabilityId) {
        let now = Instant::now();
        let mut local = self.local.lock();
        // No copy of the id for a capability already counted (most calls).
        if !local.counts.contains_key(id) {
            local.counts.insert(
                id.clone(),
                Count {
                    running: 0,
                    area: 0.0,
                    at: now,
                },
            );
        }
        if let Some(count) = local.counts.get_mut(id) {
            count.settle(now);
            count.running += 1;
        }
    }

    pub(super) fn ended(&self, id: &CapabilityId) {
        let now = Instant::now();
        if let Some(count) = self.local.lock().counts.get_mut(id) {
            count.settle(now);
            count.running = count.running.saturating_sub(1);
        }
    }

    /// How many requests ran on each of this node's capabilities on average
    /// since the last call (rounded; the first call: since they began);
    /// capabilities idle all that time are left out.
    pub fn sample(&self) -> HashMap<CapabilityId, u32> {
        let now = Instant::now();
        let mut local = self.local.lock();
        let since = local.sampled.replace(now);
        let mut out = HashMap::new();
        local.counts.retain(|id, count| {
            count.settle(now);
            let span = since.map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
            let mean = if span > 0.0 {
                count.area / span
            } else {
                f64::from(count.running)
            };
            count.area = 0.0;
            let mean = mean.round() as u32;
            if mean > 0 {
                out.insert(id.clone(), mean);
            }
            count.running > 0
        });
        out
    }

    /// `origin`'s figures from its latest accepted update (replacing the
    /// ones before).
    pub fn advertise(
        &self,
        origin: PeerId,
        figures: impl IntoIterator<Item = (CapabilityId, u32)>,
    ) {
        let figures: HashMap<CapabilityId, u32> =
            figures.into_iter().filter(|(_, n)| *n > 0).collect();
        let mut all = self.advertised.lock();
        if figures.is_empty() {
            all.remove(&origin);
        } else {
            all.insert(origin, figures);
        }
    }

    /// Keeps the figures of the origins `held` says are still held.
    pub fn retain(&self, held: impl Fn(&PeerId) -> bool) {
        self.advertised.lock().retain(|p, _| held(p));
    }

    /// What `node` (a PeerId in base58) last advertised for `id`: none when
    /// it said nothing (or 0).
    pub fn advertised(&self, node: &str, id: &CapabilityId) -> Option<u32> {
        let all = self.advertised.lock();
        if all.is_empty() {
            return None;
        }
        let peer: PeerId = node.parse().ok()?;
        all.get(&peer)?.get(id).copied()
    }
}

/// Whether a figure moved enough from what was announced (`before`) to
/// announce it early: by at least [`MIN_MOVE`] and by a quarter of the
/// larger. One request more or less on an idle capability does not.
pub fn moved(before: u32, now: u32) -> bool {
    let by = before.abs_diff(now);
    by >= MIN_MOVE && by.saturating_mul(4) >= before.max(now)
}

/// How long after an update of `bytes` the next one for load alone may go.
pub fn load_gap(bytes: usize) -> Duration {
    LOAD_GAP.max(Duration::from_secs_f64(
        bytes as f64 / LOAD_BYTES_PER_SEC as f64,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_moves_wait_for_the_refresh_and_big_ones_do_not() {
        assert!(!moved(0, 1), "one request on an idle capability");
        assert!(moved(0, 2));
        assert!(moved(3, 0), "a busy capability going idle");
        assert!(!moved(10, 12), "2 of 12 is less than a quarter");
        assert!(moved(10, 14));
        assert!(!moved(7, 7));
    }

    #[test]
    fn big_updates_are_sent_for_load_less_often() {
        assert_eq!(load_gap(2_000), LOAD_GAP);
        assert_eq!(load_gap(1024 * 1024), Duration::from_secs(128));
    }

    #[test]
    fn figures_are_replaced_and_dropped_with_their_origin() {
        let loads = Loads::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        let id: CapabilityId = "farm/coder".parse().expect("id");
        loads.advertise(a, [(id.clone(), 5)]);
        loads.advertise(b, [(id.clone(), 2)]);
        assert_eq!(loads.advertised(&a.to_base58(), &id), Some(5));
        loads.advertise(a, [(id.clone(), 0)]);
        assert_eq!(loads.advertised(&a.to_base58(), &id), None);
        loads.retain(|p| *p != b);
        assert_eq!(loads.advertised(&b.to_base58(), &id), None);
        assert_eq!(loads.advertised("not a peer", &id), None);
    }

    #[test]
    fn local_requests_are_counted_per_capability_and_averaged_over_time() {
        let loads = Loads::default();
        let id: CapabilityId = "farm/coder".parse().expect("id");
        loads.sample();
        loads.started(&id);
        loads.started(&id);
        loads.ended(&id);
        assert_eq!(loads.local(&id), 1);
        // One request ran all along (the other for no time at all).
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(loads.sample().get(&id), Some(&1));
        // Four requests end and begin again between two samples: the gap
        // between them does not make the capability look idle.
        for _ in 0..3 {
            loads.started(&id);
        }
        std::thread::sleep(Duration::from_millis(20));
        for _ in 0..4 {
            loads.ended(&id);
            loads.started(&id);
        }
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(loads.sample().get(&id), Some(&4));
        for _ in 0..4 {
            loads.ended(&id);
        }
        assert_eq!(loads.local(&id), 0);
        // Idle since the last sample: left out, and forgotten.
        std::thread::sleep(Duration::from_millis(5));
        loads.sample();
        assert!(loads.sample().is_empty());
        assert!(loads.local.lock().counts.is_empty());
    }
}
