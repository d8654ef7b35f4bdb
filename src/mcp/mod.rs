//! Tools of this node's MCP servers (`[[mcp]]`). Each server gets a task
//! that connects to it (a child process over stdio, or streamable HTTP),
//! lists its tools, lists them again when the server says they changed, and
//! when the server dies or cannot be reached marks its tools unavailable and
//! connects again after a backoff (1 s, doubling to 60 s). A server has its
//! `start_timeout` to start and answer `initialize`; listings and calls run
//! with its `timeout`. Every use of `rmcp` is in this module: its API has
//! changed across minor releases.

mod client;
mod schema;
pub mod server;
pub mod sessions;
pub mod stdio;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use schema::Schema;

use crate::capability::{Capability, CapabilityId, Share, Source};
use crate::config::McpConfig;

/// First wait before connecting again to a server that failed.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// Longest such wait.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Most tools kept of one server (more are left out, with a warning).
pub const MAX_TOOLS_PER_SERVER: usize = 256;

/// One tool of a server, as listed.
#[derive(Debug, Clone, Serialize)]
pub struct Tool {
    /// The server's name in `[[mcp]]`.
    pub server: String,
    /// The tool's name on its server.
    pub name: String,
    pub description: String,
    /// The JSON Schema its arguments must satisfy.
    pub input_schema: Arc<Map<String, Value>>,
    /// Whether its server is connected now.
    pub available: bool,
    /// Who besides this node's clients may call it (the server's `share`).
    #[serde(skip)]
    pub share: Share,
    /// `input_schema` compiled; `None` when it is not valid JSON Schema
    /// (`schema_error` says why): such a tool is not offered, since its
    /// arguments could not be checked.
    #[serde(skip)]
    pub schema: Option<Schema>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_error: Option<String>,
}

/// Why a call did not give the tool's result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    #[error("no tool `{tool}` on MCP server `{server}`")]
    UnknownTool { server: String, tool: String },
    #[error("MCP server `{0}` is not connected: {1}")]
    Unavailable(String, String),
    #[error("the tool did not answer within {0:?}")]
    Timeout(Duration),
    /// The server answered the call with an error of the protocol.
    #[error("MCP server error: {0}")]
    Server(String),
    /// The arguments do not satisfy the tool's input schema: what is wrong.
    #[error("the arguments do not match the tool's input schema: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// The tool's input schema is not valid JSON Schema (why).
    #[error("the tool's input schema is {0}")]
    BadSchema(String),
}

/// What a tool answered (`isError` results included: the tool ran and said
/// it failed).
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    /// The MCP `CallToolResult`, as JSON (`content`, `structuredContent`,
    /// `isError`).
    pub result: Value,
    pub is_error: bool,
}

/// Where one server stands.
enum State {
    Connecting,
    Up {
        peer: client::Peer,
        tools: Vec<Tool>,
    },
    Down {
        why: String,
        tools: Vec<Tool>,
    },
}

struct Server {
    config: McpConfig,
    state: RwLock<State>,
}

/// This node's MCP servers and their tools.
#[derive(Clone)]
pub struct Servers {
    servers: Arc<HashMap<String, Arc<Server>>>,
    /// Server names in config order (the first of two tools with one name
    /// is the one offered).
    order: Arc<Vec<String>>,
    /// Counts changes of any server's tools or availability.
    changes: Arc<watch::Sender<u64>>,
}

impl Default for Servers {
    fn default() -> Self {
        Self {
            servers: Arc::default(),
            order: Arc::default(),
            changes: Arc::new(watch::Sender::new(0)),
        }
    }
}

impl Servers {
    /// Starts a task per server; they end with `cancel` (child processes are
    /// stopped).
    pub fn start(configs: &[McpConfig], cancel: &CancellationToken) -> Self {
        let changes = Arc::new(watch::Sender::new(0));
        let mut servers = HashMap::new();
        for config in configs {
            let server = Arc::new(Server {
                config: config.clone(),
                state: RwLock::new(State::Connecting),
            });
            tokio::spawn(keep_up(
                server.clone(),
                changes.clone(),
                cancel.child_token(),
            ));
            servers.insert(config.name.clone(), server);
        }
        Self {
            servers: Arc::new(servers),
            order: Arc::new(configs.iter().map(|c| c.name.clone()).collect()),
            changes,
        }
    }

    /// Changes whenever a server's tools or availability change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Whether the server `name` is connected.
    pub fn up(&self, name: &str) -> bool {
        self.servers
            .get(name)
            .is_some_and(|s| matches!(&*s.state.read(), State::Up { .. }))
    }

    /// The tools this node offers as capabilities (`tool/<name>`, the name
    /// made fit for an id), servers in config order: a tool whose schema is
    /// not valid is left out, and of two tools whose ids are equal the
    /// first server's.
    pub fn capabilities(&self) -> Vec<Capability> {
        let mut out: Vec<Capability> = Vec::new();
        for name in self.order.iter() {
            let Some(server) = self.servers.get(name) else {
                continue;
            };
            let config = &server.config;
            let state = server.state.read();
            let (State::Up { tools, .. } | State::Down { tools, .. }) = &*state else {
                continue;
            };
            for tool in tools.iter().filter(|t| t.schema.is_some()) {
                let Ok(id) = CapabilityId::sanitized("tool", &tool.name) else {
                    continue;
                };
                if out.iter().any(|c| c.id == id) {
                    continue;
                }
                let extra = config.tools.get(&tool.name).cloned().unwrap_or_default();
                out.push(Capability {
                    domain: extra.domain.unwrap_or_else(|| config.domain.clone()),
                    description: tool.description.clone(),
                    examples: extra.examples,
                    share: config.share.clone(),
                    input_schema: Some(tool.input_schema.clone()),
                    ..Capability::new(
                        id,
                        extra.kind.unwrap_or_else(|| config.kind.clone()),
                        Source::Tool,
                        &config.name,
                        &tool.name,
                    )
                });
            }
        }
        out
    }

    /// Every tool of every server, by server and name; a server that is down
    /// lists the tools it had, unavailable.
    pub fn tools(&self) -> Vec<Tool> {
        let mut all: Vec<Tool> = self
            .servers
            .values()
            .flat_map(|s| match &*s.state.read() {
                State::Connecting => Vec::new(),
                State::Up { tools, .. } | State::Down { tools, .. } => tools.clone(),
            })
            .collect();
        all.sort_by(|a, b| (&a.server, &a.name).cmp(&(&b.server, &b.name)));
        all
    }

    /// One tool, if its server lists it.
    pub fn tool(&self, server: &str, name: &str) -> Option<Tool> {
        match &*self.servers.get(server)?.state.read() {
            State::Connecting => None,
            State::Up { tools, .. } | State::Down { tools, .. } => {
                tools.iter().find(|t| t.name == name).cloned()
            }
        }
    }

    /// Calls `tool` of `server` with `arguments`, once they satisfy its
    /// input schema, within the server's timeout.
    pub async fn call(
        &self,
        server: &str,
        tool: &str,
        arguments: Map<String, Value>,
    ) -> Result<Answer, CallError> {
        let unknown = || CallError::UnknownTool {
            server: server.to_owned(),
            tool: tool.to_owned(),
        };
        let s = self.servers.get(server).ok_or_else(unknown)?;
        let peer = match &*s.state.read() {
            State::Up { peer, tools } => {
                let listed = tools.iter().find(|t| t.name == tool).ok_or_else(unknown)?;
                match &listed.schema {
                    Some(schema) => schema.check(&arguments).map_err(CallError::Invalid)?,
                    None => {
                        return Err(CallError::BadSchema(
                            listed.schema_error.clone().unwrap_or_default(),
                        ));
                    }
                }
                peer.clone()
            }
            State::Connecting => {
                return Err(CallError::Unavailable(
                    server.to_owned(),
                    "still connecting".into(),
                ));
            }
            State::Down { why, .. } => {
                return Err(CallError::Unavailable(server.to_owned(), why.clone()));
            }
        };
        let timeout = s.config.timeout;
        match tokio::time::timeout(timeout, peer.call(tool, arguments)).await {
            Err(_) => Err(CallError::Timeout(timeout)),
            Ok(result) => result.map_err(CallError::Server),
        }
    }
}

/// Connects to a server and keeps it connected until `cancel`.
async fn keep_up(server: Arc<Server>, changes: Arc<watch::Sender<u64>>, cancel: CancellationToken) {
    let changed = || changes.send_modify(|n| *n += 1);
    let name = server.config.name.clone();
    let mut backoff = BACKOFF_FIRST;
    loop {
        let session = tokio::select! {
            _ = cancel.cancelled() => return,
            s = client::Session::open(&server.config) => s,
        };
        let why = match session {
            Ok(mut session) => {
                tracing::info!(server = %name, "MCP server connected");
                // Listed, then listed again on every change, until it ends.
                let ended = loop {
                    match session.list(&server.config).await {
                        Ok(tools) => {
                            tracing::info!(server = %name, tools = tools.len(), "MCP tools listed");
                            backoff = BACKOFF_FIRST;
                            *server.state.write() = State::Up {
                                peer: session.peer(),
                                tools,
                            };
                            changed();
                        }
                        Err(e) => break e,
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => {
                            session.close().await;
                            return;
                        }
                        why = session.changed_or_closed() => if let Some(why) = why { break why },
                    }
                };
                session.close().await;
                ended
            }
            Err(e) => e,
        };
        tracing::warn!(server = %name, error = %why, retry_in = ?backoff, "MCP server unavailable");
        {
            let mut state = server.state.write();
            let mut tools = match std::mem::replace(&mut *state, State::Connecting) {
                State::Up { tools, .. } | State::Down { tools, .. } => tools,
                State::Connecting => Vec::new(),
            };
            for t in &mut tools {
                t.available = false;
            }
            *state = State::Down { why, tools };
        }
        changed();
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}
