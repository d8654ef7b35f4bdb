//! The request core: "run this request on that capability, here or on
//! another node". A [`Request`] and a [`Target`] go in; an [`Answer`] comes
//! out: a whole body or a stream of events, with the capability and node that
//! served it. Resolving (`auto` by meaning, or an id), local dispatch to a
//! backend, forwarding to peers with failover, and the serving side of the
//! intent and stream protocols all live here, so every transport (the HTTP
//! API, peers' forwarded requests) runs the same pipeline and only parses
//! requests and renders answers.

mod agent;
mod error;
mod forward;
mod inbound;
mod intent;
mod links;
pub mod media;
mod quota;
mod refusal;
mod resolve;
mod serve;
mod serve_tool;
pub mod texts;
mod tool;
mod upload;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Map, Value};

pub use agent::{Invoked as AgentInvoked, parse_max_steps};
pub use error::ApiError;
pub use intent::{Intent, IntentAnswer, Locality, parse_kind as parse_intent_kind};
pub use quota::PeerRate;
pub use resolve::{AUTO, Target};
pub use serve::{serve_intents, serve_streams};
pub use serve_tool::serve_tools;
pub use tool::{Outcome as ToolOutcome, ToolAnswer, refusal_message};
pub use upload::{Uploads, serve_uploads};

use crate::answer::{Event, Reply};
use crate::backend::{Backend, Op};
use crate::balance::{Balancer, Lease, Provider};
use crate::capability::CapabilityId;
use crate::catalog::Catalog;
use crate::embed::Embedder;
use crate::lean::Spans;
use crate::metrics::Metrics;
use crate::routing::Router;

/// What the core works with; shared by every request.
pub struct Parts {
    /// This node's PeerId (base58) and display name, as `id@node` names it.
    pub node_id: String,
    pub node_name: String,
    pub catalog: Catalog,
    pub router: Router,
    pub embedder: Embedder,
    pub backends: HashMap<String, Arc<Backend>>,
    pub metrics: Arc<Metrics>,
    /// Longest wait for an answer's head (and a whole answer), end to end.
    pub request_timeout: Duration,
    /// The way into the mesh, when the node is part of one.
    pub mesh: Option<Mesh>,
    /// Spreads requests over the providers of one service.
    pub balancer: Balancer,
    /// The tools of this node's MCP servers.
    pub tools: crate::mcp::Servers,
    /// What a chat's images and audio may be.
    pub media: media::Limits,
    /// This node's agents, by capability id.
    pub agents: HashMap<String, Arc<crate::config::AgentConfig>>,
}

/// What the core uses of the mesh.
#[derive(Clone)]
pub struct Mesh {
    /// The network: forwards, streams, peers.
    pub client: crate::network::Client,
    /// DHT provider lookups.
    pub lookups: crate::mesh::Lookups,
    /// What other nodes offer, as last changed.
    pub view: tokio::sync::watch::Receiver<crate::mesh::View>,
    /// In a closed mesh, who belongs: peers' requests run only for members.
    pub gate: Option<Arc<crate::member::Gate>>,
    /// `mesh.trusted`: peers known to this node whoever they are.
    pub trusted: Arc<std::collections::HashSet<libp2p::PeerId>>,
}

/// The request core; cheap to clone.
#[derive(Clone)]
pub struct Core(Arc<Parts>);

impl std::ops::Deref for Core {
    type Target = Parts;
    fn deref(&self) -> &Parts {
        &self.0
    }
}

/// A request for a capability, as a client sent it.
pub struct Request {
    pub op: Op,
    /// The OpenAI body, checked by the transport that parsed it.
    pub body: Map<String, Value>,
    /// The body's bytes as the client sent them; forwarded unchanged.
    pub raw: Bytes,
    /// Where `body`'s long media strings are in `raw` (a chat's images and
    /// audio are not copied out of it: [`crate::lean`]).
    pub spans: Spans,
    /// Whether the client wants the answer as a stream of events.
    pub stream: bool,
    /// Keeps the client's requests on one provider while it is healthy
    /// ([`session_of`]).
    pub session: Option<String>,
    /// The peer that sent it, when it came over the mesh (none: this
    /// node's own client).
    pub caller: Option<Caller>,
}

impl Request {
    /// A request this node makes itself (an agent's model call, an
    /// intent, a transcription it parsed): answered whole, for this node.
    pub fn internal(op: Op, body: Map<String, Value>, session: Option<String>) -> Self {
        let raw = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        Self {
            op,
            body,
            raw,
            spans: Spans::default(),
            stream: false,
            session,
            caller: None,
        }
    }
}

/// A whole answer, and who gave it.
pub struct Whole {
    pub capability: CapabilityId,
    pub node: String,
    pub status: u16,
    pub body: Bytes,
}

/// A peer whose request runs here: what it may use of this node.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Its PeerId (base58) and, in a closed mesh, its certificate's roles.
    pub peer: String,
    pub roles: Vec<String>,
}

/// The session key of a request: the session header's value when the
/// client sent one, else the body's `user` field (OpenAI's end-user id).
pub fn session_of(body: &Map<String, Value>, header: Option<&str>) -> Option<String> {
    header
        .filter(|h| !h.is_empty())
        .or_else(|| body.get("user").and_then(Value::as_str))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// A capability's answer, and who gave it.
#[derive(Debug)]
pub struct Answer {
    pub capability: CapabilityId,
    /// The PeerId (base58) of the node that served it.
    pub node: String,
    /// The routing score, for `auto`.
    pub score: Option<f32>,
    pub reply: Reply,
}

impl Core {
    pub fn new(parts: Parts) -> Self {
        Self(Arc::new(parts))
    }

    /// Runs the request on the target: the provider the balancer picks from
    /// the group first, on this node's backend or forwarded to the node that
    /// offers it, then the others while none of the answer has arrived.
    pub async fn run(&self, target: Target, request: Request) -> Result<Answer, ApiError> {
        let mut order = self
            .balancer
            .order(target.group, request.session.as_deref());
        order.extend(target.fallbacks);
        forward::run_in_order(self, order, request).await
    }

    /// Runs a request whose answer is wanted whole ([`Request::internal`]).
    pub async fn run_whole(&self, target: Target, request: Request) -> Result<Whole, ApiError> {
        let answer = self.run(target, request).await?;
        match answer.reply {
            Reply::Whole { status, body } => Ok(Whole {
                capability: answer.capability,
                node: answer.node,
                status,
                body,
            }),
            Reply::Stream(_) => Err(ApiError::internal("run", "a stream for a whole request")),
        }
    }

    /// Runs the request on one backend of a capability of this node.
    /// `Err(Some(request))`: the backend could not be reached, or answered
    /// 503 or 429, and the request may go to the next provider (`next`).
    async fn run_local(
        &self,
        provider: &Provider,
        lease: Lease,
        request: Request,
        next: Next,
    ) -> Result<Answer, (ApiError, Option<Request>)> {
        let entry = &provider.entry;
        if entry.capability.source == crate::capability::Source::Agent {
            let Some(agent) = self.agents.get(entry.capability.id.as_str()).cloned() else {
                let error =
                    ApiError::internal("dispatch", format!("no agent {}", entry.capability.id));
                return Err((error, None));
            };
            let reply = self.run_agent(&agent, request).await;
            match &reply {
                Reply::Whole { status, .. } if *status >= 500 => lease.failed(),
                _ => lease.answered(),
            }
            return Ok(Answer {
                capability: entry.capability.id.clone(),
                node: entry.node.clone(),
                score: provider.score,
                reply,
            });
        }
        let name = provider.backend.as_deref().unwrap_or_default();
        let Some(backend) = self.backends.get(name).cloned() else {
            return Err((
                ApiError::internal("dispatch", format!("no backend {name}")),
                None,
            ));
        };
        // The body goes to the backend; a copy stays only for another
        // backend of this node (other nodes are sent the raw bytes).
        let Request {
            op,
            body,
            raw,
            spans,
            stream,
            session,
            caller,
        } = request;
        let kept = (next == Next::Local).then(|| body.clone());
        let media = spans.clone();
        let retry = move || {
            (next != Next::Nothing).then(|| Request {
                op,
                body: kept.unwrap_or_default(),
                raw,
                spans,
                stream,
                session,
                caller,
            })
        };
        let called = backend
            .call(
                op,
                &entry.capability.model,
                body,
                &media,
                stream,
                self.request_timeout,
            )
            .await;
        let reply = match called {
            Ok(Reply::Stream(events)) => {
                lease.answered();
                let metrics = self.metrics.clone();
                let name = backend.name().to_owned();
                Reply::Stream(Box::pin(events.inspect(move |event| {
                    if let Event::Failed { code, .. } = event {
                        lease.broke();
                        let label = match code.as_str() {
                            "backend_stream_error" => "stream",
                            "backend_bad_response" => "bad_response",
                            _ => "status",
                        };
                        metrics.backend_error(&name, label);
                    }
                })))
            }
            Ok(Reply::Whole { status, body }) => {
                if status >= 400 {
                    self.metrics.backend_error(backend.name(), "status");
                }
                if status >= 500 || status == 429 {
                    lease.failed();
                } else {
                    lease.answered();
                }
                if forward::busy(status) && next != Next::Nothing {
                    let error = busy_backend(backend.name(), status);
                    return Err((error, retry()));
                }
                Reply::Whole { status, body }
            }
            Err(e) => {
                lease.failed();
                self.metrics.backend_error(backend.name(), e.label());
                let again = match &e {
                    crate::backend::Error::Unreachable { .. } => retry(),
                    crate::backend::Error::Status { status, .. } if forward::busy(*status) => {
                        retry()
                    }
                    _ => None,
                };
                return Err((e.into(), again));
            }
        };
        Ok(Answer {
            capability: entry.capability.id.clone(),
            node: entry.node.clone(),
            score: provider.score,
            reply,
        })
    }
}

/// What follows a provider in a request's order: how much of the request a
/// local attempt must keep for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Nothing,
    /// Only other nodes, which are sent the body's raw bytes.
    Remote,
    /// A backend of this node, which needs the parsed body.
    Local,
}

/// A local backend that answered "not now".
fn busy_backend(name: &str, status: u16) -> ApiError {
    ApiError::new(
        ::http::StatusCode::SERVICE_UNAVAILABLE,
        "server_error",
        format!("Backend `{name}` is busy (it answered {status})."),
    )
    .code("backend_busy")
}

/// Operations as the intent protocol names them, and back.
impl From<Op> for crate::wire::intent::Operation {
    fn from(op: Op) -> Self {
        match op {
            Op::Chat => Self::Chat,
            Op::Completions => Self::Completions,
            Op::Embeddings => Self::Embeddings,
            Op::Transcribe => Self::Transcription,
        }
    }
}

impl TryFrom<crate::wire::intent::Operation> for Op {
    type Error = ApiError;

    /// A tool call is not a backend's operation (it runs on an MCP server).
    fn try_from(operation: crate::wire::intent::Operation) -> Result<Self, ApiError> {
        use crate::wire::intent::Operation;
        Ok(match operation {
            Operation::Chat => Op::Chat,
            Operation::Completions => Op::Completions,
            Operation::Embeddings => Op::Embeddings,
            Operation::Transcription => Op::Transcribe,
            Operation::Tool => {
                return Err(ApiError::invalid(
                    "operation",
                    "A tool call is sent on the tool protocol, or as an upload.",
                )
                .code("invalid_forwarded_request"));
            }
        })
    }
}
