//! `/mcp`: the node as an MCP server for every tool it can call (its own,
//! whatever their `share`, since its clients may call them, and those other
//! nodes announce), through the request core's tool calls. Its sessions are
//! a budget ([`crate::mcp::sessions`]); without API keys, a node listening
//! beyond loopback serves `/mcp` to loopback clients only, unless
//! `http.open_mcp`.

use std::future::Future;
use std::pin::Pin;

use serde_json::{Map, Value};

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::body::holder_of;
use super::{ApiError, AppState};
use crate::budget::{Holder, Refusal, Standing};
use crate::exec::{Core, ToolOutcome, refusal_message};
use crate::mcp::server::{Called, Offered, ToolHost};
use crate::mcp::sessions::Sessions;

/// The request core as `/mcp` sees it.
#[derive(Clone)]
pub struct MeshTools(pub Core);

impl ToolHost for MeshTools {
    fn offered(&self) -> Vec<Offered> {
        let core = &self.0;
        let names = core.node_names();
        let table = core.catalog.table();
        let mut offered: Vec<Offered> = table
            .entries()
            .iter()
            .filter(|e| e.capability.kind.category() == "tool")
            .map(|e| {
                let c = &e.capability;
                let node_name = names
                    .get(&e.node)
                    .cloned()
                    .unwrap_or_else(|| e.node.clone());
                Offered {
                    tool: c.id.name().to_owned(),
                    node_name,
                    node: e.node.clone(),
                    description: c.description.clone(),
                    input_schema: c.input_schema.clone(),
                    address: format!("{}@{}", c.id, e.node),
                }
            })
            .collect();
        offered.sort_by(|a, b| (&a.tool, &a.node).cmp(&(&b.tool, &b.node)));
        offered
    }

    fn call(
        &self,
        address: String,
        arguments: Map<String, Value>,
    ) -> Pin<Box<dyn Future<Output = Called> + Send>> {
        let core = self.0.clone();
        Box::pin(async move {
            let copies = core.tool_copies(&address).map_err(|e| e.message)?;
            let answer = core
                .call_tool(copies, arguments)
                .await
                .map_err(|e| e.message)?;
            match answer.outcome {
                // `isError` results too: the tool ran and says it failed.
                ToolOutcome::Result { result, .. } => Ok(result),
                ToolOutcome::Refused { status, body } => Err(refusal_message(status, &body)),
            }
        })
    }
}

/// Who may use `/mcp`, and a place for the session an `initialize` (a POST
/// without `Mcp-Session-Id`) opens.
pub async fn gate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (holder, standing) = holder_of(&req);
    let keyless_stranger = state.http.api_keys.is_empty()
        && !state.http.open_mcp
        && matches!(holder, Holder::Addr(_))
        && standing == Standing::Stranger;
    if keyless_stranger {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            "This node serves /mcp beyond loopback only with an API key (http.api_keys), or when http.open_mcp is set.",
        )
        .code("mcp_needs_key")
        .into_response();
    }
    let opens = req.method() == Method::POST && !req.headers().contains_key("mcp-session-id");
    if !opens {
        return next.run(req).await;
    }
    match state.mcp_sessions.admit(holder, standing) {
        Ok(place) => Sessions::opening(place, next.run(req)).await,
        Err(refusal) => {
            let message = match refusal {
                Refusal::Holder => format!(
                    "This client has {} /mcp sessions open, as many as one client may; close one (DELETE /mcp) or let one idle out ({} s).",
                    state.http.mcp_sessions_per_client,
                    state.http.mcp_session_idle.as_secs()
                ),
                Refusal::Strangers | Refusal::Node => format!(
                    "The node has as many /mcp sessions open as it may ({}); try again when one closes or idles out.",
                    state.http.mcp_sessions
                ),
            };
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message)
                .code("too_many_sessions")
                .into_response()
        }
    }
}
