//! `POST /v1/intent`: a typed intent (`{"type", "domain", "data",
//! "preferences"}`), run on the best capability of its kind.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::{ApiError, ApiObject, AppState};
use crate::exec::{Intent, Locality, parse_intent_kind};

/// Parses the intent, runs it, and answers `{"result", "capability",
/// "node", "node_name", "score", "latency_ms"}` with the capability's own
/// status (a tool's error result or a model's error keeps its status).
pub async fn intent(State(state): State<AppState>, body: ApiObject) -> Result<Response, ApiError> {
    let started = Instant::now();
    let ApiObject { body, held, .. } = body;
    let intent = parse(&body)?;
    let _slot = state.gates.slot().await?;
    let answer = state.core.intent(intent).await?;
    drop(held);
    let node_name = state
        .core
        .node_names()
        .remove(&answer.node)
        .unwrap_or_default();
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = (
        status,
        Json(json!({
            "object": "intent.result",
            "result": answer.result,
            "capability": answer.capability,
            "node": answer.node,
            "node_name": node_name,
            "score": answer.score,
            "latency_ms": started.elapsed().as_secs_f64() * 1000.0,
        })),
    )
        .into_response();
    super::render::route_headers(&mut response, answer.capability.as_str(), &answer.node);
    Ok(response)
}

fn parse(body: &Map<String, Value>) -> Result<Intent, ApiError> {
    let kind = match body.get("type") {
        Some(Value::String(t)) => parse_intent_kind(t)?,
        _ => {
            return Err(ApiError::invalid(
                "type",
                "type must be a capability kind such as \"vision/classify\" or a family such as \"tool/*\".",
            ));
        }
    };
    let domain = match body.get("domain") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(d)) => d.clone(),
        Some(_) => return Err(ApiError::invalid("domain", "domain must be a string.")),
    };
    let data = match body.get("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(d)) => d.clone(),
        Some(_) => return Err(ApiError::invalid("data", "data must be a JSON object.")),
    };
    let empty = Map::new();
    let preferences = match body.get("preferences") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(p)) => p,
        Some(_) => {
            return Err(ApiError::invalid(
                "preferences",
                "preferences must be a JSON object.",
            ));
        }
    };
    let low_latency = match preferences.get("latency") {
        None | Some(Value::Null) => false,
        Some(Value::String(l)) if l == "low" => true,
        Some(Value::String(l)) if l == "any" => false,
        Some(_) => {
            return Err(ApiError::invalid(
                "preferences.latency",
                "latency must be \"low\" or \"any\".",
            ));
        }
    };
    let mut locality = match preferences.get("locality") {
        None | Some(Value::Null) => Locality::Mesh,
        Some(Value::String(l)) if l == "mesh" => Locality::Mesh,
        Some(Value::String(l)) if l == "local" => Locality::Local,
        Some(_) => {
            return Err(ApiError::invalid(
                "preferences.locality",
                "locality must be \"local\" or \"mesh\".",
            ));
        }
    };
    match preferences.get("max_hops") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_u64().is_some_and(|h| h <= 4) => {
            // A request travels at most one hop here: 0 keeps it local.
            if n.as_u64() == Some(0) {
                locality = Locality::Local;
            }
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "preferences.max_hops",
                "max_hops must be an integer from 0 to 4.",
            ));
        }
    }
    Ok(Intent {
        kind,
        domain,
        data,
        locality,
        low_latency,
    })
}
