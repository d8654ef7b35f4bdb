//! The composition root: builds every part of a node from its [`Config`] and runs
//! them until shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
use crate::catalog::{self, Catalog};
use crate::config::Config;
use crate::embed::Embedder;
use crate::http::{self, AppState};
use crate::identity;
use crate::metrics::Metrics;
use crate::routing::Router;

/// A running node.
pub struct Node {
    /// Where the HTTP API listens (the real port when configured with port 0).
    pub http_addr: SocketAddr,
    /// This node's PeerId.
    pub peer_id: libp2p::identity::PeerId,
    pub catalog: Catalog,
    app: axum::Router,
    cancel: CancellationToken,
    server: JoinHandle<()>,
}

impl Node {
    /// Starts a node: identity, embedder, backends, route table, HTTP API.
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
        let catalog = catalog::start(
            catalog::Setup {
                configured: config.capabilities.clone(),
                backends: backends.values().cloned().collect(),
                embedder: embedder.clone(),
                routing: config.routing.clone(),
                node_id: peer_id.to_base58(),
                metrics: metrics.clone(),
            },
            cancel.child_token(),
        )
        .await
        .context("building the route table")?;
        let state = AppState::new(http::Inner {
            http: config.http.clone(),
            catalog: catalog.clone(),
            router: Router::new(config.routing.clone()),
            embedder,
            backends,
            metrics,
            node_id: peer_id.to_base58(),
            node_name: config.node.name.clone(),
            started_unix: http::unix_now(),
            started: Instant::now(),
        });
        let listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.http.listen))?;
        let http_addr = listener.local_addr()?;
        let app = http::app(state);
        let stop = cancel.clone();
        let served = app.clone();
        let server = tokio::spawn(async move {
            let serve =
                axum::serve(listener, served).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "http server stopped");
            }
        });
        tracing::info!(%peer_id, http = %http_addr, name = %config.node.name, "node started");
        Ok(Self {
            http_addr,
            peer_id,
            catalog,
            app,
            cancel,
            server,
        })
    }

    /// The HTTP API as a tower service, for in-process calls (`oneshot`).
    pub fn app(&self) -> axum::Router {
        self.app.clone()
    }

    /// Stops accepting requests, lets in-flight ones finish, stops the tasks.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.server.await;
        tracing::info!("node stopped");
    }
}
