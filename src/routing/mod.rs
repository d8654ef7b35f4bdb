//! Routing by meaning: the route table (capabilities with their vectors) and the
//! decision for a request. Synchronous and free of I/O: the caller embeds the
//! request, hands in the query vector and reads the [`Decision`].
//!
//! A capability is represented by a main unit vector, the normalised centroid of
//! its example utterances blended with the embedding of its profile text
//! (description, domain, topics), plus up to a few prototypes: centroids of
//! clusters of its examples, so that a capability with varied examples (a
//! "finance desk") is close to each kind of request it gets, not only to their
//! average. A capability scores the best similarity over its vectors. With no
//! examples the profile alone is used. Whether the best one fits at all is
//! [`fit`]'s rule.

mod candidate;
pub mod fit;
mod vectors;

pub use candidate::{Candidate, Trust};
pub use vectors::{capability_prototypes, capability_vector, explained, query_vector};

use candidate::Judge;

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use crate::capability::{Capability, CapabilityId, Input, Inputs};
use crate::config::RoutingConfig;
use crate::index::{self, VectorIndex};
use fit::{Rule, Scale};

/// One routable capability with the node that offers it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Shared with the mesh's view and earlier tables: its texts are held once.
    pub capability: std::sync::Arc<Capability>,
    /// PeerId (base58) of the node offering it.
    pub node: String,
    /// Whether this node offers it.
    pub local: bool,
    /// For a remote entry: whether its origin says it is available (local
    /// entries are judged by their backend's state instead).
    pub available: bool,
    /// The capability's main routing vector (unit length).
    pub vector: Vec<f32>,
    /// Further unit vectors it is also matched by (may be empty).
    pub prototypes: Vec<Vec<f32>>,
    /// How high its own requests score ([`fit::reference`]), measured where
    /// its examples are (for a remote one, at its origin); none with fewer
    /// than two examples.
    pub reference: Option<f32>,
    /// How far this node trusts `node`.
    pub trust: Trust,
}

impl Entry {
    /// Its main vector, then its prototypes: a request scores the best of them.
    pub fn vectors(&self) -> impl Iterator<Item = &[f32]> {
        std::iter::once(self.vector.as_slice()).chain(self.prototypes.iter().map(Vec::as_slice))
    }
}

/// All routable capabilities with a search index over their vectors. Immutable:
/// a change builds a new table, which replaces the old one atomically.
pub struct Table {
    entries: Vec<Arc<Entry>>,
    by_id: HashMap<CapabilityId, Vec<usize>>,
    index: Box<dyn VectorIndex>,
    /// Entry of each indexed vector.
    owner: Vec<usize>,
    /// Most vectors any entry has in the index.
    max_vectors: usize,
    /// Each entry's background and reference scores (None: unjudged).
    scales: Vec<Option<Scale>>,
    /// Entries that have no scale: the general models a request goes to when
    /// no judged capability fits it.
    unjudged: Vec<usize>,
}

impl Default for Table {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl Table {
    /// Builds a table that has no background to calibrate against: `auto`
    /// then refuses only by an explicit threshold.
    pub fn new(entries: Vec<Entry>) -> Self {
        Self::calibrated(entries, &fit::Background::default())
    }

    /// Builds the table and its index (HNSW for large tables: call it off the
    /// async runtime); `background` holds the embedded
    /// [`fit::background_texts`].
    pub fn calibrated(mut entries: Vec<Entry>, background: &fit::Background) -> Self {
        // One width per index: an entry with another width cannot be compared.
        if let Some(dim) = entries.first().map(|e| e.vector.len()) {
            entries.retain(|e| {
                let ok = dim > 0
                    && e.vector.len() == dim
                    && e.prototypes.iter().all(|p| p.len() == dim);
                if !ok {
                    tracing::warn!(capability = %e.capability.id, "vector width differs from the table's; left out");
                }
                ok
            });
        }
        let index = index::build(Self::indexed_vectors(&entries));
        Self::with_index(entries, index, background)
    }

    /// The vectors an index over `entries` must hold, in order: each entry's main
    /// vector and then its prototypes.
    pub fn indexed_vectors(entries: &[Entry]) -> Vec<Vec<f32>> {
        entries
            .iter()
            .flat_map(|e| e.vectors().map(<[f32]>::to_vec))
            .collect()
    }

    /// Builds a table around an index over [`Table::indexed_vectors`].
    pub fn with_index(
        entries: Vec<Entry>,
        index: Box<dyn VectorIndex>,
        background: &fit::Background,
    ) -> Self {
        let scales = entries
            .iter()
            .map(|e| Scale::new(e.vectors(), e.reference, background))
            .collect::<Vec<_>>();
        let unjudged = (0..entries.len())
            .filter(|&i| scales[i].is_none())
            .collect();
        let owner: Vec<usize> = entries
            .iter()
            .enumerate()
            .flat_map(|(i, e)| std::iter::repeat_n(i, 1 + e.prototypes.len()))
            .collect();
        let max_vectors = entries
            .iter()
            .map(|e| 1 + e.prototypes.len())
            .max()
            .unwrap_or(1);
        let mut by_id: HashMap<CapabilityId, Vec<usize>> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            by_id.entry(e.capability.id.clone()).or_default().push(i);
        }
        // Local entries first, so an exact id prefers this node.
        for positions in by_id.values_mut() {
            positions.sort_by_key(|&i| !entries[i].local);
        }
        Self {
            entries: entries.into_iter().map(Arc::new).collect(),
            by_id,
            index,
            owner,
            max_vectors,
            scales,
            unjudged,
        }
    }

    pub fn entries(&self) -> &[Arc<Entry>] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn index_name(&self) -> &'static str {
        self.index.name()
    }

    /// Entries with this id, local first.
    pub fn lookup(&self, id: &CapabilityId) -> impl Iterator<Item = &Arc<Entry>> {
        self.by_id
            .get(id)
            .into_iter()
            .flatten()
            .map(|&i| &self.entries[i])
    }
}

/// What the request needs from a capability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Chat or text completion carrying these inputs: kinds that answer
    /// text with text (and vision kinds, for a chat carrying an image),
    /// taking every input besides text that it carries.
    Text(Inputs),
    /// Any kind (explanations without an endpoint in mind).
    Any,
    /// One kind (`vision/classify`), or a family of kinds (`vision/*`).
    Kind(String),
    /// A language model that chats (`llm/*` answering text): what drives an
    /// agent, which is never another agent.
    Llm,
}

impl Need {
    /// A request of text alone.
    pub const TEXT: Need = Need::Text(Inputs::TEXT);

    /// Whether `capability` meets it: its kind, and what it takes.
    pub fn accepts(&self, capability: &Capability) -> bool {
        self.accepts_kind(&capability.kind) && self.takes_inputs(capability)
    }

    /// Whether a capability of `kind` meets it.
    pub fn accepts_kind(&self, kind: &crate::capability::Kind) -> bool {
        match self {
            Need::Text(carries) => {
                kind.answers_text() || (carries.has(Input::Image) && kind.category() == "vision")
            }
            Need::Any => true,
            Need::Llm => kind.category() == "llm" && kind.answers_text(),
            Need::Kind(wanted) => match wanted.strip_suffix("/*") {
                Some(family) => kind.category() == family,
                None => kind.as_str() == wanted,
            },
        }
    }

    /// Whether `capability` takes every input the request carries besides
    /// text (text is what every request is routed by).
    pub fn takes_inputs(&self, capability: &Capability) -> bool {
        match self {
            Need::Text(carries) => capability.inputs.covers(carries.without(Input::Text)),
            Need::Any | Need::Kind(_) | Need::Llm => true,
        }
    }
}

/// How the decision was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The best eligible capability fits the request.
    Matched,
    /// Nothing fits; the configured default was used.
    Default,
    /// No judged capability fits and there is no default: the best of the
    /// capabilities that cannot be judged (models known by name only, which
    /// answer anything) takes it.
    General,
    /// Nothing fits and there is no usable default.
    NoFit,
}

/// The routing decision for one request, with its explanation.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub outcome: Outcome,
    /// The chosen capability (first of `candidates` when matched).
    pub chosen: Option<Candidate>,
    /// Best candidates first, at least [`RANKED`] of them when there are
    /// that many (where the request's group and fallbacks come from);
    /// `POST /v1/route` lists `routing.explain_candidates` of them.
    pub candidates: Vec<Candidate>,
    /// How fitting was judged.
    pub rule: Rule,
    pub index: &'static str,
}

/// Candidates a decision ranks at least (the nearest; more are listed when
/// `routing.explain_candidates` asks for more).
pub const RANKED: usize = 16;

/// Decides among the entries of a table.
pub struct Router {
    pub config: RoutingConfig,
}

impl Router {
    pub fn new(config: RoutingConfig) -> Self {
        Self { config }
    }

    /// The rule this router's config asks for.
    pub fn rule(&self) -> Rule {
        match self.config.threshold {
            Some(threshold) => Rule::Threshold { threshold },
            None => Rule::Relative {
                min_fit: self.config.min_fit,
            },
        }
    }

    fn judge<'a>(
        &'a self,
        need: &'a Need,
        by_meaning: bool,
        available: &'a dyn Fn(&Entry) -> bool,
    ) -> Judge<'a> {
        Judge {
            rule: self.rule(),
            need,
            config: &self.config,
            by_meaning,
            available,
        }
    }

    /// Ranks the table's capabilities for `query` and picks one.
    ///
    /// `available(entry)` says whether the entry's backend (or node) answers now.
    pub fn decide(
        &self,
        table: &Table,
        query: &[f32],
        need: &Need,
        available: &dyn Fn(&Entry) -> bool,
    ) -> Decision {
        let shown = self.config.explain_candidates.max(1);
        let judge = self.judge(need, true, available);
        let ranked = self.rank(table, query, &judge, shown.max(RANKED));
        // Best eligible first.
        let best = ranked.iter().position(|c| c.eligible);
        let (outcome, chosen) = match best {
            Some(i) if ranked[i].fits => (Outcome::Matched, Some(ranked[i].clone())),
            _ => match self.default_candidate(table, need, available) {
                Some(c) => (Outcome::Default, Some(c)),
                None => match self.general_candidate(table, query, &judge) {
                    Some(c) => (Outcome::General, Some(c)),
                    None => (Outcome::NoFit, None),
                },
            },
        };
        Decision {
            outcome,
            chosen,
            candidates: ranked,
            rule: judge.rule,
            index: table.index_name(),
        }
    }

    /// Best first: usable before unusable, then by score (similarity plus
    /// the trust adjustment), then by trust, then by place in the table
    /// (this node's entries first, then other nodes' by how long this node
    /// has known them).
    fn rank(&self, table: &Table, query: &[f32], judge: &Judge, k: usize) -> Vec<Candidate> {
        if table.is_empty() || query.is_empty() {
            return Vec::new();
        }
        let usable = |i: usize| judge.usable(&table.entries[i]);
        let search = |k: usize| -> Vec<(usize, f32)> {
            // The entries of the nearest vectors, each scored by the best
            // of its own vectors in full precision (the index may
            // approximate: ties and near-ties are decided here).
            let mut seen = vec![false; table.entries.len()];
            let mut best: Vec<(usize, f32)> = Vec::new();
            for (pos, _) in table.index.search(query, k) {
                let Some(&e) = table.owner.get(pos) else {
                    continue;
                };
                if !std::mem::replace(&mut seen[e], true) {
                    let sim = table.entries[e]
                        .vectors()
                        .map(|v| index::dot(v, query))
                        .fold(f32::MIN, f32::max);
                    best.push((e, sim));
                }
            }
            best
        };
        let mut hits = search(k * table.max_vectors);
        // If none of the nearest can serve the request, look at all of them.
        if !hits.iter().any(|&(i, _)| usable(i)) && hits.len() < table.len() {
            hits = search(table.owner.len());
        }
        // Rank on plain numbers; build explanations only for what is shown.
        let mut ranked: Vec<(bool, f32, usize, f32)> = hits
            .into_iter()
            .map(|(i, sim)| {
                let adjusted = sim + table.entries[i].trust.adjustment(&self.config);
                (usable(i), adjusted, i, sim)
            })
            .collect();
        ranked.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then(b.1.total_cmp(&a.1))
                .then(table.entries[a.2].trust.cmp(&table.entries[b.2].trust))
                .then(a.2.cmp(&b.2))
        });
        ranked.truncate(k);
        ranked
            .into_iter()
            .map(|(_, _, i, sim)| judge.candidate(&table.entries[i], table.scales[i], sim))
            .collect()
    }

    /// The best-scoring usable entry without a scale. When a threshold is
    /// set, every entry is judged by it: there is no general one.
    fn general_candidate(&self, table: &Table, query: &[f32], judge: &Judge) -> Option<Candidate> {
        if matches!(judge.rule, Rule::Threshold { .. }) || query.is_empty() {
            return None;
        }
        table
            .unjudged
            .iter()
            .filter(|&&i| judge.usable(&table.entries[i]))
            .map(|&i| {
                let e = &table.entries[i];
                let sim = e
                    .vectors()
                    .filter(|v| v.len() == query.len())
                    .map(|v| index::dot(v, query))
                    .fold(f32::MIN, f32::max);
                (i, sim + e.trust.adjustment(&self.config), sim)
            })
            .max_by(|a, b| {
                a.1.total_cmp(&b.1)
                    .then(table.entries[b.0].trust.cmp(&table.entries[a.0].trust))
                    .then(b.0.cmp(&a.0))
            })
            .map(|(i, _, sim)| judge.candidate(&table.entries[i], None, sim))
    }

    /// The configured default, whoever offers it (the operator named it).
    fn default_candidate(
        &self,
        table: &Table,
        need: &Need,
        available: &dyn Fn(&Entry) -> bool,
    ) -> Option<Candidate> {
        let id = self.config.default.as_ref()?;
        let judge = self.judge(need, false, available);
        table
            .lookup(id)
            .map(|e| judge.candidate(e, None, f32::NAN))
            .find(|c| c.eligible)
    }
}

pub fn kind_fits(entry: &Entry, need: &Need) -> bool {
    need.accepts(&entry.capability)
}

#[cfg(test)]
mod tests;
