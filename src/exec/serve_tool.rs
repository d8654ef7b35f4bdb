//! The serving side of `/atmosphere/tool/1.0.0`: a peer's call of one of
//! this node's tools, run when the peer is a member (in a closed mesh) and
//! the tool's `share` allows it, within the peer's rate and quota. Spec:
//! `protocols/tool.md`.

use std::sync::Arc;
use std::time::Duration;

use ::http::StatusCode;
use futures::AsyncWriteExt;
use libp2p::PeerId;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::inbound::{Inbound, Protocol, Turn};
use super::quota::PeerRate;
use super::tool::{Outcome, ToolAnswer, refused};
use super::{ApiError, Core};
use crate::network::frames;
use crate::routing::Entry;
use crate::wire::Message;
use crate::wire::tool::{self, ToolRequest, ToolResponse};

/// Tool calls served at once, and per peer; more are answered 429.
const AT_ONCE: usize = 64;
const PER_PEER: usize = 8;
/// Longest wait for the answer to be taken.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves the tool calls peers open to this node ([`super::inbound`]: a
/// call holds a place only once it has come) until `cancel`, then lets
/// the calls running end.
pub async fn serve_tools(
    core: Core,
    incoming: libp2p_stream::IncomingStreams,
    rate: Arc<PeerRate>,
    cancel: CancellationToken,
) {
    let inbound = Inbound::new(
        &core,
        Protocol::Tool,
        "tool calls",
        tool::MAX_REQUEST_BYTES,
        rate,
        (PER_PEER, AT_ONCE),
    );
    super::inbound::serve(core, incoming, inbound, cancel, serve_tool).await;
}

/// Runs one call (or answers why not) and writes the answer.
async fn serve_tool(
    core: Core,
    peer: PeerId,
    mut io: libp2p::Stream,
    first: Vec<u8>,
    turn: Result<Turn, ApiError>,
) {
    let response = match turn {
        Err(e) => refused(&e),
        Ok(_turn) => match ToolRequest::decode(&first) {
            Ok(request) => {
                core.metrics.forward("tool_served");
                run_request(&core, peer, request).await
            }
            Err(e) => {
                core.metrics.forward("refused");
                refused(
                    &ApiError::invalid("tool", format!("Invalid tool call: {e}."))
                        .code("invalid_forwarded_request"),
                )
            }
        },
    };
    let bytes = response.encode().or_else(|e| {
        refused(
            &ApiError::new(
                StatusCode::BAD_GATEWAY,
                "server_error",
                format!("The tool's result cannot be sent: {e}."),
            )
            .code("tool_result_too_large"),
        )
        .encode()
    });
    let Ok(bytes) = bytes else {
        return;
    };
    let written = tokio::time::timeout(WRITE_TIMEOUT, async {
        frames::write(&mut io, &bytes).await?;
        io.close().await
    });
    if !matches!(written.await, Ok(Ok(()))) {
        tracing::debug!(%peer, "a tool call's answer could not be written");
    }
}

/// This node's tool `tool` (a capability id), if the peer may call it.
pub(super) fn tool_entry(
    core: &Core,
    peer: PeerId,
    roles: &[String],
    tool: &str,
) -> Result<Arc<Entry>, ApiError> {
    let entry = tool
        .parse()
        .ok()
        .and_then(|id| core.catalog.table().lookup(&id).find(|e| e.local).cloned())
        .filter(|e| e.capability.kind.category() == "tool")
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!("This node has no tool `{tool}`."),
            )
            .param("tool")
            .code("tool_not_found")
        })?;
    if !entry.capability.share.allows(&peer.to_base58(), roles) {
        core.metrics.peer_refusal(&peer, "tool_not_shared");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            format!("The node does not share `{tool}` with this peer."),
        )
        .param("tool")
        .code("tool_not_shared"));
    }
    Ok(entry)
}

/// Checks a peer's call over `/atmosphere/tool/1.0.0` (membership, the
/// arguments, the tool and its share) and runs it.
async fn run_request(core: &Core, peer: PeerId, request: ToolRequest) -> ToolResponse {
    let ran = async {
        let roles = super::quota::admitted(core, peer).await?;
        let arguments = arguments_of(&request.arguments)?;
        let entry = tool_entry(core, peer, &roles, &request.tool)?;
        core.call_tool(vec![entry], arguments).await
    };
    answer_within(core, request.deadline_ms, ran).await
}

/// Runs a call of `entry`, a tool the peer was found to be allowed (an
/// upload's head), with `arguments` (JSON).
pub(super) async fn run(
    core: &Core,
    entry: Arc<Entry>,
    arguments: &[u8],
    deadline_ms: u32,
) -> ToolResponse {
    let ran = async { core.call_tool(vec![entry], arguments_of(arguments)?).await };
    answer_within(core, deadline_ms, ran).await
}

fn arguments_of(arguments: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice(arguments) {
        Ok(Value::Object(arguments)) => Ok(arguments),
        _ => Err(
            ApiError::invalid("arguments", "The arguments must be a JSON object.")
                .code("invalid_arguments"),
        ),
    }
}

/// A call's answer as the tool protocol carries it, within the call's
/// deadline (or this node's request timeout).
async fn answer_within(
    core: &Core,
    deadline_ms: u32,
    ran: impl Future<Output = Result<ToolAnswer, ApiError>>,
) -> ToolResponse {
    let deadline = super::serve::deadline_of(core, deadline_ms);
    match tokio::time::timeout(deadline, ran).await {
        Err(_) => refused(
            &ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "server_error",
                format!("The tool did not answer within the call's {deadline:?}."),
            )
            .code("tool_timeout"),
        ),
        Ok(Err(e)) => refused(&e),
        Ok(Ok(answer)) => match answer.outcome {
            Outcome::Result { result, .. } => ToolResponse {
                version: tool::VERSION,
                status: 200,
                body: serde_json::to_vec(&result).unwrap_or_default(),
            },
            Outcome::Refused { status, body } => ToolResponse {
                version: tool::VERSION,
                status,
                body: body.to_vec(),
            },
        },
    }
}
