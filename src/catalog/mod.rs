//! The node's own capabilities: from the config and from backend discovery,
//! embedded and published as the route [`Table`] that requests read.
//!
//! One task owns the capability list and the embedding cache. Probe tasks (one
//! per backend) list models periodically and report them; the owner rebuilds the
//! table only when something changed, embeds only texts it has not seen, builds
//! the index off the async runtime and swaps the new table in atomically, so
//! readers never wait.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, Discovered};
use crate::capability::{Capability, Source};
use crate::config::{CapabilityConfig, RoutingConfig};
use crate::embed::Embedder;
use crate::metrics::Metrics;
use crate::routing::{Entry, Table, capability_prototypes, capability_vector, fit};

mod local;
mod remote;

pub use remote::{MIN_EXPLAINED, TEXTS_PER_BUILD};

/// Least time between two table builds for other nodes' changes: changes
/// arriving sooner, and capabilities left waiting for their texts to be
/// embedded, are taken by one build at the end of the gap. The gap grows to
/// the last build's own time, so builds take at most half of the owner's.
const REMOTE_BUILD_GAP: Duration = Duration::from_millis(500);

/// Probe reports waiting for the owner; one per backend per refresh, so small.
const UPDATE_CAPACITY: usize = 64;

/// Longest the first discovery round may hold up start-up.
const FIRST_ROUND_LIMIT: Duration = Duration::from_secs(5);

/// Shared, lock-free view of the current route table.
#[derive(Clone)]
pub struct Catalog {
    table: Arc<ArcSwap<Table>>,
    /// Generation of the mesh view the current table was built from.
    remote_generation: watch::Receiver<u64>,
}

impl Catalog {
    pub fn table(&self) -> Arc<Table> {
        self.table.load_full()
    }

    /// Waits (at most `limit`) until the table holds the mesh view `generation`
    /// or a later one; says whether it does.
    pub async fn caught_up(&self, generation: u64, limit: Duration) -> bool {
        let mut rx = self.remote_generation.clone();
        tokio::time::timeout(limit, rx.wait_for(|g| *g >= generation))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

struct Update {
    backend: String,
    /// The backend's models, when it lists them; `None`: only its
    /// availability may have changed.
    found: Option<Vec<Discovered>>,
}

/// Everything the owner needs.
pub struct Setup {
    pub configured: Vec<CapabilityConfig>,
    /// This node's agents (`[[agent]]`).
    pub agents: Vec<crate::config::AgentConfig>,
    pub backends: Vec<Arc<Backend>>,
    pub embedder: Embedder,
    pub routing: RoutingConfig,
    pub node_id: String,
    pub metrics: Arc<Metrics>,
    /// Receives this node's entries as the mesh is told of them (texts
    /// clipped, vectors built from what is told) whenever they change.
    pub local_out: watch::Sender<Arc<Vec<Entry>>>,
    /// Other nodes' entries, when the node is part of a mesh.
    pub remote: Option<watch::Receiver<crate::mesh::View>>,
    /// PeerIds (base58) of the nodes this one trusts (`mesh.trusted`).
    pub trusted: std::collections::HashSet<String>,
    /// Whether the mesh is closed: every other node whose routes are held
    /// showed a certificate of the mesh key (trust `member`).
    pub members: bool,
    /// Where nodes whose announced vectors their texts do not explain are
    /// reported (the mesh drops them).
    pub refuted: Option<mpsc::Sender<String>>,
    /// The node's MCP servers, whose tools are capabilities too.
    pub tools: crate::mcp::Servers,
}

/// Builds the first table (config capabilities plus one discovery round, bounded
/// by [`FIRST_ROUND_LIMIT`]) and starts the probes and the owner task; their
/// handles come back with the catalog (they end when `cancel` is).
pub async fn start(
    setup: Setup,
    cancel: CancellationToken,
) -> Result<(Catalog, Vec<tokio::task::JoinHandle<()>>), crate::embed::Error> {
    // Embedded once: what generic requests score is measured against it.
    let background = setup.embedder.embed(fit::background_texts()).await?;
    // Subscribed before the first build reads the tools: a change after
    // that read is seen by `run`, however soon it comes.
    let tools_changed = setup.tools.subscribe();
    let mut owner = Owner {
        tools_changed,
        background: Arc::new(fit::Background::new(&background.vectors)),
        discovered: BTreeMap::new(),
        cache: HashMap::new(),
        local: Arc::new(Vec::new()),
        remote_generation: watch::channel(0).0,
        verifier: remote::Verifier::default(),
        pending: false,
        last_build: std::time::Instant::now(),
        gap: REMOTE_BUILD_GAP,
        setup,
    };
    let first = futures::future::join_all(owner.setup.backends.iter().map(|b| {
        let b = b.clone();
        async move {
            let found = tokio::time::timeout(FIRST_ROUND_LIMIT, probe_once(&b)).await;
            (b.name().to_owned(), found.ok().flatten())
        }
    }))
    .await;
    for (backend, found) in first {
        if let Some(found) = found {
            owner.discovered.insert(backend, found);
        }
    }
    owner.build_local().await?;
    let (table, generation) = owner.assemble().await?;
    if let Some(generation) = generation {
        owner.remote_generation.send_replace(generation);
    }
    let catalog = Catalog {
        table: Arc::new(ArcSwap::from_pointee(table)),
        remote_generation: owner.remote_generation.subscribe(),
    };
    let (tx, rx) = mpsc::channel(UPDATE_CAPACITY);
    let mut tasks: Vec<_> = owner
        .setup
        .backends
        .iter()
        .map(|backend| {
            tokio::spawn(probe_loop(
                backend.clone(),
                tx.clone(),
                cancel.child_token(),
            ))
        })
        .collect();
    drop(tx);
    tasks.push(tokio::spawn(owner.run(catalog.clone(), rx, cancel)));
    Ok((catalog, tasks))
}

/// Lists a backend's models when it discovers, or just checks it answers.
/// `None` means nothing new is known (down, or not discovering).
async fn probe_once(backend: &Backend) -> Option<Vec<Discovered>> {
    match backend.discover().await {
        Ok(found) if backend.config.discover => Some(found),
        Ok(_) => None,
        Err(e) => {
            tracing::debug!(backend = backend.name(), error = %e, "probe failed");
            None
        }
    }
}

async fn probe_loop(backend: Arc<Backend>, tx: mpsc::Sender<Update>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(backend.config.refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first round ran at start
    let mut was_up = backend.is_available();
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let found = probe_once(&backend).await;
        let up = backend.is_available();
        if found.is_none() && up == was_up {
            continue;
        }
        was_up = up;
        let update = Update {
            backend: backend.name().to_owned(),
            found,
        };
        if tx.send(update).await.is_err() {
            return;
        }
    }
}

struct Owner {
    setup: Setup,
    /// Changes of the MCP servers' tools.
    tools_changed: watch::Receiver<u64>,
    /// Last list per discovering backend (kept while a backend is down, so its
    /// capabilities stay known and are marked unavailable, not removed).
    discovered: BTreeMap<String, Vec<Discovered>>,
    /// Embeddings of capability texts, pruned to what the table uses.
    cache: HashMap<String, Vec<f32>>,
    /// This node's entries as last built.
    local: Arc<Vec<Entry>>,
    /// The generic background requests, embedded.
    background: Arc<fit::Background>,
    /// Generation of the mesh view in the table last built (sent once the
    /// table is stored).
    remote_generation: watch::Sender<u64>,
    /// Other nodes' capabilities, their vectors computed here.
    verifier: remote::Verifier,
    /// Whether other nodes' changes wait for a build.
    pending: bool,
    /// When the table was last built.
    last_build: std::time::Instant,
    /// Least time before the next build for other nodes' changes:
    /// [`REMOTE_BUILD_GAP`], or the last build's time if longer.
    gap: Duration,
}

impl Owner {
    async fn run(
        mut self,
        catalog: Catalog,
        mut rx: mpsc::Receiver<Update>,
        cancel: CancellationToken,
    ) {
        let mut probes_alive = true;
        let mut tools = self.tools_changed.clone();
        loop {
            let remote_changed = async {
                match self.setup.remote.as_mut() {
                    Some(r) => r.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            let pending = self.pending;
            let due = tokio::time::Instant::from_std(self.last_build + self.gap);
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep_until(due), if pending => {}
                u = rx.recv(), if probes_alive => {
                    // No probes (no backends) or all stopped: keep following the mesh.
                    let Some(update) = u else {
                        probes_alive = false;
                        continue;
                    };
                    if let Some(found) = update.found
                        && self.discovered.get(&update.backend) != Some(&found)
                    {
                        tracing::info!(backend = %update.backend, models = found.len(), "backend's models changed");
                        self.discovered.insert(update.backend, found);
                    }
                    if !self.rebuilt_local().await {
                        continue;
                    }
                }
                // A tool's server came, went or changed its tools (the
                // sender lives as long as `setup.tools`).
                Ok(()) = tools.changed() => {
                    if !self.rebuilt_local().await {
                        continue;
                    }
                }
                ok = remote_changed => {
                    if !ok {
                        self.setup.remote = None;
                    } else if let Some(remote) = &self.setup.remote
                        && !self.pending
                        && remote.borrow().generation == *self.remote_generation.borrow()
                    {
                        // Only the origins changed (a refresh repeating what
                        // it said): the table already holds these entries.
                        continue;
                    } else if self.last_build.elapsed() < self.gap {
                        self.pending = true;
                        continue;
                    }
                }
            }
            let built = self.assemble().await;
            self.gap = REMOTE_BUILD_GAP.max(self.last_build.elapsed());
            match built {
                Ok((table, generation)) => {
                    catalog.table.store(Arc::new(table));
                    if let Some(generation) = generation {
                        self.remote_generation.send_replace(generation);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not rebuild the route table; keeping the old one")
                }
            }
        }
    }

    fn capabilities(&self) -> Vec<Capability> {
        local::capabilities(
            &self.setup.configured,
            &self.setup.agents,
            &self.discovered,
            &self.setup.tools,
        )
    }

    /// [`Owner::build_local`], saying whether the table must be built again
    /// (errors are logged: the old entries stay).
    async fn rebuilt_local(&mut self) -> bool {
        match self.build_local().await {
            Ok(changed) => changed,
            Err(e) => {
                tracing::warn!(error = %e, "could not rebuild this node's capabilities; keeping the old ones");
                false
            }
        }
    }

    /// Recomputes this node's entries (embedding only new texts) and hands them
    /// to the mesh when they changed; says whether they did.
    async fn build_local(&mut self) -> Result<bool, crate::embed::Error> {
        let caps = self.capabilities();
        // What the mesh is told differs where texts are clipped or examples
        // left out; its vectors are built from what is told.
        let told: Vec<Capability> = caps.iter().map(crate::mesh::announced).collect();
        let mut wanted: Vec<String> = Vec::new();
        for c in caps.iter().chain(&told) {
            wanted.push(c.profile_text());
            wanted.extend(c.examples.iter().cloned());
        }
        let missing: Vec<String> = {
            let mut seen = std::collections::HashSet::new();
            wanted
                .iter()
                .filter(|t| !self.cache.contains_key(*t) && seen.insert(t.as_str()))
                .cloned()
                .collect()
        };
        if !missing.is_empty() {
            let out = self.setup.embedder.embed(missing.clone()).await?;
            self.cache.extend(missing.into_iter().zip(out.vectors));
        }
        let keep: std::collections::HashSet<&String> = wanted.iter().collect();
        self.cache.retain(|k, _| keep.contains(k));

        let mut entries: Vec<Entry> = Vec::with_capacity(caps.len());
        let mut wire: Vec<Entry> = Vec::with_capacity(caps.len());
        for (capability, told) in caps.into_iter().zip(told) {
            // Every text was embedded above; a miss would mean the embedder
            // returned fewer vectors than texts, so skip rather than guess.
            let Some(entry) = self.entry(capability) else {
                continue;
            };
            let told = if told == *entry.capability {
                Some(entry.clone())
            } else {
                self.entry(told)
            };
            wire.extend(told);
            entries.push(entry);
        }
        let changed = entries.len() != self.local.len()
            || entries.iter().zip(self.local.iter()).any(|(a, b)| {
                a.capability != b.capability || a.available != b.available || a.vector != b.vector
            });
        if changed {
            self.local = Arc::new(entries);
            self.setup.local_out.send_replace(Arc::new(wire));
        }
        Ok(changed)
    }

    /// This node's entry for a capability whose texts are embedded.
    fn entry(&self, capability: Capability) -> Option<Entry> {
        let Some(profile) = self.cache.get(&capability.profile_text()) else {
            tracing::warn!(capability = %capability.id, "no embedding for its profile; left out");
            return None;
        };
        let examples: Vec<Vec<f32>> = capability
            .examples
            .iter()
            .filter_map(|t| self.cache.get(t).cloned())
            .collect();
        let available = match capability.source {
            Source::Tool => capability.backends.iter().any(|s| self.setup.tools.up(s)),
            // An agent can always try (its model and tools are found per run).
            Source::Agent => true,
            _ => self
                .setup
                .backends
                .iter()
                .filter(|b| capability.backends.iter().any(|n| n == b.name()))
                .any(|b| b.is_available()),
        };
        let weight = self.setup.routing.description_weight;
        Some(Entry {
            vector: capability_vector(&examples, profile, weight),
            prototypes: capability_prototypes(
                &examples,
                profile,
                weight,
                self.setup.routing.prototypes,
            ),
            reference: fit::reference(&examples, profile, weight),
            trust: crate::routing::Trust::Local,
            node: self.setup.node_id.clone(),
            local: true,
            available,
            capability: Arc::new(capability),
        })
    }

    /// The table of local and remote entries (index built off the runtime),
    /// and the mesh view's generation when every remote entry of it is in.
    async fn assemble(&mut self) -> Result<(Table, Option<u64>), crate::embed::Error> {
        self.last_build = std::time::Instant::now();
        let mut entries: Vec<Entry> = self.local.as_ref().clone();
        let mut generation = Some(0);
        if let Some(remote) = &self.setup.remote {
            let view = remote.borrow().clone();
            let prepared = self
                .verifier
                .prepare(
                    &view.entries,
                    &view.origins,
                    &self.setup.trusted,
                    self.setup.members,
                    &self.setup.embedder,
                    &self.setup.routing,
                )
                .await?;
            for (node, id, score) in prepared.refuted {
                tracing::warn!(%node, capability = %id, explained = score, "announced vector does not match the capability's texts; the node's routes are dropped");
                self.setup.metrics.remote_refusal("vector_mismatch");
                if let Some(tx) = &self.setup.refuted {
                    let _ = tx.try_send(node);
                }
            }
            self.pending = prepared.pending > 0;
            if self.pending {
                tracing::debug!(
                    waiting = prepared.pending,
                    "other nodes' capabilities wait for their texts to be embedded"
                );
            }
            entries.extend(prepared.entries);
            generation = (!self.pending).then_some(view.generation);
        }
        self.setup.metrics.capabilities.set(entries.len() as i64);
        self.setup.metrics.table_builds.inc();
        let background = self.background.clone();
        let table = tokio::task::spawn_blocking(move || Table::calibrated(entries, &background))
            .await
            .map_err(|e| crate::embed::Error::Runtime(format!("index build: {e}")))?;
        tracing::info!(
            capabilities = table.len(),
            index = table.index_name(),
            "route table built"
        );
        Ok((table, generation))
    }
}
