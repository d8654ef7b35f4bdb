//! MCP servers of a node (`[[mcp]]`): tools listed (and listed again when
//! the server says they changed), called, their errors told apart, a server
//! that dies started again. The server is `tests/mcp/tools_server.py` on the
//! official Python SDK (`mcp`, installed into the test venv by
//! scripts/test.sh; `ATMOSPHERE_PYTHON` names its interpreter), over stdio
//! and over streamable HTTP.

mod common;

use std::time::Duration;

use atmosphere::config::McpConfig;
use atmosphere::mcp::{CallError, Servers};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use common::{eventually, python, tools_script as script};

fn args(v: Value) -> Map<String, Value> {
    v.as_object().cloned().expect("object")
}

/// Waits until `server`'s tools are listed and available.
async fn listed(servers: &Servers, server: &str) {
    eventually("the MCP server's tools are listed", || async {
        servers.tool(server, "add").is_some_and(|t| t.available)
    })
    .await;
}

/// Calls, results, errors and a change of tools, on `servers`' `tools`.
async fn calls_and_errors(servers: &Servers) {
    listed(servers, "tools").await;
    let names: Vec<String> = servers.tools().into_iter().map(|t| t.name).collect();
    for name in ["add", "shout", "fail", "sleep", "learn", "die"] {
        assert!(names.iter().any(|n| n == name), "{name} missing: {names:?}");
    }
    let add = servers.tool("tools", "add").expect("add");
    assert_eq!(add.description, "Adds two integers and returns the sum.");
    assert_eq!(add.input_schema["properties"]["a"]["type"], "integer");

    let sum = servers
        .call("tools", "add", args(json!({"a": 2, "b": 40})))
        .await
        .expect("add answers");
    assert!(!sum.is_error);
    assert_eq!(sum.result["content"][0]["text"], "42", "{}", sum.result);

    // The tool ran and failed: a result that says so, not a call error.
    let failed = servers
        .call("tools", "fail", Map::new())
        .await
        .expect("an answer");
    assert!(failed.is_error, "{}", failed.result);
    assert!(
        failed.result.to_string().contains("always fails"),
        "{}",
        failed.result
    );

    assert_eq!(
        servers
            .call("tools", "nope", Map::new())
            .await
            .expect_err("unknown"),
        CallError::UnknownTool {
            server: "tools".into(),
            tool: "nope".into()
        }
    );
    assert!(matches!(
        servers.call("other", "add", Map::new()).await,
        Err(CallError::UnknownTool { .. })
    ));
    // The server's timeout is 2 s.
    assert_eq!(
        servers
            .call("tools", "sleep", args(json!({"seconds": 5})))
            .await
            .expect_err("too slow"),
        CallError::Timeout(Duration::from_secs(2))
    );

    // A tool added later is listed once the server says the tools changed.
    servers
        .call("tools", "learn", Map::new())
        .await
        .expect("learn");
    eventually("the new tool is listed", || async {
        servers.tool("tools", "fresh").is_some()
    })
    .await;
    let fresh = servers
        .call("tools", "fresh", Map::new())
        .await
        .expect("fresh");
    assert_eq!(fresh.result["content"][0]["text"], "fresh");
}

/// `tool` as the node's `/v1/tools` lists it.
async fn listed_tool(node: &atmosphere::node::Node, tool: &str) -> Value {
    common::get_json(node, "/v1/tools").await["data"]
        .as_array()
        .and_then(|d| d.iter().find(|t| t["tool"] == tool))
        .cloned()
        .unwrap_or_else(|| panic!("{tool} is listed"))
}

fn config(server: McpConfig) -> McpConfig {
    McpConfig {
        timeout: Duration::from_secs(2),
        ..server
    }
}

#[tokio::test]
async fn a_stdio_server_s_tools_are_listed_called_and_its_restart_survived() {
    let cancel = CancellationToken::new();
    let servers = Servers::start(
        &[config(McpConfig::stdio("tools", &python(), &[&script()]))],
        &cancel,
    );
    calls_and_errors(&servers).await;

    // The process dies: its tools stay listed, unavailable, and calls say
    // why; it is started again (after a 1 s backoff) and they come back.
    let _ = servers.call("tools", "die", Map::new()).await;
    eventually("the tools are marked unavailable", || async {
        servers.tool("tools", "add").is_some_and(|t| !t.available)
    })
    .await;
    assert!(matches!(
        servers
            .call("tools", "add", args(json!({"a": 1, "b": 1})))
            .await,
        Err(CallError::Unavailable(..))
    ));
    listed(&servers, "tools").await;
    let sum = servers
        .call("tools", "add", args(json!({"a": 1, "b": 1})))
        .await
        .expect("after the restart");
    assert_eq!(sum.result["content"][0]["text"], "2");
    cancel.cancel();
}

#[tokio::test]
async fn a_streamable_http_server_s_tools_are_listed_and_called() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let mut child = tokio::process::Command::new(python())
        .args([script(), "--http".into(), port.to_string()])
        .kill_on_drop(true)
        .spawn()
        .expect("start the HTTP server");
    let cancel = CancellationToken::new();
    // Started before the server listens: the first attempts fail and are
    // retried with backoff.
    let servers = Servers::start(
        &[config(McpConfig::http(
            "tools",
            &format!("http://127.0.0.1:{port}/mcp"),
        ))],
        &cancel,
    );
    calls_and_errors(&servers).await;
    cancel.cancel();
    let _ = child.kill().await;
}

#[tokio::test]
async fn a_server_that_cannot_start_is_unavailable_and_named_in_the_error() {
    let cancel = CancellationToken::new();
    let servers = Servers::start(
        &[McpConfig::stdio("ghost", "/nonexistent/mcp-server", &[])],
        &cancel,
    );
    eventually("the failure is known", || async {
        matches!(
            servers.call("ghost", "x", Map::new()).await,
            Err(CallError::Unavailable(_, ref why)) if why.contains("cannot start")
        )
    })
    .await;
    assert!(servers.tools().is_empty());
    cancel.cancel();
}

#[tokio::test]
async fn a_node_lists_its_mcp_servers_tools_and_refuses_one_whose_schema_is_not_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = common::config(Vec::new(), Vec::new(), dir.path());
    let mut server = McpConfig::stdio("tools", &python(), &[&script()]);
    server
        .env
        .insert("ATMOSPHERE_BROKEN_SCHEMA".into(), "1".into());
    config.mcp = vec![server];
    let node = common::start(config).await;
    eventually("the tools are listed", || async {
        common::get_json(&node, "/v1/tools").await["data"]
            .as_array()
            .is_some_and(|d| {
                d.iter()
                    .any(|t| t["tool"] == "add" && t["available"] == true)
            })
    })
    .await;
    let add = listed_tool(&node, "add").await;
    assert_eq!(add["server"], "tools");
    assert_eq!(add["node"], node.peer_id.to_base58());
    // Named as other nodes' tools are, with its capability and kind (once
    // the route table holds it).
    assert_eq!(add["name"], format!("add@{}", node.peer_id));
    assert_eq!(add["share"], "local", "tools are kept local unless shared");
    assert_eq!(add["input_schema"]["required"], json!(["a", "b"]));

    // A tool whose schema is not JSON Schema is listed with the reason and
    // not offered: calling it says why, the others still run.
    let broken = listed_tool(&node, "broken").await;
    assert!(
        broken["schema_error"]
            .as_str()
            .is_some_and(|e| e.contains("not a valid JSON Schema")),
        "{broken}"
    );
    let execute = |body: Value| common::post_json(&node, "/v1/tool/execute", body);
    // Callable once the route table holds the tools (built just after
    // they are listed).
    eventually("the tools are in the route table", || async {
        execute(json!({"tool": "add", "arguments": {"a": 1, "b": 2}}))
            .await
            .0
            == 200
    })
    .await;
    let add = listed_tool(&node, "add").await;
    assert_eq!(
        (&add["capability"], &add["kind"]),
        (&json!("tool/add"), &json!("tool/mcp"))
    );
    let broken = listed_tool(&node, "broken").await;
    assert!(broken["capability"].is_null(), "not offered: {broken}");
    let (status, body) = execute(json!({"tool": "broken"})).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "invalid_tool_schema");
    let (status, body) = execute(json!({"tool": "add", "arguments": {"a": 1, "b": 2}})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["content"][0]["text"], "3");
}

/// A program that writes what is not JSON-RPC, one that never answers
/// `initialize`, and one that answers it but never lists its tools: each is
/// unavailable with a reason, within its start or call timeout, and
/// retried; the node's other servers are not held up.
#[tokio::test]
async fn a_server_that_writes_garbage_or_hangs_is_unavailable_not_fatal() {
    let cancel = CancellationToken::new();
    let impatient = |server| McpConfig {
        start_timeout: Duration::from_secs(2),
        ..config(server)
    };
    let garbage = impatient(McpConfig::stdio(
        "garbage",
        &python(),
        &[
            "-c",
            "import sys, time\nprint('this is not json-rpc', flush=True)\nsys.stdout.write('{\"jsonrpc\": 7}\\n'); sys.stdout.flush()\ntime.sleep(60)",
        ],
    ));
    let hangs = impatient(McpConfig::stdio(
        "hangs",
        &python(),
        &["-c", "import time\ntime.sleep(60)"],
    ));
    // Answers `initialize` (with the version it was asked for) and nothing else.
    let mute = config(McpConfig::stdio(
        "mute",
        &python(),
        &[
            "-c",
            "import json, sys\nfor line in sys.stdin:\n    m = json.loads(line)\n    if m.get('method') == 'initialize':\n        print(json.dumps({'jsonrpc': '2.0', 'id': m['id'], 'result': {'protocolVersion': m['params']['protocolVersion'], 'capabilities': {'tools': {}}, 'serverInfo': {'name': 'mute', 'version': '1'}}}), flush=True)",
        ],
    ));
    let servers = Servers::start(
        &[
            garbage,
            hangs,
            mute,
            config(McpConfig::stdio("tools", &python(), &[&script()])),
        ],
        &cancel,
    );
    listed(&servers, "tools").await;
    // Past "still connecting": given up on (within the 2 s timeouts) and
    // waiting to be tried again, with why.
    for (server, reason) in [
        ("garbage", "no answer to initialize within 2s"),
        ("hangs", "no answer to initialize within 2s"),
        ("mute", "tools/list took longer than 2s"),
    ] {
        eventually(
            &format!("{server} is given up on with a reason"),
            || async {
                match servers.call(server, "x", Map::new()).await {
                    Err(CallError::Unavailable(_, why)) => why.contains(reason),
                    _ => false,
                }
            },
        )
        .await;
    }
    let sum = servers
        .call("tools", "add", args(json!({"a": 20, "b": 22})))
        .await
        .expect("the good server still answers");
    assert_eq!(sum.result["content"][0]["text"], "42");
    cancel.cancel();
}

/// A tool whose name is a configured capability's id (`tool/add` here, a
/// chat model) is left out, as documented: the capability keeps the id and
/// calling `add` as a tool says what it is; the server's other tools run.
#[tokio::test]
async fn a_tool_named_like_a_configured_capability_is_left_out() {
    use atmosphere::config::BackendKind;
    use atmosphere::echo::{Echo, Flavour};
    let dir = tempfile::tempdir().expect("tempdir");
    let echo = common::spawn_echo(Echo::new("gpu", Flavour::Openai, &["adder"])).await;
    let mut config = common::config(
        vec![common::backend("gpu", BackendKind::Openai, echo, false)],
        vec![common::capability(
            "tool/add",
            "gpu",
            "adder",
            "Adds numbers when asked in words.",
            &[],
        )],
        dir.path(),
    );
    config.mcp = vec![McpConfig::stdio("tools", &python(), &[&script()])];
    let node = common::start(config).await;
    let execute = |body: Value| common::post_json(&node, "/v1/tool/execute", body);
    eventually("the server's tools are in the route table", || async {
        execute(json!({"tool": "shout", "arguments": {"text": "hay"}}))
            .await
            .0
            == 200
    })
    .await;
    let listed = common::get_json(&node, "/v1/mesh/capabilities").await;
    let adds: Vec<_> = listed["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter(|c| c["id"] == "tool/add")
        .collect();
    assert_eq!(adds.len(), 1, "one capability per id: {listed}");
    assert_eq!(adds[0]["kind"], "llm/chat", "the configured one: {listed}");
    let (status, body) = execute(json!({"tool": "add", "arguments": {"a": 1, "b": 2}})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "not_a_tool", "{body}");
}
