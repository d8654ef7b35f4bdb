//! Tool calls: a tool named `name` or `name@node` (or routed to by meaning)
//! is one of the copies of a `tool/*` capability; the arguments are checked
//! against its input schema before they travel, then the call runs on this
//! node's MCP server or is sent to the tool's node over
//! `/atmosphere/tool/1.0.0` (`protocols/tool.md`).
//!
//! A tool can move a camera or spend money, so a call is tried on another
//! provider only when it certainly did not run: the node could not be
//! reached, or answered that the tool is unavailable or that this node is
//! over its quota there. A call that timed out is not repeated.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ::http::StatusCode;
use bytes::Bytes;
use libp2p::PeerId;
use serde_json::{Map, Value};

use super::forward::{UploadMiss, upload_whole};
use super::{ApiError, Core};
use crate::balance::Provider;
use crate::capability::CapabilityId;
use crate::mcp::{CallError, Schema};
use crate::network::frames;
use crate::routing::Entry;
use crate::wire::Message;
use crate::wire::intent::{self, Operation, UploadRequest};
use crate::wire::tool::{self, ToolRequest, ToolResponse};

/// What a tool call came to, and where it ran.
#[derive(Debug)]
pub struct ToolAnswer {
    /// The tool's capability id and node (PeerId, base58).
    pub capability: CapabilityId,
    pub node: String,
    pub outcome: Outcome,
}

/// The tool's result, or the refusal of the node it lives on.
#[derive(Debug)]
pub enum Outcome {
    /// MCP's `CallToolResult` as JSON; `is_error`: the tool ran and said it
    /// failed.
    Result { result: Value, is_error: bool },
    /// The tool's node refused or could not run the call: its status and
    /// its OpenAI-style error body, relayed as they are.
    Refused { status: u16, body: Bytes },
}

/// The capability id of a tool as a client names it: `camera-front` and
/// `tool/camera-front` are the same tool.
fn tool_id(name: &str) -> Result<CapabilityId, ApiError> {
    let id = if name.contains('/') {
        name.parse()
    } else {
        CapabilityId::sanitized("tool", name)
    };
    id.map_err(|_| tool_not_found(name))
}

fn tool_not_found(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!("No tool `{name}` is known; GET /v1/tools lists them."),
    )
    .param("tool")
    .code("tool_not_found")
}

/// The refusal of arguments that do not satisfy the tool's schema.
fn invalid_arguments(tool: &str, problems: &[String]) -> ApiError {
    ApiError::invalid(
        "arguments",
        format!(
            "The arguments do not match the input schema of `{tool}`: {}.",
            problems.join("; ")
        ),
    )
    .code("invalid_arguments")
}

impl Core {
    /// The copies of the tool a client named (`name`, `tool/name`, either
    /// with `@node`), in the order [`Core::copies`] gives.
    pub fn tool_copies(&self, name: &str) -> Result<Vec<Arc<Entry>>, ApiError> {
        let (id, at) = match name.rsplit_once('@') {
            Some((id, node)) => (id, Some(node)),
            None => (name, None),
        };
        let id = tool_id(id)?;
        let model = match at {
            Some(node) => format!("{id}@{node}"),
            None => id.to_string(),
        };
        let copies = self.copies(&model).map_err(|e| match e.code {
            Some("model_not_found") => tool_not_found(name),
            _ => e.param("tool"),
        })?;
        match copies.first() {
            // Not offered because its schema is not valid: say so.
            None if at.is_none_or(|n| n == self.node_name || n == self.node_id) => {
                let broken = self.tools.tools().into_iter().find(|t| {
                    t.schema_error.is_some()
                        && CapabilityId::sanitized("tool", &t.name).is_ok_and(|i| i == id)
                });
                Err(match broken {
                    Some(t) => bad_schema(id.as_str(), t.schema_error.as_deref().unwrap_or("")),
                    None => tool_not_found(name),
                })
            }
            None => Err(tool_not_found(name)),
            Some(e) if e.capability.kind.category() != "tool" => Err(ApiError::invalid(
                "tool",
                format!(
                    "`{name}` is a {} capability, not a tool.",
                    e.capability.kind
                ),
            )
            .code("not_a_tool")),
            Some(_) => Ok(copies),
        }
    }

    /// Calls a tool: checks the arguments against the schema its node
    /// announced, then tries its providers in the balancer's order.
    pub async fn call_tool(
        &self,
        copies: Vec<Arc<Entry>>,
        arguments: Map<String, Value>,
    ) -> Result<ToolAnswer, ApiError> {
        let started = Instant::now();
        // This node's own tools are checked by `mcp` with their compiled
        // schema; others' with the schema their node announced.
        if let Some(lead) = copies.first()
            && !lead.local
            && let Some(schema) = &lead.capability.input_schema
        {
            let tool = lead.capability.id.as_str();
            let compiled = Schema::compile(schema).map_err(|e| bad_schema(tool, &e))?;
            compiled
                .check(&arguments)
                .map_err(|p| invalid_arguments(tool, &p))?;
        }
        let target = self.explicit_target(copies);
        let mut order = self.balancer.order(target.group, None);
        order.extend(target.fallbacks);
        let mut last = None;
        for (i, provider) in order.into_iter().enumerate() {
            if i > 0 {
                self.metrics.forward("tool_failover");
            }
            let lease = self.balancer.lease(&provider);
            let remaining = self.request_timeout.saturating_sub(started.elapsed());
            let attempt = if provider.entry.local {
                self.call_local_tool(&provider, arguments.clone()).await
            } else {
                self.call_remote_tool(&provider, &arguments, remaining)
                    .await
            };
            match attempt {
                Ok(outcome) => {
                    match &outcome {
                        Outcome::Refused { status, .. } if *status >= 500 => lease.failed(),
                        _ => lease.answered(),
                    }
                    return Ok(ToolAnswer {
                        capability: provider.entry.capability.id.clone(),
                        node: provider.entry.node.clone(),
                        outcome,
                    });
                }
                Err(Attempt::Final(e)) => {
                    lease.failed();
                    return Err(e);
                }
                Err(Attempt::Next(e)) => {
                    lease.failed();
                    tracing::debug!(node = %provider.entry.node, error = %e.message, "tool call not run; trying the next provider");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "No provider of the tool could be reached.",
            )
            .code("tool_unavailable")
        }))
    }

    /// Runs a tool of this node's MCP server.
    async fn call_local_tool(
        &self,
        provider: &Provider,
        arguments: Map<String, Value>,
    ) -> Result<Outcome, Attempt> {
        let capability = &provider.entry.capability;
        let server = provider
            .backend
            .as_deref()
            .or(capability.backends.first().map(String::as_str))
            .unwrap_or_default();
        match self.tools.call(server, &capability.model, arguments).await {
            Ok(answer) => Ok(Outcome::Result {
                result: answer.result,
                is_error: answer.is_error,
            }),
            Err(e) => {
                let unavailable = matches!(e, CallError::Unavailable(..));
                let error = call_error(capability.id.as_str(), e);
                Err(if unavailable {
                    Attempt::Next(error)
                } else {
                    Attempt::Final(error)
                })
            }
        }
    }

    /// Sends a tool call to the tool's node and reads its answer.
    async fn call_remote_tool(
        &self,
        provider: &Provider,
        arguments: &Map<String, Value>,
        remaining: Duration,
    ) -> Result<Outcome, Attempt> {
        let entry = &provider.entry;
        let unreachable = |why: String| {
            Attempt::Next(
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "server_error",
                    format!("The tool's node could not be reached: {why}."),
                )
                .code("node_unreachable"),
            )
        };
        let (Some(mesh), Ok(peer)) = (&self.mesh, entry.node.parse::<PeerId>()) else {
            return Err(unreachable("the node is not part of a mesh".into()));
        };
        let arguments = serde_json::to_vec(arguments).unwrap_or_default();
        let deadline_ms = remaining.as_millis().min(u128::from(u32::MAX)) as u32;
        if arguments.len() > intent::UPLOAD_ABOVE {
            // Too large for one message: in parts, refused before them if
            // the node will not take them.
            let head = UploadRequest {
                version: intent::VERSION,
                capability: entry.capability.id.to_string(),
                operation: Operation::Tool,
                stream: false,
                body_len: arguments.len() as u64,
                deadline_ms,
                hops: 0,
            };
            let sent = upload_whole(self, &mesh.client, peer, head, Bytes::from(arguments));
            return match tokio::time::timeout(remaining, sent).await {
                Err(_) => Err(Attempt::Final(timed_out(remaining))),
                Ok(Err(UploadMiss::Unreachable(why))) => Err(unreachable(why)),
                Ok(Err(UploadMiss::Busy)) => Err(Attempt::Next(refusal_error(503, &[]))),
                Ok(Err(UploadMiss::Broke(why))) => Err(Attempt::Final(broke(&why))),
                Ok(Ok((status, body))) => {
                    self.metrics.forward("tool_sent");
                    outcome(status, body)
                }
            };
        }
        let request = ToolRequest {
            version: tool::VERSION,
            tool: entry.capability.id.to_string(),
            arguments,
            deadline_ms,
        };
        let bytes = request.encode().map_err(|e| {
            Attempt::Final(
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "invalid_request_error",
                    format!("The call cannot be sent to the tool's node: {e}."),
                )
                .param("arguments")
                .code("tool_call_too_large"),
            )
        })?;
        let mut io = mesh
            .client
            .open_stream(peer, crate::wire::TOOL_PROTOCOL)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        // From here on the call may have run: it is not repeated elsewhere.
        let exchange = async {
            frames::write(&mut io, &bytes).await?;
            frames::read(&mut io, tool::MAX_RESPONSE_BYTES).await
        };
        let answer = match tokio::time::timeout(remaining, exchange).await {
            Err(_) => return Err(Attempt::Final(timed_out(remaining))),
            Ok(Err(e)) => return Err(Attempt::Final(broke(&e.to_string()))),
            Ok(Ok(None)) => return Err(Attempt::Final(broke("the stream ended"))),
            Ok(Ok(Some(answer))) => answer,
        };
        self.metrics.forward("tool_sent");
        let response =
            ToolResponse::decode(&answer).map_err(|e| Attempt::Final(broke(&e.to_string())))?;
        outcome(response.status, Bytes::from(response.body))
    }
}

/// What the tool's node answered, as an outcome.
fn outcome(status: u16, body: Bytes) -> Result<Outcome, Attempt> {
    if status != 200 {
        // Unavailable there, or this node is over its quota there: the
        // tool did not run.
        return match status {
            503 | 429 => Err(Attempt::Next(refusal_error(status, &body))),
            status => Ok(Outcome::Refused { status, body }),
        };
    }
    let result: Value = serde_json::from_slice(&body)
        .map_err(|e| Attempt::Final(broke(&format!("the result is not JSON: {e}"))))?;
    let is_error = result.get("isError").and_then(Value::as_bool) == Some(true);
    Ok(Outcome::Result { result, is_error })
}

/// Whether a failed attempt may go to the next provider.
enum Attempt {
    /// The tool did not run: try the next provider.
    Next(ApiError),
    /// The answer.
    Final(ApiError),
}

/// What another node said when it refused a call (its error's message).
pub fn refusal_message(status: u16, body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("The tool's node refused the call ({status})."))
}

/// A refusal relayed from another node (503 or 429: the tool did not run),
/// as this node's error with its status and message.
fn refusal_error(status: u16, body: &[u8]) -> ApiError {
    ApiError::new(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
        "server_error",
        refusal_message(status, body),
    )
    .code("tool_unavailable")
}

fn bad_schema(tool: &str, why: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "server_error",
        format!("The input schema of `{tool}` is {why}; its arguments cannot be checked."),
    )
    .code("invalid_tool_schema")
}

fn timed_out(after: Duration) -> ApiError {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "server_error",
        format!("The tool did not answer within {after:?}."),
    )
    .code("tool_timeout")
}

fn broke(why: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "server_error",
        format!("The tool call broke off before its result arrived ({why}); it may have run."),
    )
    .code("tool_call_broken")
}

/// A local MCP call's failure as the API's error.
fn call_error(tool: &str, e: CallError) -> ApiError {
    match e {
        CallError::UnknownTool { .. } => tool_not_found(tool),
        CallError::Unavailable(server, why) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            format!(
                "The MCP server `{server}` of `{tool}` is not connected ({why}); try again later."
            ),
        )
        .code("tool_unavailable"),
        CallError::Timeout(after) => timed_out(after),
        CallError::Server(message) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "server_error",
            format!("The MCP server of `{tool}` answered with an error: {message}"),
        )
        .code("tool_server_error"),
        CallError::Invalid(problems) => invalid_arguments(tool, &problems),
        CallError::BadSchema(why) => bad_schema(tool, &why),
    }
}

/// A tool call's error as the protocol's answer.
pub(super) fn refused(e: &ApiError) -> ToolResponse {
    ToolResponse {
        version: tool::VERSION,
        status: e.status.as_u16(),
        body: e.to_bytes().to_vec(),
    }
}
