//! This node's own capabilities as the config, its backends' model lists
//! and its MCP servers' tools describe them.

use std::collections::BTreeMap;

use crate::backend::Discovered;
use crate::capability::{Capability, Inputs, Source};
use crate::config::{AgentConfig, CapabilityConfig};

/// The capabilities of the config (completed from a discovered model with
/// the same id), then the discovered models the config does not name, then
/// the tools whose ids neither has, then the agents.
pub(super) fn capabilities(
    configured: &[CapabilityConfig],
    agents: &[AgentConfig],
    discovered: &BTreeMap<String, Vec<Discovered>>,
    tools: &crate::mcp::Servers,
) -> Vec<Capability> {
    // A configured capability with a discovered model's id describes that
    // model: what it leaves out comes from the backend.
    let found = |c: &CapabilityConfig| {
        discovered
            .get(c.backend.first()?)
            .and_then(|found| found.iter().find(|d| d.id == c.id))
    };
    let mut out: Vec<Capability> = configured
        .iter()
        .map(|c| {
            let mut cap = Capability {
                id: c.id.clone(),
                kind: c.kind.clone(),
                domain: c.domain.clone(),
                topics: c.topics.clone(),
                description: c.description.clone(),
                examples: c.examples.clone(),
                backends: c.backend.clone(),
                model: c.model.clone().unwrap_or_else(|| c.id.name().to_owned()),
                source: Source::Config,
                share: c.share.clone(),
                input_schema: None,
                inputs: c.inputs.unwrap_or_else(|| Inputs::of_kind(&c.kind)),
            };
            if let Some(d) = found(c) {
                if c.model.is_none() {
                    cap.model = d.model.clone();
                }
                if cap.domain.is_empty() {
                    cap.domain = d.domain.clone();
                }
                if cap.topics.is_empty() {
                    cap.topics = d.topics.clone();
                }
                if cap.description.is_empty() {
                    cap.description = d.description.clone();
                }
            }
            cap
        })
        .collect();
    for (backend, found) in discovered {
        for d in found {
            // A configured capability with the same id wins: it says more.
            if out.iter().any(|c| c.id == d.id) {
                continue;
            }
            out.push(Capability {
                domain: d.domain.clone(),
                topics: d.topics.clone(),
                description: d.description.clone(),
                ..Capability::new(
                    d.id.clone(),
                    d.kind.clone(),
                    Source::Discovered,
                    backend,
                    &d.model,
                )
            });
        }
    }
    // Tools whose ids a configured or discovered capability has are
    // left out (they would be two capabilities with one id).
    for tool in tools.capabilities() {
        if !out.iter().any(|c| c.id == tool.id) {
            out.push(tool);
        }
    }
    // Agent ids are checked against configured ones; a model or tool
    // with an agent's id gives way to it.
    for a in agents {
        out.retain(|c| c.id != a.id);
        let id = a.id.to_string();
        out.push(Capability {
            domain: a.domain.clone(),
            description: a.description.clone(),
            examples: a.examples.clone(),
            share: a.share.clone(),
            inputs: Inputs::TEXT,
            ..Capability::new(a.id.clone(), a.kind.clone(), Source::Agent, &id, &id)
        });
    }
    out
}
