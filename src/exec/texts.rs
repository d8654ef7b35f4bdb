//! The texts of an OpenAI request that routing goes by: a chat's recent user
//! turns, a completion's prompt, embedding inputs. Checked on the way: a
//! malformed field is the client's error, named by its `param`. Used by every
//! transport that routes OpenAI bodies by meaning.

use serde_json::{Map, Value};

use super::ApiError;
use crate::capability::{Input, Inputs};

/// User turns used to route a conversation (newest first weighs most).
const ROUTING_TURNS: usize = 3;
/// Characters of one turn used for routing (the embedder truncates anyway).
const ROUTING_CHARS: usize = 4000;
/// Inputs accepted in one embeddings request (OpenAI's own limit).
const MAX_EMBED_INPUTS: usize = 2048;

/// The text of a message's content: a string, or the text parts of an array.
fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let text: Vec<&str> = parts
                .iter()
                .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect();
            (!text.is_empty()).then(|| text.join("\n"))
        }
        _ => None,
    }
}

fn truncate(mut s: String) -> String {
    if s.len() > ROUTING_CHARS {
        let mut cut = ROUTING_CHARS;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// What a chat's messages carry: text, and images (`image_url` parts) or
/// audio (`input_audio` parts) for the capabilities that take them. Read
/// after [`chat_texts`] checked the messages.
pub fn chat_inputs(body: &Map<String, Value>) -> Inputs {
    let Some(Value::Array(messages)) = body.get("messages") else {
        return Inputs::TEXT;
    };
    let mut carries = Inputs::TEXT;
    for content in messages.iter().filter_map(|m| m.get("content")) {
        let Value::Array(parts) = content else {
            continue;
        };
        for part in parts {
            match part.get("type").and_then(Value::as_str) {
                Some("image_url") => carries = carries.with(Input::Image),
                Some("input_audio") => carries = carries.with(Input::Audio),
                _ => {}
            }
        }
    }
    carries
}

/// Checks `messages` and returns the texts to route by, oldest first.
pub fn chat_texts(body: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let messages = match body.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) => {
            return Err(ApiError::invalid(
                "messages",
                "messages must contain at least one message.",
            ));
        }
        Some(_) => return Err(ApiError::invalid("messages", "messages must be an array.")),
        None => {
            return Err(ApiError::invalid(
                "messages",
                "You must provide a messages parameter.",
            ));
        }
    };
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str);
        if role.is_none() {
            return Err(ApiError::invalid(
                &format!("messages[{i}].role"),
                format!("messages[{i}] must be an object with a string role."),
            ));
        }
    }
    let texts_of = |role: Option<&str>| -> Vec<String> {
        messages
            .iter()
            .filter(|m| role.is_none() || m.get("role").and_then(Value::as_str) == role)
            .filter_map(|m| m.get("content").and_then(content_text))
            .filter(|t| !t.trim().is_empty())
            .collect()
    };
    let mut texts = texts_of(Some("user"));
    if texts.is_empty() {
        texts = texts_of(None);
    }
    let skip = texts.len().saturating_sub(ROUTING_TURNS);
    Ok(texts.into_iter().skip(skip).map(truncate).collect())
}

pub fn need_text(texts: Vec<String>, param: &str) -> Result<Vec<String>, ApiError> {
    if texts.is_empty() {
        Err(ApiError::invalid(
            param,
            "There is no text to route by; send a message with text content, or name a model.",
        ))
    } else {
        Ok(texts)
    }
}

pub fn prompt_texts(body: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    match body.get("prompt") {
        Some(Value::String(s)) => Ok(vec![truncate(s.clone())]),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) && !items.is_empty() => {
            Ok(items
                .iter()
                .filter_map(Value::as_str)
                .take(ROUTING_TURNS)
                .map(|s| truncate(s.to_owned()))
                .collect())
        }
        None => Err(ApiError::invalid(
            "prompt",
            "You must provide a prompt parameter.",
        )),
        Some(_) => Err(ApiError::invalid(
            "prompt",
            "prompt must be a string or a non-empty array of strings.",
        )),
    }
}

pub fn embedding_inputs(body: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let invalid = |m: &str| ApiError::invalid("input", m.to_owned());
    let inputs = match body.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(invalid("input must not be empty."));
        }
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::Array(_)) => {
            return Err(invalid(
                "input must be a string or an array of strings; token arrays are not supported by this node's embedder.",
            ));
        }
        None => return Err(invalid("You must provide an input parameter.")),
        Some(_) => return Err(invalid("input must be a string or an array of strings.")),
    };
    if inputs.len() > MAX_EMBED_INPUTS {
        return Err(invalid(&format!(
            "input may hold at most {MAX_EMBED_INPUTS} strings."
        )));
    }
    if let Some(i) = inputs.iter().position(|s| s.is_empty()) {
        return Err(ApiError::invalid(
            &format!("input[{i}]"),
            "input strings must not be empty.",
        ));
    }
    Ok(inputs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn chat_texts_prefers_recent_user_turns() {
        let body = map(json!({"messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "two"}, {"type": "image_url", "image_url": {"url": "x"}}]},
            {"role": "user", "content": "three"},
            {"role": "user", "content": "four"}
        ]}));
        assert_eq!(chat_texts(&body).expect("ok"), vec!["two", "three", "four"]);
        let only_system = map(json!({"messages": [{"role": "system", "content": "hello"}]}));
        assert_eq!(chat_texts(&only_system).expect("ok"), vec!["hello"]);
    }

    #[test]
    fn chat_inputs_name_images_and_audio() {
        let text = map(json!({"messages": [{"role": "user", "content": "hi"}]}));
        assert_eq!(chat_inputs(&text), Inputs::TEXT);
        let photo = map(json!({"messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
            ]}
        ]}));
        assert_eq!(chat_inputs(&photo), Inputs::TEXT.with(Input::Image));
        let voice = map(json!({"messages": [
            {"role": "user", "content": [
                {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
            ]}
        ]}));
        assert_eq!(chat_inputs(&voice), Inputs::TEXT.with(Input::Audio));
    }

    #[test]
    fn chat_texts_rejects_bad_messages() {
        for (body, param) in [
            (json!({}), "messages"),
            (json!({"messages": []}), "messages"),
            (json!({"messages": "hi"}), "messages"),
            (json!({"messages": [{"content": "x"}]}), "messages[0].role"),
        ] {
            let err = chat_texts(&map(body)).unwrap_err();
            assert_eq!(err.param.as_deref(), Some(param));
        }
    }

    #[test]
    fn embedding_inputs_validate() {
        assert_eq!(
            embedding_inputs(&map(json!({"input": "a"}))).expect("ok"),
            vec!["a"]
        );
        assert!(embedding_inputs(&map(json!({"input": [1, 2]}))).is_err());
        assert!(embedding_inputs(&map(json!({"input": []}))).is_err());
        assert_eq!(
            embedding_inputs(&map(json!({"input": ["a", ""]})))
                .unwrap_err()
                .param
                .as_deref(),
            Some("input[1]")
        );
    }

    #[test]
    fn long_text_is_cut_on_a_char_boundary() {
        let s = "é".repeat(ROUTING_CHARS);
        let t = truncate(s);
        assert!(t.len() <= ROUTING_CHARS);
    }
}
