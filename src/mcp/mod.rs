//! Tools of this node's MCP servers (`[[mcp]]`). Each server gets a task
//! that connects to it (a child process over stdio, or streamable HTTP),
//! lists its tools, lists them again when the server says they changed, and
//! when the server dies or cannot be reached marks its tools unavailable and
//! connects again after a backoff (1 s, doubling to 60 s). Calls run with
//! the server's timeout. Every use of `rmcp` is in this module: its API has
//! changed across minor releases.

mod client;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::capability::Share;
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
#[derive(Clone, Default)]
pub struct Servers {
    servers: Arc<HashMap<String, Arc<Server>>>,
}

impl Servers {
    /// Starts a task per server; they end with `cancel` (child processes are
    /// stopped).
    pub fn start(configs: &[McpConfig], cancel: &CancellationToken) -> Self {
        let mut servers = HashMap::new();
        for config in configs {
            let server = Arc::new(Server {
                config: config.clone(),
                state: RwLock::new(State::Connecting),
            });
            tokio::spawn(keep_up(server.clone(), cancel.child_token()));
            servers.insert(config.name.clone(), server);
        }
        Self {
            servers: Arc::new(servers),
        }
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

    /// Calls `tool` of `server` with `arguments` (already checked against its
    /// schema), within the server's timeout.
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
                if !tools.iter().any(|t| t.name == tool) {
                    return Err(unknown());
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
async fn keep_up(server: Arc<Server>, cancel: CancellationToken) {
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
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}
