//! A tool call run on the node that offers the tool, and its result
//! (`/atmosphere/tool/1.0.0`). Spec: `protocols/tool.md`.

use serde::{Deserialize, Serialize};

use super::codec::Error;

pub const VERSION: u8 = 1;
/// Largest call: the HTTP body limit (4 MiB) plus headroom.
pub const MAX_REQUEST_BYTES: usize = 5 * 1024 * 1024;
/// Largest result: the largest whole answer a node relays.
pub const MAX_RESPONSE_BYTES: usize = crate::answer::MAX_WHOLE_BYTES;
/// Longest tool id (a capability id).
pub const MAX_TOOL: usize = super::route::MAX_ID;

/// Calls a tool of the receiving node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolRequest {
    pub version: u8,
    /// The tool's capability id at the receiving node (`tool/<name>`).
    pub tool: String,
    /// The arguments: a JSON object.
    pub arguments: Vec<u8>,
    /// Milliseconds the caller will still wait; the receiver gives up after.
    pub deadline_ms: u32,
}

/// The receiving node's answer: 200 and the tool's result (MCP's
/// `CallToolResult` as JSON; `isError: true` when the tool ran and said it
/// failed), or an error status and an OpenAI-style error body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolResponse {
    pub version: u8,
    pub status: u16,
    pub body: Vec<u8>,
}

impl super::Message for ToolRequest {
    const MAX_BYTES: usize = MAX_REQUEST_BYTES;
    fn version(&self) -> Option<u8> {
        Some(self.version)
    }
    fn check(&self) -> Result<(), Error> {
        if self.tool.len() > MAX_TOOL {
            return Err(Error::Invalid(format!(
                "tool id longer than {MAX_TOOL} bytes"
            )));
        }
        Ok(())
    }
}

impl super::Message for ToolResponse {
    const MAX_BYTES: usize = MAX_RESPONSE_BYTES;
    fn version(&self) -> Option<u8> {
        Some(self.version)
    }
}
