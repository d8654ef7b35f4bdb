//! Other nodes' capabilities as this node routes them. Their vectors are
//! computed here from the texts they announce (description, domain, topics,
//! examples), with this node's embedder and routing settings, so a node can
//! place its capabilities only where its own words put them. The vector a
//! node announced is checked against those texts: a node whose vector its
//! texts do not explain is reported as refuted (the mesh drops it).
//!
//! Work is bounded: texts are embedded once per change of a capability (the
//! results are kept while the capability is), at most [`TEXTS_PER_BUILD`]
//! per table build in small batches (requests' own embeddings interleave),
//! trusted and long-known nodes first; what is left waits for the next
//! build, at least `REMOTE_BUILD_GAP` later, so other nodes' texts take at most
//! a bounded share of the embedder however many are announced.

use std::collections::HashMap;
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::capability::CapabilityId;
use crate::config::RoutingConfig;
use crate::embed::Embedder;
use crate::mesh::OriginState;
use crate::routing::{Entry, Trust, capability_prototypes, capability_vector, explained, fit};

/// Most texts embedded for other nodes' capabilities per table build.
pub const TEXTS_PER_BUILD: usize = 256;
/// Texts per call to the embedder.
const BATCH: usize = 32;
/// Least [`explained`] score of an announced vector by its own texts. Honest
/// vectors are built from exactly the texts announced and score about 1
/// (quantisation costs about 1e-4); a vector made for other texts scores
/// below (at most 0.965 over all pairs of CLINC150's intents:
/// `cargo bench --bench vector_check`).
pub const MIN_EXPLAINED: f32 = 0.97;

/// What was computed for one capability of another node.
#[derive(Clone)]
enum Checked {
    Routable {
        vector: Vec<f32>,
        prototypes: Vec<Vec<f32>>,
        reference: Option<f32>,
    },
    /// Its announced vector is not explained by its texts.
    Refuted,
}

/// The remote entries ready for a table, and what is left.
pub struct Prepared {
    pub entries: Vec<Entry>,
    /// Entries still waiting for their texts to be embedded.
    pub pending: usize,
    /// Nodes (base58) with a capability whose announced vector its texts do
    /// not explain, newly found in this build, with the capability and score.
    pub refuted: Vec<(String, CapabilityId, f32)>,
}

/// Computed vectors of other nodes' capabilities, kept while they are
/// announced unchanged.
#[derive(Default)]
pub struct Verifier {
    memo: HashMap<(String, CapabilityId), ([u8; 32], Checked)>,
}

/// What identifies an announcement's content: its texts and announced vector.
fn digest(entry: &Entry) -> [u8; 32] {
    let c = &entry.capability;
    let mut h = Sha256::new();
    h.update(c.profile_text().as_bytes());
    for e in &c.examples {
        h.update([0]);
        h.update(e.as_bytes());
    }
    h.update([1]);
    for x in &entry.vector {
        h.update(x.to_le_bytes());
    }
    h.finalize().into()
}

impl Verifier {
    /// Prepares `remote` (entries as announced) for the table: trust set from
    /// `trusted` (base58 PeerIds) and `members` (a closed mesh), vectors
    /// computed here, refuted ones left out. Ordered by trust, then by how
    /// long this node has known their node, then by PeerId: the order ties
    /// are broken in.
    pub async fn prepare(
        &mut self,
        remote: &[Entry],
        origins: &[OriginState],
        trusted: &std::collections::HashSet<String>,
        members: bool,
        embedder: &Embedder,
        routing: &RoutingConfig,
    ) -> Result<Prepared, crate::embed::Error> {
        let since: HashMap<String, Instant> = origins
            .iter()
            .map(|o| (o.peer.to_base58(), o.since))
            .collect();
        let trust = |node: &str| {
            if trusted.contains(node) {
                Trust::Allowed
            } else if members {
                Trust::Member
            } else {
                Trust::Stranger
            }
        };
        let mut order: Vec<&Entry> = remote.iter().collect();
        order.sort_by(|a, b| {
            trust(&a.node)
                .cmp(&trust(&b.node))
                // Known nodes first (`None` would sort before `Some`),
                // the longest known first, as `exec` orders copies of an id.
                .then((!since.contains_key(&a.node)).cmp(&!since.contains_key(&b.node)))
                .then(since.get(&a.node).cmp(&since.get(&b.node)))
                .then(a.node.cmp(&b.node))
        });

        // Which entries need their texts embedded, within the budget.
        let digests: Vec<[u8; 32]> = order.iter().map(|e| digest(e)).collect();
        let mut todo: Vec<usize> = Vec::new();
        let mut texts: Vec<String> = Vec::new();
        let mut pending = 0;
        for (i, e) in order.iter().enumerate() {
            let key = (e.node.clone(), e.capability.id.clone());
            if self.memo.get(&key).is_some_and(|(d, _)| *d == digests[i]) {
                continue;
            }
            let needed = 1 + e.capability.examples.len();
            if texts.len() + needed > TEXTS_PER_BUILD {
                pending += 1;
                continue;
            }
            texts.push(e.capability.profile_text());
            texts.extend(e.capability.examples.iter().cloned());
            todo.push(i);
        }
        let mut vectors: Vec<Vec<f32>> = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(BATCH) {
            vectors.extend(embedder.embed(chunk.to_vec()).await?.vectors);
        }
        if vectors.len() != texts.len() {
            return Err(crate::embed::Error::Output(
                "fewer vectors than texts".into(),
            ));
        }

        let mut refuted = Vec::new();
        let mut next = vectors.into_iter();
        for i in todo {
            let e = order[i];
            let profile = next.next().unwrap_or_default();
            let examples: Vec<Vec<f32>> = next.by_ref().take(e.capability.examples.len()).collect();
            let score = explained(&e.vector, &examples, &profile);
            let checked = if score >= MIN_EXPLAINED {
                let w = routing.description_weight;
                Checked::Routable {
                    vector: capability_vector(&examples, &profile, w),
                    prototypes: capability_prototypes(&examples, &profile, w, routing.prototypes),
                    reference: fit::reference(&examples, &profile, w),
                }
            } else {
                refuted.push((e.node.clone(), e.capability.id.clone(), score));
                Checked::Refuted
            };
            self.memo.insert(
                (e.node.clone(), e.capability.id.clone()),
                (digests[i], checked),
            );
        }

        // Keep what is still announced; drop the rest.
        let announced: std::collections::HashSet<(&str, &CapabilityId)> = order
            .iter()
            .map(|e| (e.node.as_str(), &e.capability.id))
            .collect();
        self.memo
            .retain(|(node, id), _| announced.contains(&(node.as_str(), id)));

        let entries = order
            .iter()
            .zip(&digests)
            .filter_map(|(e, d)| {
                let (held, checked) = self.memo.get(&(e.node.clone(), e.capability.id.clone()))?;
                if held != d {
                    return None; // waiting for its new texts to be embedded
                }
                let Checked::Routable {
                    vector,
                    prototypes,
                    reference,
                } = checked
                else {
                    return None;
                };
                Some(Entry {
                    vector: vector.clone(),
                    prototypes: prototypes.clone(),
                    reference: *reference,
                    trust: trust(&e.node),
                    ..(*e).clone()
                })
            })
            .collect();
        Ok(Prepared {
            entries,
            pending,
            refuted,
        })
    }
}
