//! Agents (`[[agent]]`): a capability of an `agent/*` kind that answers a
//! chat by running a loop of OpenAI function calls. Its model (named, or
//! the `llm/*` model that best fits the request) is offered the agent's
//! tools in `tools`; each `tool_calls` it answers is run as a tool call
//! (here or on the tool's node) and its result fed back as a `role: "tool"`
//! message, until the model answers in words, `max_steps` model calls have
//! been made, or the request's time is up.
//!
//! A run answers as a chat completion with every step listed (`steps`:
//! each model call and each tool call, with node, arguments, result and
//! time); when it fails the error says why and carries the steps so far.

mod offer;
mod reply;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ::http::StatusCode;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use self::offer::{Tool, functions, result_text};
use self::reply::{Call, Turn};
use super::resolve::runs;
use super::tool::Outcome;
use super::{AUTO, ApiError, Caller, Core, Request, Target};
use crate::answer::{Event, Reply};
use crate::backend::Op;
use crate::config::{AgentConfig, MAX_STEPS, MAX_TURN_ARGUMENT_BYTES};
use crate::routing::{Need, Trust};

/// One run of an agent: the conversation so far and what happened.
struct Run<'a> {
    core: &'a Core,
    agent: &'a AgentConfig,
    /// The model's providers, chosen once per run.
    model: Target,
    tools: Vec<Tool>,
    /// `tools` as the model is offered them.
    functions: Value,
    messages: Vec<Value>,
    max_steps: u32,
    /// Tool calls run so far (within `max_tool_calls`).
    calls_made: usize,
    steps: Vec<Value>,
    usage: [u64; 3],
    session: String,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn failed(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, "server_error", message).code(code)
}

impl Run<'_> {
    /// Model calls and tool calls until the model answers in words.
    async fn go(&mut self) -> Result<String, ApiError> {
        for _ in 0..self.max_steps {
            let (turn, took) = self.ask().await?;
            let (calls, message) = match turn {
                Turn::Answer(text) => return Ok(text),
                Turn::Calls { calls, message } => (calls, message),
            };
            self.messages.push(message);
            // Every call names a tool it was given, or none runs.
            if let Some(bad) = calls
                .iter()
                .find(|c| !self.tools.iter().any(|t| t.function == c.function))
            {
                return Err(failed(
                    "agent_tool_not_offered",
                    format!(
                        "The agent's model called `{}`, a tool it was not given (it was given: {}).",
                        bad.function,
                        self.offered_names()
                    ),
                ));
            }
            self.within_fan_out(&calls)?;
            self.calls_made += calls.len();
            tracing::debug!(agent = %self.agent.id, calls = calls.len(), model_ms = ms(took), "agent step");
            let results = futures::future::join_all(calls.iter().map(|c| self.call(c))).await;
            for (call, (text, step)) in calls.iter().zip(results) {
                self.steps.push(step);
                self.messages.push(json!({
                    "role": "tool",
                    "tool_call_id": call.id,
                    "content": text,
                }));
            }
        }
        Err(failed(
            "agent_step_limit",
            format!(
                "The agent did not answer within {} steps (max_steps): its model kept calling tools.",
                self.max_steps
            ),
        ))
    }

    /// A turn's calls run at once: at most `max_calls_per_step` of them,
    /// [`MAX_TURN_ARGUMENT_BYTES`] of arguments together, and
    /// `max_tool_calls` in the run; past that, none of the turn runs.
    fn within_fan_out(&self, calls: &[Call]) -> Result<(), ApiError> {
        let agent = self.agent;
        if calls.len() > agent.max_calls_per_step {
            return Err(failed(
                "agent_too_many_tool_calls",
                format!(
                    "The agent's model asked for {} tool calls in one turn; this agent runs at most {} at once (max_calls_per_step). None of them ran.",
                    calls.len(),
                    agent.max_calls_per_step
                ),
            ));
        }
        if self.calls_made + calls.len() > agent.max_tool_calls {
            return Err(failed(
                "agent_too_many_tool_calls",
                format!(
                    "The agent's model asked for more than {} tool calls in one run (max_tool_calls); {} ran before this turn's {}.",
                    agent.max_tool_calls,
                    self.calls_made,
                    calls.len()
                ),
            ));
        }
        let bytes: usize = calls
            .iter()
            .map(|c| serde_json::to_vec(&c.arguments).map_or(usize::MAX, |v| v.len()))
            .fold(0, usize::saturating_add);
        if bytes > MAX_TURN_ARGUMENT_BYTES {
            return Err(failed(
                "agent_arguments_too_large",
                format!(
                    "The agent's model sent {bytes} bytes of tool arguments in one turn; at most {MAX_TURN_ARGUMENT_BYTES} run at once. None of them ran."
                ),
            ));
        }
        Ok(())
    }

    fn offered_names(&self) -> String {
        if self.tools.is_empty() {
            return "none".into();
        }
        let names: Vec<&str> = self.tools.iter().map(|t| t.function.as_str()).collect();
        names.join(", ")
    }

    /// One model call: the conversation and the tools.
    async fn ask(&mut self) -> Result<(Turn, Duration), ApiError> {
        let started = Instant::now();
        let mut body = Map::new();
        body.insert("model".into(), json!(self.agent.llm));
        body.insert("messages".into(), Value::Array(self.messages.clone()));
        if !self.tools.is_empty() {
            body.insert("tools".into(), self.functions.clone());
        }
        body.insert("stream".into(), Value::Bool(false));
        let request = Request::internal(Op::Chat, body, Some(self.session.clone()));
        // Boxed: a run of the core may come back here (an agent is run by it).
        let answer = Box::pin(self.core.run_whole(self.model.clone(), request)).await?;
        let took = started.elapsed();
        let mut step = json!({
            "type": "model",
            "capability": answer.capability,
            "node": answer.node,
            "latency_ms": ms(took),
        });
        let status = answer.status;
        let completion: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        if status >= 400 {
            self.steps.push(step);
            let said = completion["error"]["message"]
                .as_str()
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            return Err(failed(
                "agent_model_error",
                format!(
                    "The agent's model `{}` answered {status}{said}",
                    answer.capability
                ),
            ));
        }
        for (i, key) in ["prompt_tokens", "completion_tokens", "total_tokens"]
            .iter()
            .enumerate()
        {
            self.usage[i] += completion["usage"][key].as_u64().unwrap_or(0);
        }
        let turn = reply::turn(&completion);
        if let Ok(Turn::Calls { calls, .. }) = &turn {
            step["tool_calls"] = json!(calls.iter().map(|c| &c.function).collect::<Vec<_>>());
        }
        self.steps.push(step);
        let turn = turn.map_err(|why| {
            failed(
                "agent_bad_tool_call",
                format!(
                    "The agent's model `{}` answered something that cannot be run: {why}.",
                    answer.capability
                ),
            )
        })?;
        Ok((turn, took))
    }

    /// Runs one call: the text given back to the model, and its step.
    async fn call(&self, call: &Call) -> (String, Value) {
        let started = Instant::now();
        let tool = self
            .tools
            .iter()
            .find(|t| t.function == call.function)
            .expect("calls are checked against the tools first");
        let called = self
            .core
            .call_tool(tool.copies.clone(), call.arguments.clone())
            .await;
        let mut step = json!({
            "type": "tool",
            "tool": tool.name,
            "function": call.function,
            "arguments": call.arguments,
        });
        let text = match called {
            Ok(answer) => {
                step["capability"] = json!(answer.capability);
                step["node"] = json!(answer.node);
                match answer.outcome {
                    Outcome::Result { result, is_error } => {
                        let text = result_text(&result);
                        step["result"] = result;
                        step["is_error"] = json!(is_error);
                        if is_error {
                            format!("error: {text}")
                        } else {
                            text
                        }
                    }
                    Outcome::Refused { status, body } => {
                        let error: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let message = error["error"]["message"]
                            .as_str()
                            .unwrap_or("the tool's node refused the call")
                            .to_owned();
                        step["is_error"] = json!(true);
                        step["error"] = json!({"status": status, "message": message});
                        format!("error: {message}")
                    }
                }
            }
            Err(e) => {
                step["is_error"] = json!(true);
                step["error"] = json!({"status": e.status.as_u16(), "message": e.message});
                format!("error: {}", e.message)
            }
        };
        step["latency_ms"] = json!(ms(started.elapsed()));
        (text, step)
    }
}

/// The text of the last user message: what tools and the model are found by.
fn last_user_text(messages: &[Value]) -> String {
    let Some(m) = messages.iter().rev().find(|m| m["role"] == "user") else {
        return String::new();
    };
    match &m["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// A request's `max_steps`: none, or a whole number from 1 to [`MAX_STEPS`].
pub fn parse_max_steps(value: Option<&Value>) -> Result<Option<u32>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if (1..=u64::from(MAX_STEPS)).contains(&n) => Ok(Some(n as u32)),
            _ => Err(ApiError::invalid(
                "max_steps",
                format!("max_steps must be a whole number from 1 to {MAX_STEPS}."),
            )),
        },
    }
}

/// `max_steps` of a request, within what the agent allows.
fn max_steps(body: &Map<String, Value>, agent: &AgentConfig) -> Result<u32, ApiError> {
    Ok(parse_max_steps(body.get("max_steps"))?.map_or(agent.max_steps, |n| n.min(agent.max_steps)))
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Core {
    /// Runs a chat on this node's agent: its answer as a chat completion
    /// (a stream of two chunks when asked for a stream) with `steps`, or
    /// the error that ended it, with the steps so far.
    pub(super) async fn run_agent(&self, agent: &AgentConfig, request: Request) -> Reply {
        let started = Instant::now();
        let mut run = match self.start_run(agent, &request).await {
            Ok(run) => run,
            Err(e) => {
                return Reply::Whole {
                    status: e.status.as_u16(),
                    body: e.to_bytes(),
                };
            }
        };
        let left = self.request_timeout.saturating_sub(started.elapsed());
        let ended = match tokio::time::timeout(left, run.go()).await {
            Ok(ended) => ended,
            Err(_) => Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "server_error",
                format!(
                    "The agent did not answer within {} s.",
                    self.request_timeout.as_secs()
                ),
            )
            .code("agent_timeout")),
        };
        self.metrics.agent_run(match &ended {
            Ok(_) => "answered",
            Err(e) => e.code.unwrap_or("error"),
        });
        let id = format!("agent-{}", run.session);
        let extra = json!({
            "steps": run.steps,
            "max_steps": run.max_steps,
            "tools": run.tools.iter().map(|t| json!({"function": t.function, "tool": t.name})).collect::<Vec<_>>(),
        });
        let text = match ended {
            Ok(text) => text,
            Err(e) => {
                let mut body = e.body();
                body["steps"] = extra["steps"].clone();
                return Reply::Whole {
                    status: e.status.as_u16(),
                    body: Bytes::from(body.to_string()),
                };
            }
        };
        let [prompt, completion, total] = run.usage;
        let usage = json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total});
        let created = unix_secs();
        if request.stream {
            let chunk = |delta: Value, finish: Value| {
                json!({"id": id, "object": "chat.completion.chunk", "created": created,
                    "model": agent.id, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            };
            let mut last = chunk(json!({}), json!("stop"));
            last["usage"] = usage;
            last["steps"] = extra["steps"].clone();
            let events = vec![
                Event::Data(Bytes::from(
                    chunk(json!({"role": "assistant", "content": text}), Value::Null).to_string(),
                )),
                Event::Data(Bytes::from(last.to_string())),
                Event::Done,
            ];
            return Reply::Stream(Box::pin(futures::stream::iter(events)));
        }
        let mut body = json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": agent.id,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": usage,
        });
        if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
            body.extend(extra);
        }
        Reply::Whole {
            status: 200,
            body: Bytes::from(body.to_string()),
        }
    }

    /// The run of a request: its conversation, the model and the tools.
    async fn start_run<'a>(
        &'a self,
        agent: &'a AgentConfig,
        request: &Request,
    ) -> Result<Run<'a>, ApiError> {
        let max_steps = max_steps(&request.body, agent)?;
        let Some(Value::Array(given)) = request.body.get("messages") else {
            return Err(ApiError::invalid("messages", "messages must be an array."));
        };
        let query = last_user_text(given);
        let mut messages = Vec::with_capacity(given.len() + 1);
        let told: Vec<&str> = [agent.description.as_str(), agent.instructions.as_str()]
            .into_iter()
            .filter(|t| !t.is_empty())
            .collect();
        if !told.is_empty() {
            messages.push(json!({"role": "system", "content": told.join("\n\n")}));
        }
        // The agent's model is sent the images and audio themselves.
        messages.extend(given.iter().cloned().map(|mut m| {
            request.spans.restore(&mut m);
            m
        }));
        let model = self.agent_model(agent, &query).await?;
        // The tools are offered as far as the caller, and a stranger whose
        // model drives the run, could call them.
        let strangers: Vec<Caller> = model
            .group
            .iter()
            .chain(&model.fallbacks)
            .filter(|p| p.entry.trust == Trust::Stranger)
            .map(|p| Caller {
                peer: p.entry.node.clone(),
                roles: Vec::new(),
            })
            .collect();
        let stranger_model = !strangers.is_empty();
        let callers: Vec<Caller> = request.caller.iter().cloned().chain(strangers).collect();
        let (tools, missing) = self.offer(agent, &query, &callers, stranger_model).await?;
        if !missing.is_empty() {
            tracing::warn!(agent = %agent.id, missing = ?missing, "configured tools not reachable; the agent runs without them");
        }
        Ok(Run {
            core: self,
            agent,
            model,
            functions: functions(&tools),
            tools,
            messages,
            max_steps,
            calls_made: 0,
            steps: Vec::new(),
            usage: [0; 3],
            session: format!("{:016x}", rand::random::<u64>()),
        })
    }

    /// The providers of an agent's model: the one named, or the `llm/*`
    /// model that best fits the request (the nearest one when none fits
    /// well: the agent was chosen for the request, its model need only chat);
    /// strangers' copies only where the agent allows them
    /// (`stranger_models`).
    async fn agent_model(&self, agent: &AgentConfig, query: &str) -> Result<Target, ApiError> {
        if agent.llm != AUTO {
            let copies = self.copies(&agent.llm)?;
            let first = copies
                .first()
                .ok_or_else(|| ApiError::model_not_found(&agent.llm))?;
            let kind = &first.capability.kind;
            if kind.category() != "llm" || !runs(kind, Op::Chat) {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    format!(
                        "The agent's model `{}` is a {kind} capability, not a language model that chats.",
                        agent.llm
                    ),
                )
                .code("agent_model_invalid"));
            }
            let copies: Vec<_> = copies
                .into_iter()
                .filter(|e| agent.stranger_models || e.trust != Trust::Stranger)
                .collect();
            if copies.is_empty() {
                return Err(untrusted_model(&agent.llm));
            }
            return Ok(self.explicit_target(copies));
        }
        let decision = self.decide(vec![query.to_owned()], Need::Llm).await?;
        if !agent.stranger_models {
            // The best-fitting model a stranger does not offer.
            let up = self.available();
            let trusted = decision
                .candidates
                .iter()
                .filter(|c| c.eligible)
                .filter_map(|c| c.entry.clone())
                .find(|e| e.trust != Trust::Stranger && up(e));
            return match trusted {
                Some(entry) => Ok(self.target(vec![(entry, None)], Vec::new())),
                None => Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_error",
                    "No language model of this node, of a trusted node or of a member can be reached to drive the agent (strangers' models drive it only with stranger_models = true).",
                )
                .code("agent_model_unavailable")),
            };
        }
        match self.nearest_target(&decision) {
            Some(target) => Ok(target),
            None => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "No language model that chats can be reached to drive the agent.",
            )
            .code("agent_model_unavailable")),
        }
    }
}

/// The refusal of a named model that only strangers offer.
fn untrusted_model(model: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "server_error",
        format!(
            "The agent's model `{model}` is offered only by nodes this one does not trust; set stranger_models = true on the agent to let a stranger's model drive it."
        ),
    )
    .code("agent_model_untrusted")
}

/// What `/v1/agent/invoke` came to: the run's status and its chat
/// completion (or error), and the agent that ran it.
pub struct Invoked {
    pub agent: crate::capability::CapabilityId,
    pub node: String,
    pub status: u16,
    pub body: Value,
}

impl Core {
    /// Runs `query` on the agent named (`research`, `agent/research`,
    /// either with `@node`), or on the `agent/*` capability that fits it
    /// best, wherever it lives.
    pub async fn invoke_agent(
        &self,
        query: &str,
        agent: Option<&str>,
        max_steps: Option<u32>,
    ) -> Result<Invoked, ApiError> {
        let target = match agent {
            Some(name) => {
                let model = if name.split('@').next().is_some_and(|id| id.contains('/')) {
                    name.to_owned()
                } else {
                    format!("agent/{name}")
                };
                let copies = self.copies(&model).map_err(|e| e.param("agent"))?;
                match copies.first() {
                    None => return Err(ApiError::model_not_found(&model).param("agent")),
                    Some(e) if e.capability.kind.category() != "agent" => {
                        return Err(ApiError::invalid(
                            "agent",
                            format!(
                                "`{model}` is a {} capability, not an agent.",
                                e.capability.kind
                            ),
                        )
                        .code("not_an_agent"));
                    }
                    Some(_) => self.explicit_target(copies),
                }
            }
            None => {
                let need = Need::Kind("agent/*".into());
                let decision = self.decide(vec![query.to_owned()], need.clone()).await?;
                self.auto_target(&decision)
                    .ok_or_else(|| super::refusal::refusal(self, &decision, &need))?
            }
        };
        let mut body = Map::new();
        body.insert("model".into(), json!(agent.unwrap_or(AUTO)));
        body.insert(
            "messages".into(),
            json!([{"role": "user", "content": query}]),
        );
        if let Some(n) = max_steps {
            body.insert("max_steps".into(), json!(n));
        }
        let answer = self
            .run_whole(target, Request::internal(Op::Chat, body, None))
            .await?;
        Ok(Invoked {
            agent: answer.capability,
            node: answer.node,
            status: answer.status,
            body: serde_json::from_slice(&answer.body).unwrap_or(Value::Null),
        })
    }
}
