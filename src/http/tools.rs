//! `GET /v1/tools` (every tool the node can reach) and
//! `POST /v1/tool/execute` (a call, run where the tool lives).

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::{ApiError, ApiObject, AppState};
use crate::capability::{CapabilityId, Share, Source};
use crate::exec::{ToolAnswer, ToolOutcome};
use crate::routing::{Need, Outcome};

/// This node's MCP tools (with their server, whether it is connected, who
/// may call them, and why a tool is not offered when its schema is not
/// valid), then the tools other nodes announce. `name` (`tool@PeerId`) is what
/// `/v1/tool/execute` takes.
pub async fn list(State(state): State<AppState>) -> Json<Value> {
    let core = &state.core;
    let table = core.catalog.table();
    let mut data: Vec<Value> = core
        .tools
        .tools()
        .into_iter()
        .map(|t| {
            // Its capability, unless it is left out (a schema that is not
            // JSON Schema, or an id another capability has).
            let offered = CapabilityId::sanitized("tool", &t.name)
                .ok()
                .and_then(|id| {
                    table
                        .lookup(&id)
                        .find(|e| e.local && e.capability.source == Source::Tool)
                        .map(|e| e.capability.clone())
                });
            let mut v = json!({
                "object": "tool",
                "name": format!("{}@{}", t.name, core.node_id),
                "tool": t.name,
                "capability": offered.as_ref().map(|c| &c.id),
                "kind": offered.as_ref().map(|c| &c.kind),
                "server": t.server,
                "node": core.node_id,
                "node_name": core.node_name,
                "local": true,
                "description": t.description,
                "input_schema": t.input_schema,
                "available": t.available,
                "share": match &t.share {
                    Share::Local => json!("local"),
                    Share::Mesh => json!("mesh"),
                    Share::Peers(peers) => json!(peers),
                },
            });
            if let Some(e) = t.schema_error {
                v["schema_error"] = json!(e);
            }
            v
        })
        .collect();
    let names = core.node_names();
    for e in table.entries().iter().filter(|e| !e.local) {
        let c = &e.capability;
        if c.kind.category() != "tool" {
            continue;
        }
        let node_name = names.get(&e.node).cloned().unwrap_or_default();
        data.push(json!({
            "object": "tool",
            "name": format!("{}@{}", c.id.name(), e.node),
            "tool": c.id.name(),
            "capability": c.id,
            "kind": c.kind,
            "node": e.node,
            "node_name": node_name,
            "local": false,
            "description": c.description,
            "input_schema": c.input_schema,
            "available": e.available,
        }));
    }
    Json(json!({"object": "list", "data": data}))
}

/// `POST /v1/tool/execute`: `{"tool": "name" | "name@node", "arguments":
/// {...}}`, or `{"query": "what to do", "arguments": {...}}` to let the
/// node pick the tool by meaning. Answers `{"result", "is_error",
/// "capability", "node", "latency_ms"}`; a result the tool marked as an
/// error is a 502 `tool_error` carrying the tool's text.
pub async fn execute(State(state): State<AppState>, body: ApiObject) -> Result<Response, ApiError> {
    let started = Instant::now();
    let ApiObject { body, held, .. } = body;
    let arguments = match body.get("arguments") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(a)) => a.clone(),
        Some(_) => {
            return Err(
                ApiError::invalid("arguments", "arguments must be a JSON object.")
                    .code("invalid_arguments"),
            );
        }
    };
    let _slot = state.gates.slot().await?;
    let core = &state.core;
    let (copies, score) = match (body.get("tool"), body.get("query")) {
        (Some(Value::String(tool)), None) => (core.tool_copies(tool)?, None),
        (None, Some(Value::String(query))) if !query.trim().is_empty() => {
            let decision = core
                .decide(vec![query.clone()], Need::Kind("tool/*".into()))
                .await?;
            let chosen = decision
                .chosen
                .filter(|_| decision.outcome == Outcome::Matched)
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::NOT_FOUND,
                        "invalid_request_error",
                        "No tool fits this query well enough; name one with \"tool\".",
                    )
                    .param("query")
                    .code("no_tool_fits")
                })?;
            let copies = core.tool_copies(&format!("{}@{}", chosen.id, chosen.node))?;
            (copies, Some(chosen.score))
        }
        _ => {
            return Err(ApiError::invalid(
                "tool",
                "Send {\"tool\": \"name\" or \"name@node\", \"arguments\": {...}}, or {\"query\": \"...\"} instead of \"tool\".",
            ));
        }
    };
    let answer = core.call_tool(copies, arguments).await?;
    drop(held);
    Ok(render(&state, answer, score, started))
}

/// A tool's answer as the HTTP response, with the headers every routed
/// answer carries.
fn render(state: &AppState, answer: ToolAnswer, score: Option<f32>, started: Instant) -> Response {
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let mut response = match answer.outcome {
        ToolOutcome::Refused { status, body } => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        ToolOutcome::Result {
            result,
            is_error: true,
        } => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "server_error",
            format!(
                "The tool `{}` ran and failed: {}",
                answer.capability,
                text_of(&result)
            ),
        )
        .code("tool_error")
        .into_response(),
        ToolOutcome::Result { result, .. } => Json(json!({
            "object": "tool.result",
            "result": result,
            "is_error": false,
            "capability": answer.capability,
            "node": answer.node,
            "node_name": state.core.node_names().remove(&answer.node).unwrap_or_default(),
            "score": score,
            "latency_ms": latency_ms,
        }))
        .into_response(),
    };
    super::render::route_headers(&mut response, answer.capability.as_str(), &answer.node);
    response
}

/// The text parts of a tool's result, joined and clipped (what a failed
/// tool said).
fn text_of(result: &Value) -> String {
    let text: Vec<&str> = result["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["text"].as_str())
        .collect();
    let text = text.join(" ");
    if text.is_empty() {
        return "it gave no text".into();
    }
    crate::wire::route::clip(&text, 2000)
}
