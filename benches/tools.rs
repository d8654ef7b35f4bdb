//! Tools across the mesh: what a hop adds to a tool call, and `/mcp`'s
//! `tools/list` over a large mesh.
//!
//!   cargo build --release --bins && cargo bench --bench tools
//!
//! Needs Python with the `mcp` package (`ATMOSPHERE_PYTHON`, else the venv
//! scripts/test.sh makes, else `python3`). The MCP server is
//! `tests/mcp/tools_server.py` over stdio.
//!
//! 1. One hop. Node A runs the server and shares its tools; node B (no
//!    tools) is joined to A. The tool `add` is called, one client, back to
//!    back, N times each way, the ways interleaved in rounds of 50:
//!    directly (this process's MCP client, `atmosphere::mcp::Servers`,
//!    on its own copy of the server), through A's `/v1/tool/execute` (the
//!    tool is local there) and through B's (one hop over
//!    `/atmosphere/tool/1.0.0`). Added = B minus direct, per percentile.
//! 2. `/mcp` `tools/list` over 20 nodes with 10 tools each (200 tools):
//!    node 0 is the entry the others join; B (no tools) joins it, and once
//!    B's `/v1/tools` holds all 200 a client times `tools/list` on B's
//!    `/mcp` (JSON-RPC over streamable HTTP, one session), 100 times.
//!
//! `ATMOSPHERE_BENCH_ONLY=hop` or `=mesh` runs one part. When B does not
//! come to list every tool within 90 s the bench stops with what B holds
//! per node and its refusal counters (`ATMOSPHERE_BENCH_HOLD=1`: it waits
//! 10 minutes first, with every process up, to be looked at).

mod support;

use std::time::{Duration, Instant};

use atmosphere::config::McpConfig;
use atmosphere::mcp::Servers;
use serde_json::{Map, Value, json};
use support::*;
use tokio_util::sync::CancellationToken;

const CALLS: usize = 1000;
const ROUND: usize = 50;
const NODES: usize = 20;
const TOOLS_PER_NODE: usize = 10;
const LISTS: usize = 100;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let only = std::env::var("ATMOSPHERE_BENCH_ONLY").unwrap_or_default();
        if only != "mesh" {
            one_hop().await;
        }
        if only != "hop" {
            large_mesh().await;
        }
    });
}

/// The `[[mcp]]` section of a node sharing the test server's tools with
/// `probes` extra tools.
fn mcp_section(probes: usize) -> String {
    format!(
        r#"
[[mcp]]
name = "tools"
command = "{}"
args = ["{}"]
env = {{ ATMOSPHERE_PROBE_TOOLS = "{probes}" }}
share = "mesh"
"#,
        python(),
        script()
    )
}

/// Starts a mesh node; returns it with its dialable address.
async fn node(
    client: &reqwest::Client,
    dir: &std::path::Path,
    name: &str,
    extra: &str,
) -> (Killed, u16, String) {
    let port = free_port();
    let node = atmosphere(&node_config(dir, name, port, extra));
    wait_ready(client, &format!("http://127.0.0.1:{port}/health")).await;
    let peers = get(client, &format!("http://127.0.0.1:{port}/v1/mesh/peers"))
        .await
        .expect("peers");
    let addr = format!(
        "{}/p2p/{}",
        peers["listen"][0].as_str().expect("listen"),
        peers["peer_id"].as_str().expect("peer id")
    );
    (node, port, addr)
}

/// Waits until the node on `port` lists `count` tools at `/v1/tools`.
async fn tools_listed(client: &reqwest::Client, port: u16, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let listed = get(client, &format!("http://127.0.0.1:{port}/v1/tools"))
            .await
            .and_then(|v| {
                v["data"]
                    .as_array()
                    .map(|d| d.iter().filter(|t| t["available"] == true).count())
            })
            .unwrap_or(0);
        if listed >= count {
            return;
        }
        if Instant::now() >= deadline {
            let held = get(client, &format!("http://127.0.0.1:{port}/v1/tools")).await;
            let mut per_node = std::collections::BTreeMap::new();
            for t in held
                .as_ref()
                .and_then(|v| v["data"].as_array())
                .into_iter()
                .flatten()
            {
                *per_node.entry(t["node_name"].to_string()).or_insert(0) += 1;
            }
            let metrics = client
                .get(format!("http://127.0.0.1:{port}/metrics"))
                .send()
                .await
                .ok();
            let metrics = match metrics {
                Some(r) => r.text().await.unwrap_or_default(),
                None => String::new(),
            };
            let notable: Vec<&str> = metrics
                .lines()
                .filter(|l| {
                    !l.starts_with('#')
                        && (l.contains("refus")
                            || l.contains("reject")
                            || l.contains("origins")
                            || l.contains("ignored"))
                })
                .collect();
            if std::env::var_os("ATMOSPHERE_BENCH_HOLD").is_some() {
                eprintln!("HOLDING {port}: only {listed} of {count}: {per_node:?}");
                tokio::time::sleep(Duration::from_secs(600)).await;
            }
            panic!(
                "only {listed} of {count} tools listed: {per_node:?}\n{}",
                notable.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn execute(client: &reqwest::Client, port: u16, tool: &str) -> Duration {
    let started = Instant::now();
    let r = client
        .post(format!("http://127.0.0.1:{port}/v1/tool/execute"))
        .json(&json!({"tool": tool, "arguments": {"a": 2, "b": 40}}))
        .send()
        .await
        .expect("execute");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["result"]["content"][0]["text"], "42", "{body}");
    started.elapsed()
}

async fn one_hop() {
    let client = reqwest::Client::new();
    let dir = std::env::temp_dir().join(format!("atmosphere-tools-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let (_a, pa, addr_a) = node(
        &client,
        &dir,
        "a",
        &format!("peer_rate = 100000\n{}", mcp_section(0)),
    )
    .await;
    let (_b, pb, _) = node(&client, &dir, "b", &format!("bootstrap = [\"{addr_a}\"]")).await;
    tools_listed(&client, pb, 7).await;
    let cancel = CancellationToken::new();
    let direct = Servers::start(
        &[McpConfig::stdio("tools", &python(), &[&script()])],
        &cancel,
    );
    let arguments: Map<String, Value> = json!({"a": 2, "b": 40})
        .as_object()
        .cloned()
        .expect("object");
    while direct
        .call("tools", "add", arguments.clone())
        .await
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Warm-up, then the three ways in alternating rounds.
    for _ in 0..100 {
        execute(&client, pb, "add@a").await;
        execute(&client, pa, "add").await;
    }
    let (mut d, mut local, mut hop) = (Vec::new(), Vec::new(), Vec::new());
    while d.len() < CALLS {
        for _ in 0..ROUND {
            let started = Instant::now();
            let answer = direct
                .call("tools", "add", arguments.clone())
                .await
                .expect("direct");
            assert_eq!(answer.result["content"][0]["text"], "42");
            d.push(started.elapsed());
        }
        for _ in 0..ROUND {
            local.push(execute(&client, pa, "add").await);
        }
        for _ in 0..ROUND {
            hop.push(execute(&client, pb, "add@a").await);
        }
    }
    cancel.cancel();
    println!("#### A tool call, {CALLS} each way (one client, back to back)\n");
    let rows = percentile_table(&mut [
        ("direct (this process's MCP client, stdio)", &mut d),
        ("A's /v1/tool/execute (local tool)", &mut local),
        ("B's /v1/tool/execute (one hop to A)", &mut hop),
    ]);
    println!(
        "| **added by the hop path** (B - direct) | **{:.3}** | {:.3} | {:.3} |\n",
        rows[2][0] - rows[0][0],
        rows[2][1] - rows[0][1],
        rows[2][2] - rows[0][2]
    );
}

/// One JSON-RPC exchange with `/mcp`: the result, and the session id the
/// server gave (on `initialize`).
async fn rpc(
    client: &reqwest::Client,
    url: &str,
    session: Option<&str>,
    body: Value,
) -> (Value, Option<String>) {
    let mut request = client
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .json(&body);
    if let Some(s) = session {
        request = request.header("mcp-session-id", s);
    }
    let r = request.send().await.expect("mcp");
    let session = r
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = r.text().await.expect("text");
    // A JSON body, or server-sent events whose `data:` line is the answer.
    let json = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .find(|l| l.starts_with('{'))
        .unwrap_or(&text);
    (serde_json::from_str(json).unwrap_or(Value::Null), session)
}

async fn large_mesh() {
    let client = reqwest::Client::new();
    let dir = std::env::temp_dir().join(format!("atmosphere-tools20-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let probes = TOOLS_PER_NODE - 7;
    let (first, _, entry) = node(&client, &dir, "n0", &mcp_section(probes)).await;
    let mut nodes = vec![first];
    for i in 1..NODES {
        let extra = format!("bootstrap = [\"{entry}\"]\n{}", mcp_section(probes));
        nodes.push(node(&client, &dir, &format!("n{i}"), &extra).await.0);
    }
    let (_b, pb, _) = node(&client, &dir, "b", &format!("bootstrap = [\"{entry}\"]")).await;
    let total = NODES * TOOLS_PER_NODE;
    tools_listed(&client, pb, total).await;
    let url = format!("http://127.0.0.1:{pb}/mcp");
    let (init, session) = rpc(
        &client,
        &url,
        None,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "bench", "version": "1"}}}),
    )
    .await;
    assert!(init["result"].is_object(), "{init}");
    let session = session.expect("a session");
    rpc(
        &client,
        &url,
        Some(&session),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    let mut samples = Vec::new();
    for i in 0..LISTS + 10 {
        let started = Instant::now();
        let (listed, _) = rpc(
            &client,
            &url,
            Some(&session),
            json!({"jsonrpc": "2.0", "id": i + 2, "method": "tools/list"}),
        )
        .await;
        let took = started.elapsed();
        let n = listed["result"]["tools"].as_array().map_or(0, Vec::len);
        assert_eq!(n, total, "tools/list listed {n}");
        if i >= 10 {
            samples.push(took);
        }
    }
    println!(
        "#### /mcp tools/list on a node of a {NODES}-node mesh with {total} tools ({LISTS} lists, one session)\n"
    );
    println!("| p50 ms | p90 ms | p99 ms | max ms |\n|---|---|---|---|");
    println!(
        "| {:.2} | {:.2} | {:.2} | {:.2} |\n",
        pct(&mut samples, 0.5),
        pct(&mut samples, 0.9),
        pct(&mut samples, 0.99),
        pct(&mut samples, 1.0)
    );
    drop(nodes);
}
