//! Backends: the servers that actually run requests. One [`Adapter`] per protocol
//! (one file each) knows the URLs, the discovery format, the headers and how
//! its requests, answers and stream events translate to and from OpenAI's
//! shape; [`Backend`] holds the HTTP client, the timeouts and the availability
//! state shared by all of them, and turns a call into an [`Reply`].

mod anthropic;
mod client;
mod form;
mod llamafarm;
pub mod local;
mod names;
mod ollama;
mod openai;
pub mod sse;

use bytes::Bytes;
use reqwest::Url;
use serde_json::{Map, Value};

pub use client::{Backend, Health};

use crate::capability::{CapabilityId, Kind};
use crate::config::BackendKind;

/// What a request asks a backend to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Chat,
    Completions,
    Embeddings,
    /// Speech to text (`/v1/audio/transcriptions`): the body carries the
    /// file as `{"filename", "content_type", "data": base64}` and the
    /// form's other fields as strings; the backend is sent the form.
    Transcribe,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Chat => "chat",
            Op::Completions => "completions",
            Op::Embeddings => "embeddings",
            Op::Transcribe => "transcriptions",
        }
    }
}

/// A model or project a backend lists, turned into a capability.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovered {
    pub id: CapabilityId,
    pub model: String,
    pub kind: Kind,
    pub description: String,
    pub domain: String,
    pub topics: Vec<String>,
    /// What identifies this version of the model at the backend (Ollama's
    /// digest); empty when the backend does not say.
    pub revision: String,
}

/// Why a backend call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No connection could be made (refused, unreachable, DNS).
    #[error("backend {backend} is unreachable: {message}")]
    Unreachable { backend: String, message: String },
    /// The backend did not answer within its timeout.
    #[error("backend {backend} timed out")]
    Timeout { backend: String },
    /// The backend answered something that is not what its protocol promises.
    #[error("backend {backend} returned an invalid response: {message}")]
    BadResponse { backend: String, message: String },
    /// The backend answered with an error status and no error of its own
    /// that the client could use.
    #[error("backend {backend} answered HTTP {status}")]
    Status { backend: String, status: u16 },
    /// The backend does not offer this operation.
    #[error("backend {backend} ({kind:?}) does not support {op}")]
    Unsupported {
        backend: String,
        kind: BackendKind,
        op: &'static str,
    },
}

impl Error {
    /// The `error` label of `atmosphere_backend_errors_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Unreachable { .. } => "unreachable",
            Error::Timeout { .. } => "timeout",
            Error::BadResponse { .. } => "bad_response",
            Error::Status { .. } => "status",
            Error::Unsupported { .. } => "unsupported",
        }
    }
}

/// Protocol specifics of one kind of backend.
pub trait Adapter: Send + Sync {
    /// URL listed to discover models; also the health probe.
    fn discovery_url(&self, base: &Url) -> Url;
    /// Parses the discovery response.
    fn parse_discovery(&self, backend: &str, body: &Value) -> Result<Vec<Discovered>, String>;
    /// URL of an operation for a model, or `None` when unsupported.
    fn endpoint(&self, base: &Url, op: Op, model: &str) -> Option<Url>;
    /// A POST (URL and JSON body) that tells more about one listed model,
    /// when the protocol has one (Ollama's `/api/show`).
    fn detail_request(&self, _base: &Url, _found: &Discovered) -> Option<(Url, Value)> {
        None
    }
    /// Adds what that request answered to the model's description.
    fn apply_detail(&self, _found: &mut Discovered, _detail: &Value) {}
    /// Puts the API key (and any header the protocol wants) on a request.
    fn authorize(
        &self,
        req: reqwest::RequestBuilder,
        api_key: Option<&str>,
    ) -> reqwest::RequestBuilder {
        match api_key {
            Some(key) => req.bearer_auth(key),
            None => req,
        }
    }
    /// The body to send for an OpenAI request body, `model` being the
    /// backend's name for the model.
    /// Whether [`Adapter::request_body`] reads or rewrites a chat's images
    /// and audio (they are then put back into the body first).
    fn rewrites_media(&self) -> bool {
        false
    }
    fn request_body(
        &self,
        _op: Op,
        model: &str,
        mut body: Map<String, Value>,
    ) -> Result<Value, String> {
        body.insert("model".into(), Value::String(model.to_owned()));
        Ok(Value::Object(body))
    }
    /// The OpenAI answer for the backend's successful whole answer.
    fn response_body(&self, _op: Op, _model: &str, body: Bytes) -> Result<Bytes, String> {
        Ok(body)
    }
    /// The OpenAI error body for a backend's client-error answer, when the
    /// backend explained itself (it is then the most useful answer the client
    /// can get, e.g. a 400 for a bad parameter).
    fn error_body(&self, body: &Bytes) -> Option<Bytes> {
        #[derive(serde::Deserialize)]
        struct ErrorBody {
            #[allow(dead_code)]
            error: Map<String, Value>,
        }
        serde_json::from_slice::<ErrorBody>(body)
            .is_ok()
            .then(|| body.clone())
    }
    /// Translates the events of one streamed answer.
    fn stream(&self, _op: Op, _model: &str) -> Box<dyn sse::Translate> {
        Box::new(sse::Passthrough)
    }
}

/// Most models per listing whose details are asked for.
const MAX_DETAILED: usize = 64;

/// Largest model listing or model details read from a backend: a listing of
/// a thousand models is well under 1 MiB.
const MAX_LISTING_BYTES: usize = 16 * 1024 * 1024;

/// Longest wait for one model's details: they are asked for on the probe's
/// path, which must not stall on them for the backend's full timeout.
const DETAIL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads a response body of at most `limit` bytes.
pub async fn read_limited(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<bytes::Bytes, String> {
    if resp.content_length().is_some_and(|n| n as usize > limit) {
        return Err("response body too large".into());
    }
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
    {
        if buf.len() + chunk.len() > limit {
            return Err("response body too large".into());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Joins path segments onto a base URL, keeping the base's own path.
pub(crate) fn join(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let joined = format!(
        "{}/{}",
        base.path().trim_end_matches('/'),
        path.trim_start_matches('/')
    );
    url.set_path(&joined);
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_keeps_base_path() {
        let base = Url::parse("http://h:1/prefix/").expect("url");
        assert_eq!(
            join(&base, "/v1/models").as_str(),
            "http://h:1/prefix/v1/models"
        );
        let base = Url::parse("http://h:1").expect("url");
        assert_eq!(join(&base, "api/tags").as_str(), "http://h:1/api/tags");
    }
}
