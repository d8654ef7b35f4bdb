//! What an agent's model answered: a final text, or function calls to run
//! (OpenAI's `tool_calls`), checked before anything runs.

use serde_json::{Map, Value, json};

/// One function call the model asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub id: String,
    pub function: String,
    pub arguments: Map<String, Value>,
}

/// A model's turn.
#[derive(Debug, PartialEq)]
pub enum Turn {
    /// The answer (the model called nothing).
    Answer(String),
    /// Calls to run, and the assistant message to keep in the conversation.
    Calls { calls: Vec<Call>, message: Value },
}

/// Reads a chat completion. `Err`: why it is not one, or why its
/// `tool_calls` cannot be run (each must have an id, a function name and
/// arguments that are a JSON object, as a string).
pub fn turn(completion: &Value) -> Result<Turn, String> {
    let message = completion
        .get("choices")
        .and_then(|c| c.get(0))
        .and_then(|c| c.get("message"))
        .filter(|m| m.is_object())
        .ok_or("the answer has no choices[0].message")?;
    let calls = match message.get("tool_calls") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(calls)) => calls
            .iter()
            .enumerate()
            .map(|(i, c)| call(c).map_err(|why| format!("tool_calls[{i}] {why}")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("tool_calls is not an array".into()),
    };
    if calls.is_empty() {
        return match message.get("content") {
            Some(Value::String(text)) => Ok(Turn::Answer(text.clone())),
            None | Some(Value::Null) => Ok(Turn::Answer(String::new())),
            // Content parts: their text.
            Some(Value::Array(parts)) => Ok(Turn::Answer(
                parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(""),
            )),
            Some(_) => Err("message.content is neither text nor parts".into()),
        };
    }
    let message = json!({
        "role": "assistant",
        "content": message.get("content").cloned().unwrap_or(Value::Null),
        "tool_calls": calls.iter().map(|c| json!({
            "id": c.id,
            "type": "function",
            "function": {
                "name": c.function,
                "arguments": Value::Object(c.arguments.clone()).to_string(),
            },
        })).collect::<Vec<_>>(),
    });
    Ok(Turn::Calls { calls, message })
}

fn call(c: &Value) -> Result<Call, String> {
    let id = c
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or("has no id")?;
    if let Some(kind) = c.get("type")
        && kind != "function"
    {
        return Err(format!("is of type {kind}, not function"));
    }
    let function = c.get("function").ok_or("has no function")?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or("has no function name")?;
    let arguments = match function.get("arguments") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::String(text)) if text.trim().is_empty() => Map::new(),
        Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(a)) => a,
            Ok(_) => return Err(format!("({name}): arguments are not a JSON object")),
            Err(e) => return Err(format!("({name}): arguments are not JSON: {e}")),
        },
        // Some servers send the object itself.
        Some(Value::Object(a)) => a.clone(),
        Some(_) => return Err(format!("({name}): arguments are not a JSON object")),
    };
    Ok(Call {
        id: id.to_owned(),
        function: name.to_owned(),
        arguments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion(message: Value) -> Value {
        json!({"choices": [{"index": 0, "message": message}]})
    }

    #[test]
    fn calls_are_read_and_an_answer_is_the_text() {
        let turn_ = turn(&completion(json!({"role": "assistant", "content": null,
            "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "add", "arguments": "{\"a\": 2, \"b\": 3}"}}]})))
        .expect("read");
        let Turn::Calls { calls, message } = turn_ else {
            panic!("calls expected");
        };
        assert_eq!(calls[0].function, "add");
        assert_eq!(calls[0].arguments["b"], 3);
        assert_eq!(message["tool_calls"][0]["id"], "c1");
        assert_eq!(
            turn(&completion(json!({"role": "assistant", "content": "5"}))),
            Ok(Turn::Answer("5".into()))
        );
        assert_eq!(
            turn(&completion(json!({"content": "5", "tool_calls": []}))),
            Ok(Turn::Answer("5".into()))
        );
    }

    #[test]
    fn malformed_calls_say_what_is_wrong() {
        let bad = |c: Value| turn(&completion(json!({"tool_calls": [c]}))).expect_err("bad");
        assert!(bad(json!({"function": {"name": "add"}})).contains("no id"));
        assert!(
            bad(json!({"id": "c", "function": {"arguments": "{}"}})).contains("no function name")
        );
        assert!(
            bad(json!({"id": "c", "function": {"name": "add", "arguments": "{not json"}}))
                .contains("not JSON")
        );
        assert!(
            bad(json!({"id": "c", "function": {"name": "add", "arguments": "[1]"}}))
                .contains("not a JSON object")
        );
        assert!(turn(&json!({"choices": []})).is_err());
        assert!(turn(&completion(json!({"tool_calls": "add"}))).is_err());
    }
}
