//! From a validated request to a backend's answer: resolve the model (exact id or
//! `auto` by meaning), send the request to the capability's backend, relay the
//! answer with the route headers, and turn every failure into an OpenAI error.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Map, Value};

use super::{ApiError, AppState, sse};
use crate::backend::{self, Op};
use crate::capability::CapabilityId;
use crate::metrics::DecisionLabels;
use crate::routing::{self, Decision, Entry, Need, Outcome};

/// Largest non-streamed response body accepted from a backend.
pub(super) const MAX_BACKEND_BODY: usize = 64 * 1024 * 1024;

/// The pseudo-model that asks the node to route by meaning.
pub const AUTO: &str = "auto";

/// Where a request goes, and why.
pub struct Target {
    pub entry: Arc<Entry>,
    /// Routing score for `auto`; `None` for an explicit model.
    pub score: Option<f32>,
    /// Where to go if `entry`'s node cannot be reached, best first.
    pub fallbacks: Vec<(Arc<Entry>, Option<f32>)>,
}

/// Whether an entry can be used now (its backend answers).
pub fn available(state: &AppState) -> impl Fn(&Entry) -> bool + '_ {
    move |e: &Entry| {
        (!e.local && e.available)
            || e.local
                && state
                    .backends
                    .get(&e.capability.backend)
                    .is_some_and(|b| b.is_available())
    }
}

/// Embeds the texts and ranks capabilities; records the decision's metrics.
///
/// When nothing known fits well enough (no match above the threshold) and the
/// node is part of a mesh, it asks the DHT who provides the kind the request
/// needs (and the domain of the closest miss), fetches the routes of providers
/// it did not know, and ranks again (`protocols/kad.md`).
pub async fn decide(
    state: &AppState,
    texts: Vec<String>,
    need: Need,
) -> Result<Decision, ApiError> {
    let started = Instant::now();
    let embedded = state.embedder.embed(texts).await?;
    state
        .metrics
        .embed_seconds
        .observe(started.elapsed().as_secs_f64());
    let query = routing::query_vector(&embedded.vectors);
    let rank = || {
        let table = state.catalog.table();
        state.router.decide(&table, &query, need, &available(state))
    };
    let mut decision = rank();
    if decision.outcome != Outcome::Matched
        && need == Need::Text
        && let Some(lookups) = &state.lookups
    {
        let mut wanted = crate::mesh::Wanted::kind(crate::capability::Kind::chat().as_str());
        if let Some(near) = decision.candidates.iter().find(|c| c.eligible) {
            wanted = wanted.and_domain(&near.domain);
        }
        let found = lookups.discover(wanted).await;
        if found.changed
            && state
                .catalog
                .caught_up(found.generation, crate::mesh::LOOKUP_WAIT)
                .await
        {
            decision = rank();
        }
    }
    state
        .metrics
        .decision_seconds
        .observe(started.elapsed().as_secs_f64());
    let outcome = match decision.outcome {
        Outcome::Matched => "matched",
        Outcome::Default => "default",
        Outcome::General => "general",
        Outcome::NoFit => "no_fit",
    };
    state
        .metrics
        .decisions
        .get_or_create(&DecisionLabels {
            outcome: outcome.into(),
            capability: decision
                .chosen
                .as_ref()
                .map_or_else(String::new, |c| c.id.to_string()),
        })
        .inc();
    Ok(decision)
}

/// Resolves `model` to a capability; `texts` gives the text to route by for `auto`.
pub async fn resolve(
    state: &AppState,
    model: &str,
    need: Need,
    texts: impl FnOnce() -> Result<Vec<String>, ApiError>,
) -> Result<Target, ApiError> {
    if model == AUTO {
        let decision = decide(state, texts()?, need).await?;
        let fallbacks = decision
            .candidates
            .iter()
            .filter(|c| c.eligible && c.fits)
            .filter(|c| {
                decision
                    .chosen
                    .as_ref()
                    .is_none_or(|ch| ch.id != c.id || ch.node != c.node)
            })
            .filter_map(|c| Some((c.entry.clone()?, Some(c.score))))
            .collect();
        return match decision.chosen {
            Some(c) => Ok(Target {
                score: Some(c.score).filter(|s| s.is_finite()),
                entry: c
                    .entry
                    .ok_or_else(|| ApiError::internal("route", "candidate without entry"))?,
                fallbacks,
            }),
            None => Err(no_fit(&decision)),
        };
    }
    let id: CapabilityId = model
        .parse()
        .map_err(|_| ApiError::model_not_found(model))?;
    let table = state.catalog.table();
    let mut matches = table.lookup(&id).peekable();
    let first = matches
        .peek()
        .cloned()
        .cloned()
        .ok_or_else(|| ApiError::model_not_found(model))?;
    let fits = |e: &Entry| match need {
        Need::Text => e.capability.kind.answers_text(),
        Need::Any => true,
    };
    if !fits(&first) {
        return Err(ApiError::invalid(
            "model",
            format!(
                "The model `{model}` is a {} capability and cannot answer this request.",
                first.capability.kind
            ),
        )
        .code("wrong_capability_kind"));
    }
    let up = available(state);
    let all: Vec<Arc<Entry>> = std::iter::once(first.clone())
        .chain(matches.skip(1).cloned())
        .collect();
    let mut usable = all.iter().filter(|e| up(e)).cloned();
    let entry = usable.next().unwrap_or(first);
    let fallbacks = usable.map(|e| (e, None)).collect();
    state
        .metrics
        .decisions
        .get_or_create(&DecisionLabels {
            outcome: "explicit".into(),
            capability: id.to_string(),
        })
        .inc();
    Ok(Target {
        entry,
        score: None,
        fallbacks,
    })
}

fn no_fit(decision: &Decision) -> ApiError {
    let best = decision
        .candidates
        .iter()
        .find(|c| c.eligible)
        .map(|c| match c.cutoff {
            Some(cutoff) => format!(
                " The closest was `{}` at {:.3}, below the {cutoff:.3} it needs.",
                c.id, c.score
            ),
            None => format!(" The closest was `{}` at {:.3}.", c.id, c.score),
        })
        .unwrap_or_default();
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!(
            "No capability fits this request well enough.{best} Name a model explicitly, or configure routing.default."
        ),
    )
    .param("model")
    .code("no_capability_fits")
}

/// Sends the body to the target's backend and relays the answer.
pub async fn dispatch(
    state: &AppState,
    target: Target,
    op: Op,
    body: Map<String, Value>,
    stream: bool,
) -> Result<Response, ApiError> {
    if !target.entry.local {
        return super::mesh::forward(state, target, op, body, stream).await;
    }
    let entry = &target.entry;
    let backend = state
        .backends
        .get(&entry.capability.backend)
        .cloned()
        .ok_or_else(|| {
            ApiError::internal(
                "dispatch",
                format!("no backend {}", entry.capability.backend),
            )
        })?;
    let deadline = state.http.request_timeout;
    let sent =
        tokio::time::timeout(deadline, backend.send(op, &entry.capability.model, body)).await;
    let resp = match sent {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            state.metrics.backend_error(backend.name(), error_label(&e));
            return Err(e.into());
        }
        Err(_) => {
            state.metrics.backend_error(backend.name(), "timeout");
            return Err(backend::Error::Timeout {
                backend: backend.name().to_owned(),
            }
            .into());
        }
    };
    let status = resp.status();
    let is_sse = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    let mut out = if status.is_success() && stream && is_sse {
        let metrics = state.metrics.clone();
        let name = backend.name().to_owned();
        let relay = sse::relay(Box::pin(resp.bytes_stream()), move |end| {
            if let sse::End::Failed(code) = end {
                metrics.backend_error(
                    &name,
                    if code == "backend_stream_error" {
                        "stream"
                    } else {
                        "bad_response"
                    },
                );
            }
        });
        sse_response(Body::from_stream(relay))
    } else {
        let bytes = tokio::time::timeout(deadline, backend::read_limited(resp, MAX_BACKEND_BODY))
            .await
            .map_err(|_| {
                state.metrics.backend_error(backend.name(), "timeout");
                ApiError::from(backend::Error::Timeout {
                    backend: backend.name().to_owned(),
                })
            })?
            .map_err(|message| {
                state.metrics.backend_error(backend.name(), "bad_response");
                ApiError::from(backend::Error::BadResponse {
                    backend: backend.name().to_owned(),
                    message,
                })
            })?;
        checked_body(state, backend.name(), status, stream, bytes)?
    };
    route_headers(&mut out, entry, target.score);
    Ok(out)
}

fn error_label(e: &backend::Error) -> &'static str {
    match e {
        backend::Error::Unreachable { .. } => "unreachable",
        backend::Error::Timeout { .. } => "timeout",
        backend::Error::Unsupported { .. } => "unsupported",
        _ => "bad_response",
    }
}

/// Passes a backend's JSON answer through unchanged, or explains why not.
fn checked_body(
    state: &AppState,
    backend: &str,
    status: reqwest::StatusCode,
    stream: bool,
    bytes: bytes::Bytes,
) -> Result<Response, ApiError> {
    let bad = |label: &str, message: String| {
        state.metrics.backend_error(backend, label);
        ApiError::from(backend::Error::BadResponse {
            backend: backend.to_owned(),
            message,
        })
    };
    if !status.is_success() {
        // A backend's own OpenAI-shaped error (e.g. a 400 for a bad parameter) is
        // the most useful answer the client can get: pass it on.
        #[derive(serde::Deserialize)]
        struct ErrorBody {
            #[allow(dead_code)]
            error: Map<String, Value>,
        }
        if status.is_client_error() && serde_json::from_slice::<ErrorBody>(&bytes).is_ok() {
            state.metrics.backend_error(backend, "status");
            let code = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            return Ok(json_response(code, bytes));
        }
        return Err(bad("status", format!("HTTP {status}")));
    }
    // Validate without building a tree: the bytes go out unchanged.
    let object = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
        && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok();
    match (object, stream) {
        (true, false) => Ok(json_response(StatusCode::OK, bytes)),
        (true, true) => Err(bad(
            "bad_response",
            "answered a streaming request without streaming".into(),
        )),
        (false, _) => Err(bad("bad_response", "the body is not a JSON object".into())),
    }
}

/// An SSE response around a body of events, unbuffered by proxies.
pub(super) fn sse_response(body: Body) -> Response {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

pub(super) fn json_response(status: StatusCode, bytes: bytes::Bytes) -> Response {
    let mut r = Response::new(Body::from(bytes));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub(super) fn route_headers(r: &mut Response, entry: &Entry, score: Option<f32>) {
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(entry.capability.id.as_str()) {
        h.insert("x-atmosphere-route", v);
    }
    if let Ok(v) = HeaderValue::from_str(&entry.node) {
        h.insert("x-atmosphere-node", v);
    }
    let score = score.map_or_else(|| "1.0000".to_owned(), |s| format!("{s:.4}"));
    if let Ok(v) = HeaderValue::from_str(&score) {
        h.insert("x-atmosphere-score", v);
    }
}
