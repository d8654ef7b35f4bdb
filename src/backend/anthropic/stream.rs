//! Messages API stream events as OpenAI chat chunks.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{Value, json};

use super::messages::{finish_reason, unix_now};
use crate::answer::Event;
use crate::backend::sse::{self, Raw, Translate};

/// Streamed Messages API events as OpenAI chunks.
#[derive(Default)]
pub(super) struct Chunks {
    id: String,
    model: String,
    created: u64,
    /// OpenAI tool-call index of each tool-use content block.
    tools: HashMap<u64, usize>,
}

impl Chunks {
    fn chunk(&self, delta: Value, finish: Value) -> Event {
        let chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        Event::Data(Bytes::from(chunk.to_string()))
    }
}

impl Translate for Chunks {
    fn event(&mut self, raw: Raw) -> Vec<Event> {
        let Some(data) = raw.data else {
            return Vec::new();
        };
        let Ok(event) = serde_json::from_str::<Value>(&data) else {
            return vec![Event::failed(
                "backend_bad_response",
                "The backend sent a stream event that is not JSON.",
            )];
        };
        let index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
        match event.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                let message = event.get("message").unwrap_or(&Value::Null);
                let text = |k: &str| {
                    message
                        .get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                self.id = text("id");
                self.model = text("model");
                self.created = unix_now();
                vec![self.chunk(json!({"role": "assistant", "content": ""}), Value::Null)]
            }
            Some("content_block_start") => {
                let block = event.get("content_block").unwrap_or(&Value::Null);
                match block.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let n = self.tools.len();
                        self.tools.insert(index, n);
                        vec![self.chunk(
                            json!({"tool_calls": [{
                                "index": n,
                                "id": block.get("id"),
                                "type": "function",
                                "function": {"name": block.get("name"), "arguments": ""},
                            }]}),
                            Value::Null,
                        )]
                    }
                    Some("text") => match block.get("text").and_then(Value::as_str) {
                        Some(t) if !t.is_empty() => {
                            vec![self.chunk(json!({"content": t}), Value::Null)]
                        }
                        _ => Vec::new(),
                    },
                    _ => Vec::new(),
                }
            }
            Some("content_block_delta") => {
                let delta = event.get("delta").unwrap_or(&Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => vec![self.chunk(json!({"content": delta.get("text")}), Value::Null)],
                    Some("input_json_delta") => match self.tools.get(&index) {
                        Some(n) => vec![self.chunk(
                            json!({"tool_calls": [{"index": n, "function": {"arguments": delta.get("partial_json")}}]}),
                            Value::Null,
                        )],
                        None => Vec::new(),
                    },
                    _ => Vec::new(),
                }
            }
            Some("message_delta") => {
                let stop = event.pointer("/delta/stop_reason").and_then(Value::as_str);
                vec![self.chunk(json!({}), finish_reason(stop.or(Some("end_turn"))))]
            }
            Some("message_stop") => vec![Event::Done],
            Some("error") => vec![sse::failure(event.get("error").unwrap_or(&Value::Null))],
            // ping, content_block_stop, and event types added later.
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_events_become_chunks() {
        let mut t = Chunks::default();
        let mut run = |name: &str, data: Value| {
            t.event(Raw {
                name: Some(name.into()),
                data: Some(data.to_string()),
            })
        };
        let start = run(
            "message_start",
            json!({"type": "message_start", "message": {"id": "m1", "model": "c"}}),
        );
        assert!(
            matches!(&start[..], [Event::Data(d)] if String::from_utf8_lossy(d).contains("\"role\":\"assistant\""))
        );
        assert!(run("ping", json!({"type": "ping"})).is_empty());
        let text = run(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
        );
        assert!(
            matches!(&text[..], [Event::Data(d)] if String::from_utf8_lossy(d).contains("\"content\":\"Hi\""))
        );
        let end = run(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens"}}),
        );
        assert!(
            matches!(&end[..], [Event::Data(d)] if String::from_utf8_lossy(d).contains("\"finish_reason\":\"length\""))
        );
        assert_eq!(
            run("message_stop", json!({"type": "message_stop"})),
            vec![Event::Done]
        );
        let failed = run(
            "error",
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}),
        );
        assert_eq!(failed, vec![Event::failed("overloaded_error", "busy")]);
    }
}
