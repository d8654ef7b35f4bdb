//! Prometheus metrics, served as text at `GET /metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route template, e.g. `/v1/chat/completions` (never the raw path: bounded).
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `matched`, `default`, `no_fit` or `explicit`.
    pub outcome: String,
    pub capability: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendErrorLabels {
    pub backend: String,
    /// `unreachable`, `timeout`, `bad_response`, `status`, `stream`.
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerRefusalLabels {
    /// PeerId (base58), or `other` past [`MAX_LABELLED_PEERS`].
    pub peer: String,
    /// `peer_over_quota`, `stream_refused`, `capability_not_shared`.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetLabel {
    /// One of the node's budgets ([`crate::budget`]; README "Budgets").
    pub budget: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetRefusalLabels {
    pub budget: String,
    /// `holder` (its share), `strangers` (theirs together) or `node`.
    pub reason: String,
}

/// Peers that get their own label in `atmosphere_peer_refusals_total`; the
/// rest are counted as `other` (fresh keys cost nothing to make).
pub const MAX_LABELLED_PEERS: usize = 1024;

/// All of the node's metrics, registered once.
pub struct Metrics {
    pub registry: Registry,
    /// Metrics libp2p keeps itself (gossipsub: messages dropped for a bad
    /// envelope, mesh sizes, score penalties), registered when the swarm is
    /// built, under `atmosphere_libp2p_`.
    libp2p: parking_lot::Mutex<Registry>,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<RouteLabel, Histogram>,
    pub decisions: Family<DecisionLabels, Counter>,
    pub decision_seconds: Histogram,
    pub embed_seconds: Histogram,
    pub backend_errors: Family<BackendErrorLabels, Counter>,
    pub capabilities: Gauge,
    pub gossip_updates: Family<ResultLabel, Counter>,
    pub syncs: Family<ResultLabel, Counter>,
    pub peers: Gauge,
    pub remote_origins: Gauge,
    pub remote_refusals: Family<ResultLabel, Counter>,
    pub forwards: Family<ResultLabel, Counter>,
    /// Peers' forwarded requests refused, by peer and reason.
    pub peer_refusals: Family<PeerRefusalLabels, Counter>,
    labelled_peers: parking_lot::Mutex<std::collections::HashSet<String>>,
    /// Provider lookups in the DHT when nothing local fitted, by result.
    pub lookups: Family<ResultLabel, Counter>,
    pub membership: Family<ResultLabel, Counter>,
    /// Agent runs of this node's agents, by how they ended.
    pub agent_runs: Family<ResultLabel, Counter>,
    /// Connections closed because the peer stopped answering pings.
    pub dead_connections: Counter,
    /// Route tables built (index included): on local or mesh changes only.
    pub table_builds: Counter,
    /// What each budget has handed out now, in its unit.
    pub budget_held: Family<BudgetLabel, Gauge>,
    /// Takes from a budget refused, by budget and reason.
    pub budget_refusals: Family<BudgetRefusalLabels, Counter>,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    // 50 us .. ~105 s
    exponential_buckets(0.00005, 2.0, 22)
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("atmosphere");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests served", requests.clone());
        let request_seconds = Family::<RouteLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        registry.register(
            "http_request_duration_seconds",
            "Time to the response head",
            request_seconds.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "routing_decisions",
            "Routing decisions by outcome",
            decisions.clone(),
        );
        let decision_seconds = Histogram::new(latency_buckets());
        registry.register(
            "routing_decision_duration_seconds",
            "Time for an auto decision (embed and score)",
            decision_seconds.clone(),
        );
        let embed_seconds = Histogram::new(latency_buckets());
        registry.register(
            "embed_duration_seconds",
            "Time to embed one request's texts",
            embed_seconds.clone(),
        );
        let backend_errors = Family::<BackendErrorLabels, Counter>::default();
        registry.register(
            "backend_errors",
            "Failed backend calls",
            backend_errors.clone(),
        );
        let capabilities = Gauge::default();
        registry.register(
            "capabilities",
            "Capabilities in the route table",
            capabilities.clone(),
        );
        let syncs = Family::<ResultLabel, Counter>::default();
        registry.register(
            "sync",
            "Table syncs, by result (answered, received, failed, invalid_request, invalid_update, busy)",
            syncs.clone(),
        );
        let gossip_updates = Family::<ResultLabel, Counter>::default();
        registry.register(
            "gossip_updates",
            "Route updates received by gossip or sync, by outcome (accepted, duplicate, stale, invalid, ...)",
            gossip_updates.clone(),
        );
        let peers = Gauge::default();
        registry.register("peers", "Connected peers", peers.clone());
        let remote_origins = Gauge::default();
        registry.register(
            "remote_origins",
            "Other nodes whose routes are held",
            remote_origins.clone(),
        );
        let remote_refusals = Family::<ResultLabel, Counter>::default();
        registry.register(
            "remote_refusals",
            "Other nodes' routes refused or dropped after passing the wire checks, by reason (vector_mismatch, relay_full, table_full, evicted)",
            remote_refusals.clone(),
        );
        let forwards = Family::<ResultLabel, Counter>::default();
        registry.register(
            "forwards",
            "Requests forwarded to other nodes, by result (ok, failed, served, unreachable, overloaded, timeout, ...; failover: a request moved on to its next provider, on another node or another backend of this one)",
            forwards.clone(),
        );
        let peer_refusals = Family::<PeerRefusalLabels, Counter>::default();
        registry.register(
            "peer_refusals",
            "Peers' forwarded requests refused, by peer (the first 1024 peers; then `other`) and reason",
            peer_refusals.clone(),
        );
        let lookups = Family::<ResultLabel, Counter>::default();
        registry.register(
            "capability_lookups",
            "DHT provider lookups made because nothing known fitted a request, by result (found, nothing_new, no_providers, skipped)",
            lookups.clone(),
        );
        let membership = Family::<ResultLabel, Counter>::default();
        registry.register(
            "membership",
            "In a closed mesh, peers' hellos and origins' certificates checked, and revocations, by result (member, no_certificate, bad_certificate, wrong_peer, expired, revoked, no_hello, revocation_new, revocation_known, revocation_invalid)",
            membership.clone(),
        );
        let agent_runs = Family::<ResultLabel, Counter>::default();
        registry.register(
            "agent_runs",
            "Runs of this node's agents, by how they ended (answered, agent_step_limit, agent_bad_tool_call, agent_tool_not_offered, agent_model_error, agent_timeout, or the error code that stopped them)",
            agent_runs.clone(),
        );
        let dead_connections = Counter::default();
        registry.register(
            "dead_connections",
            "Connections closed because the peer stopped answering pings (cut off, crashed host)",
            dead_connections.clone(),
        );
        let table_builds = Counter::default();
        registry.register(
            "route_table_builds",
            "Route tables built, index included (on a change of this node's or the mesh's capabilities, not on refreshes)",
            table_builds.clone(),
        );
        let budget_held = Family::<BudgetLabel, Gauge>::default();
        registry.register(
            "budget_held",
            "What each budget (README \"Budgets\") has handed out now, in its unit (slots, bytes, sessions)",
            budget_held.clone(),
        );
        let budget_refusals = Family::<BudgetRefusalLabels, Counter>::default();
        registry.register(
            "budget_refusals",
            "Takes from a budget refused, by budget and reason (holder: its own share; strangers: strangers' share together; node: all of it)",
            budget_refusals.clone(),
        );
        Self {
            budget_held,
            budget_refusals,
            registry,
            libp2p: parking_lot::Mutex::new(Registry::with_prefix("atmosphere_libp2p")),
            dead_connections,
            table_builds,
            forwards,
            peer_refusals,
            labelled_peers: parking_lot::Mutex::default(),
            lookups,
            membership,
            agent_runs,
            gossip_updates,
            syncs,
            peers,
            remote_origins,
            remote_refusals,
            requests,
            request_seconds,
            decisions,
            decision_seconds,
            embed_seconds,
            backend_errors,
            capabilities,
        }
    }
}

impl Metrics {
    /// The text exposition format.
    pub fn encode(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        let libp2p = self.libp2p.lock();
        let written = encode_registry(&mut out, &self.registry)
            .and_then(|()| encode_registry(&mut out, &libp2p))
            .and_then(|()| encode_eof(&mut out));
        if written.is_err() {
            out.clear();
        }
        out
    }

    /// Lends the registry for libp2p's own metrics (used once, when the
    /// swarm is built).
    pub fn with_libp2p_registry<T>(&self, register: impl FnOnce(&mut Registry) -> T) -> T {
        let mut libp2p = self.libp2p.lock();
        register(&mut libp2p)
    }

    pub fn gossip(&self, result: &str) {
        self.gossip_updates
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    pub fn sync(&self, result: &str) {
        self.syncs
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    pub fn remote_refusal(&self, reason: &str) {
        self.remote_refusals
            .get_or_create(&ResultLabel {
                result: reason.to_owned(),
            })
            .inc();
    }

    /// Counts an agent run that ended as `result`.
    pub fn agent_run(&self, result: &str) {
        self.agent_runs
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    pub fn forward(&self, result: &str) {
        self.forwards
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Counts a refusal of one of `peer`'s requests.
    pub fn peer_refusal(&self, peer: &libp2p::PeerId, reason: &str) {
        let peer = peer.to_base58();
        let peer = {
            let mut labelled = self.labelled_peers.lock();
            if labelled.contains(&peer) || labelled.len() < MAX_LABELLED_PEERS {
                labelled.insert(peer.clone());
                peer
            } else {
                "other".to_owned()
            }
        };
        self.peer_refusals
            .get_or_create(&PeerRefusalLabels {
                peer,
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The gauge of what budget `budget` has handed out (kept by the
    /// budget: set on every take, not looked up each time).
    pub fn budget_gauge(&self, budget: &str) -> Gauge {
        self.budget_held
            .get_or_create(&BudgetLabel {
                budget: budget.to_owned(),
            })
            .clone()
    }

    /// Counts a take from `budget` refused for `reason`.
    pub fn budget_refusal(&self, budget: &str, reason: &str) {
        self.budget_refusals
            .get_or_create(&BudgetRefusalLabels {
                budget: budget.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn member(&self, result: &str) {
        self.membership
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    pub fn lookup(&self, result: &str) {
        self.lookups
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    pub fn backend_error(&self, backend: &str, error: &str) {
        self.backend_errors
            .get_or_create(&BackendErrorLabels {
                backend: backend.to_owned(),
                error: error.to_owned(),
            })
            .inc();
    }
}
