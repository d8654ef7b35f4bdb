//! A small, deterministic OpenAI-compatible server that says who answered: the
//! backend used by the test suite, the benchmarks and the testnet. It speaks the
//! OpenAI, Ollama or LlamaFarm flavour of model listing, streams replies word by
//! word, and can be told to misbehave (garbage, errors, stalls, broken streams)
//! so that the node's handling of bad backends can be checked for real.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde_json::{Value, json};

/// Which server it imitates (model listing and chat paths).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Flavour {
    Openai,
    Ollama,
    Llamafarm,
}

/// How it misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// Answers correctly.
    None,
    /// 200 with a body that is not JSON (and non-JSON stream events).
    Garbage,
    /// 500 with an HTML page.
    Error,
    /// Waits a long time before answering.
    Stall,
    /// Streams two chunks, then drops the connection.
    BreakStream,
    /// Streams the whole answer and ends the response cleanly, but never
    /// sends `data: [DONE]` (a server whose stream just ends).
    NoDone,
    /// 400 with an OpenAI-shaped error, as a backend refusing a parameter does.
    Reject,
    /// Offered tools, it calls one on every turn and never answers.
    ToolLoop,
    /// Offered tools, it calls one with arguments that are not JSON.
    ToolMalformed,
    /// Offered tools, it calls one it was not offered (`no_such_tool`).
    ToolUnknown,
    /// Offered tools, it asks for 2,000 calls of one in a single turn.
    ToolFanOut,
}

/// What the server is and does.
#[derive(Debug, Clone)]
pub struct Echo {
    /// Shown in every reply: `[name] ...`.
    pub name: String,
    pub flavour: Flavour,
    /// Models (OpenAI, Ollama) or projects (LlamaFarm) it lists.
    pub models: Vec<String>,
    pub fault: Fault,
    /// Pause between streamed chunks.
    pub chunk_delay: Duration,
    /// Pause for [`Fault::Stall`].
    pub stall: Duration,
    /// Time each answer takes before its first byte, like a model's time to
    /// first token.
    pub latency: Duration,
    /// Answers worked on at once, like a GPU's batch slots; the rest wait
    /// their turn. A slot is held until the answer is sent (a stream's,
    /// until it starts). 0: no limit.
    pub slots: usize,
    /// Holds the slots while serving.
    busy: Option<Arc<tokio::sync::Semaphore>>,
}

impl Echo {
    pub fn new(name: &str, flavour: Flavour, models: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            flavour,
            models: models.iter().map(|m| (*m).to_owned()).collect(),
            fault: Fault::None,
            chunk_delay: Duration::ZERO,
            stall: Duration::from_secs(30),
            latency: Duration::ZERO,
            slots: 0,
            busy: None,
        }
    }

    /// The server's routes.
    pub fn router(mut self) -> Router {
        self.busy = (self.slots > 0).then(|| Arc::new(tokio::sync::Semaphore::new(self.slots)));
        let state = Arc::new(self);
        Router::new()
            .route("/v1/models", get(list_openai))
            .route("/api/tags", get(list_ollama))
            .route("/v1/projects/{ns}", get(list_llamafarm))
            .route("/v1/chat/completions", post(chat))
            .route("/v1/completions", post(completions))
            .route("/v1/audio/transcriptions", post(transcribe))
            .route(
                "/v1/projects/{ns}/{name}/chat/completions",
                post(project_chat),
            )
            // Model servers take long prompts (axum's default is 2 MB).
            .layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024))
            .with_state(state)
    }

    /// Serves on `listener` until the task is dropped.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }
}

type St = State<Arc<Echo>>;

async fn list_openai(State(e): St) -> Response {
    let data: Vec<Value> = e
        .models
        .iter()
        .map(|m| json!({"id": m, "object": "model", "created": 0, "owned_by": e.name}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

async fn list_ollama(State(e): St) -> Response {
    let models: Vec<Value> = e
        .models
        .iter()
        .map(|m| json!({"name": m, "model": m, "details": {"family": "echo"}}))
        .collect();
    axum::Json(json!({"models": models})).into_response()
}

async fn list_llamafarm(State(e): St, Path(ns): Path<String>) -> Response {
    let projects: Vec<Value> = e
        .models
        .iter()
        .map(|m| json!({"namespace": ns, "name": m, "config": {"description": format!("{m} project")}}))
        .collect();
    axum::Json(json!({"total": projects.len(), "projects": projects})).into_response()
}

fn last_user_text(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_owned()
}

async fn chat(State(e): St, body: Bytes) -> Response {
    answer(e, body, None, true).await
}

/// A transcription: what it heard, as OpenAI's `{"text"}`.
async fn transcribe(State(e): St, headers: axum::http::HeaderMap, body: Bytes) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let fields = match crate::multipart::read(content_type, body).await {
        Ok(fields) => fields,
        Err(why) => {
            let err = json!({"error": {"message": why, "type": "invalid_request_error", "param": "file", "code": null}});
            return (StatusCode::BAD_REQUEST, axum::Json(err)).into_response();
        }
    };
    let text = |name: &str| {
        fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| String::from_utf8_lossy(&f.data).into_owned())
            .unwrap_or_default()
    };
    let Some(file) = fields.iter().find(|f| f.name == "file") else {
        let err = json!({"error": {"message": "no file", "type": "invalid_request_error", "param": "file", "code": null}});
        return (StatusCode::BAD_REQUEST, axum::Json(err)).into_response();
    };
    axum::Json(json!({
        "text": format!(
            "[{}] model={} heard {} bytes of {} ({})",
            e.name,
            text("model"),
            file.data.len(),
            file.filename.as_deref().unwrap_or(""),
            file.content_type.as_deref().unwrap_or(""),
        ),
        "language": text("language"),
    }))
    .into_response()
}

async fn completions(State(e): St, body: Bytes) -> Response {
    answer(e, body, None, false).await
}

async fn project_chat(
    State(e): St,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    answer(e, body, Some(format!("{ns}/{name}")), true).await
}

async fn answer(e: Arc<Echo>, raw: Bytes, project: Option<String>, chat: bool) -> Response {
    // A slot is held while the answer is worked on (never closed: `acquire`
    // cannot fail).
    let _slot = match &e.busy {
        Some(slots) => slots.clone().acquire_owned().await.ok(),
        None => None,
    };
    if !e.latency.is_zero() {
        tokio::time::sleep(e.latency).await;
    }
    match e.fault {
        Fault::Error => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "<html>internal error</html>",
            )
                .into_response();
        }
        Fault::Stall => tokio::time::sleep(e.stall).await,
        Fault::Reject => {
            let err = json!({"error": {"message": "this backend does not support tools", "type": "invalid_request_error", "param": "tools", "code": "unsupported_parameter"}});
            return (StatusCode::BAD_REQUEST, axum::Json(err)).into_response();
        }
        _ => {}
    }
    let Ok(body) = serde_json::from_slice::<Value>(&raw) else {
        let err = json!({"error": {"message": "invalid JSON", "type": "invalid_request_error", "param": null, "code": null}});
        return (StatusCode::BAD_REQUEST, axum::Json(err)).into_response();
    };
    let model = project.unwrap_or_else(|| body["model"].as_str().unwrap_or("").to_owned());
    let said = if chat {
        last_user_text(&body)
    } else {
        body["prompt"].as_str().unwrap_or("").to_owned()
    };
    let stream = body["stream"].as_bool().unwrap_or(false);
    if chat
        && !stream
        && let Some(tools) = body["tools"].as_array().filter(|t| !t.is_empty())
        && let Some(message) = play_tools(&e, &body, tools)
    {
        let finish = if message["tool_calls"].is_array() {
            "tool_calls"
        } else {
            "stop"
        };
        return axum::Json(json!({
            "id": "echo-1",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            "x_echo_request": summarised(body),
        }))
        .into_response();
    }
    let text = format!("[{}] model={} you said: {}", e.name, model, said);
    if e.fault == Fault::Garbage && !stream {
        return (StatusCode::OK, "this is not json").into_response();
    }
    if stream {
        return stream_reply(e, model, text, chat);
    }
    let choice = if chat {
        json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"})
    } else {
        json!({"index": 0, "text": text, "finish_reason": "stop"})
    };
    let words = text.split_whitespace().count();
    axum::Json(json!({
        "id": "echo-1",
        "object": if chat { "chat.completion" } else { "text_completion" },
        "created": 0,
        "model": model,
        "choices": [choice],
        "usage": {"prompt_tokens": 1, "completion_tokens": words, "total_tokens": words + 1},
        // What the backend received, so tests can check pass-through.
        "x_echo_request": summarised(body),
    }))
    .into_response()
}

/// The request as echoed back: strings of 64 KiB or more (an image, a clip)
/// stand as `[N bytes, sha256 HEX]`, so that a test can check they arrived
/// whole without the answer carrying them back.
fn summarised(mut body: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::String(s) if s.len() >= 64 * 1024 => {
                use sha2::Digest;
                let digest = sha2::Sha256::digest(s.as_bytes());
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                *s = format!("[{} bytes, sha256 {hex}]", s.len());
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            Value::Object(map) => map.values_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut body);
    body
}

fn stream_reply(e: Arc<Echo>, model: String, text: String, chat: bool) -> Response {
    let words: Vec<String> = text.split_inclusive(' ').map(str::to_owned).collect();
    let fault = e.fault;
    let delay = e.chunk_delay;
    let chunk = move |delta: Option<&str>, finish: Option<&str>| -> Bytes {
        let choice = if chat {
            json!({"index": 0, "delta": delta.map_or(json!({}), |d| json!({"content": d})), "finish_reason": finish})
        } else {
            json!({"index": 0, "text": delta.unwrap_or(""), "finish_reason": finish})
        };
        let obj = if chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        let v = json!({"id": "echo-1", "object": obj, "created": 0, "model": model, "choices": [choice]});
        Bytes::from(format!("data: {v}\n\n"))
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        for (i, w) in words.iter().enumerate() {
            if fault == Fault::BreakStream && i == 2 {
                // Let the first chunks reach the wire before the connection dies.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = tx
                    .send(Err(std::io::Error::other("broken on purpose")))
                    .await;
                return;
            }
            let bytes = if fault == Fault::Garbage {
                Bytes::from_static(b"data: <garbage>\n\n")
            } else {
                chunk(Some(w), None)
            };
            if tx.send(Ok(bytes)).await.is_err() {
                return;
            }
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
        let _ = tx.send(Ok(chunk(None, Some("stop")))).await;
        if fault != Fault::NoDone {
            let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await;
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut r = Response::new(body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    r
}

/// The turn of a model offered `tools`, as a script: once the last user
/// message has tool results after it, the answer is what they said;
/// before, a call of the tool whose name the user's text holds (the
/// longest such name; else the first tool) with the first JSON object in
/// that text as its arguments (`{}` when there is none). Faults change it
/// ([`Fault::ToolLoop`] and the others).
fn play_tools(e: &Echo, body: &Value, tools: &[Value]) -> Option<Value> {
    let messages = body["messages"].as_array()?;
    let last_user = messages.iter().rposition(|m| m["role"] == "user")?;
    let said = last_user_text(body);
    let results: Vec<&str> = messages[last_user..]
        .iter()
        .filter(|m| m["role"] == "tool")
        .filter_map(|m| m["content"].as_str())
        .collect();
    if !results.is_empty() && e.fault != Fault::ToolLoop {
        let text = format!("[{}] the tools said: {}", e.name, results.join(" | "));
        return Some(json!({"role": "assistant", "content": text}));
    }
    let names: Vec<&str> = tools
        .iter()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    let lower = said.to_lowercase();
    let chosen = names
        .iter()
        .filter(|n| lower.contains(&n.to_lowercase()))
        .max_by_key(|n| n.len())
        .or(names.first())?;
    let arguments = match e.fault {
        Fault::ToolMalformed => "{not json".to_owned(),
        _ => first_object(&said).unwrap_or_else(|| "{}".into()),
    };
    let name = if e.fault == Fault::ToolUnknown {
        "no_such_tool"
    } else {
        chosen
    };
    let n = messages.iter().filter(|m| m["role"] == "tool").count();
    if e.fault == Fault::ToolFanOut {
        let calls: Vec<Value> = (0..2000)
            .map(|i| {
                json!({"id": format!("call_{n}_{i}"), "type": "function",
                    "function": {"name": name, "arguments": arguments}})
            })
            .collect();
        return Some(json!({"role": "assistant", "content": null, "tool_calls": calls}));
    }
    Some(
        json!({"role": "assistant", "content": null, "tool_calls": [{
            "id": format!("call_{n}"),
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }]}),
    )
}

/// The first JSON object written in `text`, as text.
fn first_object(text: &str) -> Option<String> {
    text.match_indices('{').find_map(|(i, _)| {
        let mut stream = serde_json::Deserializer::from_str(&text[i..]).into_iter::<Value>();
        match stream.next() {
            Some(Ok(v @ Value::Object(_))) => Some(v.to_string()),
            _ => None,
        }
    })
}
