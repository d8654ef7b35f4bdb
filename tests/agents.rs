//! Agents: an `[[agent]]` of one node, driven by a language model that
//! answers with OpenAI `tool_calls` (the scripted `echo` backend: it calls
//! the tool its prompt names with the JSON object the prompt holds, then
//! answers what the tool said), calls tools here or on other nodes and
//! answers with every step listed; reached by `/v1/agent/invoke`, by name
//! or meaning, as a chat model and as a typed intent, locally and across
//! the mesh. A model that never stops, calls what it was not given or
//! sends calls that cannot be read ends the run with a clear error.

mod common;

use atmosphere::capability::Share;
use atmosphere::config::{AgentConfig, BackendKind, Config};
use atmosphere::echo::{Echo, Fault, Flavour};
use atmosphere::node::Node;
use serde_json::{Value, json};

use common::{
    backend, capability, eventually, get_json, mesh_addr, mesh_config, post_json, start,
    tools_server,
};

fn agent(toml_text: &str) -> AgentConfig {
    #[derive(serde::Deserialize)]
    struct File {
        agent: AgentConfig,
    }
    toml::from_str::<File>(&format!("[agent]\n{toml_text}"))
        .expect("agent config")
        .agent
}

/// A scripted model `llm/<name>` served by an echo backend with `fault`.
async fn model(config: &mut Config, name: &str, fault: Fault) {
    let mut echo = Echo::new(name, Flavour::Openai, &[name]);
    echo.fault = fault;
    let addr = common::spawn_echo(echo).await;
    config
        .backends
        .push(backend(name, BackendKind::Openai, addr, false));
    config.capabilities.push(capability(
        &format!("llm/{name}"),
        name,
        name,
        "Writes poems about the sea.",
        &["Write a poem about waves."],
    ));
}

async fn invoke(node: &Node, body: Value) -> (u16, Value) {
    post_json(node, "/v1/agent/invoke", body).await
}

/// Waits until `node` can reach `what` (a `/v1/tools` name or a model id).
async fn sees(node: &Node, path: &str, field: &str, what: &str) {
    eventually(&format!("{what} is listed at {path}"), || async {
        get_json(node, path).await["data"]
            .as_array()
            .is_some_and(|d| d.iter().any(|t| t[field] == what))
    })
    .await;
}

fn types(steps: &Value) -> Vec<&str> {
    steps
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["type"].as_str().unwrap_or("?"))
        .collect()
}

const ADD: &str = r#"Please add these two numbers: {"a": 2, "b": 3}"#;

#[tokio::test]
async fn an_agent_calls_a_tool_on_another_node_and_is_reached_from_any_node() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    // C: the tools, shared with the mesh.
    let mut c = mesh_config(Vec::new(), Vec::new(), dirs[0].path(), Vec::new());
    c.node.name = "edge-gateway".into();
    c.mcp = vec![tools_server(Share::Mesh)];
    let gateway = start(c).await;
    // A: the agent and its model; no tools of its own.
    let mut a = mesh_config(
        Vec::new(),
        Vec::new(),
        dirs[1].path(),
        vec![mesh_addr(&gateway).await],
    );
    a.node.name = "agents".into();
    model(&mut a, "scripted", Fault::None).await;
    a.agents = vec![agent(
        r#"id = "calculator"
        description = "Does arithmetic with the mesh's tools."
        examples = ["Add two numbers.", "What is 17 plus 25?", "Sum these integers for me."]
        llm = "llm/scripted"
        tools = ["add", "shout"]"#,
    )];
    let home = start(a).await;
    // B: nothing of its own.
    let mut b = mesh_config(
        Vec::new(),
        Vec::new(),
        dirs[2].path(),
        vec![mesh_addr(&home).await],
    );
    b.node.name = "hub".into();
    let hub = start(b).await;
    let gateway_id = gateway.peer_id.to_base58();
    let home_id = home.peer_id.to_base58();
    sees(&home, "/v1/tools", "name", &format!("add@{gateway_id}")).await;

    // On its own node: model, the tool on C, model.
    let (status, run) = invoke(&home, json!({"query": ADD, "agent": "calculator"})).await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["object"], "agent.run");
    assert_eq!(run["agent"], "agent/calculator");
    assert_eq!(run["node"], home_id);
    assert!(
        run["answer"].as_str().is_some_and(|a| a.contains('5')),
        "{run}"
    );
    assert_eq!(types(&run["steps"]), ["model", "tool", "model"], "{run}");
    let call = &run["steps"][1];
    assert_eq!(call["tool"], "add");
    assert_eq!(call["node"], gateway_id, "the tool ran on its node: {call}");
    assert_eq!(call["arguments"], json!({"a": 2, "b": 3}));
    assert_eq!(call["result"]["content"][0]["text"], "5");
    assert_eq!(call["is_error"], false);
    assert!(call["latency_ms"].as_f64().is_some());
    assert_eq!(run["steps"][0]["capability"], "llm/scripted");
    assert_eq!(run["steps"][0]["tool_calls"], json!(["add"]));

    // From another node: by name, by meaning, as a chat model, as an intent.
    sees(&hub, "/v1/models", "id", "agent/calculator").await;
    let (status, run) = invoke(&hub, json!({"query": ADD, "agent": "calculator"})).await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["node"], home_id);
    assert_eq!(run["node_name"], "agents");
    assert_eq!(run["steps"][1]["node"], gateway_id);
    let (status, run) = invoke(
        &hub,
        json!({"query": "What is 2 plus 3? {\"a\": 2, \"b\": 3}"}),
    )
    .await;
    assert_eq!(status, 200, "chosen by meaning: {run}");
    assert_eq!(run["agent"], "agent/calculator");
    assert!(
        run["answer"].as_str().is_some_and(|a| a.contains('5')),
        "{run}"
    );
    let (status, chat) = post_json(
        &hub,
        "/v1/chat/completions",
        json!({"model": "agent/calculator", "messages": [{"role": "user", "content": ADD}]}),
    )
    .await;
    assert_eq!(status, 200, "{chat}");
    assert!(
        chat["choices"][0]["message"]["content"]
            .as_str()
            .is_some_and(|a| a.contains('5'))
    );
    assert_eq!(types(&chat["steps"]), ["model", "tool", "model"]);
    // Asked for a stream: the answer in chunks once the run ends, then [DONE].
    let sse = reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", hub.http_addr))
        .json(&json!({"model": "agent/calculator", "stream": true,
            "messages": [{"role": "user", "content": ADD}]}))
        .send()
        .await
        .expect("stream");
    assert_eq!(sse.status(), 200);
    let text = sse.text().await.expect("events");
    let chunks: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("chunk"))
        .collect();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(
        chunks[0]["choices"][0]["delta"]["content"]
            .as_str()
            .is_some_and(|c| c.contains('5')),
        "{text}"
    );
    assert_eq!(
        types(&chunks[chunks.len() - 1]["steps"]),
        ["model", "tool", "model"]
    );
    let (status, intent) = post_json(
        &hub,
        "/v1/intent",
        json!({"type": "agent/*", "data": {"prompt": ADD}}),
    )
    .await;
    assert_eq!(status, 200, "{intent}");
    assert_eq!(intent["capability"], "agent/calculator");
    assert!(
        intent["result"]["choices"][0]["message"]["content"]
            .as_str()
            .is_some_and(|a| a.contains('5')),
        "{intent}"
    );

    // A tool's failure is the model's to read, not the run's end.
    let (status, run) = invoke(
        &hub,
        json!({"query": "shout {\"text\": 7}", "agent": "calculator"}),
    )
    .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["steps"][1]["is_error"], true, "{run}");
    assert!(
        run["answer"].as_str().is_some_and(|a| a.contains("error")),
        "{run}"
    );
    // Bad requests.
    let (status, e) = invoke(&hub, json!({"agent": "calculator"})).await;
    assert_eq!((status, e["error"]["param"].as_str()), (400, Some("query")));
    let (status, e) = invoke(&hub, json!({"query": ADD, "max_steps": 0})).await;
    assert_eq!(
        (status, e["error"]["param"].as_str()),
        (400, Some("max_steps"))
    );
    let (status, e) = invoke(&hub, json!({"query": ADD, "agent": "llm/scripted"})).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("not_an_agent")),
        "{e}"
    );
    let (status, e) = invoke(&hub, json!({"query": ADD, "agent": "nobody"})).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (404, Some("model_not_found")),
        "{e}"
    );
}

#[tokio::test]
async fn a_model_that_misbehaves_ends_the_run_with_a_clear_error() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().expect("dir")).collect();
    let mut a = mesh_config(Vec::new(), Vec::new(), dirs[0].path(), Vec::new());
    a.node.name = "agents".into();
    // This node's tools, for its own clients only.
    a.mcp = vec![tools_server(Share::Local)];
    for (name, fault) in [
        ("looping", Fault::ToolLoop),
        ("garbled", Fault::ToolMalformed),
        ("stray", Fault::ToolUnknown),
        ("honest", Fault::None),
    ] {
        model(&mut a, name, fault).await;
        a.agents.push(agent(&format!(
            "id = \"{name}\"\nllm = \"llm/{name}\"\ntools = [\"add\"]\nmax_steps = 5"
        )));
    }
    let home = start(a).await;
    // Listed with its capability: in the route table, where agents find tools.
    sees(&home, "/v1/tools", "capability", "tool/add").await;

    let (status, e) = invoke(
        &home,
        json!({"query": ADD, "agent": "looping", "max_steps": 3}),
    )
    .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (502, Some("agent_step_limit")),
        "{e}"
    );
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("3 steps"))
    );
    assert_eq!(
        types(&e["steps"]),
        ["model", "tool", "model", "tool", "model", "tool"],
        "every step is kept: {e}"
    );
    // The agent's own limit wins over a request's larger one.
    let (_, e) = invoke(
        &home,
        json!({"query": ADD, "agent": "looping", "max_steps": 50}),
    )
    .await;
    assert_eq!(
        types(&e["steps"]).iter().filter(|t| **t == "model").count(),
        5
    );

    let (status, e) = invoke(&home, json!({"query": ADD, "agent": "garbled"})).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (502, Some("agent_bad_tool_call")),
        "{e}"
    );
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not JSON")),
        "{e}"
    );
    assert_eq!(types(&e["steps"]), ["model"], "nothing ran: {e}");

    let (status, e) = invoke(&home, json!({"query": ADD, "agent": "stray"})).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (502, Some("agent_tool_not_offered")),
        "{e}"
    );
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no_such_tool") && m.contains("add")),
        "{e}"
    );
    assert_eq!(
        common::metric(
            &home,
            "atmosphere_agent_runs_total{result=\"agent_step_limit\"}"
        )
        .await,
        2
    );

    // Its own client may use its local tools; a peer's run may not.
    let (status, run) = invoke(&home, json!({"query": ADD, "agent": "honest"})).await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(types(&run["steps"]), ["model", "tool", "model"]);
    let mut b = mesh_config(
        Vec::new(),
        Vec::new(),
        dirs[1].path(),
        vec![mesh_addr(&home).await],
    );
    b.node.name = "hub".into();
    let hub = start(b).await;
    sees(&hub, "/v1/models", "id", "agent/honest").await;
    let (status, run) = invoke(&hub, json!({"query": ADD, "agent": "honest"})).await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(
        run["tools"],
        json!([]),
        "a tool shared with no peer is not offered for one: {run}"
    );
    assert_eq!(types(&run["steps"]), ["model"]);
}

#[tokio::test]
async fn a_turn_or_a_run_past_its_tool_call_caps_runs_none_of_them() {
    let dir = tempfile::tempdir().expect("dir");
    let mut a = mesh_config(Vec::new(), Vec::new(), dir.path(), Vec::new());
    a.mcp = vec![tools_server(Share::Local)];
    model(&mut a, "fanning", Fault::ToolFanOut).await;
    model(&mut a, "looping", Fault::ToolLoop).await;
    a.agents.push(agent(
        "id = \"fanning\"\nllm = \"llm/fanning\"\ntools = [\"add\"]",
    ));
    a.agents.push(agent(
        "id = \"looping\"\nllm = \"llm/looping\"\ntools = [\"add\"]\nmax_steps = 8\nmax_tool_calls = 2",
    ));
    let home = start(a).await;
    sees(&home, "/v1/tools", "capability", "tool/add").await;

    // 2,000 calls in one turn: over 16 at once, none runs.
    let (status, e) = invoke(&home, json!({"query": ADD, "agent": "fanning"})).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (502, Some("agent_too_many_tool_calls")),
        "{e}"
    );
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("2000") && m.contains("16")),
        "{e}"
    );
    assert_eq!(types(&e["steps"]), ["model"], "nothing ran: {e}");

    // One call a turn, two in the run: the third turn's call does not run.
    let (status, e) = invoke(&home, json!({"query": ADD, "agent": "looping"})).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (502, Some("agent_too_many_tool_calls")),
        "{e}"
    );
    assert_eq!(
        types(&e["steps"]),
        ["model", "tool", "model", "tool", "model"],
        "{e}"
    );
    home.shutdown().await;
}

#[tokio::test]
async fn a_strangers_model_drives_an_agent_only_when_allowed_and_never_with_local_tools() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().expect("dir")).collect();
    // S: a stranger whose model fits every request about the sea and sums.
    let mut s = mesh_config(Vec::new(), Vec::new(), dirs[0].path(), Vec::new());
    s.node.name = "stranger".into();
    model(&mut s, "tidal", Fault::None).await;
    let stranger = start(s).await;
    // H: agents and a tool for this node's clients only; no model of its own.
    let mut h = mesh_config(
        Vec::new(),
        Vec::new(),
        dirs[1].path(),
        vec![mesh_addr(&stranger).await],
    );
    h.mcp = vec![tools_server(Share::Local)];
    h.agents = vec![
        agent("id = \"careful\"\ntools = [\"add\"]"),
        agent("id = \"named\"\nllm = \"llm/tidal\"\ntools = [\"add\"]"),
        agent("id = \"open\"\ntools = [\"add\"]\nstranger_models = true"),
    ];
    let home = start(h).await;
    sees(&home, "/v1/models", "id", "llm/tidal").await;
    sees(&home, "/v1/tools", "capability", "tool/add").await;

    // By default a stranger's model is never chosen, by meaning or by name.
    let (status, e) = invoke(&home, json!({"query": ADD, "agent": "careful"})).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (503, Some("agent_model_unavailable")),
        "{e}"
    );
    let (status, e) = invoke(&home, json!({"query": ADD, "agent": "named"})).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (503, Some("agent_model_untrusted")),
        "{e}"
    );

    // Allowed: the stranger's model drives it, without this node's local tool.
    let (status, run) = invoke(&home, json!({"query": ADD, "agent": "open"})).await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(
        run["tools"],
        json!([]),
        "no local tool for a stranger: {run}"
    );
    assert_eq!(types(&run["steps"]), ["model"], "{run}");
    assert_eq!(run["steps"][0]["node"], stranger.peer_id.to_base58());
    home.shutdown().await;
    stranger.shutdown().await;
}
