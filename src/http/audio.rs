//! `POST /v1/audio/transcriptions`: OpenAI's form (`file`, `model`, and
//! `language`, `prompt`, `response_format`, `temperature`, ...), run on an
//! `audio/transcribe` capability here or on another node. The file travels
//! in the request core's body as base64 (`{"filename", "content_type",
//! "data"}`), the other fields as text.

use axum::extract::{Request as HttpRequest, State};
use axum::http::header;
use axum::response::Response;
use base64::Engine;
use serde_json::{Map, Value, json};

use super::{ApiError, AppState, render};
use crate::backend::Op;
use crate::capability::Inputs;
use crate::exec::Request;
use crate::exec::media::{Limits, check_audio_file};
use crate::multipart::Field;

/// What a transcription is ranked by when it has no `prompt`.
const NO_PROMPT: &str = "Transcribe this recording.";

pub async fn transcriptions(
    State(state): State<AppState>,
    request: HttpRequest,
) -> Result<Response, ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if !content_type.starts_with("multipart/form-data") {
        return Err(ApiError::invalid(
            "file",
            "A transcription is sent as multipart/form-data with the audio as `file`.",
        )
        .code("invalid_content_type"));
    }
    let read = state.gates.read(request).await?;
    let fields = crate::multipart::read(&content_type, read.bytes)
        .await
        .map_err(|e| ApiError::invalid("file", format!("The form could not be read: {e}.")))?;
    let body = form_body(fields, state.core.media)?;
    if !body.contains_key("file") {
        return Err(ApiError::invalid(
            "file",
            "A transcription needs the audio as the form's `file` field.",
        ));
    }
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        _ => {
            return Err(ApiError::invalid(
                "model",
                "You must provide a model parameter (an audio/transcribe capability, or \"auto\").",
            ));
        }
    };
    match body.get("response_format").and_then(Value::as_str) {
        None | Some("json" | "verbose_json") => {}
        Some(other) => {
            return Err(ApiError::invalid(
                "response_format",
                format!(
                    "response_format {other:?} is not served; use \"json\" or \"verbose_json\"."
                ),
            )
            .code("unsupported_response_format"));
        }
    }
    if body.get("stream").and_then(Value::as_str) == Some("true") {
        return Err(ApiError::invalid(
            "stream",
            "Transcriptions are not streamed.",
        ));
    }
    let _slot = state.gates.slot().await?;
    let text = match body.get("prompt").and_then(Value::as_str) {
        Some(p) if !p.trim().is_empty() => p.to_owned(),
        _ => NO_PROMPT.to_owned(),
    };
    let target = state
        .core
        .resolve(&model, Op::Transcribe, Inputs::TEXT, || Ok(vec![text]))
        .await?;
    drop(read.held);
    let request = Request::internal(Op::Transcribe, body, None);
    Ok(render::answer(state.core.run(target, request).await?))
}

/// The form as the request core's body: the file in base64, text fields
/// as strings (a field given more than once as a list). The file is checked
/// here, on its bytes as uploaded (the node that runs it checks the base64).
fn form_body(fields: Vec<Field>, limits: Limits) -> Result<Map<String, Value>, ApiError> {
    let mut body = Map::new();
    for field in fields {
        if field.name == "file" {
            if body.contains_key("file") {
                return Err(ApiError::invalid(
                    "file",
                    "The form has more than one file.",
                ));
            }
            check_audio_file(&field.data, limits)?;
            let data = base64::engine::general_purpose::STANDARD.encode(&field.data);
            body.insert(
                "file".into(),
                json!({
                    "filename": field.filename.unwrap_or_else(|| "audio".into()),
                    "content_type": field.content_type.unwrap_or_else(|| "application/octet-stream".into()),
                    "data": data,
                }),
            );
            continue;
        }
        let text = String::from_utf8(field.data.to_vec()).map_err(|_| {
            ApiError::invalid(
                &field.name,
                format!("The field {} is not UTF-8 text.", field.name),
            )
        })?;
        match body.get_mut(&field.name) {
            None => {
                body.insert(field.name, Value::String(text));
            }
            Some(Value::Array(items)) => items.push(Value::String(text)),
            Some(first) => {
                let first = first.take();
                body.insert(field.name, json!([first, text]));
            }
        }
    }
    Ok(body)
}
