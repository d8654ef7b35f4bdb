//! `POST /v1/agent/invoke`: `{"query", "agent"?, "max_steps"?}` run by an
//! agent (the one named, or the one that fits the query), wherever it
//! lives; answers the final text and every step.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{ApiError, ApiObject, AppState};
use crate::exec::parse_max_steps;

/// Answers `{"object": "agent.run", "agent", "node", "node_name",
/// "answer", "steps", "max_steps", "tools", "usage", "latency_ms"}`; a run
/// that failed answers its error (with `steps`) and status.
pub async fn invoke(State(state): State<AppState>, body: ApiObject) -> Result<Response, ApiError> {
    let started = Instant::now();
    let ApiObject { body, held, .. } = body;
    let query = match body.get("query") {
        Some(Value::String(q)) if !q.trim().is_empty() => q.clone(),
        _ => {
            return Err(ApiError::invalid(
                "query",
                "query must be a non-empty string: what the agent is asked.",
            ));
        }
    };
    let agent = match body.get("agent") {
        None | Some(Value::Null) => None,
        Some(Value::String(a)) if !a.is_empty() => Some(a.clone()),
        Some(_) => {
            return Err(ApiError::invalid(
                "agent",
                "agent must be an agent's id (GET /v1/models lists them).",
            ));
        }
    };
    let max_steps = parse_max_steps(body.get("max_steps"))?;
    drop(held);
    let _slot = state.gates.slot().await?;
    let core = &state.core;
    let run = core
        .invoke_agent(&query, agent.as_deref(), max_steps)
        .await?;
    let node_name = core.node_names().remove(&run.node).unwrap_or_default();
    let status = StatusCode::from_u16(run.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let body = if status.is_success() {
        let b = &run.body;
        json!({
            "object": "agent.run",
            "agent": run.agent,
            "node": run.node,
            "node_name": node_name,
            "answer": b["choices"][0]["message"]["content"],
            "steps": b["steps"],
            "max_steps": b["max_steps"],
            "tools": b["tools"],
            "usage": b["usage"],
            "latency_ms": started.elapsed().as_secs_f64() * 1000.0,
        })
    } else {
        run.body
    };
    let mut response = (status, Json(body)).into_response();
    super::render::route_headers(&mut response, run.agent.as_str(), &run.node);
    Ok(response)
}
