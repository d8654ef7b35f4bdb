//! `[routing]`: how requests are matched to capabilities.

use serde::{Deserialize, Serialize};

use crate::capability::CapabilityId;

/// `[routing]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// A fixed score below which no capability fits, overriding the relative
    /// rule (`min_fit`). Unset by default: no one cosine suits every
    /// capability set.
    pub threshold: Option<f32>,
    /// How close to a capability's own examples a request must score for it
    /// to fit, with generic requests at 0 and the examples themselves
    /// (scored leave-one-out) at 1. Below it, `default` is used or the request
    /// is refused.
    pub min_fit: f32,
    /// Capability used when nothing fits.
    pub default: Option<CapabilityId>,
    /// Weight of the description against the examples in a capability's vector
    /// (0: examples only, 1: description only; without examples the description is used).
    pub description_weight: f32,
    /// Most extra vectors (clusters of examples) per capability; 0: one vector each.
    pub prototypes: usize,
    /// Candidates listed by `POST /v1/route`.
    pub explain_candidates: usize,
    /// How much higher a capability of a stranger (a node neither this one
    /// nor in `mesh.trusted`) must score to rank above a trusted one.
    pub stranger_margin: f32,
    /// Which nodes `auto` may route to: `"any"`, or `"trusted"` (this node
    /// and `mesh.trusted`). Explicit ids are not limited.
    pub auto_origins: AutoOrigins,
}

/// `routing.auto_origins`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutoOrigins {
    #[default]
    Any,
    Trusted,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            threshold: None,
            min_fit: 0.5,
            default: None,
            description_weight: 0.2,
            prototypes: 4,
            explain_candidates: 5,
            stranger_margin: 0.02,
            auto_origins: AutoOrigins::Any,
        }
    }
}

/// `[balance]`: how requests are spread over the providers of one service
/// (see `balance`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BalanceConfig {
    /// `"least_cost"` (the default: the cheapest provider by time to first
    /// byte, requests in flight and errors), `"power_of_two"` (the cheaper
    /// of two drawn at random), `"round_robin"`, or `"first"` (always the
    /// first in the order of `copies`, the others only when it fails).
    pub strategy: Strategy,
    /// For `auto`: capabilities scoring within this much of the best (and as
    /// trusted) share its requests.
    pub margin: f32,
    /// The request header whose value keeps a client's requests on one
    /// provider while it is healthy (the body's `user` field does too).
    pub session_header: String,
    /// Whether the requests other nodes say run at a provider count in its
    /// cost (what the figure holds beyond this node's own; see
    /// `balance::load`). On by default; off, a node counts only its own
    /// requests (the rule before, kept to compare: `cargo bench --bench
    /// balance`).
    pub advertised_load: bool,
}

/// `balance.strategy`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    #[default]
    LeastCost,
    PowerOfTwo,
    RoundRobin,
    First,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        Self {
            strategy: Strategy::LeastCost,
            margin: 0.01,
            session_header: "x-session-id".into(),
            advertised_load: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Strategy;
    use crate::config::Config;

    fn balance(lines: &str) -> Result<Config, String> {
        let config: Config =
            toml::from_str(&format!("[balance]\n{lines}\n")).map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn balance_settings_are_checked() {
        let c = balance("strategy = \"round_robin\"\nsession_header = \"x-conversation\"")
            .expect("valid");
        assert_eq!(c.balance.strategy, Strategy::RoundRobin);
        for (bad, says) in [
            ("strategy = \"fastest\"", "unknown variant"),
            ("margin = 2.0", "balance.margin"),
            (
                "session_header = \"not a header\"",
                "not a valid header name",
            ),
        ] {
            let err = balance(bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
