//! `GET /v1/tools`: the tools of this node's MCP servers.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::AppState;
use crate::capability::Share;

/// Every tool of this node's MCP servers, with its server, its node, its
/// input schema, whether its server is connected now and who may call it.
pub async fn list(State(state): State<AppState>) -> Json<Value> {
    let core = &state.core;
    let data: Vec<Value> = core
        .tools
        .tools()
        .into_iter()
        .map(|t| {
            json!({
                "object": "tool",
                "name": t.name,
                "server": t.server,
                "node": core.node_id,
                "node_name": core.node_name,
                "description": t.description,
                "input_schema": t.input_schema,
                "available": t.available,
                "share": match &t.share {
                    Share::Local => json!("local"),
                    Share::Mesh => json!("mesh"),
                    Share::Peers(peers) => json!(peers),
                },
            })
        })
        .collect();
    Json(json!({"object": "list", "data": data}))
}
