//! `POST /v1/chat/completions`, `/v1/completions` and `/v1/embeddings`.
//!
//! Request bodies are kept as JSON objects so that fields this node does not know
//! (tools, `response_format`, vendor extensions) reach the backend untouched;
//! only the fields routing needs are checked.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Map, Value, json};

use super::{ApiError, ApiObject, AppState, ChatObject, render};
use crate::backend::Op;
use crate::capability::Inputs;
use crate::embed::MODEL_ID;
use crate::exec::texts::{chat_inputs, chat_texts, embedding_inputs, need_text, prompt_texts};
use crate::exec::{AUTO, Request, session_of};

fn model_field(body: &Map<String, Value>) -> Result<String, ApiError> {
    match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => Ok(m.clone()),
        Some(Value::String(_)) | None => Err(ApiError::invalid(
            "model",
            "You must provide a model parameter (a capability id from GET /v1/models, or \"auto\").",
        )),
        Some(_) => Err(ApiError::invalid(
            "model",
            "The model parameter must be a string.",
        )),
    }
}

fn stream_field(body: &Map<String, Value>) -> Result<bool, ApiError> {
    match body.get("stream") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::invalid(
            "stream",
            "The stream parameter must be a boolean.",
        )),
    }
}

/// Resolves the request's model and runs it; the answer as a response.
async fn run(
    state: &AppState,
    headers: &HeaderMap,
    op: Op,
    ApiObject {
        body,
        raw,
        spans,
        held: _held,
    }: ApiObject,
    model: &str,
    texts: impl FnOnce() -> Result<Vec<String>, ApiError>,
) -> Result<Response, ApiError> {
    let stream = stream_field(&body)?;
    let _slot = state.gates.slot().await?;
    let carries = match op {
        Op::Chat => chat_inputs(&body),
        Op::Completions | Op::Embeddings | Op::Transcribe => Inputs::TEXT,
    };
    let target = state.core.resolve(model, op, carries, texts).await?;
    let header = headers
        .get(state.core.balancer.config().session_header.as_str())
        .and_then(|v| v.to_str().ok());
    let session = session_of(&body, header);
    let request = Request {
        op,
        body,
        raw,
        spans,
        stream,
        session,
        caller: None,
    };
    Ok(render::answer(state.core.run(target, request).await?))
}

pub async fn chat(
    State(state): State<AppState>,
    headers: HeaderMap,
    ChatObject(request): ChatObject,
) -> Result<Response, ApiError> {
    let model = model_field(&request.body)?;
    stream_field(&request.body)?;
    let texts = chat_texts(&request.body)?;
    crate::exec::media::check(&request.body, &request.spans, state.core.media).await?;
    run(&state, &headers, Op::Chat, request, &model, || {
        need_text(texts, "messages")
    })
    .await
}

pub async fn completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: ApiObject,
) -> Result<Response, ApiError> {
    let model = model_field(&request.body)?;
    stream_field(&request.body)?;
    let texts = prompt_texts(&request.body)?;
    run(&state, &headers, Op::Completions, request, &model, || {
        need_text(
            texts.into_iter().filter(|t| !t.trim().is_empty()).collect(),
            "prompt",
        )
    })
    .await
}

/// Model names the node's own embedder answers to.
pub fn is_own_embedder(model: &str) -> bool {
    model == AUTO || model == MODEL_ID || model == format!("sentence-transformers/{MODEL_ID}")
}

pub async fn embeddings(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: ApiObject,
) -> Result<Response, ApiError> {
    let model = model_field(&request.body)?;
    if !is_own_embedder(&model) {
        // An `llm/embed` capability on a backend serves other embedding models.
        return run(&state, &headers, Op::Embeddings, request, &model, || {
            Ok(Vec::new())
        })
        .await;
    }
    let _slot = state.gates.slot().await?;
    let body = request.body;
    let inputs = embedding_inputs(&body)?;
    let base64 = match body.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(f)) if f == "float" => false,
        Some(Value::String(f)) if f == "base64" => true,
        Some(_) => {
            return Err(ApiError::invalid(
                "encoding_format",
                "encoding_format must be \"float\" or \"base64\".",
            ));
        }
    };
    if let Some(d) = body.get("dimensions").filter(|d| !d.is_null())
        && d.as_u64() != Some(state.core.embedder.dim() as u64)
    {
        return Err(ApiError::invalid(
            "dimensions",
            format!(
                "{MODEL_ID} produces {}-dimensional vectors; dimensions cannot be changed.",
                state.core.embedder.dim()
            ),
        ));
    }
    let out = state.core.embedder.embed(inputs).await?;
    let data: Vec<Value> = out
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let resp = json!({
        "object": "list",
        "data": data,
        "model": MODEL_ID,
        "usage": {"prompt_tokens": out.tokens, "total_tokens": out.tokens},
    });
    Ok((StatusCode::OK, Json(resp)).into_response())
}
