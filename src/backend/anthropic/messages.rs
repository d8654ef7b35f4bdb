//! OpenAI chat requests as Messages API requests, and Messages API answers
//! as OpenAI chat completions.

use serde_json::{Map, Value, json};

/// `max_tokens` is required by the API; used when the client set none.
const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The text of an OpenAI content value (a string or text parts).
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// OpenAI content (a string or parts) as Anthropic content blocks.
fn blocks(content: &Value) -> Result<Vec<Value>, String> {
    let parts = match content {
        Value::Null => return Ok(Vec::new()),
        Value::String(s) if s.is_empty() => return Ok(Vec::new()),
        Value::String(s) => return Ok(vec![json!({"type": "text", "text": s})]),
        Value::Array(parts) => parts,
        _ => return Err("message content must be a string or an array of parts".into()),
    };
    let mut out = Vec::new();
    for part in parts {
        match part.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = part.get("text").and_then(Value::as_str).unwrap_or_default();
                out.push(json!({"type": "text", "text": text}));
            }
            Some("image_url") => {
                let url = part
                    .pointer("/image_url/url")
                    .and_then(Value::as_str)
                    .ok_or("an image_url part needs image_url.url")?;
                out.push(image_block(url)?);
            }
            Some(other) => {
                return Err(format!(
                    "content parts of type {other} are not supported by this backend"
                ));
            }
            None => return Err("a content part needs a type".into()),
        }
    }
    Ok(out)
}

/// An image part: a data URL becomes base64 source, a link a URL source.
fn image_block(url: &str) -> Result<Value, String> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (media_type, data) = rest
            .split_once(";base64,")
            .ok_or("an image data URL must be base64")?;
        return Ok(json!({"type": "image", "source": {
            "type": "base64", "media_type": media_type, "data": data,
        }}));
    }
    Ok(json!({"type": "image", "source": {"type": "url", "url": url}}))
}

/// An OpenAI chat request as a Messages API request.
pub(super) fn messages_request(model: &str, body: Map<String, Value>) -> Result<Value, String> {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("messages must be an array")?;
    let mut system = Vec::new();
    let mut turns: Vec<(String, Vec<Value>)> = Vec::new();
    for m in messages {
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        let content = m.get("content").unwrap_or(&Value::Null);
        let (role, content) = match role {
            "system" | "developer" => {
                system.push(text_of(content));
                continue;
            }
            "user" => ("user", blocks(content)?),
            "assistant" => {
                let mut content = blocks(content)?;
                for call in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let arguments = call
                        .pointer("/function/arguments")
                        .and_then(Value::as_str)
                        .unwrap_or("{}");
                    let input: Value = serde_json::from_str(arguments)
                        .map_err(|_| "tool call arguments must be a JSON object")?;
                    content.push(json!({
                        "type": "tool_use",
                        "id": call.get("id").cloned().unwrap_or(Value::Null),
                        "name": call.pointer("/function/name").cloned().unwrap_or(Value::Null),
                        "input": input,
                    }));
                }
                ("assistant", content)
            }
            "tool" => (
                "user",
                vec![json!({
                    "type": "tool_result",
                    "tool_use_id": m.get("tool_call_id").cloned().unwrap_or(Value::Null),
                    "content": text_of(content),
                })],
            ),
            other => {
                return Err(format!(
                    "messages with role {other:?} are not supported by this backend"
                ));
            }
        };
        // The API wants turns to alternate: consecutive ones of a role merge.
        match turns.last_mut() {
            Some((last, blocks)) if last == role => blocks.extend(content),
            _ => turns.push((role.to_owned(), content)),
        }
    }
    let max_tokens = body
        .get("max_completion_tokens")
        .or_else(|| body.get("max_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert("max_tokens".into(), json!(max_tokens));
    out.insert(
        "messages".into(),
        turns
            .into_iter()
            .map(|(role, content)| json!({"role": role, "content": content}))
            .collect(),
    );
    if !system.is_empty() {
        out.insert("system".into(), json!(system.join("\n\n")));
    }
    for key in ["temperature", "top_p", "stream"] {
        if let Some(v) = body.get(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), v.clone());
        }
    }
    match body.get("stop") {
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(v @ Value::Array(_)) => {
            out.insert("stop_sequences".into(), v.clone());
        }
        _ => {}
    }
    if let Some(user) = body.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    if let Some(tools) = body.get("tools").and_then(Value::as_array) {
        let tools: Vec<Value> = tools
            .iter()
            .filter_map(|t| t.get("function"))
            .map(|f| {
                json!({
                    "name": f.get("name").cloned().unwrap_or(Value::Null),
                    "description": f.get("description").cloned().unwrap_or(json!("")),
                    "input_schema": f.get("parameters").cloned().unwrap_or(json!({"type": "object"})),
                })
            })
            .collect();
        out.insert("tools".into(), json!(tools));
    }
    match body.get("tool_choice") {
        Some(Value::String(c)) if c == "auto" => {
            out.insert("tool_choice".into(), json!({"type": "auto"}));
        }
        Some(Value::String(c)) if c == "required" => {
            out.insert("tool_choice".into(), json!({"type": "any"}));
        }
        Some(Value::String(c)) if c == "none" => {
            out.insert("tool_choice".into(), json!({"type": "none"}));
        }
        Some(Value::Object(c)) => {
            if let Some(name) = c.get("function").and_then(|f| f.get("name")) {
                out.insert("tool_choice".into(), json!({"type": "tool", "name": name}));
            }
        }
        _ => {}
    }
    Ok(Value::Object(out))
}

pub(super) fn finish_reason(stop_reason: Option<&str>) -> Value {
    match stop_reason {
        None => Value::Null,
        Some("max_tokens") => json!("length"),
        Some("tool_use") => json!("tool_calls"),
        Some(_) => json!("stop"),
    }
}

pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A Messages API answer as an OpenAI chat completion.
pub(super) fn chat_completion(message: &Value) -> Result<Value, String> {
    let blocks = message
        .get("content")
        .and_then(Value::as_array)
        .ok_or("expected a message with content blocks")?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or_default()),
            Some("tool_use") => tool_calls.push(json!({
                "id": block.get("id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": block.get("input").map_or_else(|| "{}".to_owned(), Value::to_string),
                },
            })),
            _ => {}
        }
    }
    let mut reply = json!({"role": "assistant", "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) }});
    if !tool_calls.is_empty() {
        reply["tool_calls"] = json!(tool_calls);
    }
    let input = message
        .pointer("/usage/input_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let output = message
        .pointer("/usage/output_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Ok(json!({
        "id": message.get("id").cloned().unwrap_or(json!("")),
        "object": "chat.completion",
        "created": unix_now(),
        "model": message.get("model").cloned().unwrap_or(json!("")),
        "choices": [{
            "index": 0,
            "message": reply,
            "finish_reason": finish_reason(message.get("stop_reason").and_then(Value::as_str)),
        }],
        "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_request_becomes_a_messages_request() {
        let body = json!({
            "model": "auto",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "t1", "type": "function",
                    "function": {"name": "look", "arguments": "{\"x\":1}"}}]},
                {"role": "tool", "tool_call_id": "t1", "content": "a deer"},
                {"role": "user", "content": "and now?"}
            ],
            "stop": "END", "max_tokens": 20, "temperature": 0.5, "frequency_penalty": 1,
            "tools": [{"type": "function", "function": {"name": "look", "parameters": {"type": "object"}}}],
            "tool_choice": "required"
        });
        let Value::Object(body) = body else {
            unreachable!()
        };
        let out = messages_request("claude-x", body).expect("translates");
        assert_eq!(out["model"], "claude-x");
        assert_eq!(out["system"], "be brief");
        assert_eq!(out["max_tokens"], 20);
        assert_eq!(out["stop_sequences"], json!(["END"]));
        assert!(out.get("frequency_penalty").is_none(), "unknown to the API");
        let turns = out["messages"].as_array().expect("turns");
        assert_eq!(
            turns.len(),
            3,
            "the tool result and the next user turn merge"
        );
        assert_eq!(turns[0]["content"][1]["source"]["media_type"], "image/png");
        assert_eq!(turns[1]["content"][0]["input"], json!({"x": 1}));
        assert_eq!(turns[2]["content"][0]["type"], "tool_result");
        assert_eq!(turns[2]["content"][1]["text"], "and now?");
        assert_eq!(out["tools"][0]["input_schema"], json!({"type": "object"}));
        assert_eq!(out["tool_choice"], json!({"type": "any"}));
    }
}
