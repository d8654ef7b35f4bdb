//! What an agent adds per step: the node's loop against the same loop run
//! by a client straight against the model and the tool.
//!
//!   cargo build --release --bins && cargo bench --bench agent
//!
//! Needs Python with the `mcp` package (`ATMOSPHERE_PYTHON`, else the venv
//! scripts/test.sh makes, else `python3`): the tool is `add` of
//! `tests/mcp/tools_server.py` over stdio. The model is `echo-backend`
//! (scripted: offered tools, it calls the one its prompt names with the
//! JSON object in the prompt, then answers what the tool said).
//!
//! One node runs the agent `calc` (model `llm/scripted` on the echo
//! backend, tool `add` of its own MCP server). A run is two steps: a model
//! call answered with a call of `add`, the tool call, and a model call
//! answered with the sum. Timed back to back, one client, in alternating
//! rounds of 50:
//!
//! - direct: this process posts the chat (with the tool offered) to the
//!   echo backend, calls `add` through its own MCP client on its own copy
//!   of the server (`atmosphere::mcp::Servers`), and posts the chat with
//!   the result;
//! - agent: `POST /v1/agent/invoke {"query", "agent": "calc"}` on the node.
//!
//! Added per step = (agent − direct) / 2, per percentile. Also printed: the
//! node's own time per step as its answer tells it (the run's `latency_ms`
//! less every step's `latency_ms`, over 2 steps): what the loop costs
//! beyond waiting for the model and the tool.

mod support;

use std::time::{Duration, Instant};

use atmosphere::config::McpConfig;
use atmosphere::mcp::Servers;
use serde_json::{Map, Value, json};
use support::*;
use tokio_util::sync::CancellationToken;

const RUNS: usize = 1000;
const ROUND: usize = 50;
const STEPS: f64 = 2.0;
const QUERY: &str = r#"Please add these numbers: {"a": 2, "b": 40}"#;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench());
}

/// The add tool as the model is offered it.
fn offered() -> Value {
    json!([{"type": "function", "function": {
        "name": "add",
        "description": "Adds two integers and returns the sum.",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]},
    }}])
}

async fn chat(client: &reqwest::Client, url: &str, messages: &[Value]) -> Value {
    client
        .post(url)
        .json(&json!({"model": "llama3.2", "messages": messages, "tools": offered()}))
        .send()
        .await
        .expect("model")
        .json()
        .await
        .expect("json")
}

/// The loop, run by this process against the model and the tool.
async fn direct(client: &reqwest::Client, model: &str, tools: &Servers) -> Duration {
    let started = Instant::now();
    let mut messages = vec![json!({"role": "user", "content": QUERY})];
    let first = chat(client, model, &messages).await;
    let message = first["choices"][0]["message"].clone();
    let call = message["tool_calls"][0].clone();
    let arguments: Map<String, Value> =
        serde_json::from_str(call["function"]["arguments"].as_str().expect("arguments"))
            .expect("object");
    let answer = tools.call("tools", "add", arguments).await.expect("tool");
    let text = answer.result["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    messages.push(message);
    messages.push(json!({"role": "tool", "tool_call_id": call["id"], "content": text}));
    let last = chat(client, model, &messages).await;
    let said = last["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    assert!(said.contains("42"), "{last}");
    started.elapsed()
}

/// The loop, run by the node: the time, and the node's own time per step.
async fn agent(client: &reqwest::Client, url: &str) -> (Duration, f64) {
    let started = Instant::now();
    let r = client
        .post(url)
        .json(&json!({"query": QUERY, "agent": "calc"}))
        .send()
        .await
        .expect("invoke");
    assert_eq!(r.status(), 200);
    let run: Value = r.json().await.expect("json");
    let took = started.elapsed();
    assert!(
        run["answer"].as_str().is_some_and(|a| a.contains("42")),
        "{run}"
    );
    let steps = run["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 3, "{run}");
    let waited: f64 = steps.iter().filter_map(|s| s["latency_ms"].as_f64()).sum();
    let own = (run["latency_ms"].as_f64().expect("latency") - waited) / STEPS;
    (took, own)
}

async fn bench() {
    let client = reqwest::Client::new();
    let dir = std::env::temp_dir().join(format!("atmosphere-agent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let echo_port = free_port();
    let _echo = echo_backend_with(echo_port, &["--name", "scripted"]);
    let port = free_port();
    let extra = format!(
        r#"
[[backend]]
name = "echo"
kind = "openai"
url = "http://127.0.0.1:{echo_port}"
[[capability]]
id = "llm/scripted"
description = "A scripted model."
backend = "echo"
model = "llama3.2"
[[mcp]]
name = "tools"
command = "{python}"
args = ["{script}"]
[[agent]]
id = "calc"
llm = "llm/scripted"
tools = ["add"]
"#,
        python = python(),
        script = script()
    );
    let _node = atmosphere(&node_config(&dir, "a", port, &extra));
    wait_ready(&client, &format!("http://127.0.0.1:{port}/health")).await;
    wait_ready(&client, &format!("http://127.0.0.1:{echo_port}/v1/models")).await;
    let invoke = format!("http://127.0.0.1:{port}/v1/agent/invoke");
    let model = format!("http://127.0.0.1:{echo_port}/v1/chat/completions");
    let cancel = CancellationToken::new();
    let tools = Servers::start(
        &[McpConfig::stdio("tools", &python(), &[&script()])],
        &cancel,
    );
    let probe: Map<String, Value> = json!({"a": 1, "b": 1})
        .as_object()
        .cloned()
        .expect("object");
    while tools.call("tools", "add", probe.clone()).await.is_err() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The node's server may still be starting: wait for a whole run.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = client
            .post(&invoke)
            .json(&json!({"query": QUERY, "agent": "calc"}))
            .send()
            .await;
        let ok = match r {
            Ok(r) if r.status() == 200 => r
                .json::<Value>()
                .await
                .is_ok_and(|v| v["steps"].as_array().is_some_and(|s| s.len() == 3)),
            _ => false,
        };
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "the agent never ran its tool");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for _ in 0..100 {
        direct(&client, &model, &tools).await;
        agent(&client, &invoke).await;
    }
    let (mut d, mut a, mut own) = (Vec::new(), Vec::new(), Vec::new());
    while d.len() < RUNS {
        for _ in 0..ROUND {
            d.push(direct(&client, &model, &tools).await);
        }
        for _ in 0..ROUND {
            let (took, mine) = agent(&client, &invoke).await;
            a.push(took);
            own.push(Duration::from_secs_f64(mine.max(0.0) / 1000.0));
        }
    }
    cancel.cancel();
    println!("#### An agent run of 2 steps, {RUNS} each way (one client, back to back)\n");
    let rows = percentile_table(&mut [
        ("direct (this process: model, MCP tool, model)", &mut d),
        ("the node's /v1/agent/invoke", &mut a),
    ]);
    println!(
        "| **added per step** ((agent - direct) / 2) | **{:.3}** | {:.3} | {:.3} |",
        (rows[1][0] - rows[0][0]) / STEPS,
        (rows[1][1] - rows[0][1]) / STEPS,
        (rows[1][2] - rows[0][2]) / STEPS
    );
    println!(
        "| the node's own time per step (run less its steps' times, / 2) | {:.3} | {:.3} | {:.3} |\n",
        pct(&mut own, 0.5),
        pct(&mut own, 0.9),
        pct(&mut own, 0.99)
    );
}
