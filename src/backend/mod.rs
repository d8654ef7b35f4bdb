//! Backends: the servers that actually run requests. One [`Adapter`] per protocol
//! (one file each) knows the URLs, the discovery format, the headers and how
//! its requests, answers and stream events translate to and from OpenAI's
//! shape; [`Backend`] holds the HTTP client, the timeouts and the availability
//! state shared by all of them, and turns a call into an [`Reply`].

mod anthropic;
mod llamafarm;
pub mod local;
mod names;
mod ollama;
mod openai;
pub mod sse;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use reqwest::Url;
use serde_json::{Map, Value};

use crate::answer::{MAX_WHOLE_BYTES, Reply};
use crate::capability::{CapabilityId, Kind};
use crate::config::{BackendConfig, BackendKind};

/// What a request asks a backend to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Chat,
    Completions,
    Embeddings,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Chat => "chat",
            Op::Completions => "completions",
            Op::Embeddings => "embeddings",
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

/// Availability as last observed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Health {
    pub available: bool,
    pub last_error: Option<String>,
    /// Seconds since the backend last answered, if ever.
    pub last_seen_secs: Option<u64>,
}

struct State {
    last_error: Option<String>,
    last_seen: Option<Instant>,
}

/// One configured backend: its adapter, HTTP client and availability.
pub struct Backend {
    pub config: BackendConfig,
    base: Url,
    adapter: Box<dyn Adapter>,
    client: reqwest::Client,
    api_key: Option<String>,
    available: AtomicBool,
    state: Mutex<State>,
    /// Listed models as their details describe them, by `model@revision`
    /// (`None`: the backend had no details), pruned to the last listing.
    details: Mutex<HashMap<String, Option<Discovered>>>,
}

impl Backend {
    pub fn new(config: BackendConfig) -> Result<Arc<Self>, String> {
        let base = Url::parse(&config.url)
            .map_err(|e| format!("backend {}: bad url {:?}: {e}", config.name, config.url))?;
        let adapter: Box<dyn Adapter> = match config.kind {
            BackendKind::Openai => Box::new(openai::OpenAi),
            BackendKind::Ollama => Box::new(ollama::Ollama),
            BackendKind::Llamafarm => Box::new(llamafarm::LlamaFarm {
                namespace: config.namespace.clone(),
            }),
            BackendKind::Anthropic => Box::new(anthropic::Anthropic),
        };
        let api_key = match config.api_key.as_deref() {
            Some(k) if k.starts_with("env:") => std::env::var(&k[4..]).ok(),
            Some(k) => Some(k.to_owned()),
            None => None,
        };
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.timeout)
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| format!("backend {}: http client: {e}", config.name))?;
        Ok(Arc::new(Self {
            base,
            adapter,
            client,
            api_key,
            // Optimistic until the first probe says otherwise.
            available: AtomicBool::new(true),
            state: Mutex::new(State {
                last_error: None,
                last_seen: None,
            }),
            details: Mutex::new(HashMap::new()),
            config,
        }))
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn is_available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }

    pub fn health(&self) -> Health {
        let state = self.state.lock();
        Health {
            available: self.is_available(),
            last_error: state.last_error.clone(),
            last_seen_secs: state.last_seen.map(|t| t.elapsed().as_secs()),
        }
    }

    fn mark_up(&self) {
        if !self.available.swap(true, Ordering::Relaxed) {
            tracing::info!(backend = %self.config.name, "backend is available again");
        }
        let mut state = self.state.lock();
        state.last_seen = Some(Instant::now());
        state.last_error = None;
    }

    fn mark_down(&self, reason: &str) {
        if self.available.swap(false, Ordering::Relaxed) {
            tracing::warn!(backend = %self.config.name, reason, "backend is unavailable");
        }
        self.state.lock().last_error = Some(reason.to_owned());
    }

    fn classify(&self, e: reqwest::Error) -> Error {
        let backend = self.config.name.clone();
        if e.is_timeout() {
            Error::Timeout { backend }
        } else if e.is_connect() {
            Error::Unreachable {
                backend,
                message: root_cause(&e),
            }
        } else {
            Error::BadResponse {
                backend,
                message: root_cause(&e),
            }
        }
    }

    fn request(&self, method: reqwest::Method, url: Url) -> reqwest::RequestBuilder {
        self.adapter
            .authorize(self.client.request(method, url), self.api_key.as_deref())
    }

    /// Lists the backend's models; marks it available or not.
    pub async fn discover(&self) -> Result<Vec<Discovered>, Error> {
        let result = self.list(true).await;
        match &result {
            Err(Error::Unreachable { message, .. }) => self.mark_down(message),
            Err(Error::Timeout { .. }) => self.mark_down("timed out"),
            // Any HTTP answer means the server is up, whatever it says.
            _ => self.mark_up(),
        }
        result
    }

    /// Lists the backend's models without touching its availability, with
    /// their details when `details` (which may take a request per new model).
    async fn list(&self, details: bool) -> Result<Vec<Discovered>, Error> {
        let url = self.adapter.discovery_url(&self.base);
        let resp = self
            .request(reqwest::Method::GET, url)
            .timeout(self.config.timeout)
            .send()
            .await
            .map_err(|e| self.classify(e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(Error::BadResponse {
                backend: self.config.name.clone(),
                message: format!("listing models answered HTTP {status}"),
            });
        }
        let body = self.body(resp).await?;
        let value: Value = serde_json::from_slice(&body).map_err(|e| Error::BadResponse {
            backend: self.config.name.clone(),
            message: format!("listing models: {e}"),
        })?;
        let mut found = self
            .adapter
            .parse_discovery(&self.config.name, &value)
            .map_err(|message| Error::BadResponse {
                backend: self.config.name.clone(),
                message,
            })?;
        if details {
            self.add_details(&mut found).await;
        }
        Ok(found)
    }

    /// Describes listed models by their details, asked for once per model
    /// revision; a model whose details cannot be had keeps what the listing
    /// said.
    async fn add_details(&self, found: &mut [Discovered]) {
        let key = |d: &Discovered| format!("{}@{}", d.model, d.revision);
        let listed: HashSet<String> = found.iter().map(key).collect();
        self.details.lock().retain(|k, _| listed.contains(k));
        for d in found.iter_mut().take(MAX_DETAILED) {
            let k = key(d);
            let known = self.details.lock().get(&k).cloned();
            let described = match known {
                Some(described) => described,
                None => {
                    let Some((url, body)) = self.adapter.detail_request(&self.base, d) else {
                        // This protocol has no details to ask for.
                        return;
                    };
                    let described = match self.fetch_detail(url, &body).await {
                        Ok(detail) => {
                            let mut described = d.clone();
                            self.adapter.apply_detail(&mut described, &detail);
                            Some(described)
                        }
                        Err(e) => {
                            tracing::debug!(backend = %self.config.name, model = %d.model, error = %e, "no model details");
                            None
                        }
                    };
                    self.details.lock().insert(k, described.clone());
                    described
                }
            };
            if let Some(described) = described {
                *d = described;
            }
        }
    }

    async fn fetch_detail(&self, url: Url, body: &Value) -> Result<Value, Error> {
        let resp = self
            .request(reqwest::Method::POST, url)
            .timeout(DETAIL_TIMEOUT.min(self.config.timeout))
            .json(body)
            .send()
            .await
            .map_err(|e| self.classify(e))?;
        if !resp.status().is_success() {
            return Err(Error::BadResponse {
                backend: self.config.name.clone(),
                message: format!("details answered HTTP {}", resp.status()),
            });
        }
        let bytes = self.body(resp).await?;
        serde_json::from_slice(&bytes).map_err(|e| Error::BadResponse {
            backend: self.config.name.clone(),
            message: format!("details: {e}"),
        })
    }

    /// A listing's or details' body, within [`MAX_LISTING_BYTES`].
    async fn body(&self, resp: reqwest::Response) -> Result<bytes::Bytes, Error> {
        read_limited(resp, MAX_LISTING_BYTES)
            .await
            .map_err(|message| Error::BadResponse {
                backend: self.config.name.clone(),
                message,
            })
    }

    /// Runs an OpenAI-shaped request body on `model` (the backend's name for
    /// it) and returns the answer in OpenAI's shape: a stream of events when
    /// `stream` and the backend streams, else a whole body. A client error the
    /// backend explained is an answer too (its status and OpenAI error body).
    /// `deadline` bounds the wait for the answer's head and for a whole body;
    /// a stream's events are bounded by the backend's read timeout.
    pub async fn call(
        &self,
        op: Op,
        model: &str,
        body: Map<String, Value>,
        stream: bool,
        deadline: std::time::Duration,
    ) -> Result<Reply, Error> {
        let timed_out = || Error::Timeout {
            backend: self.config.name.clone(),
        };
        let bad = |message: String| Error::BadResponse {
            backend: self.config.name.clone(),
            message,
        };
        let resp = tokio::time::timeout(deadline, self.send(op, model, body))
            .await
            .map_err(|_| timed_out())??;
        let status = resp.status();
        let is_sse = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        if status.is_success() && stream && is_sse {
            let translate = self.adapter.stream(op, model);
            return Ok(Reply::Stream(sse::events(
                Box::pin(resp.bytes_stream()),
                translate,
            )));
        }
        let bytes = tokio::time::timeout(deadline, read_limited(resp, MAX_WHOLE_BYTES))
            .await
            .map_err(|_| timed_out())?
            .map_err(bad)?;
        if !status.is_success() {
            if status.is_client_error()
                && let Some(body) = self.adapter.error_body(&bytes)
            {
                return Ok(Reply::Whole {
                    status: status.as_u16(),
                    body,
                });
            }
            return Err(Error::Status {
                backend: self.config.name.clone(),
                status: status.as_u16(),
            });
        }
        if stream {
            return Err(bad("answered a streaming request without streaming".into()));
        }
        let body = self.adapter.response_body(op, model, bytes).map_err(bad)?;
        // Validated without building a tree: the bytes go out unchanged.
        let object = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
            && serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok();
        if !object {
            return Err(bad("the body is not a JSON object".into()));
        }
        Ok(Reply::Whole { status: 200, body })
    }

    /// Sends the request for `model` and returns the response head (body unread).
    async fn send(
        &self,
        op: Op,
        model: &str,
        body: Map<String, Value>,
    ) -> Result<reqwest::Response, Error> {
        let url = self
            .adapter
            .endpoint(&self.base, op, model)
            .ok_or(Error::Unsupported {
                backend: self.config.name.clone(),
                kind: self.config.kind,
                op: op.as_str(),
            })?;
        let bad = |message: String| Error::BadResponse {
            backend: self.config.name.clone(),
            message,
        };
        let body = self.adapter.request_body(op, model, body).map_err(bad)?;
        let bytes = serde_json::to_vec(&body).map_err(|e| bad(e.to_string()))?;
        let result = self
            .request(reqwest::Method::POST, url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(bytes)
            .send()
            .await;
        match result {
            Ok(resp) => {
                self.mark_up();
                Ok(resp)
            }
            Err(e) => {
                let err = self.classify(e);
                match &err {
                    Error::Unreachable { message, .. } => self.mark_down(message),
                    Error::Timeout { .. } => self.mark_down("timed out"),
                    _ => {}
                }
                Err(err)
            }
        }
    }
}

/// The innermost error message (reqwest's own top-level text hides the cause).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
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
