//! The tools an agent's model is offered in a run: the agent's named tools,
//! or those found by the meaning of the request, each under a function
//! name OpenAI's rule accepts, and what a call's result reads as to the
//! model.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::super::{ApiError, Caller, Core};
use crate::config::{AgentConfig, AgentTools};
use crate::mcp::server::{Offered, names};
use crate::routing::{Entry, Need};

/// One tool offered to the model.
pub struct Tool {
    /// The function name the model calls it by.
    pub function: String,
    /// The tool as `/v1/tool/execute` names it (`tool/add`, `…@node`).
    pub name: String,
    /// Its copies, in the order to try them.
    pub copies: Vec<Arc<Entry>>,
}

/// Longest tool result given back to the model (bytes of text); the step
/// keeps the whole result.
const MAX_RESULT_TEXT: usize = 64 * 1024;

impl Core {
    /// The tools `agent` may call in a run for `callers` (the peer that
    /// asked; the stranger whose model drives the run, `stranger_model`)
    /// on `query`, and the names of configured tools that cannot be
    /// reached now.
    pub(super) async fn offer(
        &self,
        agent: &AgentConfig,
        query: &str,
        callers: &[Caller],
        stranger_model: bool,
    ) -> Result<(Vec<Tool>, Vec<String>), ApiError> {
        let mut found: Vec<(String, Vec<Arc<Entry>>)> = Vec::new();
        let mut missing = Vec::new();
        match &agent.tools {
            AgentTools::Named(names) => {
                for name in names {
                    match self.tool_copies(name) {
                        Ok(copies) => found.push((name.clone(), copies)),
                        Err(e) => {
                            tracing::debug!(agent = %agent.id, tool = %name, error = %e.message, "configured tool not offered");
                            missing.push(name.clone());
                        }
                    }
                }
            }
            AgentTools::Found(_) if query.trim().is_empty() => {}
            AgentTools::Found(_) => {
                let decision = self
                    .decide(vec![query.to_owned()], Need::Kind("tool/*".into()))
                    .await?;
                let up = self.available();
                let mut seen = HashSet::new();
                for c in decision.candidates.iter().filter(|c| c.eligible) {
                    let Some(entry) = c.entry.as_ref().filter(|e| up(e)) else {
                        continue;
                    };
                    let id = entry.capability.id.to_string();
                    if !seen.insert(id.clone()) {
                        continue;
                    }
                    if let Ok(copies) = self.tool_copies(&id) {
                        found.push((id, copies));
                    }
                    if found.len() >= agent.max_tools {
                        break;
                    }
                }
            }
        }
        // Run for a peer, this node's tools are offered only as far as that
        // peer could call them itself; and a run that lends a stranger's
        // model this node's trust in other nodes offers none of their tools.
        let mut tools: Vec<(String, Vec<Arc<Entry>>)> = found
            .into_iter()
            .map(|(name, copies)| {
                let copies: Vec<Arc<Entry>> = copies
                    .into_iter()
                    .filter(|e| {
                        if e.local {
                            callers
                                .iter()
                                .all(|c| e.capability.share.allows(&c.peer, &c.roles))
                        } else {
                            !stranger_model || e.trust == crate::routing::Trust::Stranger
                        }
                    })
                    .collect();
                (name, copies)
            })
            .filter(|(_, copies)| !copies.is_empty())
            .collect();
        let mut seen = HashSet::new();
        tools.retain(|(_, copies)| seen.insert(copies[0].capability.id.clone()));
        let offered: Vec<Offered> = tools
            .iter()
            .map(|(name, copies)| Offered {
                tool: copies[0].capability.id.name().to_owned(),
                node_name: String::new(),
                node: String::new(),
                description: String::new(),
                input_schema: None,
                address: name.clone(),
            })
            .collect();
        let functions = names(&offered);
        Ok((
            tools
                .into_iter()
                .zip(functions)
                .map(|((name, copies), function)| Tool {
                    function,
                    name,
                    copies,
                })
                .collect(),
            missing,
        ))
    }
}

/// The tools as OpenAI's `tools` parameter lists them.
pub fn functions(tools: &[Tool]) -> Value {
    let list: Vec<Value> = tools
        .iter()
        .map(|t| {
            let c = &t.copies[0].capability;
            let parameters = c
                .input_schema
                .as_deref()
                .cloned()
                .unwrap_or_else(|| Map::from_iter([("type".into(), json!("object"))]));
            let description = if c.description.is_empty() {
                c.profile_text()
            } else {
                c.description.clone()
            };
            json!({
                "type": "function",
                "function": {
                    "name": t.function,
                    "description": description,
                    "parameters": parameters,
                },
            })
        })
        .collect();
    Value::Array(list)
}

/// What a tool's result reads as to the model: the text of its content,
/// images and audio by their type and size, structured content as JSON
/// when there is no text; cut at [`MAX_RESULT_TEXT`].
pub fn result_text(result: &Value) -> String {
    let mut out = String::new();
    for part in result["content"].as_array().into_iter().flatten() {
        let piece = match part["type"].as_str() {
            Some("text") => part["text"].as_str().unwrap_or_default().to_owned(),
            Some(kind) => format!(
                "[{kind} {}, {} bytes of base64]",
                part["mimeType"].as_str().unwrap_or("unknown type"),
                part["data"].as_str().map_or(0, str::len)
            ),
            None => continue,
        };
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&piece);
    }
    if out.is_empty()
        && let Some(structured) = result.get("structuredContent")
    {
        out = structured.to_string();
    }
    if out.len() > MAX_RESULT_TEXT {
        let mut end = MAX_RESULT_TEXT;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push_str(" …(cut)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_reads_as_its_text_and_names_its_pictures() {
        let result = json!({"content": [
            {"type": "text", "text": "front door, 12:00"},
            {"type": "image", "mimeType": "image/png", "data": "iVBORw0KGgo="},
        ]});
        assert_eq!(
            result_text(&result),
            "front door, 12:00\n[image image/png, 12 bytes of base64]"
        );
        let structured = json!({"content": [], "structuredContent": {"sum": 5}});
        assert_eq!(result_text(&structured), r#"{"sum":5}"#);
        let long = json!({"content": [{"type": "text", "text": "é".repeat(MAX_RESULT_TEXT)}]});
        assert!(result_text(&long).ends_with("…(cut)"));
    }
}
