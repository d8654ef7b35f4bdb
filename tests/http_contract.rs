//! The HTTP API's contract, through `app().oneshot(..)` on a real node (real
//! embedder, real echo backend on loopback).

mod common;

use atmosphere::config::BackendKind;
use atmosphere::echo::{Echo, Flavour};
use atmosphere::node::Node;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use common::*;

struct Fixture {
    node: Node,
    _dir: tempfile::TempDir,
}

async fn fixture_with(edit: impl FnOnce(&mut atmosphere::config::Config)) -> Fixture {
    let addr = spawn_echo(Echo::new(
        "echo",
        Flavour::Openai,
        &["llama3.2", "qwen2.5-coder"],
    ))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(
        vec![backend("local", BackendKind::Openai, addr, false)],
        farm_capabilities("local"),
        dir.path(),
    );
    edit(&mut config);
    Fixture {
        node: start(config).await,
        _dir: dir,
    }
}

async fn fixture() -> Fixture {
    fixture_with(|_| {}).await
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts OpenAI's error shape and returns the error object.
    fn error(&self, status: StatusCode) -> Value {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        let v = self.json();
        let e = v["error"].clone();
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        assert!(e["type"].is_string(), "{v}");
        assert!(e.get("param").is_some() && e.get("code").is_some(), "{v}");
        e
    }
}

async fn call(
    f: &Fixture,
    method: &str,
    uri: &str,
    body: Option<Vec<u8>>,
    auth: Option<&str>,
) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    if let Some(key) = auth {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    let req = req
        .body(body.map_or_else(Body::empty, Body::from))
        .expect("request");
    let resp = tokio::time::timeout(WAIT, f.node.app().oneshot(req))
        .await
        .expect("answered in time")
        .expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

async fn post(f: &Fixture, uri: &str, body: Value) -> Reply {
    call(
        f,
        "POST",
        uri,
        Some(serde_json::to_vec(&body).expect("json")),
        None,
    )
    .await
}

fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

#[tokio::test]
async fn models_lists_auto_embedder_and_capabilities() {
    let f = fixture().await;
    let r = call(&f, "GET", "/v1/models", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    for id in [
        "auto",
        "all-MiniLM-L6-v2",
        "farm/llama-expert",
        "farm/coder",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    let one = call(&f, "GET", "/v1/models/farm/coder", None, None).await;
    assert_eq!(one.json()["id"], "farm/coder");
    assert_eq!(one.json()["object"], "model");
    let e = call(&f, "GET", "/v1/models/farm/nothing", None, None)
        .await
        .error(StatusCode::NOT_FOUND);
    assert_eq!(e["code"], "model_not_found");
}

#[tokio::test]
async fn auto_routes_by_meaning_and_names_the_route() {
    let f = fixture().await;
    let r = post(
        &f,
        "/v1/chat/completions",
        chat("auto", "My alpaca will not eat its hay, what should I do?"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-atmosphere-route"), "farm/llama-expert");
    assert_eq!(r.header("x-atmosphere-node"), f.node.peer_id.to_base58());
    let score: f32 = r
        .header("x-atmosphere-score")
        .parse()
        .expect("numeric score");
    assert!(score > 0.35 && score <= 1.0, "{score}");
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .expect("content")
            .contains("model=llama3.2")
    );

    let r = post(
        &f,
        "/v1/chat/completions",
        chat(
            "auto",
            "Why does my Rust program panic with an index out of bounds error?",
        ),
    )
    .await;
    assert_eq!(r.header("x-atmosphere-route"), "farm/coder");
}

#[tokio::test]
async fn explicit_model_routes_exactly_and_unknown_fields_pass_through() {
    let f = fixture().await;
    let body = json!({
        "model": "farm/coder",
        "messages": [{"role": "user", "content": "alpacas"}],
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
        "response_format": {"type": "json_object"},
        "vendor_extension": {"nested": [1, 2, 3]},
        "temperature": 0.2
    });
    let r = post(&f, "/v1/chat/completions", body.clone()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-atmosphere-route"), "farm/coder");
    let received = &r.json()["x_echo_request"];
    assert_eq!(
        received["model"], "qwen2.5-coder",
        "model rewritten to the backend's name"
    );
    for field in [
        "tools",
        "response_format",
        "vendor_extension",
        "temperature",
        "messages",
    ] {
        assert_eq!(received[field], body[field], "{field} changed on the way");
    }
}

#[tokio::test]
async fn streaming_chat_is_relayed_as_sse() {
    let f = fixture().await;
    let mut body = chat("auto", "What should llamas eat?");
    body["stream"] = json!(true);
    let r = post(&f, "/v1/chat/completions", body).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("content-type").starts_with("text/event-stream"));
    assert_eq!(r.header("x-atmosphere-route"), "farm/llama-expert");
    let text = String::from_utf8(r.body).expect("utf8");
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert!(events.len() > 4, "token by token: {events:?}");
    assert_eq!(*events.last().expect("events"), "data: [DONE]");
    let content: String = events
        .iter()
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).expect("chunk is JSON"))
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert!(content.contains("What should llamas eat?"), "{content}");
}

#[tokio::test]
async fn completions_are_proxied() {
    let f = fixture().await;
    let r = post(
        &f,
        "/v1/completions",
        json!({"model": "auto", "prompt": "def reverse(s): # python"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-atmosphere-route"), "farm/coder");
    assert_eq!(r.json()["object"], "text_completion");
}

#[tokio::test]
async fn bad_requests_get_openai_errors() {
    let f = fixture().await;
    let raw = |b: &str| Some(b.as_bytes().to_vec());
    let cases: Vec<(Option<Vec<u8>>, &str)> = vec![
        (raw("{not json"), "body"),
        (raw("[1,2]"), "body"),
        (
            raw(r#"{"messages":[{"role":"user","content":"x"}]}"#),
            "model",
        ),
        (
            raw(r#"{"model":5,"messages":[{"role":"user","content":"x"}]}"#),
            "model",
        ),
        (raw(r#"{"model":"auto","messages":[]}"#), "messages"),
        (raw(r#"{"model":"auto","messages":{}}"#), "messages"),
        (
            raw(r#"{"model":"auto","messages":[{"content":"x"}]}"#),
            "messages[0].role",
        ),
        (
            raw(r#"{"model":"auto","stream":"yes","messages":[{"role":"user","content":"x"}]}"#),
            "stream",
        ),
        (
            raw(r#"{"model":"auto","messages":[{"role":"user","content":""}]}"#),
            "messages",
        ),
    ];
    for (body, param) in cases {
        let r = call(&f, "POST", "/v1/chat/completions", body, None).await;
        let e = r.error(StatusCode::BAD_REQUEST);
        assert_eq!(e["param"], param, "{e}");
        assert_eq!(e["type"], "invalid_request_error");
    }
    let e = post(&f, "/v1/chat/completions", chat("farm/unknown", "x"))
        .await
        .error(StatusCode::NOT_FOUND);
    assert_eq!(e["code"], "model_not_found");
    let e = post(&f, "/v1/completions", json!({"model": "auto"}))
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_eq!(e["param"], "prompt");
    call(&f, "GET", "/v1/nothing-here", None, None)
        .await
        .error(StatusCode::NOT_FOUND);
    call(&f, "DELETE", "/v1/models", None, None)
        .await
        .error(StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn oversize_body_is_413() {
    let f = fixture_with(|c| c.http.max_body_bytes = 1024).await;
    let big = chat("auto", &"llama ".repeat(1000));
    let e = post(&f, "/v1/chat/completions", big)
        .await
        .error(StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(e["code"], "request_too_large");

    // `/mcp` reads its bodies itself, within the same limit.
    let call = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "x", "arguments": {"text": "llama ".repeat(1000)}}});
    let req = Request::builder()
        .method("POST")
        .uri("/mcp")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(Body::from(serde_json::to_vec(&call).expect("json")))
        .expect("request");
    let resp = tokio::time::timeout(WAIT, f.node.app().oneshot(req))
        .await
        .expect("answered in time")
        .expect("infallible");
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn nothing_fits_is_a_clear_error_or_the_default() {
    // The default rule, no threshold set: three examples per capability are
    // enough to refuse what is about neither and to answer what is.
    let f = fixture().await;
    let e = post(
        &f,
        "/v1/chat/completions",
        chat("auto", "What is the capital of France?"),
    )
    .await
    .error(StatusCode::NOT_FOUND);
    assert_eq!(e["code"], "no_capability_fits");
    let message = e["message"].as_str().expect("message");
    assert!(message.contains("below the"), "{message}");
    let r = post(
        &f,
        "/v1/chat/completions",
        chat("auto", "my alpaca has stopped eating hay"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-atmosphere-route"), "farm/llama-expert");

    // An explicit threshold overrides the rule.
    let f = fixture_with(|c| c.routing.threshold = Some(-1.0)).await;
    let r = post(
        &f,
        "/v1/chat/completions",
        chat("auto", "What is the capital of France?"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);

    let f = fixture_with(|c| {
        c.routing.threshold = Some(0.95);
        c.routing.default = Some("farm/coder".parse().expect("id"));
    })
    .await;
    let r = post(
        &f,
        "/v1/chat/completions",
        chat("auto", "What is the capital of France?"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-atmosphere-route"), "farm/coder");
}

#[tokio::test]
async fn bearer_auth_when_configured() {
    let f = fixture_with(|c| c.http.api_keys = vec!["sekret".into()]).await;
    let e = call(&f, "GET", "/v1/models", None, None)
        .await
        .error(StatusCode::UNAUTHORIZED);
    assert_eq!(e["code"], "invalid_api_key");
    call(&f, "GET", "/v1/models", None, Some("wrong"))
        .await
        .error(StatusCode::UNAUTHORIZED);
    assert_eq!(
        call(&f, "GET", "/v1/models", None, Some("sekret"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        call(&f, "GET", "/health", None, None).await.status,
        StatusCode::OK
    );
    // The tool routes and the MCP server are behind the same keys.
    for (method, path) in [
        ("GET", "/v1/tools"),
        ("POST", "/v1/tool/execute"),
        ("POST", "/v1/intent"),
        ("POST", "/mcp"),
    ] {
        let e = call(&f, method, path, Some(b"{}".to_vec()), None)
            .await
            .error(StatusCode::UNAUTHORIZED);
        assert_eq!(e["code"], "invalid_api_key", "{path}");
    }
}

#[tokio::test]
async fn embeddings_float_base64_and_errors() {
    let f = fixture().await;
    let r = post(
        &f,
        "/v1/embeddings",
        json!({"model": "all-MiniLM-L6-v2", "input": ["llamas", "alpacas"]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"].as_array().expect("data").len(), 2);
    assert_eq!(v["data"][1]["index"], 1);
    let floats: Vec<f32> =
        serde_json::from_value(v["data"][0]["embedding"].clone()).expect("floats");
    assert_eq!(floats.len(), 384);
    assert!(v["usage"]["prompt_tokens"].as_u64().expect("usage") > 0);

    let r = post(
        &f,
        "/v1/embeddings",
        json!({"model": "auto", "input": "llamas", "encoding_format": "base64"}),
    )
    .await;
    use base64::Engine;
    let b64 = r.json()["data"][0]["embedding"]
        .as_str()
        .expect("base64 string")
        .to_owned();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64");
    assert_eq!(bytes.len(), 384 * 4);
    let first = f32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
    assert!((first - floats[0]).abs() < 1e-6, "same vector either way");

    for (body, param) in [
        (json!({"model": "auto", "input": [1, 2, 3]}), "input"),
        (json!({"model": "auto", "input": []}), "input"),
        (json!({"model": "auto"}), "input"),
        (
            json!({"model": "auto", "input": "x", "dimensions": 256}),
            "dimensions",
        ),
        (
            json!({"model": "auto", "input": "x", "encoding_format": "hex"}),
            "encoding_format",
        ),
    ] {
        let e = post(&f, "/v1/embeddings", body)
            .await
            .error(StatusCode::BAD_REQUEST);
        assert_eq!(e["param"], param);
    }
    post(
        &f,
        "/v1/embeddings",
        json!({"model": "text-embedding-3-small", "input": "x"}),
    )
    .await
    .error(StatusCode::NOT_FOUND);
    post(
        &f,
        "/v1/embeddings",
        json!({"model": "farm/coder", "input": "x"}),
    )
    .await
    .error(StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn route_explains_the_decision() {
    let f = fixture().await;
    let r = post(
        &f,
        "/v1/route",
        json!({"input": "How much hay does a llama need?"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let d = &r.json()["decision"];
    assert_eq!(d["outcome"], "matched");
    assert_eq!(d["chosen"]["id"], "farm/llama-expert");
    let c = d["candidates"].as_array().expect("candidates");
    assert_eq!(c.len(), 2);
    assert!(c[0]["score"].as_f64() > c[1]["score"].as_f64());
    post(&f, "/v1/route", json!({"input": ""}))
        .await
        .error(StatusCode::BAD_REQUEST);
    post(&f, "/v1/route", json!({"foo": 1}))
        .await
        .error(StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn metrics_count_requests_and_decisions() {
    let f = fixture().await;
    post(&f, "/v1/chat/completions", chat("auto", "llama feed")).await;
    post(&f, "/v1/chat/completions", chat("farm/none", "x")).await;
    let r = call(&f, "GET", "/metrics", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let text = String::from_utf8(r.body).expect("utf8");
    assert!(
        text.contains(
            r#"atmosphere_http_requests_total{route="/v1/chat/completions",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"status="404"} 1"#), "{text}");
    assert!(text.contains(r#"atmosphere_routing_decisions_total{outcome="matched",capability="farm/llama-expert"} 1"#), "{text}");
    assert!(
        text.contains("atmosphere_routing_decision_duration_seconds_count 1"),
        "{text}"
    );
    assert!(text.contains("atmosphere_capabilities 2"), "{text}");
}

#[tokio::test]
async fn health_and_capabilities() {
    let f = fixture().await;
    let h = call(&f, "GET", "/health", None, None).await.json();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["peer_id"], f.node.peer_id.to_base58());
    assert_eq!(h["backends"]["local"]["available"], true);
    let c = call(&f, "GET", "/v1/mesh/capabilities", None, None)
        .await
        .json();
    let ids: Vec<&str> = c["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|x| x["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(c["data"][0]["local"].as_bool().expect("local"));
}
