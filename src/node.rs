//! The composition root: builds every part of a node from its [`Config`] and runs
//! them until shutdown.
//!
//! Shutdown order matters: the HTTP server stops taking requests, the mesh task
//! announces the withdrawal of this node's routes, and only then does the
//! network stop (it flushes what is queued before closing connections).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
use crate::catalog::{self, Catalog};
use crate::config::{Config, MeshConfig};
use crate::embed::Embedder;
use crate::exec::{self, Core};
use crate::http::{self, AppState};
use crate::identity;
use crate::mesh;
use crate::metrics::Metrics;
use crate::network;
use crate::routing::Router;

struct MeshTasks {
    mesh: JoinHandle<()>,
    network: JoinHandle<()>,
    network_cancel: CancellationToken,
}

/// A running node.
pub struct Node {
    /// Where the HTTP API listens (the real port when configured with port 0).
    pub http_addr: SocketAddr,
    /// This node's PeerId.
    pub peer_id: libp2p::identity::PeerId,
    pub catalog: Catalog,
    /// The network handle, when the node is part of a mesh.
    pub network: Option<network::Client>,
    app: axum::Router,
    cancel: CancellationToken,
    server: JoinHandle<()>,
    /// The catalog's probes and owner, and the loops serving peers' requests:
    /// they end with `cancel`.
    tasks: Vec<JoinHandle<()>>,
    mesh: Option<MeshTasks>,
}

impl Node {
    /// Starts a node: identity, embedder, backends, mesh, route table, HTTP API.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        config.validate()?;
        let data_dir = config.data_dir();
        let keypair = identity::load_or_create(&data_dir)?;
        let peer_id = identity::peer_id(&keypair);
        let embed_config = config.embedder.clone();
        let embedder = tokio::task::spawn_blocking(move || Embedder::load(&embed_config))
            .await
            .context("embedder loading task")??;
        let mut backends = HashMap::new();
        for b in &config.backends {
            let backend = Backend::new(b.clone()).map_err(anyhow::Error::msg)?;
            backends.insert(b.name.clone(), backend);
        }
        let metrics = Arc::new(Metrics::default());
        let cancel = CancellationToken::new();

        let (local_tx, local_rx) = watch::channel(Arc::new(Vec::new()));
        let (intents_tx, intents_rx) = mpsc::channel(mesh::INBOUND_CAPACITY);
        let (refuted_tx, refuted_rx) = mpsc::channel(mesh::REFUTED_CAPACITY);
        let loads = Arc::new(crate::balance::Loads::default());
        let (link, mesh_tasks) = start_mesh(
            &config,
            &keypair,
            embedder.dim(),
            &metrics,
            MeshChannels {
                local: local_rx,
                intents: intents_tx,
                refuted: refuted_rx,
                loads: loads.clone(),
            },
            &cancel,
        )?
        .unzip();
        let trusted: std::collections::HashSet<String> = trusted_peers(&config)
            .iter()
            .map(|p| p.to_base58())
            .collect();

        let tools = crate::mcp::Servers::start(&config.mcp, &cancel);
        let (catalog, mut tasks) = catalog::start(
            catalog::Setup {
                configured: config.capabilities.clone(),
                agents: config.agents.clone(),
                backends: backends.values().cloned().collect(),
                embedder: embedder.clone(),
                routing: config.routing.clone(),
                node_id: peer_id.to_base58(),
                metrics: metrics.clone(),
                local_out: local_tx,
                remote: link.as_ref().map(|l: &exec::Mesh| l.view.clone()),
                trusted,
                members: link.as_ref().is_some_and(|l| l.gate.is_some()),
                refuted: link.is_some().then_some(refuted_tx),
                tools: tools.clone(),
            },
            cancel.child_token(),
        )
        .await
        .context("building the route table")?;
        let core = Core::new(exec::Parts {
            node_id: peer_id.to_base58(),
            node_name: config.node.name.clone(),
            catalog: catalog.clone(),
            router: Router::new(config.routing.clone()),
            embedder,
            backends,
            metrics,
            request_timeout: config.http.request_timeout,
            mesh: link.clone(),
            balancer: crate::balance::Balancer::new(config.balance.clone(), loads),
            tools,
            media: exec::media::Limits {
                max_bytes: config.http.max_media_bytes,
                private_links: config.http.private_image_links,
            },
            agents: config
                .agents
                .iter()
                .map(|a| (a.id.to_string(), Arc::new(a.clone())))
                .collect(),
        });
        if let Some(client) = link.as_ref().map(|l| &l.client) {
            let per_peer = config.mesh.as_ref().map_or(1, |m| m.peer_requests);
            let rate = Arc::new(exec::PeerRate::new(
                config.mesh.as_ref().map_or(1, |m| m.peer_rate),
            ));
            tasks.push(tokio::spawn(exec::serve_intents(
                core.clone(),
                client.clone(),
                intents_rx,
                per_peer,
                rate.clone(),
                cancel.child_token(),
            )));
            let incoming = client.accept_streams(crate::wire::STREAM_PROTOCOL)?;
            tasks.push(tokio::spawn(exec::serve_streams(
                core.clone(),
                incoming,
                rate.clone(),
                cancel.child_token(),
            )));
            let uploads = exec::Uploads::new(&config.http, core.metrics.clone());
            let incoming = client.accept_streams(crate::wire::UPLOAD_PROTOCOL)?;
            tasks.push(tokio::spawn(exec::serve_uploads(
                core.clone(),
                incoming,
                rate.clone(),
                uploads,
                cancel.child_token(),
            )));
            let incoming = client.accept_streams(crate::wire::TOOL_PROTOCOL)?;
            tasks.push(tokio::spawn(exec::serve_tools(
                core.clone(),
                incoming,
                rate,
                cancel.child_token(),
            )));
        }
        let mcp_sessions = crate::mcp::sessions::Sessions::new(
            crate::mcp::sessions::Limit {
                max: config.http.mcp_sessions,
                per_client: config.http.mcp_sessions_per_client,
                idle: config.http.mcp_session_idle,
            },
            core.metrics.clone(),
            cancel.child_token(),
        );
        let state = AppState::new(http::Inner {
            mcp_sessions,
            http: config.http.clone(),
            gates: http::Gates::new(&config.http, core.metrics.clone()),
            keys: http::ApiKeys::new(&config.http.api_keys),
            core,
            node_id: peer_id.to_base58(),
            node_name: config.node.name.clone(),
            started_unix: http::unix_now(),
            started: Instant::now(),
            cancel: cancel.clone(),
        });
        let listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.http.listen))?;
        let http_addr = listener.local_addr()?;
        let app = http::app(state);
        let stop = cancel.clone();
        let served = app.clone();
        let server = tokio::spawn(http::serve(
            listener,
            served,
            config.http.header_timeout,
            stop,
        ));
        tracing::info!(%peer_id, http = %http_addr, name = %config.node.name, mesh = config.mesh.is_some(), "node started");
        Ok(Self {
            http_addr,
            peer_id,
            catalog,
            network: link.map(|l| l.client),
            app,
            cancel,
            server,
            tasks,
            mesh: mesh_tasks,
        })
    }

    /// The HTTP API as a tower service, for in-process calls (`oneshot`).
    pub fn app(&self) -> axum::Router {
        self.app.clone()
    }

    /// Stops accepting requests, lets in-flight ones finish, withdraws this
    /// node's routes from the mesh, then stops the network.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.server.await;
        for task in self.tasks {
            let _ = task.await;
        }
        if let Some(m) = self.mesh {
            let _ = m.mesh.await;
            m.network_cancel.cancel();
            let _ = m.network.await;
        }
        tracing::info!("node stopped");
    }
}

/// The PeerIds of `mesh.trusted` (checked when the config was loaded).
fn trusted_peers(config: &Config) -> std::collections::HashSet<libp2p::PeerId> {
    config
        .mesh
        .iter()
        .flat_map(|m| &m.trusted)
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// What the mesh task exchanges with the rest of the node.
struct MeshChannels {
    local: watch::Receiver<Arc<Vec<crate::routing::Entry>>>,
    intents: mpsc::Sender<mesh::Inbound>,
    refuted: mpsc::Receiver<String>,
    /// This node's load and what other nodes advertise (see `balance::load`).
    loads: Arc<crate::balance::Loads>,
}

/// Starts the network and the mesh task, when the config has a mesh: the
/// core's way into the mesh, and the tasks to stop on shutdown.
fn start_mesh(
    config: &Config,
    keypair: &libp2p::identity::Keypair,
    dim: usize,
    metrics: &Arc<Metrics>,
    channels: MeshChannels,
    cancel: &CancellationToken,
) -> anyhow::Result<Option<(exec::Mesh, MeshTasks)>> {
    let Some(mesh_config) = &config.mesh else {
        return Ok(None);
    };
    let node_name = &config.node.name;
    let gate = crate::member::load(
        mesh_config,
        &config.data_dir(),
        keypair.public().to_peer_id(),
    )?
    .map(Arc::new);
    if let Some(gate) = &gate {
        tracing::info!(roles = ?gate.own().roles, revocations = gate.revocations(), "closed mesh: only members are heard");
    }
    let network_cancel = CancellationToken::new();
    let swarm_key = match &mesh_config.swarm_key {
        Some(path) => Some(crate::member::files::read_swarm_key(
            &crate::config::expand_home(path),
        )?),
        None => None,
    };
    let transports = |addrs| match swarm_key {
        Some(_) => MeshConfig::tcp_only(addrs),
        None => addrs,
    };
    if let Some(key) = &swarm_key {
        tracing::info!(fingerprint = %key.fingerprint(), "private network: only peers with the same swarm key connect");
    }
    let net_config = network::Config {
        listen: transports(MeshConfig::addrs(&mesh_config.listen)?),
        bootstrap: transports(MeshConfig::addrs(&mesh_config.bootstrap)?),
        external: transports(MeshConfig::addrs(&mesh_config.external)?),
        mdns: mesh_config.mdns,
        node_name: node_name.clone(),
        dim,
        idle_timeout: mesh_config.idle_timeout,
        metrics: metrics.clone(),
        gate: gate.clone(),
        swarm_key,
    };
    let (client, events, network_task) =
        network::spawn(keypair, net_config, network_cancel.clone())?;
    let (view, lookups, mesh_task) = mesh::start(
        mesh::Setup {
            key: keypair.clone(),
            client: client.clone(),
            events,
            local: channels.local,
            node_name: node_name.clone(),
            ttl: mesh_config.ttl,
            dim,
            metrics: metrics.clone(),
            intents: channels.intents,
            trusted: trusted_peers(config),
            refuted: channels.refuted,
            loads: channels.loads,
            certificate: gate.as_ref().map(|g| g.certificate().clone()),
        },
        cancel.child_token(),
    );
    let tasks = MeshTasks {
        mesh: mesh_task,
        network: network_task,
        network_cancel,
    };
    Ok(Some((
        exec::Mesh {
            client,
            lookups,
            view,
            gate,
            trusted: Arc::new(trusted_peers(config)),
        },
        tasks,
    )))
}
