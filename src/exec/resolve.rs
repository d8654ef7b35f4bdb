//! Which capability a request goes to: an id named by the client, or `auto`,
//! decided by meaning (asking the DHT for providers when nothing known fits);
//! with the candidates to fail over to.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use ::http::StatusCode;

use super::refusal::refusal;
use super::{ApiError, Core};
use crate::backend::Op;
use crate::balance::Provider;
use crate::capability::{CapabilityId, Input, Inputs, Kind};
use crate::mesh::{LOOKUP_WAIT, OriginState, Wanted};
use crate::metrics::DecisionLabels;
use crate::routing::{self, Candidate, Decision, Entry, Need, Outcome, Trust};

pub use crate::capability::AUTO;

/// The kind of capabilities that turn speech into text.
pub const TRANSCRIBE: &str = "audio/transcribe";

/// Where a request may go: a group of equally good providers, among which
/// the balancer picks by load, and the providers to fail over to after them.
#[derive(Clone)]
pub struct Target {
    pub group: Vec<Provider>,
    /// Tried after every member of the group, in order.
    pub fallbacks: Vec<Provider>,
}

/// Whether a capability of `kind` can run `op`: a vision model is sent
/// chats (with images: OpenAI's shape for models that see).
pub fn runs(kind: &Kind, op: Op) -> bool {
    match op {
        Op::Chat => kind.answers_text() || kind.category() == "vision",
        Op::Completions => kind.answers_text(),
        Op::Embeddings => *kind == Kind::embed(),
        Op::Transcribe => kind.as_str() == TRANSCRIBE,
    }
}

/// The error for a capability named for a request carrying what it does
/// not take (an image sent to a text-only model).
pub(super) fn not_taken(model: &str, takes: Inputs, carries: Inputs) -> ApiError {
    ApiError::invalid(
        "messages",
        format!(
            "The model `{model}` takes {takes}; this request also carries {}.",
            carries.without(Input::Text)
        ),
    )
    .code("unsupported_input")
}

/// The error for a capability asked to do what its kind does not.
pub fn wrong_kind(model: &str, kind: &Kind, op: Op) -> ApiError {
    let what = match op {
        Op::Embeddings => "is not an embedding model".to_owned(),
        Op::Transcribe => format!("is a {kind} capability, not {TRANSCRIBE}"),
        Op::Chat | Op::Completions => {
            format!("is a {kind} capability and cannot answer this request")
        }
    };
    ApiError::invalid("model", format!("The model `{model}` {what}.")).code("wrong_capability_kind")
}

impl Core {
    /// Whether an entry can be used now (one of its backends answers).
    pub fn available(&self) -> impl Fn(&Entry) -> bool + '_ {
        move |e: &Entry| {
            (!e.local && e.available)
                || e.local && e.capability.backends.iter().any(|b| self.backend_up(b))
        }
    }

    /// Whether this node's backend `name` answers (or, for a tool, its MCP
    /// server `name` is connected).
    fn backend_up(&self, name: &str) -> bool {
        self.backends.get(name).is_some_and(|b| b.is_available())
            || self.tools.up(name)
            || self.agents.contains_key(name)
    }

    /// The providers of an entry: one per backend for a capability of this
    /// node, the entry itself for another node's.
    fn providers(&self, entry: &Arc<Entry>, score: Option<f32>) -> Vec<Provider> {
        let provider = |backend: Option<&String>| Provider {
            entry: entry.clone(),
            backend: backend.cloned(),
            score,
        };
        if !entry.local {
            return vec![provider(None)];
        }
        entry
            .capability
            .backends
            .iter()
            .map(|b| provider(Some(b)))
            .collect()
    }

    /// The target of a capability of this node named by a peer's request:
    /// its backends that answer, then those that do not.
    pub fn local_target(&self, entry: &Arc<Entry>) -> Target {
        self.target(vec![(entry.clone(), None)], Vec::new())
    }

    /// A target from entries: the group's providers (those of its local
    /// entries whose backends are down move to the fallbacks), then the
    /// fallbacks'.
    pub(super) fn target(
        &self,
        group: Vec<(Arc<Entry>, Option<f32>)>,
        fallbacks: Vec<(Arc<Entry>, Option<f32>)>,
    ) -> Target {
        let up = |p: &Provider| match &p.backend {
            Some(name) => self.backend_up(name),
            None => p.entry.available,
        };
        let (mut members, mut down): (Vec<Provider>, Vec<Provider>) = group
            .iter()
            .flat_map(|(e, score)| self.providers(e, *score))
            .partition(up);
        if members.is_empty() {
            // Nothing answers: try them all the same, in order.
            members = std::mem::take(&mut down);
        }
        down.extend(
            fallbacks
                .iter()
                .flat_map(|(e, score)| self.providers(e, *score)),
        );
        Target {
            group: members,
            fallbacks: down,
        }
    }

    /// Whether `entry` may share the load of `lead` (the best copy or
    /// candidate): as trusted, and among strangers, only a node directly
    /// connected or heard from itself (a relayed copy is only a fallback;
    /// see `mesh::remote`).
    fn alike(lead: &Entry, entry: &Entry, origins: &[OriginState]) -> bool {
        entry.trust == lead.trust
            && (entry.trust != Trust::Stranger
                || origin(origins, &entry.node).is_some_and(|o| o.protected))
    }

    /// Embeds the texts and ranks capabilities; records the decision's metrics.
    ///
    /// When nothing known fits well enough and the node is part of a mesh, it
    /// asks the DHT who provides the kind the request needs (chat; for a chat
    /// carrying an image or audio, the kind of the closest capability taking
    /// it) and the domain of the closest miss, fetches the routes of providers it did not know, and
    /// ranks again (`protocols/kad.md`).
    pub async fn decide(&self, texts: Vec<String>, need: Need) -> Result<Decision, ApiError> {
        let started = Instant::now();
        let embedded = self.embedder.embed(texts).await?;
        self.metrics
            .embed_seconds
            .observe(started.elapsed().as_secs_f64());
        let query = routing::query_vector(&embedded.vectors);
        let rank = || {
            let table = self.catalog.table();
            self.router.decide(&table, &query, &need, &self.available())
        };
        let mut decision = rank();
        if decision.outcome != Outcome::Matched
            && let Need::Text(carries) = &need
            && let Some(mesh) = &self.mesh
        {
            let near = decision.candidates.iter().find(|c| c.eligible);
            // A chat with an image or audio looks for the kind of the
            // nearest capability that takes it (a vision model), not chat.
            let kind = near
                .filter(|_| !carries.without(Input::Text).is_empty())
                .and_then(|c| c.entry.as_ref())
                .map_or_else(Kind::chat, |e| e.capability.kind.clone());
            let mut wanted = Wanted::kind(kind.as_str());
            if let Some(near) = near {
                wanted = wanted.and_domain(&near.domain);
            }
            let found = mesh.lookups.discover(wanted).await;
            if found.changed && self.catalog.caught_up(found.generation, LOOKUP_WAIT).await {
                decision = rank();
            }
        }
        self.metrics
            .decision_seconds
            .observe(started.elapsed().as_secs_f64());
        let outcome = match decision.outcome {
            Outcome::Matched => "matched",
            Outcome::Default => "default",
            Outcome::General => "general",
            Outcome::NoFit => "no_fit",
        };
        self.count_decision(
            outcome,
            decision
                .chosen
                .as_ref()
                .map_or_else(String::new, |c| c.id.to_string()),
        );
        Ok(decision)
    }

    fn count_decision(&self, outcome: &str, capability: String) {
        self.metrics
            .decisions
            .get_or_create(&DecisionLabels {
                outcome: outcome.into(),
                capability,
            })
            .inc();
    }

    /// Resolves `model` for `op`, a request that `carries` these inputs:
    /// `auto` by the meaning of `texts` among the capabilities that take
    /// them, else the capability with that id, by [`Core::copies`].
    pub async fn resolve(
        &self,
        model: &str,
        op: Op,
        carries: Inputs,
        texts: impl FnOnce() -> Result<Vec<String>, ApiError>,
    ) -> Result<Target, ApiError> {
        if model == AUTO {
            let need = match op {
                Op::Chat | Op::Completions => Need::Text(carries),
                Op::Embeddings => Need::Any,
                // Any transcriber can transcribe: the words only rank them.
                Op::Transcribe => {
                    let need = Need::Kind(TRANSCRIBE.into());
                    let decision = self.decide(texts()?, need.clone()).await?;
                    return self
                        .nearest_target(&decision)
                        .ok_or_else(|| refusal(self, &decision, &need));
                }
            };
            return self.resolve_auto(texts()?, need).await;
        }
        let copies = self.copies(model)?;
        let first = copies
            .first()
            .cloned()
            .ok_or_else(|| ApiError::model_not_found(model))?;
        if !runs(&first.capability.kind, op) {
            return Err(wrong_kind(model, &first.capability.kind, op));
        }
        if !Need::Text(carries).takes_inputs(&first.capability) {
            return Err(not_taken(model, first.capability.inputs, carries));
        }
        self.count_decision("explicit", first.capability.id.to_string());
        Ok(self.explicit_target(copies))
    }

    /// The target of the copies of one id, in the order [`Core::copies`]
    /// gives: the group is the first copy that answers and every other one
    /// as trusted (among strangers, those connected or sending their own
    /// routes); the rest are fallbacks.
    pub fn explicit_target(&self, copies: Vec<Arc<Entry>>) -> Target {
        let up = self.available();
        let lead = copies.iter().find(|e| up(e)).or(copies.first()).cloned();
        let Some(lead) = lead else {
            return self.target(Vec::new(), Vec::new());
        };
        let origins = self.origins();
        let (group, fallbacks): (Vec<_>, Vec<_>) = copies
            .into_iter()
            .partition(|e| Arc::ptr_eq(e, &lead) || (up(e) && Self::alike(&lead, e, &origins)));
        let scored = |v: Vec<Arc<Entry>>| v.into_iter().map(|e| (e, None)).collect();
        self.target(scored(group), scored(fallbacks))
    }

    /// The copies of a capability a model name may run on, in the order to
    /// try them. A capability id belongs to the node that announces it:
    ///
    /// - `id@node` (a PeerId or a node name): that node's copy only;
    /// - `id`, offered here: this node's copy only (an announcement from
    ///   elsewhere never shadows it);
    /// - `id`, offered elsewhere only: every copy, trusted nodes' first, then
    ///   the one whose node this node has known longest (then by PeerId).
    ///   [`Core::explicit_target`] makes the group of those that share the
    ///   requests.
    pub fn copies(&self, model: &str) -> Result<Vec<Arc<Entry>>, ApiError> {
        let (id, at) = match model.rsplit_once('@') {
            Some((id, node)) => (id, Some(node)),
            None => (model, None),
        };
        let id: CapabilityId = id.parse().map_err(|_| ApiError::model_not_found(model))?;
        let table = self.catalog.table();
        let all: Vec<Arc<Entry>> = table.lookup(&id).cloned().collect();
        if let Some(node) = at {
            let peer = self.node_named(node)?;
            return Ok(all.into_iter().filter(|e| e.node == peer).collect());
        }
        let origins = self.origins();
        Ok(self.order_copies(all, |node| origin(&origins, node).map(|o| o.since)))
    }

    /// Since when this node has held each other node's routes, by PeerId
    /// (for many lookups at once; one request's copies look up their own).
    pub fn known_since(&self) -> HashMap<String, Instant> {
        self.origins()
            .iter()
            .map(|o| (o.peer.to_base58(), o.since))
            .collect()
    }

    /// Display names by PeerId (base58): this node's and every origin's
    /// whose routes it holds.
    pub fn node_names(&self) -> HashMap<String, String> {
        let mut names: HashMap<String, String> = self
            .origins()
            .iter()
            .map(|o| (o.peer.to_base58(), o.node_name.clone()))
            .collect();
        names.insert(self.node_id.clone(), self.node_name.clone());
        names
    }

    /// The copies of one id in the order `copies` gives them (`since`: since
    /// when this node has held a node's routes, by PeerId).
    pub fn order_copies(
        &self,
        all: Vec<Arc<Entry>>,
        since: impl Fn(&str) -> Option<Instant>,
    ) -> Vec<Arc<Entry>> {
        if all.iter().any(|e| e.local) {
            return all.into_iter().filter(|e| e.local).collect();
        }
        let mut remote = all;
        remote.sort_by(|a, b| {
            let known = |e: &Entry| since(&e.node);
            // Trusted nodes first; then known origins before unknown ones,
            // the longest known first.
            a.trust
                .cmp(&b.trust)
                .then_with(|| match (known(a), known(b)) {
                    (Some(x), Some(y)) => x.cmp(&y),
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (None, None) => std::cmp::Ordering::Equal,
                })
                .then_with(|| a.node.cmp(&b.node))
        });
        remote
    }

    /// The other nodes whose routes this node holds (none outside a mesh).
    pub fn origins(&self) -> Arc<Vec<crate::mesh::OriginState>> {
        self.mesh
            .as_ref()
            .map(|m| m.view.borrow().origins.clone())
            .unwrap_or_default()
    }

    /// The PeerId (base58) of a node named by PeerId or by name: this node,
    /// or an origin it holds. Names are not owned, so a name is taken as the
    /// node that uses it and this node trusts most: a trusted node or a
    /// member, then a node connected to it (or heard from itself), then any
    /// other. Several at that rank: refused as ambiguous, so a stranger
    /// that takes a trusted node's name breaks no pin of it.
    fn node_named(&self, node: &str) -> Result<String, ApiError> {
        if node == self.node_id || node == self.node_name {
            return Ok(self.node_id.clone());
        }
        let origins = self.origins();
        if let Some(o) = origins.iter().find(|o| o.peer.to_base58() == node) {
            return Ok(o.peer.to_base58());
        }
        let closed = self.mesh.as_ref().is_some_and(|m| m.gate.is_some());
        let rank = |o: &crate::mesh::OriginState| {
            let trusted = self
                .mesh
                .as_ref()
                .is_some_and(|m| m.trusted.contains(&o.peer));
            if trusted || closed {
                0
            } else if o.protected {
                1
            } else {
                2
            }
        };
        let named: Vec<&crate::mesh::OriginState> =
            origins.iter().filter(|o| o.node_name == node).collect();
        let best = named.iter().map(|o| rank(o)).min();
        let named: Vec<String> = named
            .into_iter()
            .filter(|o| Some(rank(o)) == best)
            .map(|o| o.peer.to_base58())
            .collect();
        match named.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!("No known node is called `{node}`; GET /v1/mesh/capabilities lists them."),
            )
            .param("model")
            .code("node_not_found")),
            many => Err(ApiError::invalid(
                "model",
                format!(
                    "Several nodes this node trusts as much are called `{node}`: {}. Name one by its PeerId.",
                    many.join(", ")
                ),
            )
            .code("ambiguous_node")),
        }
    }

    async fn resolve_auto(&self, texts: Vec<String>, need: Need) -> Result<Target, ApiError> {
        let decision = self.decide(texts, need.clone()).await?;
        self.auto_target(&decision)
            .ok_or_else(|| refusal(self, &decision, &need))
    }

    /// The target of an `auto` decision or, when nothing fits well, of its
    /// nearest candidate that can serve: for requests any capability of
    /// the kind asked for can serve (an agent's model, a transcription).
    pub(super) fn nearest_target(&self, decision: &Decision) -> Option<Target> {
        if let Some(target) = self.auto_target(decision) {
            return Some(target);
        }
        let up = self.available();
        let nearest = decision
            .candidates
            .iter()
            .filter(|c| c.eligible)
            .filter_map(|c| c.entry.clone())
            .find(|e| up(e))?;
        Some(self.target(vec![(nearest, None)], Vec::new()))
    }

    /// The target of an `auto` decision: the chosen capability and, when it
    /// was matched by meaning, every other candidate that fits, can serve,
    /// scores within `balance.margin` of it and is as trusted (among
    /// strangers, not a relayed copy); the other fitting candidates are
    /// fallbacks. None when nothing was chosen.
    pub fn auto_target(&self, decision: &Decision) -> Option<Target> {
        let chosen = decision.chosen.as_ref()?;
        let lead = chosen.entry.clone()?;
        let same = |c: &Candidate| c.id == chosen.id && c.node == chosen.node;
        let origins = self.origins();
        let margin = self.balancer.config().margin;
        let mut group = vec![(lead.clone(), Some(chosen.score).filter(|s| s.is_finite()))];
        let mut fallbacks = Vec::new();
        for c in decision
            .candidates
            .iter()
            .filter(|c| c.eligible && c.fits && !same(c))
        {
            let Some(entry) = c.entry.clone() else {
                continue;
            };
            let alike = decision.outcome == Outcome::Matched
                && c.score >= chosen.score - margin
                && Self::alike(&lead, &entry, &origins);
            if alike {
                group.push((entry, Some(c.score)));
            } else {
                fallbacks.push((entry, Some(c.score)));
            }
        }
        Some(self.target(group, fallbacks))
    }
}

/// The routes held of `node` (a PeerId in base58), if any.
fn origin<'a>(origins: &'a [OriginState], node: &str) -> Option<&'a OriginState> {
    let peer: libp2p::PeerId = node.parse().ok()?;
    origins.iter().find(|o| o.peer == peer)
}
