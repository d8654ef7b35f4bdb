//! `kind = "anthropic"` against an Anthropic-shaped server on loopback: models
//! discovered from its list, chats translated to `/v1/messages` and back
//! (text, system prompt, tools, errors), streamed events as OpenAI chunks.

mod common;

use std::sync::Arc;

use atmosphere::config::{BackendConfig, BackendKind};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde_json::{Value, json};

use common::*;

const KEY: &str = "sk-ant-test";

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"type": "error", "error": {"type": kind, "message": message}})),
    )
        .into_response()
}

fn sse(events: &[(&str, Value)]) -> Response {
    let body: String = events
        .iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect();
    ([("content-type", "text/event-stream")], body).into_response()
}

/// A server that answers like the Messages API and remembers the last
/// request it was sent (headers and body).
async fn anthropic_server() -> (std::net::SocketAddr, Arc<Mutex<Option<(HeaderMap, Value)>>>) {
    let seen: Arc<Mutex<Option<(HeaderMap, Value)>>> = Arc::default();
    let app = axum::Router::new()
        .route(
            "/v1/models",
            axum::routing::get(|| async {
                axum::Json(json!({"data": [{"type": "model", "id": "claude-test-1",
                    "display_name": "Claude Test"}], "has_more": false}))
            }),
        )
        .route(
            "/v1/messages",
            axum::routing::post({
                let seen = seen.clone();
                move |headers: HeaderMap, axum::Json(body): axum::Json<Value>| async move {
                    *seen.lock() = Some((headers.clone(), body.clone()));
                    messages(&headers, &body)
                }
            }),
        );
    (serve(app).await, seen)
}

fn messages(headers: &HeaderMap, body: &Value) -> Response {
    if headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(KEY) {
        return error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid x-api-key",
        );
    }
    if headers.get("anthropic-version").is_none() || headers.get("authorization").is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "bad headers",
        );
    }
    let (Some(model), Some(_), Some(turns)) = (
        body["model"].as_str(),
        body["max_tokens"].as_u64(),
        body["messages"].as_array(),
    ) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "model, max_tokens and messages are required",
        );
    };
    let last = turns
        .last()
        .and_then(|t| t["content"].as_array())
        .and_then(|c| c.iter().rev().find_map(|b| b["text"].as_str()))
        .unwrap_or_default()
        .to_owned();
    if body["stream"] == json!(true) {
        let mut events = vec![
            (
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_1", "model": model, "usage": {"input_tokens": 5}}}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            ("ping", json!({"type": "ping"})),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}),
            ),
        ];
        if last.contains("overload") {
            events.push(("error", json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})));
            return sse(&events);
        }
        events.extend([
            ("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " there"}})),
            ("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
            ("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}})),
            ("message_stop", json!({"type": "message_stop"})),
        ]);
        return sse(&events);
    }
    let content = if body["tools"].is_array() && last.contains("weather") {
        json!([{"type": "text", "text": "Let me look."},
               {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Lima"}}])
    } else {
        json!([{"type": "text", "text": format!("echo: {last}")}])
    };
    let stop = if content.as_array().is_some_and(|c| c.len() == 2) {
        "tool_use"
    } else {
        "end_turn"
    };
    axum::Json(json!({
        "id": "msg_2", "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": stop, "stop_sequence": null,
        "usage": {"input_tokens": 5, "output_tokens": 3}
    }))
    .into_response()
}

fn anthropic_backend(addr: std::net::SocketAddr, key: &str) -> BackendConfig {
    BackendConfig {
        api_key: Some(key.into()),
        ..backend("claude", BackendKind::Anthropic, addr, true)
    }
}

/// A node offering `claude/chat` (the server's model) on `backend`.
async fn claude_chat_node(backend: BackendConfig, dir: &std::path::Path) -> atmosphere::node::Node {
    let chat = capability(
        "claude/chat",
        "claude",
        "claude-test-1",
        "A general assistant.",
        &[],
    );
    start(config(vec![backend], vec![chat], dir)).await
}

async fn post(node: &atmosphere::node::Node, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", node.http_addr))
        .json(&body)
        .send()
        .await
        .expect("node reachable")
}

#[tokio::test]
async fn chats_are_translated_to_messages_and_back() {
    let (addr, seen) = anthropic_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(config(
        vec![anthropic_backend(addr, KEY)],
        Vec::new(),
        dir.path(),
    ))
    .await;
    eventually("the model is discovered", || async {
        get_json(&node, "/v1/models").await["data"]
            .as_array()
            .is_some_and(|d| d.iter().any(|m| m["id"] == "claude/claude-test-1"))
    })
    .await;

    let resp = post(
        &node,
        json!({"model": "claude/claude-test-1", "messages": [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "hi"}
    ], "presence_penalty": 0.5}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-atmosphere-route"], "claude/claude-test-1");
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "echo: hi");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["total_tokens"], 8);
    let (headers, body) = seen.lock().clone().expect("the server was asked");
    assert_eq!(headers["x-api-key"], KEY);
    assert!(headers.contains_key("anthropic-version"));
    assert_eq!(body["system"], "Answer in one word.");
    assert_eq!(body["model"], "claude-test-1");
    assert!(body["max_tokens"].as_u64().is_some(), "required by the API");
    assert!(
        body.get("presence_penalty").is_none(),
        "unknown to the API: {body}"
    );

    // Tools: OpenAI function tools go out as Anthropic tools; a tool_use
    // block comes back as tool_calls.
    let v: Value = post(
        &node,
        json!({"model": "claude/claude-test-1",
        "messages": [{"role": "user", "content": "what is the weather in Lima?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]}),
    )
    .await
    .json()
    .await
    .expect("json");
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather", "{v}");
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().expect("string"))
        .expect("arguments are JSON text");
    assert_eq!(args, json!({"city": "Lima"}));
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let (_, body) = seen.lock().clone().expect("asked");
    assert_eq!(
        body["tools"][0]["input_schema"]["properties"]["city"]["type"],
        "string"
    );

    // Completions are not part of this API: a clear 400.
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/completions", node.http_addr))
        .json(&json!({"model": "claude/claude-test-1", "prompt": "hi"}))
        .send()
        .await
        .expect("reachable");
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["error"]["code"], "unsupported_operation");
    node.shutdown().await;
}

/// The SSE `data:` payloads of a response, in order.
async fn events(resp: reqwest::Response) -> Vec<String> {
    let text = resp.text().await.expect("body");
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn streamed_events_become_openai_chunks() {
    let (addr, _) = anthropic_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let node = claude_chat_node(anthropic_backend(addr, KEY), dir.path()).await;
    let resp = post(
        &node,
        json!({"model": "claude/chat", "stream": true,
        "messages": [{"role": "user", "content": "hello"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/event-stream")
    );
    let data = events(resp).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).expect("chunk JSON"))
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk" && c["id"] == "msg_1")
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello there");
    assert_eq!(
        chunks.last().expect("chunks")["choices"][0]["finish_reason"],
        "stop"
    );

    // An error event mid-stream ends the client's stream with an error event.
    let data = events(
        post(
            &node,
            json!({"model": "claude/chat", "stream": true,
            "messages": [{"role": "user", "content": "overload me"}]}),
        )
        .await,
    )
    .await;
    let last: Value = serde_json::from_str(data.last().expect("events")).expect("json");
    assert_eq!(last["error"]["code"], "overloaded_error", "{data:?}");
    assert!(!data.iter().any(|d| d == "[DONE]"));
    node.shutdown().await;
}

#[tokio::test]
async fn anthropic_errors_reach_the_client_in_openai_shape() {
    let (addr, _) = anthropic_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let node = claude_chat_node(anthropic_backend(addr, "wrong-key"), dir.path()).await;
    let resp = post(
        &node,
        json!({"model": "claude/chat",
        "messages": [{"role": "user", "content": "hello"}]}),
    )
    .await;
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["error"]["type"], "authentication_error", "{v}");
    assert_eq!(v["error"]["message"], "invalid x-api-key");
    node.shutdown().await;
}

/// A photo the node kept in the client's bytes (a long data URL) reaches the
/// Messages API as an image block with all of its base64, not a stand-in.
#[tokio::test]
async fn a_photo_reaches_the_messages_api_whole() {
    let (addr, seen) = anthropic_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut eye = capability(
        "claude/eye",
        "claude",
        "claude-test-1",
        "Looks at photos and says what is in them.",
        &["What is in this photo?"],
    );
    eye.inputs = Some(serde_json::from_value(json!(["text", "image"])).expect("inputs"));
    let node = start(config(
        vec![anthropic_backend(addr, KEY)],
        vec![eye],
        dir.path(),
    ))
    .await;
    use base64::Engine;
    let png = [b"\x89PNG\r\n\x1a\n".as_slice(), &[7u8; 150_000]].concat();
    let data = base64::engine::general_purpose::STANDARD.encode(&png);
    let resp = post(
        &node,
        json!({"model": "claude/eye", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in this photo?"},
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{data}")}}
        ]}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let (_, body) = seen.lock().clone().expect("the server was asked");
    let block = &body["messages"][0]["content"][1];
    assert_eq!(block["source"]["media_type"], "image/png", "{block}");
    assert!(block["source"]["data"] == data, "the image's base64, whole");
    node.shutdown().await;
}
