//! `[[agent]]`: agents this node runs. An agent is a capability of an
//! `agent/*` kind: a language model (named, or chosen by the meaning of the
//! request) that may call tools, anywhere in the mesh, in a loop of OpenAI
//! function calls until it answers or runs out of steps.

use serde::{Deserialize, Serialize};

use crate::capability::{CapabilityId, Kind, Share};

/// Most steps an agent may be allowed (`max_steps`, in the config or a request).
pub const MAX_STEPS: u32 = 64;
/// Most tools offered to an agent's model at once.
pub const MAX_TOOLS: usize = 64;
/// Most tool calls one model turn may ask for (`max_calls_per_step`).
pub const MAX_CALLS_PER_STEP: usize = 64;
/// Most tool calls in one run (`max_tool_calls`).
pub const MAX_TOOL_CALLS: usize = 1024;
/// Most bytes of arguments (as JSON) one model turn's calls may carry: a
/// turn is run at once, so this is what it holds.
pub const MAX_TURN_ARGUMENT_BYTES: usize = 1024 * 1024;

/// `[[agent]]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// `agent/<name>` (or just `<name>`), unique on this node.
    #[serde(deserialize_with = "agent_id")]
    pub id: CapabilityId,
    /// Its kind (`agent/assistant` unless set).
    #[serde(default = "default_kind")]
    pub kind: Kind,
    #[serde(default)]
    pub domain: String,
    /// What it does: routing by meaning reads it, and its model is told it.
    #[serde(default)]
    pub description: String,
    /// Requests it is for (the strongest routing signal).
    #[serde(default)]
    pub examples: Vec<String>,
    /// What its model is told first (a system message), besides the
    /// description.
    #[serde(default)]
    pub instructions: String,
    /// The language model that drives it: a capability id (`llm/x`, or
    /// `llm/x@node`), or `"auto"`: the `llm/*` model that best fits each
    /// request, never another agent.
    #[serde(default = "auto")]
    pub llm: String,
    /// The tools it may call: names as `/v1/tool/execute` takes them
    /// (`add`, `camera-front@edge-gateway`), or `"auto"`: up to `max_tools`
    /// tools found by the meaning of each request.
    #[serde(default)]
    pub tools: AgentTools,
    /// How many tools `"auto"` offers at most.
    #[serde(default = "default_max_tools")]
    pub max_tools: usize,
    /// Most model calls in one run; a request may ask for fewer.
    #[serde(default = "default_max_steps")]
    pub max_steps: u32,
    /// Who besides this node's clients may run it (as a capability's
    /// `share`; `"mesh"` unless set). Run for a peer, it offers only this
    /// node's tools that peer could call itself.
    #[serde(default)]
    pub share: Share,
    /// Most tool calls one model turn may ask for (they run at once); a
    /// turn asking for more runs none and ends the run (502
    /// `agent_too_many_tool_calls`). 16 unless set, 1 to 64.
    #[serde(default = "default_max_calls_per_step")]
    pub max_calls_per_step: usize,
    /// Most tool calls in one run, all turns together. 64 unless set, 1 to
    /// 1024.
    #[serde(default = "default_max_tool_calls")]
    pub max_tool_calls: usize,
    /// Whether a stranger's model (offered by a node that is neither this
    /// one, in `mesh.trusted`, nor a member of a closed mesh) may drive the
    /// agent. Off unless set: a model sees the conversation and the tools'
    /// results and decides which tools run. When on, a run whose model is
    /// a stranger's is offered only this node's tools that the model's node
    /// could call itself, and no tool that this node reaches through trust
    /// the stranger does not have.
    #[serde(default)]
    pub stranger_models: bool,
}

/// Which tools an agent may call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AgentTools {
    /// `"auto"`: found by the meaning of the request.
    Found(Auto),
    /// These tools, by name.
    Named(Vec<String>),
}

impl Default for AgentTools {
    fn default() -> Self {
        AgentTools::Found(Auto::Auto)
    }
}

/// The one word `tools` takes instead of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Auto {
    Auto,
}

fn agent_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<CapabilityId, D::Error> {
    let text = String::deserialize(d)?;
    let full = if text.contains('/') {
        text
    } else {
        format!("agent/{text}")
    };
    full.parse().map_err(serde::de::Error::custom)
}

fn default_kind() -> Kind {
    "agent/assistant".parse().expect("a valid kind")
}

fn auto() -> String {
    crate::capability::AUTO.to_owned()
}

fn default_max_tools() -> usize {
    8
}

fn default_max_steps() -> u32 {
    8
}

fn default_max_calls_per_step() -> usize {
    16
}

fn default_max_tool_calls() -> usize {
    64
}

/// Ids unique among agents and capabilities, kinds `agent/*`, limits in
/// range, and a model that is not an agent.
pub(super) fn validate(
    agents: &[AgentConfig],
    capabilities: &[super::CapabilityConfig],
) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for a in agents {
        let id = &a.id;
        if !seen.insert(id.as_str()) || capabilities.iter().any(|c| c.id == *id) {
            return Err(format!("agent {id} is defined twice"));
        }
        if a.kind.category() != "agent" {
            return Err(format!("agent {id}: kind {} is not agent/*", a.kind));
        }
        if !(1..=MAX_STEPS).contains(&a.max_steps) {
            return Err(format!("agent {id}: max_steps must be 1 to {MAX_STEPS}"));
        }
        if !(1..=MAX_TOOLS).contains(&a.max_tools) {
            return Err(format!("agent {id}: max_tools must be 1 to {MAX_TOOLS}"));
        }
        if !(1..=MAX_CALLS_PER_STEP).contains(&a.max_calls_per_step) {
            return Err(format!(
                "agent {id}: max_calls_per_step must be 1 to {MAX_CALLS_PER_STEP}"
            ));
        }
        if !(1..=MAX_TOOL_CALLS).contains(&a.max_tool_calls) {
            return Err(format!(
                "agent {id}: max_tool_calls must be 1 to {MAX_TOOL_CALLS}"
            ));
        }
        if let AgentTools::Named(names) = &a.tools
            && names.len() > MAX_TOOLS
        {
            return Err(format!("agent {id}: at most {MAX_TOOLS} tools"));
        }
        if a.llm != crate::capability::AUTO {
            let model = a.llm.rsplit_once('@').map_or(a.llm.as_str(), |(m, _)| m);
            let parsed: CapabilityId = model
                .parse()
                .map_err(|e| format!("agent {id}: llm {:?}: {e}", a.llm))?;
            if parsed.as_str().starts_with("agent/") || seen_agent(agents, &parsed) {
                return Err(format!(
                    "agent {id}: llm {:?} is an agent; an agent's model must be a language model",
                    a.llm
                ));
            }
        }
    }
    Ok(())
}

fn seen_agent(agents: &[AgentConfig], id: &CapabilityId) -> bool {
    agents.iter().any(|a| a.id == *id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<AgentConfig>, String> {
        #[derive(Deserialize)]
        struct File {
            agent: Vec<AgentConfig>,
        }
        toml::from_str::<File>(text)
            .map(|f| f.agent)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn tools_are_names_or_auto_and_ids_get_their_category() {
        let agents = parse(
            r#"
            [[agent]]
            id = "research"
            tools = ["add", "camera-front@edge-gateway"]
            [[agent]]
            id = "agent/helper"
            tools = "auto"
            [[agent]]
            id = "plain"
            "#,
        )
        .expect("parses");
        assert_eq!(agents[0].id.as_str(), "agent/research");
        assert_eq!(
            agents[0].tools,
            AgentTools::Named(vec!["add".into(), "camera-front@edge-gateway".into()])
        );
        assert_eq!(agents[1].tools, AgentTools::Found(Auto::Auto));
        assert_eq!(agents[2].tools, AgentTools::Found(Auto::Auto));
        assert_eq!(agents[2].llm, "auto");
        assert_eq!(agents[2].max_steps, 8);
        assert_eq!(agents[2].max_calls_per_step, 16);
        assert_eq!(agents[2].max_tool_calls, 64);
        assert!(!agents[2].stranger_models);
        assert!(validate(&agents, &[]).is_ok());
        assert!(parse("[[agent]]\nid = \"x\"\ntools = \"some\"").is_err());
    }

    #[test]
    fn an_agent_cannot_be_driven_by_an_agent_nor_defined_twice() {
        let two = parse("[[agent]]\nid = \"a\"\n[[agent]]\nid = \"agent/a\"").expect("parses");
        assert!(validate(&two, &[]).expect_err("twice").contains("twice"));
        let looped = parse("[[agent]]\nid = \"a\"\nllm = \"agent/b\"").expect("parses");
        assert!(
            validate(&looped, &[])
                .expect_err("loop")
                .contains("is an agent")
        );
        let steps = parse("[[agent]]\nid = \"a\"\nmax_steps = 0").expect("parses");
        assert!(validate(&steps, &[]).is_err());
        let fan = parse("[[agent]]\nid = \"a\"\nmax_calls_per_step = 65").expect("parses");
        assert!(validate(&fan, &[]).is_err());
        let calls = parse("[[agent]]\nid = \"a\"\nmax_tool_calls = 0").expect("parses");
        assert!(validate(&calls, &[]).is_err());
        let kind = parse("[[agent]]\nid = \"a\"\nkind = \"llm/chat\"").expect("parses");
        assert!(
            validate(&kind, &[])
                .expect_err("kind")
                .contains("not agent/*")
        );
    }
}
