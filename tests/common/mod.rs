//! Helpers shared by the integration tests: real backends on loopback and real
//! nodes with a temporary data dir.

#![allow(dead_code)]

pub mod hostile;

use std::net::SocketAddr;
use std::time::Duration;

use atmosphere::config::{
    BackendConfig, BackendKind, CapabilityConfig, Config, EmbedderConfig, MeshConfig,
};
use atmosphere::echo::Echo;
use atmosphere::node::Node;

/// Every wait in a test is bounded by this.
pub const WAIT: Duration = Duration::from_secs(20);

/// Serves `app` on a free loopback port.
pub async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Starts an echo backend on a free loopback port.
pub async fn spawn_echo(echo: Echo) -> SocketAddr {
    serve(echo.router()).await
}

/// Starts an echo backend on a given address (to bring a "dead" backend back).
pub async fn spawn_echo_at(echo: Echo, addr: SocketAddr) {
    let listener = tokio::net::TcpListener::bind(addr).await.expect("rebind");
    tokio::spawn(echo.serve(listener));
}

/// A loopback address nobody listens on.
pub async fn dead_addr() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    l.local_addr().expect("addr")
}

/// A backend probed every 200 ms, with short timeouts.
pub fn backend(name: &str, kind: BackendKind, addr: SocketAddr, discover: bool) -> BackendConfig {
    BackendConfig {
        discover,
        refresh: Duration::from_millis(200),
        connect_timeout: Duration::from_secs(1),
        timeout: Duration::from_secs(5),
        ..BackendConfig::new(name, kind, &format!("http://{addr}"))
    }
}

pub fn capability(
    id: &str,
    backend: &str,
    model: &str,
    description: &str,
    examples: &[&str],
) -> CapabilityConfig {
    CapabilityConfig {
        id: id.parse().expect("id"),
        kind: "llm/chat".parse().expect("kind"),
        domain: String::new(),
        topics: Vec::new(),
        description: description.into(),
        examples: examples.iter().map(|e| (*e).to_owned()).collect(),
        backend: vec![backend.into()],
        model: Some(model.into()),
        share: Default::default(),
        inputs: None,
    }
}

/// A vision capability on backend `gpu` (model `eye`): farm animals and
/// their breeds in photos.
pub fn animal_eye() -> CapabilityConfig {
    CapabilityConfig {
        kind: "vision/classify".parse().expect("kind"),
        ..capability(
            "farm/animal-eye",
            "gpu",
            "eye",
            "Recognises farm animals and their breeds in photos.",
            &[
                "What animal is in this photo?",
                "Which breed is this llama?",
                "Is this an alpaca or a llama?",
            ],
        )
    }
}

/// The farm capabilities most tests route between.
pub fn farm_capabilities(backend: &str) -> Vec<CapabilityConfig> {
    vec![
        capability(
            "farm/llama-expert",
            backend,
            "llama3.2",
            "Expert on raising llamas and alpacas.",
            &[
                "What should I feed my alpacas in winter?",
                "How do I care for my llama?",
                "When should alpacas be shorn?",
            ],
        ),
        capability(
            "farm/coder",
            backend,
            "qwen2.5-coder",
            "Writes and fixes code.",
            &[
                "Write a Rust function that reverses a string.",
                "Why does my Python script raise a KeyError?",
                "How do I parse JSON in Go?",
            ],
        ),
    ]
}

/// A config for one node on loopback with the test embedder settings.
pub fn config(
    backends: Vec<BackendConfig>,
    capabilities: Vec<CapabilityConfig>,
    data_dir: &std::path::Path,
) -> Config {
    let mut c = Config::default();
    c.node.name = "test-node".into();
    c.node.data_dir = data_dir.to_owned();
    c.http.listen = "127.0.0.1:0".parse().expect("addr");
    c.embedder = EmbedderConfig {
        threads: 1,
        ..Default::default()
    };
    c.backends = backends;
    c.capabilities = capabilities;
    // Single-node tests stay off the network (no fixed port, no mDNS cross-talk).
    c.mesh = None;
    c
}

/// A config for a mesh node on loopback: ephemeral TCP port, no mDNS.
pub fn mesh_config(
    backends: Vec<BackendConfig>,
    capabilities: Vec<CapabilityConfig>,
    data_dir: &std::path::Path,
    bootstrap: Vec<String>,
) -> Config {
    let mut c = config(backends, capabilities, data_dir);
    c.mesh = Some(MeshConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        bootstrap,
        mdns: false,
        ..MeshConfig::default()
    });
    c
}

/// A mesh node's dialable address, `/ip4/127.0.0.1/tcp/<port>/p2p/<id>`.
pub async fn mesh_addr(node: &Node) -> String {
    let client = node.network.as_ref().expect("mesh enabled");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(a) = client
            .listen_addrs()
            .await
            .expect("listen addrs")
            .into_iter()
            .next()
        {
            return format!("{a}/p2p/{}", node.peer_id);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "mesh never listened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn start(config: Config) -> Node {
    tokio::time::timeout(WAIT, Node::start(config))
        .await
        .expect("node starts in time")
        .expect("node starts")
}

/// Polls `check` until it holds or [`WAIT`] passes.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// `GET path` on a node's HTTP API, as JSON.
pub async fn get_json(node: &Node, path: &str) -> serde_json::Value {
    reqwest::get(format!("http://{}{path}", node.http_addr))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: not JSON: {e}"))
}

/// `POST path` with a JSON body on a node's HTTP API: the status and the
/// JSON answer.
pub async fn post_json(
    node: &Node,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{}{path}", node.http_addr))
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = r.status().as_u16();
    (
        status,
        r.json()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: not JSON: {e}")),
    )
}

/// The node's `/metrics` text.
pub async fn metrics_text(node: &Node) -> String {
    reqwest::get(format!("http://{}/metrics", node.http_addr))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// The decision `POST /v1/route` explains for `input`.
pub async fn route_decision(node: &Node, input: &str) -> serde_json::Value {
    reqwest::Client::new()
        .post(format!("http://{}/v1/route", node.http_addr))
        .json(&serde_json::json!({"input": input}))
        .send()
        .await
        .expect("route")
        .json::<serde_json::Value>()
        .await
        .expect("json")["decision"]
        .take()
}

/// The value of the first line of a node's `/metrics` that starts with `line`
/// (a metric name with its labels); 0 when absent.
pub async fn metric(node: &Node, line: &str) -> u64 {
    let text = metrics_text(node).await;
    text.lines()
        .find(|l| l.starts_with(line))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Runs one of the tests' Python scripts (`tests/<script>`) with the
/// interpreter `ATMOSPHERE_PYTHON` names (scripts/test.sh makes a venv with
/// what they need: `needs`), within `limit`; the JSON it prints.
pub async fn run_python(
    script: &str,
    args: &[&str],
    limit: Duration,
    needs: &str,
) -> serde_json::Value {
    let python = std::env::var("ATMOSPHERE_PYTHON").unwrap_or_else(|_| "python3".into());
    let path = format!("{}/tests/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::time::timeout(
        limit,
        tokio::process::Command::new(&python)
            .arg(&path)
            .args(args)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{script} did not finish within {limit:?}"))
    .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        out.status.success(),
        "{script} failed (run scripts/test.sh, which installs {needs}, or set ATMOSPHERE_PYTHON):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{script} printed no JSON: {e}"))
}

/// The Python that runs the tests' scripts (`ATMOSPHERE_PYTHON`; scripts/test.sh
/// makes a venv with what they need).
pub fn python() -> String {
    std::env::var("ATMOSPHERE_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// The test MCP server's script (`tests/mcp/tools_server.py`).
pub fn tools_script() -> String {
    format!("{}/tests/mcp/tools_server.py", env!("CARGO_MANIFEST_DIR"))
}

/// `[[mcp]] tools`: the test MCP server over stdio, its tools shared as
/// `share`, calls limited to 2 s.
pub fn tools_server(share: atmosphere::capability::Share) -> atmosphere::config::McpConfig {
    atmosphere::config::McpConfig {
        share,
        timeout: Duration::from_secs(2),
        ..atmosphere::config::McpConfig::stdio("tools", &python(), &[&tools_script()])
    }
}

/// A mesh node with the llama expert (an `llm/chat` capability) on an echo
/// backend.
pub async fn farm_node(dir: &std::path::Path) -> Node {
    let farm = spawn_echo(Echo::new(
        "farm-backend",
        atmosphere::echo::Flavour::Openai,
        &["llama3.2"],
    ))
    .await;
    start(mesh_config(
        vec![backend("farm", BackendKind::Openai, farm, false)],
        vec![farm_capabilities("farm").remove(0)],
        dir,
        Vec::new(),
    ))
    .await
}
