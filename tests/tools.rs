//! Tools across the mesh: a node's MCP tools become `tool/*` capabilities
//! that other nodes call with `POST /v1/tool/execute`, by `name@node`, by
//! name alone, or by the meaning of a query; arguments are checked before
//! they travel; a tool its node does not share is refused. The MCP server
//! is `tests/mcp/tools_server.py` (see tests/mcp.rs), and the testnet's
//! `camera-tool` for photos.

mod common;

use std::time::Duration;

use atmosphere::capability::Share;
use atmosphere::config::McpConfig;
use atmosphere::node::Node;
use serde_json::{Value, json};

use common::{eventually, get_json, mesh_addr, mesh_config, metric, start, tools_server};

/// A node called `name` offering the test server's tools, shared as `share`.
async fn gateway(name: &str, share: Share, dir: &std::path::Path) -> Node {
    let mut config = mesh_config(Vec::new(), Vec::new(), dir, Vec::new());
    config.node.name = name.into();
    config.mcp = vec![tools_server(share)];
    start(config).await
}

/// A node with no tools of its own, joined to `via`.
async fn caller(via: &Node, dir: &std::path::Path) -> Node {
    let mut config = mesh_config(Vec::new(), Vec::new(), dir, vec![mesh_addr(via).await]);
    config.node.name = "hub".into();
    start(config).await
}

async fn execute(node: &Node, body: Value) -> (u16, Value) {
    common::post_json(node, "/v1/tool/execute", body).await
}

/// Waits until `node` lists `tool` of `of` at /v1/tools.
async fn knows(node: &Node, tool: &str, of: &Node) {
    let name = format!("{tool}@{}", of.peer_id);
    eventually(&format!("{name} is listed"), || async {
        get_json(node, "/v1/tools").await["data"]
            .as_array()
            .is_some_and(|d| {
                d.iter()
                    .any(|t| t["name"] == name && t["available"] == true)
            })
    })
    .await;
}

#[tokio::test]
async fn a_tool_on_one_node_is_called_from_another_by_name_and_by_meaning() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().expect("dir")).collect();
    let edge = gateway("edge-gateway", Share::Mesh, dirs[0].path()).await;
    let hub = caller(&edge, dirs[1].path()).await;
    knows(&hub, "camera-front", &edge).await;

    // The announced schema came with it.
    let tools = get_json(&hub, "/v1/tools").await;
    let add = tools["data"]
        .as_array()
        .and_then(|d| d.iter().find(|t| t["tool"] == "add"))
        .cloned()
        .expect("add listed");
    assert_eq!(add["input_schema"]["required"], json!(["a", "b"]));
    assert_eq!(add["kind"], "tool/mcp");
    assert_eq!(add["node_name"], "edge-gateway");

    let edge_id = edge.peer_id.to_base58();
    for tool in [
        "camera-front@edge-gateway",
        "camera-front",
        "tool/camera-front",
    ] {
        let (status, body) = execute(&hub, json!({"tool": tool, "arguments": {"zoom": 3}})).await;
        assert_eq!(status, 200, "{tool}: {body}");
        assert_eq!(body["node"], edge_id, "{body}");
        assert_eq!(body["capability"], "tool/camera-front");
        assert_eq!(
            body["result"]["content"][0]["text"],
            "photo taken at zoom 3: two llamas by the gate"
        );
        assert_eq!(body["is_error"], false);
    }
    let (status, body) = execute(
        &hub,
        json!({"query": "take a picture of the barn with the front camera", "arguments": {}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["capability"], "tool/camera-front", "{body}");
    assert!(body["score"].as_f64().is_some(), "{body}");

    // A typed intent for the family of tools, served where the tool lives.
    let (status, body) = common::post_json(
        &hub,
        "/v1/intent",
        json!({"type": "tool/*", "domain": "photos of the barn", "data": {"zoom": 4},
               "preferences": {"latency": "any", "locality": "mesh"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["capability"], "tool/camera-front", "{body}");
    assert_eq!(body["node"], edge_id);
    assert_eq!(body["node_name"], "edge-gateway");
    assert_eq!(
        body["result"]["content"][0]["text"],
        "photo taken at zoom 4: two llamas by the gate"
    );
    assert!(body["latency_ms"].as_f64().is_some() && body["score"].as_f64().is_some());
    for (intent, status, code) in [
        (
            json!({"type": "vision/classify", "data": {}}),
            404,
            "no_capability_of_kind",
        ),
        (
            json!({"type": "tool/mcp", "domain": "barn", "preferences": {"locality": "local"}}),
            404,
            "no_capability_of_kind",
        ),
        (json!({"type": "robot/walk"}), 400, "invalid_intent_type"),
    ] {
        let (got, body) = common::post_json(&hub, "/v1/intent", intent.clone()).await;
        assert_eq!(
            (got, &body["error"]["code"]),
            (status, &json!(code)),
            "{intent}: {body}"
        );
    }
    let (got, body) = common::post_json(
        &hub,
        "/v1/intent",
        json!({"type": "tool/*", "preferences": {"max_hops": 9}}),
    )
    .await;
    assert_eq!(got, 400, "{body}");

    // Arguments that do not match the schema are refused here: nothing
    // travels (the edge serves no call for them).
    let served = metric(&edge, "atmosphere_forwards_total{result=\"tool_served\"}").await;
    let (status, body) = execute(
        &hub,
        json!({"tool": "add@edge-gateway", "arguments": {"a": "two"}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_arguments");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("/a") && message.contains("\"b\""),
        "{message}"
    );
    assert_eq!(
        metric(&edge, "atmosphere_forwards_total{result=\"tool_served\"}").await,
        served
    );

    // Each failure has its own error.
    let (status, body) = execute(&hub, json!({"tool": "fail@edge-gateway"})).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (502, &json!("tool_error")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("always fails")
    );
    let (status, body) = execute(
        &hub,
        json!({"tool": "sleep@edge-gateway", "arguments": {"seconds": 60}}),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (504, &json!("tool_timeout")),
        "{body}"
    );
    // The call that timed out was cancelled on the MCP server, not left to
    // hold its place there.
    eventually("the timed-out sleep is cancelled on the server", || async {
        let (_, body) = execute(&hub, json!({"tool": "sleeping@edge-gateway"})).await;
        body["result"]["content"][0]["text"] == "0"
    })
    .await;
    let (status, body) = execute(&hub, json!({"tool": "no-such-tool"})).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("tool_not_found")),
        "{body}"
    );
    let (status, body) = execute(&hub, json!({"tool": "add", "arguments": [1, 2]})).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("invalid_arguments")),
        "{body}"
    );
    let (status, body) = execute(&hub, json!({"arguments": {}})).await;
    assert_eq!(status, 400, "{body}");

    // 6 MiB of arguments: too large for one tool message (5 MiB), sent to
    // the tool's node in parts (an upload) and run whole.
    let uploads = r#"atmosphere_forwards_total{result="served_upload"}"#;
    let before = metric(&edge, uploads).await;
    let huge = json!({"tool": "shout", "arguments": {"text": "x".repeat(6 << 20)}});
    let (status, body) = execute(&hub, huge).await;
    let start: String = body.to_string().chars().take(300).collect();
    assert_eq!(status, 200, "{start}");
    let shouted = body["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(shouted.len(), 6 << 20);
    assert!(shouted.bytes().all(|b| b == b'X'));
    assert_eq!(metric(&edge, uploads).await, before + 1);
    let (status, body) = execute(
        &hub,
        json!({"tool": "shout", "arguments": {"text": "still here"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["content"][0]["text"], "STILL HERE");
}

#[tokio::test]
async fn a_tool_is_refused_to_a_node_it_is_not_shared_with() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().expect("dir")).collect();
    // Two servers on one node: `open-*` shared with one named peer (not
    // the hub): announced, refused to others; the rest kept local (the
    // default): never announced.
    let stranger = libp2p::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id()
        .to_base58();
    let mut open = tools_server(Share::Peers(vec![stranger]));
    open.name = "open".into();
    open.env
        .insert("ATMOSPHERE_TOOL_PREFIX".into(), "open-".into());
    let mut config = mesh_config(Vec::new(), Vec::new(), dirs[0].path(), Vec::new());
    config.node.name = "gateway".into();
    config.mcp = vec![open, tools_server(Share::Local)];
    let gateway = start(config).await;
    let hub = caller(&gateway, dirs[1].path()).await;

    // Both servers' tools are in the gateway's table; then the open server
    // learns a tool (`fresh`), and once the hub lists it, the hub's table
    // holds an update the gateway made after all of that: what the hub
    // lacks was left out, not yet to come.
    eventually("the gateway's tools are up", || async {
        let add = json!({"a": 1, "b": 2});
        execute(&gateway, json!({"tool": "add", "arguments": add}))
            .await
            .0
            == 200
            && execute(&gateway, json!({"tool": "open-add", "arguments": add}))
                .await
                .0
                == 200
    })
    .await;
    let (status, body) = execute(&gateway, json!({"tool": "open-learn"})).await;
    assert_eq!(status, 200, "{body}");
    knows(&hub, "fresh", &gateway).await;

    let (status, body) = execute(
        &hub,
        json!({"tool": "open-add@gateway", "arguments": {"a": 1, "b": 2}}),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &json!("tool_not_shared")),
        "{body}"
    );
    // Arguments of 2 MiB go as an upload: refused on its head alike.
    let (status, body) = execute(
        &hub,
        json!({"tool": "open-add@gateway", "arguments": {"a": 1, "b": 2, "pad": "x".repeat(2 << 20)}}),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &json!("tool_not_shared")),
        "{body}"
    );
    assert_eq!(
        metric(
            &gateway,
            r#"atmosphere_forwards_total{result="served_upload"}"#
        )
        .await,
        1
    );
    let (status, body) = execute(
        &hub,
        json!({"tool": "add@gateway", "arguments": {"a": 1, "b": 2}}),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("tool_not_found")),
        "{body}"
    );
    let names: Vec<String> = get_json(&hub, "/v1/tools").await["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["tool"].as_str().map(str::to_owned))
        .collect();
    assert!(names.iter().any(|n| n == "open-add"), "{names:?}");
    assert!(!names.iter().any(|n| n == "add"), "{names:?}");
}

#[tokio::test]
async fn an_mcp_client_lists_and_calls_the_mesh_s_tools_through_mcp() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().expect("dir")).collect();
    let edge = gateway("edge-gateway", Share::Mesh, dirs[0].path()).await;
    let hub = caller(&edge, dirs[1].path()).await;
    knows(&hub, "camera-front", &edge).await;
    let url = format!("http://{}/mcp", hub.http_addr);
    let run = |tool: &'static str, arguments: &'static str| {
        let url = url.clone();
        async move {
            common::run_python(
                "mcp/mesh_client.py",
                &[&url, tool, arguments],
                Duration::from_secs(60),
                "mcp",
            )
            .await
        }
    };
    let seen = run("camera-front__edge-gateway", r#"{"zoom": 2}"#).await;
    let names: Vec<&str> = seen["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"add__edge-gateway"), "{names:?}");
    for n in &names {
        assert!(
            (1..=64).contains(&n.len())
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "{n}"
        );
    }
    let add = seen["tools"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "add__edge-gateway"))
        .expect("add");
    assert_eq!(add["input_schema"]["required"], json!(["a", "b"]));
    assert_eq!(seen["call"]["isError"], false, "{seen}");
    assert_eq!(
        seen["call"]["content"][0]["text"],
        "photo taken at zoom 2: two llamas by the gate"
    );

    // Arguments the schema refuses: an error result that says why.
    let seen = run("add__edge-gateway", r#"{"a": "two"}"#).await;
    assert_eq!(seen["call"]["isError"], true, "{seen}");
    assert!(
        seen["call"]["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("input schema")),
        "{seen}"
    );
}

/// Typed intents for language and vision models: a chat from `data.prompt`
/// (and `data.image`), a family of kinds.
#[tokio::test]
async fn a_typed_intent_reaches_a_language_model_by_kind_and_meaning() {
    use atmosphere::config::BackendKind;
    use atmosphere::echo::{Echo, Flavour};
    let dir = tempfile::tempdir().expect("dir");
    let echo = common::spawn_echo(Echo::new("gpu", Flavour::Openai, &["llama-14b", "eye"])).await;
    let mut vision = common::capability(
        "farm/eye",
        "gpu",
        "eye",
        "Tells animals apart in photos.",
        &[],
    );
    vision.kind = "vision/classify".parse().expect("kind");
    let config = common::config(
        vec![common::backend("gpu", BackendKind::Openai, echo, false)],
        vec![
            common::capability(
                "farm/llama-expert",
                "gpu",
                "llama-14b",
                "Expert on raising llamas and alpacas.",
                &["How much hay does a llama eat?", "Can alpacas live alone?"],
            ),
            vision,
        ],
        dir.path(),
    );
    let node = start(config).await;
    let post = |body: Value| common::post_json(&node, "/v1/intent", body);
    for kind in ["llm/chat", "llm/*"] {
        let (status, body) = post(json!({
            "type": kind, "domain": "camelids",
            "data": {"prompt": "What should I feed a young llama?"},
            "preferences": {"latency": "low"}
        }))
        .await;
        assert_eq!(status, 200, "{kind}: {body}");
        assert_eq!(body["capability"], "farm/llama-expert");
        assert_eq!(body["node"], node.peer_id.to_base58());
        assert_eq!(body["result"]["object"], "chat.completion", "{body}");
    }
    let (status, body) = post(json!({"type": "llm/chat", "data": {"zoom": 1}})).await;
    assert_eq!(status, 400, "{body}");
    // A vision model is sent the picture (and the prompt) as a chat.
    let (status, body) = post(json!({"type": "vision/*", "data": {
        "image": "data:image/png;base64,iVBORw0KGgo=", "prompt": "Which animal is this?"}}))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["capability"], "farm/eye");
    assert_eq!(body["result"]["object"], "chat.completion", "{body}");
    // Checked as a chat's image is.
    let (status, body) = post(json!({"type": "vision/*", "data": {
        "image": "data:image/png;base64,AAAA", "prompt": "Which animal is this?"}}))
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_image", "{body}");
    assert_eq!(body["error"]["param"], "data.image");
    let (status, body) = post(json!({"type": "vision/*", "data": {"image": 7}})).await;
    assert_eq!(
        (status, &body["error"]["param"]),
        (400, &json!("data.image")),
        "{body}"
    );
}

/// The testnet's camera (`camera-tool`, an MCP server written with the
/// node's own `mcp::stdio`): its photo travels to another node as an MCP
/// image, each call a new frame.
#[tokio::test]
async fn a_camera_on_a_gateway_takes_photos_for_another_node() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().expect("dir")).collect();
    let mut config = mesh_config(Vec::new(), Vec::new(), dirs[0].path(), Vec::new());
    config.node.name = "edge-gateway".into();
    config.mcp = vec![McpConfig {
        share: Share::Mesh,
        kind: "tool/camera".parse().expect("kind"),
        ..McpConfig::stdio(
            "cameras",
            env!("CARGO_BIN_EXE_camera-tool"),
            &["--camera", "front", "--camera", "back"],
        )
    }];
    let edge = start(config).await;
    let hub = caller(&edge, dirs[1].path()).await;
    knows(&hub, "camera-back", &edge).await;

    let mut frames = Vec::new();
    let mut photos = Vec::new();
    for _ in 0..2 {
        let (status, body) = execute(
            &hub,
            json!({"tool": "camera-back@edge-gateway", "arguments": {"resolution": "high"}}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let content = &body["result"]["content"];
        assert_eq!(content[0]["type"], "image", "{body}");
        assert_eq!(content[0]["mimeType"], "image/png");
        let png = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            content[0]["data"].as_str().expect("image data"),
        )
        .expect("base64");
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
        // IHDR: width and height, big-endian, after the chunk's length and type.
        assert_eq!(&png[16..24], &[0, 0, 2, 128, 0, 0, 1, 224], "640x480");
        let about: Value = serde_json::from_str(content[1]["text"].as_str().expect("text"))
            .expect("JSON about the photo");
        assert_eq!(about["camera"], "back");
        frames.push(about["frame"].as_u64().expect("frame"));
        photos.push(png);
    }
    assert!(frames[1] > frames[0], "a new frame each call: {frames:?}");
    assert_ne!(photos[0], photos[1], "two frames, two photos");

    // Checked at the calling node against the announced schema.
    let (status, body) = execute(
        &hub,
        json!({"tool": "camera-front@edge-gateway", "arguments": {"resolution": "8k"}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_arguments", "{body}");

    // Its kind, for typed intents.
    let (status, body) = common::post_json(
        &hub,
        "/v1/intent",
        json!({"type": "tool/camera", "domain": "who is at the front door", "data": {}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["capability"], "tool/camera-front", "{body}");
    assert_eq!(body["result"]["content"][0]["type"], "image", "{body}");
}
