//! Read-only endpoints: models, route explanations, capabilities, health, metrics.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{ApiError, ApiJson, AppState};
use crate::embed::MODEL_ID;
use crate::exec::AUTO;
use crate::routing::{Entry, Need};

fn model_object(state: &AppState, e: &Entry, available: bool) -> Value {
    json!({
        "id": e.capability.id,
        "object": "model",
        "created": state.started_unix,
        "owned_by": if e.local { state.node_name.clone() } else { e.node.clone() },
        "atmosphere": {
            "kind": e.capability.kind,
            "domain": e.capability.domain,
            "description": e.capability.description,
            "node": e.node,
            "local": e.local,
            "available": available,
        }
    })
}

fn pseudo_model(state: &AppState, id: &str, what: &str) -> Value {
    json!({
        "id": id,
        "object": "model",
        "created": state.started_unix,
        "owned_by": state.node_name,
        "atmosphere": {"kind": what, "node": state.node_id, "local": true, "available": true}
    })
}

/// `GET /v1/models`: `auto`, the node's embedder, and every known capability
/// (one per id; the local one if several nodes offer it).
pub async fn models(State(state): State<AppState>) -> Json<Value> {
    let table = state.core.catalog.table();
    let up = state.core.available();
    let mut seen = std::collections::HashSet::new();
    let mut data = vec![
        pseudo_model(&state, AUTO, "router"),
        pseudo_model(&state, MODEL_ID, "llm/embed"),
    ];
    let since = state.core.known_since();
    let mut entries: Vec<_> = table.entries().iter().collect();
    entries.sort_by_key(|e| (!e.local, e.capability.id.clone()));
    for e in entries {
        if seen.insert(e.capability.id.clone()) {
            // The copy the id resolves to (this node's, else the one known longest).
            let copies = table.lookup(&e.capability.id).cloned().collect();
            let chosen = state
                .core
                .order_copies(copies, |n| since.get(n).copied())
                .into_iter()
                .next();
            let e = chosen.as_ref().unwrap_or(e);
            data.push(model_object(&state, e, up(e)));
        }
    }
    Json(json!({"object": "list", "data": data}))
}

/// `GET /v1/models/{id}` (ids contain a slash).
pub async fn model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if id == AUTO {
        return Ok(Json(pseudo_model(&state, AUTO, "router")));
    }
    if id == MODEL_ID {
        return Ok(Json(pseudo_model(&state, MODEL_ID, "llm/embed")));
    }
    let entry = state
        .core
        .copies(&id)?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::model_not_found(&id))?;
    let up = state.core.available()(&entry);
    Ok(Json(model_object(&state, &entry, up)))
}

/// `POST /v1/route`: explains what `auto` would choose, without running it.
/// Body: `{"messages": [...]}` as for chat, or `{"input": "text"}`; optional
/// `"need": "text" | "any"` (default `text`: only kinds that answer chat).
/// With `{"model": "id"}` (or `id@node`) instead, the providers a request
/// for that model would go to. Either way `group` shows the providers that
/// share the request, with the numbers the balancer goes by.
pub async fn route(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<Value>, ApiError> {
    match body.get("model") {
        None => {}
        Some(Value::String(model)) if model != crate::exec::AUTO => {
            let copies = state.core.copies(model)?;
            if copies.is_empty() {
                return Err(ApiError::model_not_found(model));
            }
            let target = state.core.explicit_target(copies);
            return Ok(Json(
                json!({"decision": null, "group": group(&state, target)}),
            ));
        }
        Some(Value::String(_)) => {}
        Some(_) => return Err(ApiError::invalid("model", "model must be a string.")),
    }
    let texts: Vec<String> = if let Some(input) = body.get("input") {
        match input {
            Value::String(s) if !s.trim().is_empty() => vec![s.clone()],
            _ => {
                return Err(ApiError::invalid(
                    "input",
                    "input must be a non-empty string.",
                ));
            }
        }
    } else if body.get("messages").is_some() {
        let map = body.as_object().cloned().unwrap_or_default();
        crate::exec::texts::need_text(crate::exec::texts::chat_texts(&map)?, "messages")?
    } else {
        return Err(ApiError::invalid(
            "input",
            "Send {\"input\": \"text\"} or {\"messages\": [...]}.",
        ));
    };
    let carries = body.as_object().map_or(
        crate::capability::Inputs::TEXT,
        crate::exec::texts::chat_inputs,
    );
    let need = match body.get("need").and_then(Value::as_str) {
        None | Some("text") => Need::Text(carries),
        Some("any") => Need::Any,
        Some(_) => {
            return Err(ApiError::invalid(
                "need",
                "need must be \"text\" or \"any\".",
            ));
        }
    };
    let _slot = state.gates.slot().await?;
    let started = std::time::Instant::now();
    let decision = state.core.decide(texts, need).await?;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let group = state.core.auto_target(&decision).map(|t| group(&state, t));
    let mut decision =
        serde_json::to_value(&decision).map_err(|e| ApiError::internal("route", e))?;
    if let Some(listed) = decision["candidates"].as_array_mut() {
        listed.truncate(state.core.router.config.explain_candidates.max(1));
    }
    Ok(Json(json!({
        "decision": decision,
        "group": group,
        "elapsed_ms": elapsed_ms,
    })))
}

/// How the balancer would order a target's group now, and what follows it.
fn group(state: &AppState, target: crate::exec::Target) -> Value {
    let choice = state.core.balancer.explain(&target.group, None);
    json!({
        "strategy": choice.strategy,
        "reason": choice.reason,
        "members": choice.members,
        "fallbacks": state.core.balancer.members(&target.fallbacks),
    })
}

/// `GET /v1/mesh/peers`: connected peers and this node's listen addresses.
pub async fn peers(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let Some(client) = state.core.mesh.as_ref().map(|m| &m.client) else {
        return Ok(Json(
            json!({"object": "list", "mesh": false, "peer_id": state.node_id, "listen": [], "data": []}),
        ));
    };
    let peers = client
        .peers()
        .await
        .map_err(|e| ApiError::internal("peers", e))?;
    let listen: Vec<String> = client
        .listen_addrs()
        .await
        .map_err(|e| ApiError::internal("listen addrs", e))?
        .iter()
        .map(ToString::to_string)
        .collect();
    let membership = state
        .core
        .mesh
        .as_ref()
        .and_then(|m| m.gate.as_ref())
        .map(|g| {
            json!({
                "authority": crate::config::authority_text(g.authority()),
                "roles": g.own().roles,
                "expires_unix_ms": g.own().expires_ms,
                "revocations": g.revocations(),
            })
        });
    Ok(Json(json!({
        "object": "list",
        "mesh": true,
        "peer_id": state.node_id,
        "listen": listen,
        "membership": membership,
        "data": peers,
    })))
}

/// `POST /v1/mesh/revocations` `{"revocation": "..."}`: takes in a
/// revocation signed by the mesh key (`atmosphere mesh revoke` prints and
/// sends it); the node keeps it, spreads it and drops the node it names.
pub async fn revoke(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let mesh = state.core.mesh.as_ref();
    let (Some(client), Some(gate)) = (mesh.map(|m| &m.client), mesh.and_then(|m| m.gate.as_ref()))
    else {
        return Err(ApiError::invalid(
            "revocation",
            "This node is not in a closed mesh (mesh.authority is not set).",
        )
        .code("not_a_closed_mesh"));
    };
    let refused = |why: String| ApiError::invalid("revocation", why).code("invalid_revocation");
    let text = body
        .get("revocation")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            refused("Send {\"revocation\": \"...\"} as `atmosphere mesh revoke` prints it.".into())
        })?;
    let revocation = crate::member::files::from_text(text)
        .map_err(|e| refused(format!("Not a revocation: {e}.")))?;
    let revoked = revocation
        .revoked(gate.authority())
        .map_err(|e| refused(format!("Not a revocation of this mesh: {e}.")))?;
    let new = client.revoke(revocation).await.map_err(|e| match e {
        crate::network::Error::Revoke(why) => refused(why),
        other => ApiError::internal("revoke", other),
    })?;
    Ok(Json(json!({
        "object": "mesh.revocation",
        "peer_id": revoked.peer.to_base58(),
        "before_unix_ms": revoked.before_ms,
        "new": new,
    })))
}

/// `GET /v1/mesh/capabilities`: every capability in the route table, with the
/// node that offers it and, for other nodes', the age and seq of their update.
pub async fn capabilities(State(state): State<AppState>) -> Json<Value> {
    let table = state.core.catalog.table();
    let up = state.core.available();
    let origins: std::collections::HashMap<String, (u64, u64, String)> = state
        .core
        .origins()
        .iter()
        .map(|o| {
            (
                o.peer.to_base58(),
                (o.seq, o.received.elapsed().as_secs(), o.node_name.clone()),
            )
        })
        .collect();
    let data: Vec<Value> = table
        .entries()
        .iter()
        .map(|e| {
            let c = &e.capability;
            json!({
                "id": c.id,
                "kind": c.kind,
                "domain": c.domain,
                "topics": c.topics,
                "description": c.description,
                "examples": c.examples.len(),
                "inputs": c.inputs,
                "node": e.node,
                "local": e.local,
                "trust": e.trust,
                "available": up(e),
                "source": c.source,
                "backend": if e.local { json!(c.backends.first()) } else { Value::Null },
                "backends": if e.local { json!(c.backends) } else { Value::Null },
                "node_name": if e.local { Some(state.node_name.clone()) } else { origins.get(&e.node).map(|o| o.2.clone()) },
                "seq": origins.get(&e.node).map(|o| o.0),
                "age_secs": origins.get(&e.node).map(|o| o.1),
                // What names this very copy in a request (`model`).
                "address": format!("{}@{}", c.id, e.node),
            })
        })
        .collect();
    Json(json!({"object": "list", "index": table.index_name(), "data": data}))
}

/// `GET /health`: always answers while the node serves; details for operators.
pub async fn health(State(state): State<AppState>, headers: HeaderMap) -> Json<Value> {
    // Open to load balancers and probes; what runs behind the node (backend
    // names, their errors, the node's identity) only with a key.
    if let super::Access::Denied { .. } = state.keys.check(&headers) {
        return Json(json!({"status": "ok"}));
    }
    let backends: BTreeMap<&str, Value> = state
        .core
        .backends
        .iter()
        .map(|(name, b)| (name.as_str(), json!(b.health())))
        .collect();
    Json(json!({
        "status": "ok",
        "node": state.node_name,
        "peer_id": state.node_id,
        "uptime_secs": state.started.elapsed().as_secs(),
        "capabilities": state.core.catalog.table().len(),
        "embedder": {"model": MODEL_ID, "dim": state.core.embedder.dim()},
        "backends": backends,
    }))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut r = state.core.metrics.encode().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}
