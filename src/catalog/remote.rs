//! Other nodes' capabilities as this node routes them. Their vectors are
//! computed here from the texts they announce (description, domain, topics,
//! examples), with this node's embedder and routing settings, so a node can
//! place its capabilities only where its own words put them. The vector a
//! node announced is checked against those texts: a node whose vector its
//! texts do not explain is reported as refuted (the mesh drops it).
//!
//! Work is bounded: texts are embedded once per change of a capability (the
//! results are kept while the capability is), at most [`TEXTS_PER_BUILD`]
//! per table build and for at most [`EMBED_TIME_PER_BUILD`], in rounds of a
//! few capabilities (requests' own embeddings interleave), protected origins
//! (connected, allow-listed) first; what is left waits for the next build,
//! at least as long after as the last build took, so other nodes' texts take
//! at most about half of the embedder however many are announced.

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
/// Most texts per call to the embedder (whole capabilities: a call with one
/// capability of more texts is made alone). The time limit is checked
/// between calls.
const ROUND: usize = 64;
/// Longest a table build spends embedding other nodes' texts (checked
/// between calls). With the owner's gap between builds at least as long
/// as the build before, other nodes' texts take at most about half of the
/// embedder's time, whatever their count and length.
const EMBED_TIME_PER_BUILD: std::time::Duration = std::time::Duration::from_millis(1000);
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

/// The vectors of `texts`, one each, in order.
async fn embed_all(
    embedder: &Embedder,
    texts: Vec<String>,
) -> Result<Vec<Vec<f32>>, crate::embed::Error> {
    if texts.is_empty() {
        return Ok(Vec::new());
    }
    let n = texts.len();
    let vectors = embedder.embed(texts).await?.vectors;
    if vectors.len() != n {
        return Err(crate::embed::Error::Output(
            "fewer vectors than texts".into(),
        ));
    }
    Ok(vectors)
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

        // Which entries need their texts embedded, within the budget:
        // protected origins (connected, heard directly, allow-listed) before
        // the rest, so keys a relay brings by the hundred cannot delay them.
        let digests: Vec<[u8; 32]> = order.iter().map(|e| digest(e)).collect();
        let protected: std::collections::HashSet<String> = origins
            .iter()
            .filter(|o| o.protected)
            .map(|o| o.peer.to_base58())
            .collect();
        let mut first: Vec<usize> = (0..order.len()).collect();
        first.sort_by_key(|&i| !protected.contains(&order[i].node));
        let mut todo: Vec<usize> = Vec::new();
        let mut budget = TEXTS_PER_BUILD;
        let mut pending = 0;
        for i in first {
            let e = order[i];
            let key = (e.node.clone(), e.capability.id.clone());
            if self.memo.get(&key).is_some_and(|(d, _)| *d == digests[i]) {
                continue;
            }
            let needed = 1 + e.capability.examples.len();
            if needed > budget {
                pending += 1;
                continue;
            }
            budget -= needed;
            todo.push(i);
        }

        // A round of whole capabilities at a time, descriptions and examples
        // in separate calls (a batch is padded to its longest text: a long
        // description would make every short example cost as much), until
        // the time is up.
        let started = Instant::now();
        let mut done: Vec<(usize, Vec<f32>, Vec<Vec<f32>>)> = Vec::with_capacity(todo.len());
        let mut rounds = todo.iter().copied().peekable();
        while rounds.peek().is_some() {
            if started.elapsed() >= EMBED_TIME_PER_BUILD {
                pending += rounds.count();
                break; // the rest waits for the next build
            }
            let mut round: Vec<usize> = Vec::new();
            let (mut profiles, mut examples) = (Vec::new(), Vec::new());
            while let Some(&i) = rounds.peek() {
                let c = &order[i].capability;
                let texts = profiles.len() + examples.len();
                if texts > 0 && texts + 1 + c.examples.len() > ROUND {
                    break;
                }
                profiles.push(c.profile_text());
                examples.extend(c.examples.iter().cloned());
                round.push(i);
                rounds.next();
            }
            let profiles = embed_all(embedder, profiles).await?;
            let mut examples = embed_all(embedder, examples).await?.into_iter();
            for (i, profile) in round.into_iter().zip(profiles) {
                let n = order[i].capability.examples.len();
                done.push((i, profile, examples.by_ref().take(n).collect()));
            }
        }

        let mut refuted = Vec::new();
        for (i, profile, examples) in done {
            let e = order[i];
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::time::Duration;

    use libp2p::PeerId;

    use super::*;
    use crate::capability::{Capability, Source};
    use crate::config::EmbedderConfig;

    fn peer(seed: u8) -> PeerId {
        libp2p::identity::Keypair::ed25519_from_bytes([seed; 32])
            .expect("key")
            .public()
            .to_peer_id()
    }

    /// One capability of `node` with 16 examples (17 texts to embed), whose
    /// announced vector its texts do not explain: checking it refutes it.
    fn announced(node: PeerId) -> Entry {
        Entry {
            capability: Arc::new(Capability {
                domain: "camelids".into(),
                description: "Advice on raising llamas".into(),
                examples: (0..16).map(|i| format!("llama question {i}")).collect(),
                ..Capability::new(
                    "herd/advice".parse().expect("id"),
                    crate::capability::Kind::chat(),
                    Source::Remote,
                    "",
                    "",
                )
            }),
            node: node.to_base58(),
            local: false,
            available: true,
            vector: vec![0.0; 384],
            prototypes: Vec::new(),
            reference: None,
            trust: Trust::Stranger,
        }
    }

    #[tokio::test]
    async fn a_connected_origin_is_checked_before_a_relay_s_many_older_keys() {
        let embedder = Embedder::load(&EmbedderConfig {
            threads: 1,
            cache_entries: 0,
            ..Default::default()
        })
        .expect("model fetched by scripts/fetch-model.sh");
        let now = Instant::now();
        // 20 relayed origins known for longer, then a connected newcomer
        // whose PeerId is not the lowest: by seniority and PeerId alone it
        // would wait behind all of them (one build takes 15 of these).
        let mut origins: Vec<OriginState> = (1..=20)
            .map(|i| OriginState {
                peer: peer(i),
                node_name: format!("relayed-{i}"),
                seq: 1,
                received: now,
                since: now - Duration::from_secs(60),
                capabilities: 1,
                protected: false,
            })
            .collect();
        let connected = peer(99);
        origins.push(OriginState {
            peer: connected,
            node_name: "connected".into(),
            seq: 1,
            received: now,
            since: now,
            capabilities: 1,
            protected: true,
        });
        let remote: Vec<Entry> = origins.iter().map(|o| announced(o.peer)).collect();
        let prepared = Verifier::default()
            .prepare(
                &remote,
                &origins,
                &HashSet::new(),
                false,
                &embedder,
                &RoutingConfig::default(),
            )
            .await
            .expect("prepare");
        assert!(prepared.pending > 0, "the budget left some waiting");
        assert!(
            prepared
                .refuted
                .iter()
                .any(|(node, _, _)| *node == connected.to_base58()),
            "the connected origin was checked in the first build"
        );
    }
}
