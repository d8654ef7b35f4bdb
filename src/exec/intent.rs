//! Typed intents (`POST /v1/intent`): a request for a kind of capability
//! (`vision/classify`, or a family such as `tool/*`), ranked among the
//! capabilities of that kind by the meaning of its text (the domain and the
//! text fields of its data) and by the client's preferences, then run where
//! the chosen capability lives: a tool is called with `data` as its
//! arguments, a language model, agent or vision model is sent
//! `data.messages` (or `data.prompt` and `data.image`) as a chat, an
//! embedding model `data.input`, a transcriber the recording `data.audio`.

use std::sync::Arc;

use ::http::StatusCode;
use base64::Engine;
use serde_json::{Map, Value, json};

use super::resolve::runs;
use super::tool::Outcome;
use super::{ApiError, Core, Request};
use crate::backend::Op;
use crate::capability::{CapabilityId, KIND_CATEGORIES, Kind};
use crate::routing::{Entry, Need};

/// Longest text taken from an intent's data to rank by (bytes).
const MAX_TEXT: usize = 4096;

/// How far a request may go to be served (`preferences`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locality {
    /// Only this node's capabilities.
    Local,
    /// Any node's.
    Mesh,
}

/// A typed intent, as a transport parsed it.
#[derive(Debug, Clone)]
pub struct Intent {
    /// An exact kind, or `<category>/*`.
    pub kind: String,
    pub domain: String,
    pub data: Map<String, Value>,
    pub locality: Locality,
    /// `latency: "low"`: among the capabilities that fit about as well as
    /// the best, this node's own first (no hop).
    pub low_latency: bool,
}

/// What an intent came to.
#[derive(Debug)]
pub struct IntentAnswer {
    pub capability: CapabilityId,
    pub node: String,
    pub score: f32,
    /// The status and JSON the capability answered (a tool's result, a
    /// chat completion, embeddings, or its error).
    pub status: u16,
    pub result: Value,
}

/// How much lower than the best a local capability may score and still be
/// preferred under `latency: "low"`.
const LOCAL_MARGIN: f32 = 0.05;

/// The chat an intent's data stands for: `data.messages` as they are, or a
/// user turn of `data.prompt` and the picture `data.image` (a link or a
/// `data:` URL), either or both.
fn chat_of(kind: &Kind, data: &Map<String, Value>) -> Result<Value, ApiError> {
    if let Some(messages) = data.get("messages") {
        return match messages {
            Value::Array(_) => Ok(messages.clone()),
            _ => Err(ApiError::invalid(
                "data.messages",
                "data.messages must be an array.",
            )),
        };
    }
    let text = match data.get("prompt") {
        None => None,
        Some(Value::String(p)) => Some(p.clone()),
        Some(_) => {
            return Err(ApiError::invalid(
                "data.prompt",
                "data.prompt must be a string.",
            ));
        }
    };
    let image = match data.get("image") {
        None => None,
        Some(Value::String(url)) => Some(url.clone()),
        Some(_) => {
            return Err(ApiError::invalid(
                "data.image",
                "data.image must be a link or a data: URL.",
            ));
        }
    };
    match (text, image) {
        (Some(text), None) => Ok(json!([{"role": "user", "content": text}])),
        (text, Some(url)) => {
            let mut parts: Vec<Value> = text
                .map(|t| json!({"type": "text", "text": t}))
                .into_iter()
                .collect();
            parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
            Ok(json!([{"role": "user", "content": parts}]))
        }
        (None, None) => Err(ApiError::invalid(
            "data",
            format!("A {kind} intent needs data.messages (a chat), data.prompt or data.image."),
        )),
    }
}

/// The transcription an `audio/transcribe` intent's data stands for: the
/// recording `data.audio` (a `data:` URL in base64), with `data.prompt` and
/// `data.language` as the form's fields of those names.
fn transcription_of(address: &str, data: &Map<String, Value>) -> Result<Value, ApiError> {
    let bad = || {
        ApiError::invalid(
            "data.audio",
            "An audio/transcribe intent needs data.audio, the recording as a data: URL in base64 (data:audio/wav;base64,...).",
        )
    };
    let url = data.get("audio").and_then(Value::as_str).ok_or_else(bad)?;
    let (mime, encoded) = url
        .strip_prefix("data:")
        .and_then(|rest| rest.split_once(";base64,"))
        .ok_or_else(bad)?;
    // Named by its format, as a client names a file (services go by the
    // extension); what is not audio is refused by the check after this.
    let head = base64::engine::general_purpose::STANDARD
        .decode(&encoded.as_bytes()[..encoded.len().min(24)])
        .unwrap_or_default();
    let filename = match super::media::audio_file_format(&head) {
        Some(format) => format!("audio.{format}"),
        None => "audio".to_owned(),
    };
    let mut body = json!({
        "model": address,
        "file": {
            "filename": filename,
            "content_type": if mime.is_empty() { "application/octet-stream" } else { mime },
            "data": encoded,
        },
    });
    for field in ["prompt", "language"] {
        match data.get(field) {
            None => {}
            Some(Value::String(text)) => body[field] = Value::String(text.clone()),
            Some(_) => {
                return Err(ApiError::invalid(
                    &format!("data.{field}"),
                    format!("data.{field} must be a string."),
                ));
            }
        }
    }
    Ok(body)
}

/// Checks an intent's type: a kind of one of the categories, or a family.
pub fn parse_kind(kind: &str) -> Result<String, ApiError> {
    let family = kind
        .strip_suffix("/*")
        .is_some_and(|c| KIND_CATEGORIES.contains(&c));
    if family || kind.parse::<Kind>().is_ok() {
        return Ok(kind.to_owned());
    }
    Err(ApiError::invalid(
        "type",
        format!(
            "type {kind:?} must be category/name or category/* with category one of {}.",
            KIND_CATEGORIES.join(", ")
        ),
    )
    .code("invalid_intent_type"))
}

/// The texts an intent is ranked by: its domain and the string values of
/// its data (nested ones too, in order), clipped.
fn texts(intent: &Intent) -> Vec<String> {
    fn walk(v: &Value, out: &mut String) {
        match v {
            Value::String(s) if !s.starts_with("data:") => {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(s);
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            Value::Object(m) => m.values().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut text = intent.domain.clone();
    intent.data.values().for_each(|v| walk(v, &mut text));
    let text = crate::wire::route::clip(&text, MAX_TEXT);
    if text.trim().is_empty() {
        // Nothing to go by but the kind itself.
        vec![intent.kind.replace(['/', '*'], " ")]
    } else {
        vec![text]
    }
}

impl Core {
    /// Ranks the capabilities of the intent's kind and runs it on the best.
    pub async fn intent(&self, intent: Intent) -> Result<IntentAnswer, ApiError> {
        let need = Need::Kind(intent.kind.clone());
        let table = self.catalog.table();
        let offered = table
            .entries()
            .iter()
            .any(|e| need.accepts(&e.capability) && (intent.locality == Locality::Mesh || e.local));
        if !offered {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!(
                    "No {} capability of kind `{}` is known.",
                    match intent.locality {
                        Locality::Local => "local",
                        Locality::Mesh => "known",
                    },
                    intent.kind
                ),
            )
            .param("type")
            .code("no_capability_of_kind"));
        }
        let decision = self.decide(texts(&intent), need).await?;
        let eligible: Vec<_> = decision
            .candidates
            .iter()
            .filter(|c| c.eligible && (intent.locality == Locality::Mesh || c.local))
            .collect();
        let Some(best) = eligible.first() else {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                format!(
                    "Capabilities of kind `{}` are known but none can serve now.",
                    intent.kind
                ),
            )
            .code("capability_unavailable"));
        };
        let chosen = if intent.low_latency {
            eligible
                .iter()
                .find(|c| c.local && c.score >= best.score - LOCAL_MARGIN)
                .unwrap_or(best)
        } else {
            best
        };
        let entry = chosen
            .entry
            .clone()
            .ok_or_else(|| ApiError::internal("intent", "a candidate without its entry"))?;
        let (status, result) = self.run_intent(&entry, intent.data).await?;
        Ok(IntentAnswer {
            capability: chosen.id.clone(),
            node: entry.node.clone(),
            score: chosen.score,
            status,
            result,
        })
    }

    /// Runs an intent's data on the chosen capability, as its kind takes it.
    async fn run_intent(
        &self,
        entry: &Arc<Entry>,
        data: Map<String, Value>,
    ) -> Result<(u16, Value), ApiError> {
        let kind = &entry.capability.kind;
        let address = format!("{}@{}", entry.capability.id, entry.node);
        if kind.category() == "tool" {
            let answer = self.call_tool(vec![entry.clone()], data).await?;
            return Ok(match answer.outcome {
                Outcome::Result { result, .. } => (200, result),
                Outcome::Refused { status, body } => (status, json_of(&body)),
            });
        }
        let (op, body) = if *kind == Kind::embed() {
            let input = data.get("input").cloned().ok_or_else(|| {
                ApiError::invalid("data.input", "An llm/embed intent needs data.input.")
            })?;
            (Op::Embeddings, json!({"model": address, "input": input}))
        } else if runs(kind, Op::Chat) {
            (
                Op::Chat,
                json!({"model": address, "messages": chat_of(kind, &data)?}),
            )
        } else if runs(kind, Op::Transcribe) {
            (Op::Transcribe, transcription_of(&address, &data)?)
        } else {
            return Err(ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "invalid_request_error",
                format!(
                    "`{}` fits, but {kind} capabilities cannot be run through /v1/intent yet (tools, language models, agents, vision and embedding models, and transcribers can).",
                    entry.capability.id
                ),
            )
            .code("kind_not_runnable"));
        };
        let Value::Object(body) = body else {
            return Err(ApiError::internal("intent", "a body that is not an object"));
        };
        if op == Op::Transcribe {
            super::media::check_transcription(&body, "data.audio", self.media)?;
        }
        if op == Op::Chat {
            // Named as the client wrote it: data.image, or within data.messages.
            let from_image = !data.contains_key("messages");
            super::media::check(&body, &crate::lean::Spans::default(), self.media)
                .await
                .map_err(|e| ApiError {
                    param: e.param.map(|p| {
                        if from_image && p.ends_with("image_url.url") {
                            "data.image".to_owned()
                        } else {
                            format!("data.{p}")
                        }
                    }),
                    ..e
                })?;
        }
        let target = self.explicit_target(self.copies(&address)?);
        let answer = self
            .run_whole(target, Request::internal(op, body, None))
            .await?;
        Ok((answer.status, json_of(&answer.body)))
    }
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into()))
}
