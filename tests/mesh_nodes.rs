//! Whole nodes (embedder, backends, HTTP API, mesh) in one process on loopback:
//! a request to one node is answered by another node's backend.

mod common;

use atmosphere::config::BackendKind;
use atmosphere::echo::{Echo, Fault, Flavour};
use atmosphere::node::Node;
use serde_json::{Value, json};
use std::time::Duration;

use common::*;

async fn post(node: &Node, path: &str, body: Value) -> reqwest::Response {
    tokio::time::timeout(
        WAIT,
        reqwest::Client::new()
            .post(format!("http://{}{path}", node.http_addr))
            .json(&body)
            .send(),
    )
    .await
    .expect("answered in time")
    .expect("node reachable")
}

async fn has_capability(node: &Node, id: &str) -> bool {
    node.catalog
        .table()
        .entries()
        .iter()
        .any(|e| e.capability.id.as_str() == id)
}

struct Pair {
    a: Node,
    b: Node,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

/// Node A offers the llama expert on its backend; node B offers the coder on its
/// own and joins through A.
async fn pair() -> Pair {
    pair_with(Fault::None).await
}

/// A mesh node offering the llama expert on its own echo backend
/// (`farm-backend`), joining no one, refreshing its routes every `ttl / 3`.
async fn farm_node(fault: Fault, dir: &std::path::Path, ttl: Duration) -> Node {
    let mut farm_echo = Echo::new("farm-backend", Flavour::Openai, &["llama3.2"]);
    farm_echo.fault = fault;
    let farm = spawn_echo(farm_echo).await;
    let llama = farm_capabilities("farm").remove(0);
    let mut config = mesh_config(
        vec![backend("farm", BackendKind::Openai, farm, false)],
        vec![llama],
        dir,
        Vec::new(),
    );
    config.mesh.as_mut().expect("mesh").ttl = ttl;
    start(config).await
}

/// A node joining through `a` with what it offers, once it knows a's llama expert.
async fn joined_to(
    a: &Node,
    dir: &std::path::Path,
    backends: Vec<atmosphere::config::BackendConfig>,
    capabilities: Vec<atmosphere::config::CapabilityConfig>,
) -> Node {
    let b = start(mesh_config(
        backends,
        capabilities,
        dir,
        vec![mesh_addr(a).await],
    ))
    .await;
    eventually("b learns the llama expert", || {
        has_capability(&b, "farm/llama-expert")
    })
    .await;
    b
}

async fn pair_with(fault: Fault) -> Pair {
    let code = spawn_echo(Echo::new(
        "code-backend",
        Flavour::Openai,
        &["qwen2.5-coder"],
    ))
    .await;
    let coder = farm_capabilities("code").remove(1);
    let da = tempfile::tempdir().expect("tempdir");
    let db = tempfile::tempdir().expect("tempdir");
    let a = farm_node(fault, da.path(), Duration::from_secs(30)).await;
    let b = joined_to(
        &a,
        db.path(),
        vec![backend("code", BackendKind::Openai, code, false)],
        vec![coder],
    )
    .await;
    eventually("a learns the coder", || has_capability(&a, "farm/coder")).await;
    Pair {
        a,
        b,
        _dirs: (da, db),
    }
}

#[tokio::test]
async fn auto_on_one_node_is_answered_by_the_node_that_fits() {
    let p = pair().await;
    let resp = post(
        &p.b,
        "/v1/chat/completions",
        json!({"model": "auto", "messages": [{"role": "user", "content": "What should I feed my alpacas in winter?"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-atmosphere-route"], "farm/llama-expert");
    assert_eq!(
        resp.headers()["x-atmosphere-node"],
        p.a.peer_id.to_base58().as_str()
    );
    let v: Value = resp.json().await.expect("json");
    let content = v["choices"][0]["message"]["content"]
        .as_str()
        .expect("content");
    assert!(
        content.starts_with("[farm-backend] model=llama3.2"),
        "{content}"
    );

    // The other way round, and with an explicit model.
    let resp = post(
        &p.a,
        "/v1/chat/completions",
        json!({"model": "farm/coder", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-atmosphere-node"],
        p.b.peer_id.to_base58().as_str()
    );

    // Mesh-wide listings.
    let models = get_json(&p.b, "/v1/models").await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(
        ids.contains(&"farm/llama-expert") && ids.contains(&"farm/coder"),
        "{ids:?}"
    );
    let caps = get_json(&p.b, "/v1/mesh/capabilities").await;
    let remote = caps["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|c| c["id"] == "farm/llama-expert")
        .expect("remote capability listed");
    assert_eq!(remote["local"], false);
    assert!(
        remote["seq"].as_u64().is_some() && remote["age_secs"].as_u64().is_some(),
        "{remote}"
    );
    let peers = get_json(&p.b, "/v1/mesh/peers").await;
    let ids: Vec<&str> = peers["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|x| x["peer_id"].as_str())
        .collect();
    assert!(ids.contains(&p.a.peer_id.to_base58().as_str()), "{peers}");
}

#[tokio::test]
async fn streaming_crosses_the_mesh_token_by_token() {
    let p = pair().await;
    let resp = post(
        &p.b,
        "/v1/chat/completions",
        json!({"model": "auto", "stream": true, "messages": [{"role": "user", "content": "When should alpacas be shorn?"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/event-stream")
    );
    assert_eq!(
        resp.headers()["x-atmosphere-node"],
        p.a.peer_id.to_base58().as_str()
    );
    let text = resp.text().await.expect("body");
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert!(events.len() > 4, "{events:?}");
    assert_eq!(*events.last().expect("events"), "data: [DONE]");
    let content: String = events
        .iter()
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert!(
        content.starts_with("[farm-backend] model=llama3.2"),
        "{content}"
    );
}

#[tokio::test]
async fn a_node_that_leaves_takes_its_routes_with_it() {
    let p = pair().await;
    let Pair { a, b, _dirs } = p;
    a.shutdown().await;
    let table_without = || async { !has_capability(&b, "farm/llama-expert").await };
    eventually("b drops a's routes after its withdrawal", table_without).await;
    // Asked explicitly, the capability is now unknown: a clear 404.
    let resp = post(
        &b,
        "/v1/chat/completions",
        json!({"model": "farm/llama-expert", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(resp.status(), 404);
    // auto falls back to what is left.
    let resp = post(
        &b,
        "/v1/route",
        json!({"input": "What should I feed my alpacas in winter?"}),
    )
    .await;
    let v: Value = resp.json().await.expect("json");
    assert!(
        v["decision"]["candidates"]
            .as_array()
            .expect("candidates")
            .iter()
            .all(|c| c["id"] != "farm/llama-expert")
    );
}

#[tokio::test]
async fn a_stream_that_breaks_on_the_far_node_ends_with_an_error_event() {
    let p = pair_with(Fault::BreakStream).await;
    let resp = post(
        &p.b,
        "/v1/chat/completions",
        json!({"model": "farm/llama-expert", "stream": true, "messages": [{"role": "user", "content": "one two three four"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("body");
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 3, "two chunks, then the error: {events:?}");
    assert!(events[2].contains("backend_stream_error"), "{}", events[2]);
    assert!(!text.contains("[DONE]"));
}

/// Bootstrap peers are often known by a name and port only (a compose service,
/// a public host): no `/p2p/<id>` is needed to join through them.
#[tokio::test]
async fn joins_through_a_bootstrap_address_without_a_peer_id() {
    let da = tempfile::tempdir().expect("tempdir");
    let db = tempfile::tempdir().expect("tempdir");
    let a = farm_node(Fault::None, da.path(), Duration::from_secs(30)).await;
    let with_id = mesh_addr(&a).await;
    let port = with_id
        .split("/tcp/")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("tcp port");
    let b = start(mesh_config(
        Vec::new(),
        Vec::new(),
        db.path(),
        vec![format!("/dns4/localhost/tcp/{port}")],
    ))
    .await;
    eventually(
        "b learns a's capability through a name-only bootstrap",
        || has_capability(&b, "farm/llama-expert"),
    )
    .await;
    let resp = post(
        &b,
        "/v1/chat/completions",
        json!({"model": "auto", "messages": [{"role": "user", "content": "What should I feed my alpacas in winter?"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("json");
    let content = v["choices"][0]["message"]["content"].as_str().unwrap_or("");
    assert!(content.starts_with("[farm-backend]"), "{content}");
}

/// A refresh that repeats a node's capabilities must not rebuild the route
/// table (and its index) on every other node: with many nodes that would be
/// several rebuilds a second for nothing.
#[tokio::test]
async fn refreshes_that_change_nothing_do_not_rebuild_the_table() {
    let da = tempfile::tempdir().expect("tempdir");
    let db = tempfile::tempdir().expect("tempdir");
    // a refreshes every ttl / 3: about every 1.7 s.
    let a = farm_node(Fault::None, da.path(), Duration::from_secs(5)).await;
    let b = joined_to(&a, db.path(), Vec::new(), Vec::new()).await;
    let seq_at_b = || async {
        let v = get_json(&b, "/v1/mesh/capabilities").await;
        v["data"][0]["seq"].as_u64().unwrap_or(0)
    };
    let builds = metric(&b, "atmosphere_route_table_builds_total").await;
    for _ in 0..2 {
        let seq = seq_at_b().await;
        eventually("a refresh from a reaches b", || async {
            seq_at_b().await > seq
        })
        .await;
    }
    assert_eq!(
        metric(&b, "atmosphere_route_table_builds_total").await,
        builds,
        "b rebuilt its table for refreshes that changed nothing"
    );
    assert!(has_capability(&b, "farm/llama-expert").await);
}

/// A node that is shut down while it streams an answer to a peer finishes
/// that answer before it leaves the mesh.
#[tokio::test]
async fn a_node_shutting_down_finishes_the_answers_it_streams_to_peers() {
    let mut slow = Echo::new("farm-backend", Flavour::Openai, &["llama3.2"]);
    slow.chunk_delay = Duration::from_millis(150);
    let farm = spawn_echo(slow).await;
    let da = tempfile::tempdir().expect("tempdir");
    let db = tempfile::tempdir().expect("tempdir");
    let a = start(mesh_config(
        vec![backend("farm", BackendKind::Openai, farm, false)],
        vec![farm_capabilities("farm").remove(0)],
        da.path(),
        Vec::new(),
    ))
    .await;
    let b = joined_to(&a, db.path(), Vec::new(), Vec::new()).await;

    let resp = post(
        &b,
        "/v1/chat/completions",
        json!({"model": "farm/llama-expert", "stream": true, "messages": [{"role": "user", "content": "one two three four five six"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-atmosphere-node"],
        a.peer_id.to_base58().as_str()
    );
    // The answer has begun on a; a is told to stop.
    let stopping = tokio::spawn(a.shutdown());
    let text = tokio::time::timeout(WAIT, resp.text())
        .await
        .expect("the stream ends")
        .expect("body");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(!text.contains("error"), "{text}");
    assert!(text.contains("six"), "the whole answer arrived: {text}");
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("a stops once its answer is done")
        .expect("shutdown");
}

/// A mesh node named `name` offering the llama expert on `backend_addr`,
/// joining through `through`.
async fn llama_node(
    name: &str,
    backend_addr: std::net::SocketAddr,
    dir: &std::path::Path,
    through: Vec<String>,
) -> Node {
    let mut config = mesh_config(
        vec![backend("farm", BackendKind::Openai, backend_addr, false)],
        vec![farm_capabilities("farm").remove(0)],
        dir,
        through,
    );
    config.node.name = name.into();
    start(config).await
}

async fn served_by(node: &Node, model: &str) -> (u16, Option<String>) {
    let resp = post(
        node,
        "/v1/chat/completions",
        json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let at = resp
        .headers()
        .get("x-atmosphere-node")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (resp.status().as_u16(), at)
}

/// Copies of one id on several nodes: the local one is never shadowed,
/// copies elsewhere that are as trusted share the requests (a copy whose
/// backend is down gets none), and `id@node` picks one.
#[tokio::test]
async fn a_capability_id_belongs_to_the_node_that_announces_it() {
    let dirs: Vec<_> = (0..4)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let alpha_echo = spawn_echo(Echo::new("alpha-backend", Flavour::Openai, &["llama3.2"])).await;
    let bravo_echo = spawn_echo(Echo::new("bravo-backend", Flavour::Openai, &["llama3.2"])).await;
    let alpha = llama_node("alpha", alpha_echo, dirs[0].path(), Vec::new()).await;
    let through = vec![mesh_addr(&alpha).await];
    let charlie = joined_to(&alpha, dirs[1].path(), Vec::new(), Vec::new()).await;
    // Later, two more nodes announce the same id: one that serves it, one
    // whose backend is down.
    let bravo = llama_node("bravo", bravo_echo, dirs[2].path(), through.clone()).await;
    let delta = llama_node("delta", dead_addr().await, dirs[3].path(), through).await;
    eventually("charlie holds all three copies", || async {
        get_json(&charlie, "/v1/mesh/capabilities").await["data"]
            .as_array()
            .is_some_and(|d| d.iter().filter(|c| c["id"] == "farm/llama-expert").count() == 3)
    })
    .await;
    eventually("delta holds the other copies", || async {
        get_json(&delta, "/v1/mesh/capabilities").await["data"]
            .as_array()
            .is_some_and(|d| d.iter().filter(|c| c["id"] == "farm/llama-expert").count() == 3)
    })
    .await;
    let id = |n: &Node| Some(n.peer_id.to_base58());

    // Elsewhere only: the copies that can serve it, never delta's.
    for _ in 0..20 {
        let (status, at) = served_by(&charlie, "farm/llama-expert").await;
        assert_eq!(status, 200);
        assert!(at == id(&alpha) || at == id(&bravo), "{at:?}");
    }
    // Named: that node's copy, by name or PeerId.
    assert_eq!(
        served_by(&charlie, "farm/llama-expert@bravo").await,
        (200, id(&bravo))
    );
    let by_peer = format!("farm/llama-expert@{}", bravo.peer_id);
    assert_eq!(served_by(&charlie, &by_peer).await, (200, id(&bravo)));
    let (status, _) = served_by(&charlie, "farm/llama-expert@nobody").await;
    assert_eq!(status, 404);
    // Offered here: this node's copy, even when its backend is down.
    assert_eq!(
        served_by(&bravo, "farm/llama-expert").await,
        (200, id(&bravo))
    );
    let (status, at) = served_by(&delta, "farm/llama-expert").await;
    assert_ne!(status, 200, "delta's request went to {at:?}");
}

/// `share`: a local capability is neither announced nor run for peers; one
/// shared with a list of peers runs for them and is refused to others.
#[tokio::test]
async fn capabilities_are_shared_only_as_configured() {
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    // b's identity exists before a is configured to share with it.
    let b_id = atmosphere::identity::peer_id(
        &atmosphere::identity::load_or_create(dirs[1].path()).expect("identity"),
    )
    .to_base58();
    let farm = spawn_echo(Echo::new("farm-backend", Flavour::Openai, &["llama3.2"])).await;
    let mut caps = farm_capabilities("farm");
    caps[0].share = atmosphere::capability::Share::Local;
    caps[1].share = atmosphere::capability::Share::Peers(vec![b_id.clone()]);
    let a = start(mesh_config(
        vec![backend("farm", BackendKind::Openai, farm, false)],
        caps,
        dirs[0].path(),
        Vec::new(),
    ))
    .await;
    let through = vec![mesh_addr(&a).await];
    let b = start(mesh_config(
        Vec::new(),
        Vec::new(),
        dirs[1].path(),
        through.clone(),
    ))
    .await;
    assert_eq!(b.peer_id.to_base58(), b_id);
    let c = start(mesh_config(Vec::new(), Vec::new(), dirs[2].path(), through)).await;
    for n in [&b, &c] {
        eventually("the shared capability is announced", || {
            has_capability(n, "farm/coder")
        })
        .await;
        assert!(
            !has_capability(n, "farm/llama-expert").await,
            "a local capability was announced"
        );
    }
    let coder = |n: &Node| {
        let url = format!("http://{}/v1/chat/completions", n.http_addr);
        async move {
            let resp = reqwest::Client::new()
                .post(url)
                .json(&json!({"model": "farm/coder", "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .expect("answered");
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.expect("json"))
        }
    };
    assert_eq!(coder(&a).await.0, 200, "a's own clients use everything");
    assert_eq!(coder(&b).await.0, 200, "b is on the list");
    let (status, v) = coder(&c).await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["error"]["code"], "capability_not_shared");
    let counted = format!(
        "atmosphere_peer_refusals_total{{peer=\"{}\",reason=\"capability_not_shared\"}}",
        c.peer_id
    );
    assert_eq!(
        metric(&a, &counted).await,
        1,
        "the refusal is counted by peer"
    );
    assert_eq!(
        served_by(&a, "farm/llama-expert").await,
        (200, Some(a.peer_id.to_base58()))
    );
}
