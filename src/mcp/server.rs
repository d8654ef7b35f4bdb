//! The node as an MCP server (`/mcp`, streamable HTTP): every tool the
//! node can call, its own and those other nodes share, under names MCP
//! clients and OpenAI's function rules accept (`^[a-zA-Z0-9_-]{1,64}$`),
//! mapped back when a client calls one. What the tools are and how a call
//! runs comes from a [`ToolHost`] (the request core); this module holds the
//! protocol side only.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
    PaginatedRequestParams, ResultType, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::sessions::Sessions;

/// Longest tool name offered (OpenAI's function name rule).
pub const MAX_NAME: usize = 64;

/// A tool as the host offers it.
#[derive(Debug, Clone)]
pub struct Offered {
    /// The tool's name at its node, and the node's display name and PeerId.
    pub tool: String,
    pub node_name: String,
    pub node: String,
    pub description: String,
    pub input_schema: Option<Arc<Map<String, Value>>>,
    /// What the host calls it by (`tool/<name>@<PeerId>`).
    pub address: String,
}

/// A call's end as MCP tells it: the tool's `CallToolResult` (JSON), or why
/// it could not run (shown to the client as an error result).
pub type Called = Result<Value, String>;

/// What `/mcp` offers and how its calls run.
pub trait ToolHost: Clone + Send + Sync + 'static {
    /// Every tool, in a stable order.
    fn offered(&self) -> Vec<Offered>;
    /// Calls the tool at `address` with `arguments`.
    fn call(
        &self,
        address: String,
        arguments: Map<String, Value>,
    ) -> Pin<Box<dyn Future<Output = Called> + Send>>;
}

/// The tower service to mount at `/mcp`, its sessions kept by `sessions`.
/// `any_host`: accept any `Host` header (the node listens beyond
/// loopback); else only loopback names, against DNS rebinding. A request
/// body over `max_body` bytes is refused (413) before it is all read.
pub fn service<H: ToolHost>(
    host: H,
    sessions: Arc<Sessions>,
    any_host: bool,
    max_body: usize,
    cancel: CancellationToken,
) -> StreamableHttpService<Facade<H>, Sessions> {
    let mut config = StreamableHttpServerConfig::default()
        .with_cancellation_token(cancel)
        .with_max_request_body_bytes(max_body);
    if any_host {
        config = config.disable_allowed_hosts();
    }
    StreamableHttpService::new(move || Ok(Facade { host: host.clone() }), sessions, config)
}

/// One MCP session's handler.
#[derive(Clone)]
pub struct Facade<H> {
    host: H,
}

/// The names `/mcp` gives `offered`, in order: `<tool>__<node name>`
/// (`<tool>` alone without a node name: an agent's functions) with every
/// character outside `[a-zA-Z0-9_-]` replaced by `-`; one that is too
/// long, or already given, is cut and ends in `-` and 8 hex digits of its
/// address, so every name is unique and the same on every listing.
pub fn names(offered: &[Offered]) -> Vec<String> {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    let mut given = HashSet::new();
    offered
        .iter()
        .map(|o| {
            let mut name = if o.node_name.is_empty() {
                clean(&o.tool)
            } else {
                format!("{}__{}", clean(&o.tool), clean(&o.node_name))
            };
            if name.len() > MAX_NAME || given.contains(&name) {
                use sha2::Digest;
                let digest = sha2::Sha256::digest(o.address.as_bytes());
                let tag: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
                name.truncate(MAX_NAME - 9);
                name = format!("{name}-{tag}");
            }
            given.insert(name.clone());
            name
        })
        .collect()
}

impl<H: ToolHost> ServerHandler for Facade<H> {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_instructions(
            "The tools of an Atmosphere mesh: each runs on the node named after its `__`.",
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let offered = self.host.offered();
        let tools = names(&offered)
            .into_iter()
            .zip(offered)
            .map(|(name, o)| {
                let schema = o.input_schema.unwrap_or_else(|| {
                    Arc::new(Map::from_iter([("type".into(), Value::from("object"))]))
                });
                let description = format!("{} (on node {})", o.description, o.node_name);
                Tool::new(name, description, schema)
            })
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let offered = self.host.offered();
        let Some(o) = names(&offered)
            .into_iter()
            .zip(offered)
            .find_map(|(name, o)| (name == request.name.as_ref()).then_some(o))
        else {
            return Err(ErrorData::invalid_params(
                format!("no tool `{}` (tools/list names them)", request.name),
                None,
            ));
        };
        let arguments = request.arguments.unwrap_or_default();
        let result = match self.host.call(o.address, arguments).await {
            Ok(result) => match serde_json::from_value::<CallToolResult>(result) {
                // A result of a server of an older protocol version has no
                // `resultType`; clients of this one require it (rmcp leaves
                // it out again for older clients).
                Ok(mut result) => {
                    result.result_type = Some(ResultType::COMPLETE);
                    result
                }
                Err(e) => CallToolResult::error(vec![ContentBlock::text(format!(
                    "the tool's result is not an MCP result: {e}"
                ))]),
            },
            Err(why) => CallToolResult::error(vec![ContentBlock::text(why)]),
        };
        Ok(CallToolResponse::Complete(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offered(tool: &str, node_name: &str, node: &str) -> Offered {
        Offered {
            tool: tool.into(),
            node_name: node_name.into(),
            node: node.into(),
            description: String::new(),
            input_schema: None,
            address: format!("tool/{tool}@{node}"),
        }
    }

    #[test]
    fn names_follow_the_function_name_rule_and_are_unique() {
        let long = "x".repeat(80);
        let all = vec![
            offered("camera-front", "edge-gateway", "P1"),
            offered("camera.front", "edge gateway", "P2"),
            offered("camera-front", "edge-gateway", "P3"),
            offered(&long, "n", "P4"),
        ];
        let names = names(&all);
        assert_eq!(names[0], "camera-front__edge-gateway");
        let rule = |n: &str| {
            (1..=MAX_NAME).contains(&n.len())
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        for n in &names {
            assert!(rule(n), "{n}");
        }
        let unique: HashSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        // The same on every listing.
        assert_eq!(names, super::names(&all));
    }
}
