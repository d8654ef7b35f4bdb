//! `/mcp`: the node as an MCP server for every tool it can call (its own,
//! whatever their `share`, since its clients may call them, and those other
//! nodes announce), through the request core's tool calls.

use std::future::Future;
use std::pin::Pin;

use serde_json::{Map, Value};

use crate::exec::{Core, ToolOutcome, refusal_message};
use crate::mcp::server::{Called, Offered, ToolHost};

/// The request core as `/mcp` sees it.
#[derive(Clone)]
pub struct MeshTools(pub Core);

impl ToolHost for MeshTools {
    fn offered(&self) -> Vec<Offered> {
        let core = &self.0;
        let names = core.node_names();
        let table = core.catalog.table();
        let mut offered: Vec<Offered> = table
            .entries()
            .iter()
            .filter(|e| e.capability.kind.category() == "tool")
            .map(|e| {
                let c = &e.capability;
                let node_name = names
                    .get(&e.node)
                    .cloned()
                    .unwrap_or_else(|| e.node.clone());
                Offered {
                    tool: c.id.name().to_owned(),
                    node_name,
                    node: e.node.clone(),
                    description: c.description.clone(),
                    input_schema: c.input_schema.clone(),
                    address: format!("{}@{}", c.id, e.node),
                }
            })
            .collect();
        offered.sort_by(|a, b| (&a.tool, &a.node).cmp(&(&b.tool, &b.node)));
        offered
    }

    fn call(
        &self,
        address: String,
        arguments: Map<String, Value>,
    ) -> Pin<Box<dyn Future<Output = Called> + Send>> {
        let core = self.0.clone();
        Box::pin(async move {
            let copies = core.tool_copies(&address).map_err(|e| e.message)?;
            let answer = core
                .call_tool(copies, arguments)
                .await
                .map_err(|e| e.message)?;
            match answer.outcome {
                // `isError` results too: the tool ran and says it failed.
                ToolOutcome::Result { result, .. } => Ok(result),
                ToolOutcome::Refused { status, body } => Err(refusal_message(status, &body)),
            }
        })
    }
}
