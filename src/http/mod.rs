//! The OpenAI-compatible HTTP facade (axum). [`app`] builds the router from an
//! [`AppState`]. Handlers only parse requests and render answers: what runs a
//! request is the core ([`crate::exec`]), which peers' requests go through too.

mod agent;
mod audio;
mod body;
mod error;
mod info;
mod intent;
mod mcp;
mod openai;
mod render;
mod serve;
mod tools;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub use body::{ClientAddr, Gates};
pub use error::{ApiError, ApiJson, ApiObject, ChatObject};
pub use serve::serve;

use crate::config::HttpConfig;
use crate::exec::Core;
use crate::metrics::{RequestLabels, RouteLabel};

/// Everything handlers need, cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub http: HttpConfig,
    /// Bounds on request bodies and on requests run at once.
    pub gates: Gates,
    /// `http.api_keys`, hashed.
    pub keys: ApiKeys,
    /// What runs requests.
    pub core: Core,
    /// This node's PeerId (base58).
    pub node_id: String,
    /// This node's display name.
    pub node_name: String,
    /// Unix seconds at start, reported as `created` of models.
    pub started_unix: u64,
    pub started: Instant,
    /// Ends what outlives a request (`/mcp` sessions) when the node stops.
    pub cancel: tokio_util::sync::CancellationToken,
    /// `/mcp` sessions, counted and expired.
    pub mcp_sessions: Arc<crate::mcp::sessions::Sessions>,
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Unix time now, in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The API's router with all middleware.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/v1/chat/completions", post(openai::chat))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/audio/transcriptions", post(audio::transcriptions))
        .route("/v1/models", get(info::models))
        .route("/v1/models/{*id}", get(info::model))
        .route("/v1/route", post(info::route))
        .route("/v1/tools", get(tools::list))
        .route("/v1/tool/execute", post(tools::execute))
        .route("/v1/intent", post(intent::intent))
        .route("/v1/agent/invoke", post(agent::invoke))
        .route("/v1/mesh/capabilities", get(info::capabilities))
        .route("/v1/mesh/peers", get(info::peers))
        .route("/v1/mesh/revocations", post(info::revoke))
        .route("/metrics", get(info::metrics))
        .merge(
            Router::new()
                .nest_service(
                    "/mcp",
                    crate::mcp::server::service(
                        mcp::MeshTools(state.core.clone()),
                        state.mcp_sessions.clone(),
                        !state.http.listen.ip().is_loopback(),
                        state.http.max_body_bytes,
                        state.cancel.child_token(),
                    ),
                )
                .layer(middleware::from_fn_with_state(state.clone(), mcp::gate)),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .merge(api)
        .route("/health", get(info::health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Bodies are read by the extractors, within the node's own limits.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            ApiError::internal("handler", "panicked").into_response()
        }))
        .with_state(state)
}

async fn not_found(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!("Unknown request URL: {method} {}.", uri.path()),
    )
    .code("unknown_url")
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        format!("{method} is not allowed on {}.", uri.path()),
    )
    .code("method_not_allowed")
}

/// Bearer-token check when `http.api_keys` is set.
async fn auth(
    State(state): State<AppState>,
    headers: HeaderMap,
    mut req: Request,
    next: Next,
) -> Response {
    let given = match state.keys.check(&headers) {
        Access::Open => return next.run(req).await,
        Access::Granted => {
            req.extensions_mut().insert(body::Keyed);
            return next.run(req).await;
        }
        Access::Denied { given } => given,
    };
    let message = if !given {
        "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
    } else {
        "Incorrect API key provided."
    };
    ApiError::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message)
        .code("invalid_api_key")
        .into_response()
}

/// Whether a request may use the API.
pub(crate) enum Access {
    /// No keys are configured.
    Open,
    Granted,
    /// `given`: a key was sent (a wrong one).
    Denied {
        given: bool,
    },
}

/// The configured API keys, as SHA-256 digests (hashed once, at start).
pub struct ApiKeys(Vec<[u8; 32]>);

impl ApiKeys {
    pub fn new(keys: &[String]) -> Self {
        Self(keys.iter().map(|k| digest(k)).collect())
    }

    /// Checks the `Authorization: Bearer <key>` header (scheme in any case).
    /// The key's digest is compared with every configured one, every byte,
    /// so the time taken tells nothing of a key's length or content.
    pub(crate) fn check(&self, headers: &HeaderMap) -> Access {
        if self.0.is_empty() {
            return Access::Open;
        }
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, key)| key.trim());
        let Some(given) = given else {
            return Access::Denied { given: false };
        };
        let given = digest(given);
        let matched = self.0.iter().fold(0u8, |found, want| {
            let differ = want
                .iter()
                .zip(given.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            found | u8::from(differ == 0)
        });
        if matched == 1 {
            Access::Granted
        } else {
            Access::Denied { given: true }
        }
    }
}

fn digest(key: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(key.as_bytes()).into()
}

/// Counts requests and times them to the response head, by route template.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let started = Instant::now();
    let resp = next.run(req).await;
    state
        .core
        .metrics
        .request_seconds
        .get_or_create(&RouteLabel {
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    state
        .core
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}
