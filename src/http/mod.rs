//! The OpenAI-compatible HTTP facade (axum). [`app`] builds the router from an
//! [`AppState`]. Handlers only parse requests and render answers: what runs a
//! request is the core ([`crate::exec`]), which peers' requests go through too.

mod error;
mod info;
mod openai;
mod render;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub use error::{ApiError, ApiJson, ApiObject};

use crate::config::HttpConfig;
use crate::exec::Core;
use crate::metrics::{RequestLabels, RouteLabel};

/// Everything handlers need, cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub http: HttpConfig,
    /// What runs requests.
    pub core: Core,
    /// This node's PeerId (base58).
    pub node_id: String,
    /// This node's display name.
    pub node_name: String,
    /// Unix seconds at start, reported as `created` of models.
    pub started_unix: u64,
    pub started: Instant,
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
    let limit = state.http.max_body_bytes;
    let concurrency = state.http.max_concurrent_requests;
    let api = Router::new()
        .route("/v1/chat/completions", post(openai::chat))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/models", get(info::models))
        .route("/v1/models/{*id}", get(info::model))
        .route("/v1/route", post(info::route))
        .route("/v1/mesh/capabilities", get(info::capabilities))
        .route("/v1/mesh/peers", get(info::peers))
        .route("/metrics", get(info::metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .merge(api)
        .route("/health", get(info::health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(tower::limit::ConcurrencyLimitLayer::new(concurrency))
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
    req: Request,
    next: Next,
) -> Response {
    if state.http.api_keys.is_empty() {
        return next.run(req).await;
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let ok = given.is_some_and(|g| {
        state
            .http
            .api_keys
            .iter()
            .any(|k| constant_time_eq(k.as_bytes(), g.as_bytes()))
    });
    if ok {
        return next.run(req).await;
    }
    let message = if given.is_none() {
        "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
    } else {
        "Incorrect API key provided."
    };
    ApiError::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message)
        .code("invalid_api_key")
        .into_response()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
