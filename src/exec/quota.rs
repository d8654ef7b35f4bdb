//! What one peer may send this node: a rate of new forwarded requests
//! (intents and streams together), so that an honest peer's forwards keep
//! working while another floods; how many it may have running is a budget
//! ([`crate::budget`]), and in a closed mesh, whether it is a member.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ::http::StatusCode;
use libp2p::PeerId;
use parking_lot::Mutex;

use super::{ApiError, Core};

/// Peers whose rate is tracked; beyond it, buckets that have refilled (the
/// same as new ones) are forgotten.
const TRACKED_PEERS: usize = 4096;

/// New forwarded requests per peer and second (a token bucket holding one
/// second's worth), shared by the intent and stream protocols.
pub struct PeerRate {
    per_sec: f64,
    buckets: Mutex<HashMap<PeerId, (f64, Instant)>>,
}

impl PeerRate {
    pub fn new(per_sec: u32) -> Self {
        Self {
            per_sec: f64::from(per_sec.max(1)),
            buckets: Mutex::default(),
        }
    }

    /// Takes one request of `peer` from its bucket; `false` when empty.
    pub(super) fn allow(&self, peer: PeerId, now: Instant) -> bool {
        let mut buckets = self.buckets.lock();
        if buckets.len() >= TRACKED_PEERS && !buckets.contains_key(&peer) {
            let per_sec = self.per_sec;
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * per_sec < per_sec
            });
        }
        let (tokens, at) = buckets.entry(peer).or_insert((self.per_sec, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * self.per_sec)
            .min(self.per_sec);
        *at = now;
        if *tokens < 1.0 {
            return false;
        }
        *tokens -= 1.0;
        true
    }

    /// The answer to a peer over its rate.
    pub(super) fn refusal(&self) -> ApiError {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            format!(
                "This peer sends more than {} forwarded requests per second to this node.",
                self.per_sec
            ),
        )
        .code("peer_over_rate")
    }
}

/// The answer to a peer that has as many requests running as it may.
pub(super) fn over_quota(limit: usize, what: &str) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_error",
        format!("This peer already has {limit} forwarded {what} running at this node."),
    )
    .code("peer_over_quota")
}

/// Longest a peer's request waits for its hello to be judged (it is sent
/// the moment the connection opens; a request may overtake it).
const HELLO_WAIT: Duration = Duration::from_secs(5);

/// In a closed mesh, the roles of `peer`'s certificate, or the refusal of a
/// peer that is not a member; in an open mesh, no roles.
pub(super) async fn admitted(core: &Core, peer: PeerId) -> Result<Vec<String>, ApiError> {
    let Some(gate) = core.mesh.as_ref().and_then(|m| m.gate.as_ref()) else {
        return Ok(Vec::new());
    };
    match gate.admitted(peer, HELLO_WAIT).await {
        Ok(member) => Ok(member.roles),
        Err(refusal) => {
            core.metrics.peer_refusal(&peer, "not_a_member");
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "invalid_request_error",
                format!(
                    "This node serves members of its mesh only ({}).",
                    refusal.as_str().replace('_', " ")
                ),
            )
            .code("not_a_member"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_peer_gets_its_rate_and_refills() {
        let rate = PeerRate::new(5);
        let t = Instant::now();
        let a = PeerId::random();
        let b = PeerId::random();
        let allowed = (0..10).filter(|_| rate.allow(a, t)).count();
        assert_eq!(allowed, 5, "one second's worth at once");
        assert!(rate.allow(b, t), "another peer is not held back");
        assert!(rate.allow(a, t + std::time::Duration::from_millis(250)));
        assert!(!rate.allow(a, t + std::time::Duration::from_millis(260)));
    }

    #[test]
    fn the_tracked_peers_stay_bounded() {
        let rate = PeerRate::new(1);
        let t = Instant::now();
        for _ in 0..(TRACKED_PEERS + 10) {
            rate.allow(PeerId::random(), t);
        }
        let later = t + std::time::Duration::from_secs(2);
        rate.allow(PeerId::random(), later);
        assert!(rate.buckets.lock().len() <= TRACKED_PEERS);
    }
}
