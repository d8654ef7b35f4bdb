//! The node against real backends on loopback: discovery of OpenAI-compatible,
//! Ollama and LlamaFarm servers, and every way a backend can fail.

mod common;

use std::time::Duration;

use atmosphere::config::BackendKind;
use atmosphere::echo::{Echo, Fault, Flavour};
use atmosphere::node::Node;
use serde_json::{Value, json};

use common::*;

fn url(node: &Node, path: &str) -> String {
    format!("http://{}{path}", node.http_addr)
}

async fn post(node: &Node, path: &str, body: Value) -> reqwest::Response {
    tokio::time::timeout(
        WAIT,
        reqwest::Client::new()
            .post(url(node, path))
            .json(&body)
            .send(),
    )
    .await
    .expect("answered in time")
    .expect("node reachable")
}

fn chat(model: &str, text: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]})
}

async fn error_of(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    let v: Value = resp.json().await.expect("error JSON");
    assert!(v["error"]["message"].is_string(), "{v}");
    v["error"].clone()
}

/// Sends a non-streaming chat that must fail with `status`; returns the error.
async fn chat_error(node: &Node, model: &str, text: &str, status: u16) -> Value {
    error_of(
        post(node, "/v1/chat/completions", chat(model, text, false)).await,
        status,
    )
    .await
}

fn model_ids(models: &Value) -> Vec<String> {
    models["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str().map(str::to_owned))
        .collect()
}

fn available(models: &Value, id: &str) -> Option<bool> {
    models["data"].as_array()?.iter().find(|m| m["id"] == id)?["atmosphere"]["available"].as_bool()
}

#[tokio::test]
async fn discovers_openai_ollama_and_llamafarm_backends() {
    let openai = spawn_echo(Echo::new("vllm", Flavour::Openai, &["qwen2.5-coder"])).await;
    let ollama = spawn_echo(Echo::new("ollama", Flavour::Ollama, &["llama3.2:latest"])).await;
    let farm = spawn_echo(Echo::new("farm", Flavour::Llamafarm, &["llama-expert-14"])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(config(
        vec![
            backend("vllm", BackendKind::Openai, openai, true),
            backend("ollama", BackendKind::Ollama, ollama, true),
            backend("lf", BackendKind::Llamafarm, farm, true),
        ],
        Vec::new(),
        dir.path(),
    ))
    .await;
    let ids = model_ids(&get_json(&node, "/v1/models").await);
    for id in [
        "vllm/qwen2.5-coder",
        "ollama/llama3.2",
        "default/llama-expert-14",
    ] {
        assert!(ids.contains(&id.to_owned()), "{id} not discovered: {ids:?}");
    }
    for (model, expect) in [
        ("vllm/qwen2.5-coder", "[vllm] model=qwen2.5-coder"),
        ("ollama/llama3.2", "[ollama] model=llama3.2:latest"),
        (
            "default/llama-expert-14",
            "[farm] model=default/llama-expert-14",
        ),
    ] {
        let resp = post(&node, "/v1/chat/completions", chat(model, "hello", false)).await;
        assert_eq!(resp.status(), 200, "{model}");
        assert_eq!(resp.headers()["x-atmosphere-route"], model);
        let v: Value = resp.json().await.expect("json");
        let content = v["choices"][0]["message"]["content"]
            .as_str()
            .expect("content");
        assert!(content.starts_with(expect), "{model}: {content}");
    }
    // LlamaFarm has no completions endpoint: a clear 400, not a guess.
    let e = error_of(
        post(
            &node,
            "/v1/completions",
            json!({"model": "default/llama-expert-14", "prompt": "x"}),
        )
        .await,
        400,
    )
    .await;
    assert_eq!(e["code"], "unsupported_operation");
    node.shutdown().await;
}

#[tokio::test]
async fn down_backend_is_marked_unavailable_skipped_and_comes_back() {
    let good = spawn_echo(Echo::new("good", Flavour::Openai, &["m"])).await;
    let dead = dead_addr().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut caps = farm_capabilities("good");
    // The best match for llama questions lives on the dead backend.
    caps[0].backend = vec!["flaky".into()];
    caps.push(capability(
        "farm/animals",
        "good",
        "m",
        "Farm animals in general: llamas, goats, sheep.",
        &["How do I look after farm animals like llamas?"],
    ));
    let node = start(config(
        vec![
            backend("good", BackendKind::Openai, good, false),
            backend("flaky", BackendKind::Openai, dead, false),
        ],
        caps,
        dir.path(),
    ))
    .await;
    let models = get_json(&node, "/v1/models").await;
    assert_eq!(
        available(&models, "farm/llama-expert"),
        Some(false),
        "kept but unavailable"
    );
    // auto skips it and takes the next candidate.
    let resp = post(
        &node,
        "/v1/chat/completions",
        chat("auto", "What should I feed my llama?", false),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-atmosphere-route"], "farm/animals");
    // Naming it explicitly says clearly that its backend is down.
    let e = chat_error(&node, "farm/llama-expert", "hi", 503).await;
    assert_eq!(e["code"], "backend_unavailable");
    // The backend comes up: the periodic probe notices, and it is routed to again.
    spawn_echo_at(Echo::new("flaky", Flavour::Openai, &["m"]), dead).await;
    eventually("backend back", || async {
        available(&get_json(&node, "/v1/models").await, "farm/llama-expert") == Some(true)
    })
    .await;
    let resp = post(
        &node,
        "/v1/chat/completions",
        chat("auto", "What should I feed my llama?", false),
    )
    .await;
    assert_eq!(resp.headers()["x-atmosphere-route"], "farm/llama-expert");
    node.shutdown().await;
}

async fn faulty_node(fault: Fault, timeout: Duration) -> (Node, tempfile::TempDir) {
    let mut echo = Echo::new("bad", Flavour::Openai, &["m"]);
    echo.fault = fault;
    echo.stall = Duration::from_secs(10);
    let addr = spawn_echo(echo).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut b = backend("bad", BackendKind::Openai, addr, false);
    b.timeout = timeout;
    let node = start(config(vec![b], farm_capabilities("bad"), dir.path())).await;
    (node, dir)
}

#[tokio::test]
async fn garbage_from_backend_is_a_502_and_counted() {
    let (node, _dir) = faulty_node(Fault::Garbage, Duration::from_secs(5)).await;
    let e = chat_error(&node, "farm/coder", "x", 502).await;
    assert_eq!(e["code"], "backend_bad_response");
    assert!(
        !e["message"]
            .as_str()
            .expect("msg")
            .contains("this is not json"),
        "no raw backend output in errors"
    );
    // Streaming garbage: the stream ends with an error event instead.
    let resp = post(&node, "/v1/chat/completions", chat("farm/coder", "x", true)).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("body");
    assert!(!text.contains("<garbage>"), "{text}");
    let last = text.trim_end().rsplit("\n\n").next().expect("event");
    let v: Value =
        serde_json::from_str(last.trim_start_matches("data: ")).expect("error event JSON");
    assert_eq!(v["error"]["code"], "backend_bad_response");
    let metrics = reqwest::get(url(&node, "/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics
            .contains(r#"atmosphere_backend_errors_total{backend="bad",error="bad_response"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn backend_error_page_is_a_502() {
    let (node, _dir) = faulty_node(Fault::Error, Duration::from_secs(5)).await;
    let e = chat_error(&node, "farm/coder", "x", 502).await;
    assert!(!e["message"].as_str().expect("msg").contains("<html>"));
}

#[tokio::test]
async fn backend_refusal_in_openai_shape_is_passed_on() {
    let (node, _dir) = faulty_node(Fault::Reject, Duration::from_secs(5)).await;
    let e = chat_error(&node, "farm/coder", "x", 400).await;
    assert_eq!(e["code"], "unsupported_parameter");
    assert_eq!(e["param"], "tools");
}

#[tokio::test]
async fn stalled_backend_times_out_with_504() {
    let (node, _dir) = faulty_node(Fault::Stall, Duration::from_millis(300)).await;
    let e = chat_error(&node, "farm/coder", "x", 504).await;
    assert_eq!(e["code"], "backend_timeout");
}

#[tokio::test]
async fn broken_stream_ends_with_an_error_event() {
    let (node, _dir) = faulty_node(Fault::BreakStream, Duration::from_secs(5)).await;
    let resp = post(
        &node,
        "/v1/chat/completions",
        chat("farm/coder", "one two three four", true),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("body");
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 3, "two chunks then the error: {events:?}");
    assert!(events[2].contains("backend_stream_error"), "{}", events[2]);
    assert!(!text.contains("[DONE]"));
}

/// A backend stream that simply ends, without `[DONE]`, is not passed on as
/// a silent end: the client learns the answer may be cut short.
#[tokio::test]
async fn a_stream_that_ends_without_done_ends_with_an_error_event() {
    let (node, _dir) = faulty_node(Fault::NoDone, Duration::from_secs(5)).await;
    let resp = post(
        &node,
        "/v1/chat/completions",
        chat("farm/coder", "one two three", true),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("body");
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    let last = events.last().expect("events");
    assert!(last.contains("backend_stream_error"), "{events:?}");
    assert!(
        text.contains("three"),
        "the chunks came through first: {text}"
    );
    assert!(!text.contains("[DONE]"));
}

#[tokio::test]
async fn request_deadline_bounds_a_slow_backend() {
    let mut echo = Echo::new("slow", Flavour::Openai, &["m"]);
    echo.fault = Fault::Stall;
    echo.stall = Duration::from_secs(10);
    let addr = spawn_echo(echo).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = config(
        vec![backend("slow", BackendKind::Openai, addr, false)],
        farm_capabilities("slow"),
        dir.path(),
    );
    c.http.request_timeout = Duration::from_millis(300);
    let node = start(c).await;
    let e = chat_error(&node, "farm/coder", "x", 504).await;
    assert_eq!(e["code"], "backend_timeout");
}

#[tokio::test]
async fn probes_that_find_nothing_new_do_not_rebuild_the_table() {
    // An Ollama-shaped server that counts how often it is asked for its models.
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/api/tags",
        axum::routing::get({
            let asked = asked.clone();
            move || async move {
                asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                axum::Json(serde_json::json!({"models": [{"name": "llama3.2:latest"}, {"name": "qwen2.5-coder:7b"}]}))
            }
        }),
    );
    let addr = serve(app).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Probed every 200 ms.
    let node = start(config(
        vec![backend("ollama", BackendKind::Ollama, addr, true)],
        Vec::new(),
        dir.path(),
    ))
    .await;
    let builds = metric(&node, "atmosphere_route_table_builds_total").await;
    let before = asked.load(std::sync::atomic::Ordering::Relaxed);
    eventually("three more probe rounds", || async {
        asked.load(std::sync::atomic::Ordering::Relaxed) >= before + 3
    })
    .await;
    assert_eq!(
        metric(&node, "atmosphere_route_table_builds_total").await,
        builds,
        "the table was rebuilt for probes that changed nothing"
    );
    node.shutdown().await;
}

#[tokio::test]
async fn an_ollama_model_is_routed_by_its_system_prompt_asked_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let shown = std::sync::Arc::new(AtomicUsize::new(0));
    let listed = std::sync::Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route(
            "/api/tags",
            axum::routing::get({
                let listed = listed.clone();
                move || async move {
                listed.fetch_add(1, Ordering::Relaxed);
                axum::Json(serde_json::json!({"models": [
                    {"name": "llama3.2:latest", "digest": "d1"},
                    {"name": "helper:latest", "digest": "d2"},
                    {"name": "arctic:latest", "digest": "d3"}
                ]}))
            }}),
        )
        .route(
            "/api/show",
            axum::routing::post({
                let shown = shown.clone();
                move |axum::Json(body): axum::Json<Value>| async move {
                    shown.fetch_add(1, Ordering::Relaxed);
                    axum::Json(match body["model"].as_str() {
                        Some("helper:latest") => serde_json::json!({
                            "system": "You help people with their personal income tax: deductions, filing deadlines and returns.",
                            "capabilities": ["completion"]
                        }),
                        Some("arctic:latest") => serde_json::json!({"capabilities": ["embedding"]}),
                        _ => serde_json::json!({"capabilities": ["completion"]}),
                    })
                }
            }),
        );
    let addr = serve(app).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(config(
        vec![backend("ollama", BackendKind::Ollama, addr, true)],
        Vec::new(),
        dir.path(),
    ))
    .await;
    let v: Value = post(
        &node,
        "/v1/route",
        json!({"input": "When is the deadline to file my tax return?"}),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(v["decision"]["chosen"]["id"], "ollama/helper", "{v}");
    let caps = get_json(&node, "/v1/mesh/capabilities").await;
    let kind_of = |id: &str| {
        caps["data"]
            .as_array()
            .and_then(|d| d.iter().find(|c| c["id"] == id))
            .map(|c| c["kind"].clone())
    };
    assert_eq!(kind_of("ollama/arctic"), Some(json!("llm/embed")), "{caps}");
    // Probes every 200 ms list the models again; details are asked once each.
    let before = listed.load(Ordering::Relaxed);
    eventually("three more listings", || async {
        listed.load(Ordering::Relaxed) >= before + 3
    })
    .await;
    assert_eq!(shown.load(Ordering::Relaxed), 3);
    node.shutdown().await;
}
