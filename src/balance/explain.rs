//! A group's numbers as `POST /v1/route` shows them.

use serde::Serialize;

use super::{Health, Rated};
use crate::capability::CapabilityId;
use crate::config::Strategy;

impl Rated {
    pub(super) fn member(&self) -> Member {
        Member {
            capability: self.provider.entry.capability.id.clone(),
            node: self.provider.entry.node.clone(),
            backend: self.provider.backend.clone(),
            score: self.provider.score,
            in_flight: self.in_flight,
            advertised: self.advertised,
            ttfb_ms: self.ttfb_ms,
            error_rate: self.errors,
            backed_off_ms: match self.health {
                Health::BackedOff(left) => Some(left.as_millis() as u64),
                Health::Probe => Some(0),
                Health::Up => None,
            },
            cost: self.cost,
            requests: self.requests,
        }
    }
}

/// A provider's numbers as `POST /v1/route` shows them.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub capability: CapabilityId,
    pub node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
    /// Requests this node has in flight to it.
    pub in_flight: u32,
    /// Requests running at its node, as that node last announced (other
    /// nodes' included); none when it announced none. Counted in the cost
    /// unless `balance.advertised_load` is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertised: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttfb_ms: Option<f64>,
    pub error_rate: f64,
    /// Time left in its backoff, ms (0 while a probe is under way).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backed_off_ms: Option<u64>,
    pub cost: f64,
    /// Requests this node has sent it.
    pub requests: u64,
}

/// How a group was ordered for one request, as `POST /v1/route` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Choice {
    pub strategy: Strategy,
    /// `cost`, `session`, `probe`, `round_robin`, `first` or `backed_off` (every
    /// member is backed off; the one free soonest goes first).
    pub reason: &'static str,
    pub members: Vec<Member>,
}
