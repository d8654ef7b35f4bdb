//! [`Backend`]: one configured backend's HTTP client, timeouts and
//! availability, around its protocol's [`Adapter`]: lists its models (with
//! their details, asked once per revision) and runs requests, answering in
//! OpenAI's shape.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use reqwest::Url;
use serde_json::{Map, Value};

use super::{
    Adapter, DETAIL_TIMEOUT, Discovered, Error, MAX_DETAILED, MAX_LISTING_BYTES, Op, anthropic,
    llamafarm, ollama, openai, read_limited, sse,
};
use crate::answer::{MAX_WHOLE_BYTES, Reply};
use crate::config::{BackendConfig, BackendKind};
use crate::lean::Spans;

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
    pub(super) async fn list(&self, details: bool) -> Result<Vec<Discovered>, Error> {
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
        media: &Spans,
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
        let resp = tokio::time::timeout(deadline, self.send(op, model, body, media))
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
        mut body: Map<String, Value>,
        media: &Spans,
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
        let request = self.request(reqwest::Method::POST, url);
        let result = if op == Op::Transcribe {
            let form = super::form::transcription(model, body).map_err(bad)?;
            request.multipart(form).send().await
        } else {
            if self.adapter.rewrites_media() {
                media.restore_map(&mut body);
            }
            let body = self.adapter.request_body(op, model, body).map_err(bad)?;
            // Images and audio go out as slices of the bytes they came in.
            let pieces = media.write(&body).map_err(|e| bad(e.to_string()))?;
            let len: usize = pieces.iter().map(Bytes::len).sum();
            let body = match <[Bytes; 1]>::try_from(pieces) {
                Ok([whole]) => reqwest::Body::from(whole),
                Err(pieces) => reqwest::Body::wrap_stream(futures::stream::iter(
                    pieces.into_iter().map(Ok::<_, std::convert::Infallible>),
                )),
            };
            request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(reqwest::header::CONTENT_LENGTH, len)
                .body(body)
                .send()
                .await
        };
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
