//! Anthropic's Messages API. Models from `GET /v1/models`; chats go to
//! `POST /v1/messages` with `x-api-key` and `anthropic-version`, translated
//! from OpenAI's chat shape and back (text, images, tools and tool results,
//! stop sequences, usage), streamed events included. Completions and
//! embeddings are not offered by this API.

mod messages;
mod stream;

use std::collections::HashMap;

use bytes::Bytes;
use reqwest::Url;
use serde_json::{Map, Value, json};

use super::openai::{OpenAi, api_root};
use super::sse::Translate;
use super::{Adapter, Discovered, Op, join};
use crate::capability::Kind;
use messages::{chat_completion, messages_request};
use stream::Chunks;

/// The API version this translation follows.
const API_VERSION: &str = "2023-06-01";

pub struct Anthropic;

impl Adapter for Anthropic {
    fn discovery_url(&self, base: &Url) -> Url {
        join(&api_root(base), "models")
    }

    /// The same list as OpenAI's `/v1/models`; every model chats, and its
    /// display name leads its description.
    fn parse_discovery(&self, backend: &str, body: &Value) -> Result<Vec<Discovered>, String> {
        let mut found = OpenAi.parse_discovery(backend, body)?;
        let display: HashMap<&str, &str> = body["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| Some((m.get("id")?.as_str()?, m.get("display_name")?.as_str()?)))
            .collect();
        for d in &mut found {
            d.kind = Kind::chat();
            if let Some(name) = display.get(d.model.as_str()) {
                d.description = format!("{name}: {}", d.description);
            }
        }
        Ok(found)
    }

    fn endpoint(&self, base: &Url, op: Op, _model: &str) -> Option<Url> {
        (op == Op::Chat).then(|| join(&api_root(base), "messages"))
    }

    fn authorize(
        &self,
        req: reqwest::RequestBuilder,
        api_key: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let req = req.header("anthropic-version", API_VERSION);
        match api_key {
            Some(key) => req.header("x-api-key", key),
            None => req,
        }
    }

    fn rewrites_media(&self) -> bool {
        true
    }
    fn request_body(
        &self,
        _op: Op,
        model: &str,
        body: Map<String, Value>,
    ) -> Result<Value, String> {
        messages_request(model, body)
    }

    fn response_body(&self, _op: Op, _model: &str, body: Bytes) -> Result<Bytes, String> {
        let message: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        let completion = chat_completion(&message)?;
        serde_json::to_vec(&completion)
            .map(Bytes::from)
            .map_err(|e| e.to_string())
    }

    fn error_body(&self, body: &Bytes) -> Option<Bytes> {
        let value: Value = serde_json::from_slice(body).ok()?;
        let error = value.get("error")?;
        let kind = error.get("type").and_then(Value::as_str)?;
        let message = error.get("message").and_then(Value::as_str)?;
        let openai = json!({"error": {
            "message": message, "type": kind, "param": null, "code": kind,
        }});
        serde_json::to_vec(&openai).ok().map(Bytes::from)
    }

    fn stream(&self, _op: Op, _model: &str) -> Box<dyn Translate> {
        Box::new(Chunks::default())
    }
}
