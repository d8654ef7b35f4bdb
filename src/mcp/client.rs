//! One connection to an MCP server through `rmcp`'s client.

use std::time::Duration;

use rmcp::model::{CallToolRequestParams, ServerNotification, SubscriptionFilter};
use rmcp::service::{NotificationContext, RoleClient, RunningServiceCancellationToken};
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, ServiceExt};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use super::{Answer, MAX_TOOLS_PER_SERVER, Tool};
use crate::config::{McpConfig, McpTransport};

/// Longest wait for a session's end once it was asked to close.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Hears the server's notifications: a change of its tools (servers of
/// protocol versions before 2026-07-28 send it to every client; later ones
/// to those that asked with `subscriptions/listen`: see [`Session::open`]).
struct Handler {
    changed: mpsc::Sender<()>,
}

impl ClientHandler for Handler {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        // One pending change is enough: the tools are listed whole.
        let _ = self.changed.try_send(());
    }
}

/// A way to call a connected server's tools; cheap to clone.
#[derive(Clone)]
pub struct Peer(rmcp::Peer<RoleClient>);

impl Peer {
    /// Calls `tool` (no timeout here: the caller sets it).
    pub async fn call(&self, tool: &str, arguments: Map<String, Value>) -> Result<Answer, String> {
        let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
        let result = self.0.call_tool(params).await.map_err(|e| e.to_string())?;
        let is_error = result.is_error.unwrap_or(false);
        let result = serde_json::to_value(&result).map_err(|e| e.to_string())?;
        Ok(Answer { result, is_error })
    }
}

/// A connected server.
pub struct Session {
    peer: rmcp::Peer<RoleClient>,
    changed: mpsc::Receiver<()>,
    /// Why the session ended, once it has (taken when read).
    ended: Option<oneshot::Receiver<String>>,
    stop: Option<RunningServiceCancellationToken>,
}

impl Session {
    /// Starts or reaches the server and completes MCP's initialisation,
    /// within the server's `start_timeout`.
    pub async fn open(config: &McpConfig) -> Result<Self, String> {
        let (changed_tx, changed) = mpsc::channel(1);
        let handler = Handler {
            changed: changed_tx.clone(),
        };
        let connect = async {
            match config.transport() {
                McpTransport::Stdio { command, args, env } => {
                    let mut cmd = tokio::process::Command::new(&command);
                    cmd.args(&args).envs(&env).kill_on_drop(true);
                    let transport = TokioChildProcess::new(cmd)
                        .map_err(|e| format!("cannot start {command:?}: {e}"))?;
                    handler.serve(transport).await.map_err(|e| e.to_string())
                }
                McpTransport::Http(url) => {
                    let transport = StreamableHttpClientTransport::from_uri(url);
                    handler.serve(transport).await.map_err(|e| e.to_string())
                }
            }
        };
        let service = tokio::time::timeout(config.start_timeout, connect)
            .await
            .map_err(|_| format!("no answer to initialize within {:?}", config.start_timeout))??;
        let peer = service.peer().clone();
        let stop = service.cancellation_token();
        // Newer servers tell of changes only to a subscription; older ones
        // refuse it and notify the handler.
        let filter = SubscriptionFilter::builder().tools_list_changed().build();
        match tokio::time::timeout(config.timeout, peer.listen(filter)).await {
            Ok(Ok(mut subscription)) => {
                let changed = changed_tx;
                tokio::spawn(async move {
                    while let Ok(Some(n)) = subscription.next().await {
                        if matches!(n, ServerNotification::ToolListChangedNotification(_)) {
                            let _ = changed.try_send(());
                        }
                    }
                });
            }
            Ok(Err(e)) => {
                tracing::debug!(server = %config.name, error = %e, "no subscription to tool changes; waiting for notifications")
            }
            Err(_) => {
                tracing::debug!(server = %config.name, "no answer to subscriptions/listen; waiting for notifications")
            }
        }
        let (ended_tx, ended) = oneshot::channel();
        tokio::spawn(async move {
            let why = match service.waiting().await {
                Ok(reason) => format!("the session ended ({reason:?})"),
                Err(e) => format!("the session failed: {e}"),
            };
            let _ = ended_tx.send(why);
        });
        Ok(Self {
            peer,
            changed,
            ended: Some(ended),
            stop: Some(stop),
        })
    }

    /// Every tool of the server, within its timeout (at most
    /// [`MAX_TOOLS_PER_SERVER`]).
    pub async fn list(&self, config: &McpConfig) -> Result<Vec<Tool>, String> {
        let tools = tokio::time::timeout(config.timeout, self.peer.list_all_tools())
            .await
            .map_err(|_| format!("tools/list took longer than {:?}", config.timeout))?
            .map_err(|e| format!("tools/list failed: {e}"))?;
        if tools.len() > MAX_TOOLS_PER_SERVER {
            tracing::warn!(server = %config.name, tools = tools.len(), kept = MAX_TOOLS_PER_SERVER, "the MCP server lists more tools than are kept");
        }
        Ok(tools
            .into_iter()
            .take(MAX_TOOLS_PER_SERVER)
            .map(|t| {
                let schema = super::Schema::compile(&t.input_schema);
                if let Err(e) = &schema {
                    tracing::warn!(server = %config.name, tool = %t.name, error = %e, "the tool's input schema is not valid; the tool is not offered");
                }
                Tool {
                    server: config.name.clone(),
                    name: t.name.to_string(),
                    description: t.description.map(|d| d.to_string()).unwrap_or_default(),
                    input_schema: t.input_schema,
                    available: true,
                    share: config.share.clone(),
                    schema_error: schema.as_ref().err().cloned(),
                    schema: schema.ok(),
                }
            })
            .collect())
    }

    pub fn peer(&self) -> Peer {
        Peer(self.peer.clone())
    }

    /// Waits until the server's tools change (`None`: list them again) or
    /// the session ends (why).
    pub async fn changed_or_closed(&mut self) -> Option<String> {
        let Some(ended) = self.ended.as_mut() else {
            return Some("the session ended".into());
        };
        tokio::select! {
            Some(()) = self.changed.recv() => None,
            why = ended => {
                self.ended = None;
                Some(why.unwrap_or_else(|_| "the session ended".into()))
            }
        }
    }

    /// Ends the session (a child process is stopped).
    pub async fn close(mut self) {
        if let Some(stop) = self.stop.take() {
            stop.cancel();
        }
        if let Some(ended) = self.ended.take() {
            let _ = tokio::time::timeout(CLOSE_WAIT, ended).await;
        }
    }
}
