//! A program's own tools served over its stdin and stdout, the way a node
//! starts an `[[mcp]]` server with `command`: for small programs that give a
//! node tools (the testnet's camera, `src/bin/camera-tool.rs`). Arguments are
//! checked against each tool's schema here too: a server does not trust its
//! client to have done it.

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Map, Value};

use super::Schema;

/// One tool a [`Toolbox`] offers.
#[derive(Debug, Clone)]
pub struct Offer {
    pub name: String,
    pub description: String,
    pub input_schema: Map<String, Value>,
}

/// What a tool gives back: its content, as MCP content blocks.
#[derive(Debug, Clone)]
pub enum Block {
    Text(String),
    /// Base64-encoded data and its MIME type.
    Image {
        data: String,
        mime_type: String,
    },
}

/// The tools of a program and how they run.
pub trait Toolbox: Send + Sync + 'static {
    fn offers(&self) -> Vec<Offer>;
    /// Runs `name` with arguments its schema accepts: its content, or why
    /// it failed (given to the client as the tool's error result).
    fn call(&self, name: &str, arguments: Map<String, Value>) -> Result<Vec<Block>, String>;
}

/// Serves `toolbox` on stdin and stdout until the client closes them.
pub async fn serve(toolbox: impl Toolbox) -> anyhow::Result<()> {
    let mut tools = Vec::new();
    for offer in toolbox.offers() {
        let schema = Schema::compile(&offer.input_schema)
            .map_err(|e| anyhow::anyhow!("tool {}: schema: {e}", offer.name))?;
        tools.push((offer, schema));
    }
    let handler = Handler {
        toolbox: Arc::new(toolbox),
        tools: Arc::new(tools),
    };
    let running = handler
        .serve(rmcp::transport::stdio_pipes())
        .await
        .map_err(|e| anyhow::anyhow!("no MCP session on stdio: {e}"))?;
    running.waiting().await?;
    Ok(())
}

struct Handler<T> {
    toolbox: Arc<T>,
    tools: Arc<Vec<(Offer, Schema)>>,
}

impl<T: Toolbox> ServerHandler for Handler<T> {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let tools = self
            .tools
            .iter()
            .map(|(o, _)| {
                Tool::new(
                    o.name.clone(),
                    o.description.clone(),
                    Arc::new(o.input_schema.clone()),
                )
            })
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let Some((offer, schema)) = self.tools.iter().find(|(o, _)| o.name == *request.name) else {
            return Err(ErrorData::invalid_params(
                format!("no tool `{}`", request.name),
                None,
            ));
        };
        let arguments = request.arguments.unwrap_or_default();
        if let Err(why) = schema.check(&arguments) {
            return Err(ErrorData::invalid_params(
                format!("arguments of `{}`: {}", offer.name, why.join("; ")),
                None,
            ));
        }
        let result = match self.toolbox.call(&offer.name, arguments) {
            Ok(blocks) => CallToolResult::success(
                blocks
                    .into_iter()
                    .map(|b| match b {
                        Block::Text(text) => ContentBlock::text(text),
                        Block::Image { data, mime_type } => ContentBlock::image(data, mime_type),
                    })
                    .collect(),
            ),
            Err(why) => CallToolResult::error(vec![ContentBlock::text(why)]),
        };
        Ok(CallToolResponse::Complete(result))
    }
}
