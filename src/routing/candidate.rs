//! One capability as a decision sees it: its score, whether it fits, and how
//! far this node trusts the node that offers it.

use std::sync::Arc;

use serde::Serialize;

use super::fit::{Rule, Scale};
use super::{Entry, Need, kind_fits};
use crate::capability::CapabilityId;
use crate::config::{AutoOrigins, RoutingConfig};

/// Score added to this node's own capabilities: they win ties with a copy
/// announced by another node.
const LOCAL_TIE_BONUS: f32 = 1e-4;

/// How far this node trusts the node that offers a capability. Ranked
/// `self` > `allowed` > `member` > `stranger`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trust {
    /// This node's own capability.
    #[serde(rename = "self")]
    Local,
    /// Offered by a node whose PeerId is in `mesh.trusted`.
    Allowed,
    /// Offered by a member of this node's closed mesh.
    Member,
    /// Offered by any other node.
    #[default]
    Stranger,
}

impl Trust {
    pub fn as_str(self) -> &'static str {
        match self {
            Trust::Local => "self",
            Trust::Allowed => "allowed",
            Trust::Member => "member",
            Trust::Stranger => "stranger",
        }
    }

    /// What ranking adds to a capability's similarity: this node wins ties,
    /// and a stranger ranks above a trusted node only when it scores
    /// `routing.stranger_margin` higher.
    pub fn adjustment(self, config: &RoutingConfig) -> f32 {
        match self {
            Trust::Local => LOCAL_TIE_BONUS,
            Trust::Allowed | Trust::Member => 0.0,
            Trust::Stranger => -config.stranger_margin.max(0.0),
        }
    }

    /// Whether `auto` may route to a capability of this trust.
    pub fn admitted(self, config: &RoutingConfig) -> bool {
        match config.auto_origins {
            AutoOrigins::Any => true,
            AutoOrigins::Trusted => self != Trust::Stranger,
        }
    }
}

/// One scored capability in a decision.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub id: CapabilityId,
    pub node: String,
    pub local: bool,
    /// How far this node trusts `node`.
    pub trust: Trust,
    pub kind: String,
    pub domain: String,
    /// Cosine similarity of the request and the capability.
    pub similarity: f32,
    /// Similarity after the trust adjustment ([`Trust::adjustment`]); what
    /// is ranked.
    pub score: f32,
    /// Score this capability needs to be chosen under the decision's rule
    /// (absent when nothing is known to refuse by).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cutoff: Option<f32>,
    /// Where the score lies between generic requests (0) and the
    /// capability's own examples (1), when the table is calibrated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fit: Option<f32>,
    /// Mean score of the generic background requests on this capability.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub background: Option<f32>,
    /// Score of the capability's own requests (leave-one-out on its examples).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<f32>,
    /// Whether the score reaches the cutoff.
    pub fits: bool,
    pub available: bool,
    /// Whether the capability can serve this request (kind fits, it is
    /// available, and its node is trusted enough for `auto`).
    pub eligible: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
    #[serde(skip)]
    pub entry: Option<Arc<Entry>>,
}

/// How a candidate is judged.
pub(super) struct Judge<'a> {
    pub rule: Rule,
    pub need: &'a Need,
    pub config: &'a RoutingConfig,
    /// Whether `routing.auto_origins` applies (routing by meaning; not for
    /// the configured default).
    pub by_meaning: bool,
    pub available: &'a dyn Fn(&Entry) -> bool,
}

impl Judge<'_> {
    /// Whether the entry can take the request.
    pub fn usable(&self, entry: &Entry) -> bool {
        kind_fits(entry, self.need)
            && (self.available)(entry)
            && (!self.by_meaning || entry.trust.admitted(self.config))
    }

    pub fn candidate(
        &self,
        entry: &Arc<Entry>,
        scale: Option<Scale>,
        similarity: f32,
    ) -> Candidate {
        let kind_ok = kind_fits(entry, self.need);
        let up = (self.available)(entry);
        let admitted = !self.by_meaning || entry.trust.admitted(self.config);
        let note = match (kind_ok, up, admitted) {
            (false, _, _) if self.need.accepts_kind(&entry.capability.kind) => {
                Some("does not take what the request carries (its inputs)")
            }
            (false, _, _) => Some("kind does not answer this request"),
            (true, false, _) => Some("unavailable"),
            (true, true, false) => Some("offered by a stranger: auto routes to trusted nodes only"),
            _ => None,
        };
        let cutoff = match self.rule {
            Rule::Threshold { threshold } => Some(threshold),
            Rule::Relative { min_fit } => scale.map(|s| s.cutoff(min_fit)),
        };
        Candidate {
            id: entry.capability.id.clone(),
            node: entry.node.clone(),
            local: entry.local,
            trust: entry.trust,
            kind: entry.capability.kind.to_string(),
            domain: entry.capability.domain.clone(),
            similarity,
            score: similarity + entry.trust.adjustment(self.config),
            cutoff,
            fit: scale.map(|s| s.fit(similarity)).filter(|f| f.is_finite()),
            background: scale.map(|s| s.background),
            reference: scale.map(|s| s.reference),
            // Judged on the similarity: trust orders candidates, it does not
            // make a request fit.
            fits: similarity.is_finite() && cutoff.is_none_or(|c| similarity >= c),
            available: up,
            eligible: kind_ok && up && admitted,
            note,
            entry: Some(entry.clone()),
        }
    }
}
