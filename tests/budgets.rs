//! The one rule for budgets, tried as an attacker would (README "Budgets"):
//! what an idle or trickling holder keeps, others can still use. Each test
//! runs the attack and, meanwhile, the honest request it used to starve;
//! without the rule every one of them fails (refused, or hung past its
//! client's patience).

mod common;

use std::time::Duration;

use atmosphere::capability::Share;
use atmosphere::network::frames;
use atmosphere::node::Node;
use atmosphere::wire::Message;
use atmosphere::wire::intent::{self, Operation, StreamFrame, UploadRequest};
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::StreamProtocol;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use common::hostile::bare_peer;
use common::*;

/// A node with nothing of its own, joined to `via`, once it knows `what`.
async fn honest_node(via: &Node, dir: &std::path::Path, what: &str) -> Node {
    let mut config = mesh_config(Vec::new(), Vec::new(), dir, vec![mesh_addr(via).await]);
    config.node.name = "honest".into();
    let node = start(config).await;
    eventually(&format!("the honest node knows {what}"), || async {
        node.catalog
            .table()
            .entries()
            .iter()
            .any(|e| e.capability.id.as_str() == what)
    })
    .await;
    node
}

#[tokio::test]
async fn idle_tool_streams_of_fresh_peers_leave_the_tools_served() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().expect("dir")).collect();
    let mut g = mesh_config(Vec::new(), Vec::new(), dirs[0].path(), Vec::new());
    g.node.name = "edge-gateway".into();
    g.mcp = vec![tools_server(Share::Mesh)];
    let gateway = start(g).await;
    let hub = honest_node(&gateway, dirs[1].path(), "tool/add").await;
    let addr = mesh_addr(&gateway).await;

    // Nine fresh keys, eight tool streams each, not a byte sent on any:
    // more than the node serves at once.
    let mut held = Vec::new();
    for _ in 0..9 {
        let mut control = bare_peer(&addr).await;
        for _ in 0..8 {
            let opened = tokio::time::timeout(
                WAIT,
                control.open_stream(
                    gateway.peer_id,
                    StreamProtocol::new(atmosphere::wire::TOOL_PROTOCOL),
                ),
            )
            .await;
            held.push(opened.expect("opens in time").expect("stream opens"));
        }
    }
    let (status, body) = post_json(
        &hub,
        "/v1/tool/execute",
        json!({"tool": "add@edge-gateway", "arguments": {"a": 2, "b": 3}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["content"][0]["text"], "5", "{body}");
    assert_eq!(
        metric(&gateway, "atmosphere_budget_held{budget=\"tool_opening\"}").await,
        72,
        "the 72 silent streams are waiting for their first frame"
    );

    // None of them is kept past the first frame's deadline.
    eventually("the silent streams are closed", || async {
        metric(&gateway, "atmosphere_budget_held{budget=\"tool_opening\"}").await == 0
    })
    .await;
    assert!(
        metric(
            &gateway,
            "atmosphere_forwards_total{result=\"stream_idle\"}"
        )
        .await
            >= 72
    );
    drop(held);
    hub.shutdown().await;
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_trickled_upload_leaves_other_nodes_large_chats_served() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().expect("dir")).collect();
    let farm = farm_node(dirs[0].path()).await;
    let hub = honest_node(&farm, dirs[1].path(), "farm/llama-expert").await;
    let addr = mesh_addr(&farm).await;

    // Three fresh keys announce an upload of 32 MiB each (all that
    // strangers together may hold of the node's 128 MiB, were uploads
    // reserved by what they announce), then send a byte every 2 s.
    let mut trickles = Vec::new();
    for _ in 0..3 {
        let mut control = bare_peer(&addr).await;
        let mut io = control
            .open_stream(
                farm.peer_id,
                StreamProtocol::new(atmosphere::wire::UPLOAD_PROTOCOL),
            )
            .await
            .expect("stream opens");
        let head = UploadRequest {
            version: intent::VERSION,
            capability: "farm/llama-expert".into(),
            operation: Operation::Chat,
            stream: false,
            body_len: 32 << 20,
            deadline_ms: 60_000,
            hops: 0,
        };
        frames::write(&mut io, &head.encode().expect("encode"))
            .await
            .expect("head written");
        let go = frames::read(&mut io, intent::MAX_FRAME_BYTES)
            .await
            .expect("answered")
            .map(|b| StreamFrame::decode(&b).expect("a frame"));
        assert_eq!(
            go,
            Some(StreamFrame::Head {
                status: intent::CONTINUE
            })
        );
        trickles.push(tokio::spawn(async move {
            // A part's length, then its bytes one at a time.
            let mut prefix = unsigned_varint::encode::usize_buffer();
            let prefix = unsigned_varint::encode::usize(1 << 20, &mut prefix).to_vec();
            if io.write_all(&prefix).await.is_err() {
                return false;
            }
            for _ in 0..30 {
                if io.write_all(b"x").await.is_err() || io.flush().await.is_err() {
                    return true;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            // Cut off: the node closed or reset the stream.
            let mut rest = Vec::new();
            io.read_to_end(&mut rest).await.is_err() || rest.is_empty()
        }));
    }

    // Meanwhile a 2 MB chat from the honest node travels as an upload.
    let big = "hay ".repeat(500_000);
    let (status, body) = post_json(
        &hub,
        "/v1/chat/completions",
        json!({"model": "farm/llama-expert",
            "messages": [{"role": "user", "content": big}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert!(metric(&farm, "atmosphere_forwards_total{result=\"served_upload\"}").await >= 4);

    assert_eq!(
        metric(&farm, "atmosphere_forwards_total{result=\"upload_broken\"}").await,
        0,
        "the chat did not wait for the trickles to be cut off"
    );
    eventually("the trickled uploads are cut off", || async {
        metric(&farm, "atmosphere_forwards_total{result=\"upload_broken\"}").await >= 3
    })
    .await;
    for t in trickles {
        assert!(t.await.expect("task"), "a trickled upload was kept");
    }
    hub.shutdown().await;
    farm.shutdown().await;
}

/// A chat through the node's HTTP API, given `limit` to be answered.
async fn chat_within(node: &Node, limit: Duration) -> Result<u16, String> {
    let sent = reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", node.http_addr))
        .timeout(limit)
        .json(&json!({"model": "farm/llama-expert",
            "messages": [{"role": "user", "content": "How do I shear an alpaca?"}]}))
        .send()
        .await;
    match sent {
        Ok(r) => Ok(r.status().as_u16()),
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test]
async fn trickled_http_bodies_leave_chats_answered_and_are_cut_off() {
    let dir = tempfile::tempdir().expect("dir");
    let node = farm_node(dir.path()).await;
    // Five bodies of 32 MiB declared (160 MiB: more than the node's 128 MiB
    // of bodies held, were they reserved by what is declared), then a byte
    // every 2 s.
    let mut trickles = Vec::new();
    for _ in 0..5 {
        let mut socket = tokio::net::TcpStream::connect(node.http_addr)
            .await
            .expect("connects");
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            node.http_addr,
            32 << 20
        );
        socket.write_all(head.as_bytes()).await.expect("head");
        trickles.push(tokio::spawn(async move {
            for _ in 0..30 {
                if socket.write_all(b" ").await.is_err() {
                    break;
                }
                let mut answer = [0u8; 4096];
                if let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_secs(2), socket.read(&mut answer)).await
                {
                    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
                    return (answer, tokio::time::Instant::now());
                }
            }
            (String::new(), tokio::time::Instant::now())
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..3 {
        assert_eq!(chat_within(&node, WAIT).await, Ok(200));
    }
    let answered = tokio::time::Instant::now();
    for t in trickles {
        let (answer, at) = t.await.expect("task");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("body_too_slow"), "{answer}");
        assert!(
            answered < at,
            "the chats were answered only once a trickled body was cut off"
        );
    }
    node.shutdown().await;
}

/// Sends an MCP `initialize` to `/mcp`: the status, and the session id.
async fn mcp_initialize(node: &Node) -> (u16, Option<String>, String) {
    let r = reqwest::Client::new()
        .post(format!("http://{}/mcp", node.http_addr))
        .header("accept", "application/json, text/event-stream")
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "budget-test", "version": "1"}}}),
        )
        .send()
        .await
        .expect("answered");
    let status = r.status().as_u16();
    let session = r
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = r.text().await.unwrap_or_default();
    if let Some(id) = &session {
        let told = reqwest::Client::new()
            .post(format!("http://{}/mcp", node.http_addr))
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", id)
            .header("mcp-protocol-version", "2025-06-18")
            .json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .send()
            .await
            .expect("answered");
        assert_eq!(told.status().as_u16(), 202);
    }
    (status, session, text)
}

/// Lists the tools in `session`: the status.
async fn mcp_list(node: &Node, session: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("http://{}/mcp", node.http_addr))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", session)
        .header("mcp-protocol-version", "2025-06-18")
        .json(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
        .send()
        .await
        .expect("answered")
        .status()
        .as_u16()
}

#[tokio::test]
async fn mcp_sessions_are_capped_per_client_and_closed_when_idle() {
    let dir = tempfile::tempdir().expect("dir");
    let mut config = common::config(Vec::new(), Vec::new(), dir.path());
    config.http.mcp_sessions = 8;
    config.http.mcp_sessions_per_client = 4;
    config.http.mcp_session_idle = Duration::from_secs(3);
    let node = start(config).await;

    let mut sessions = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..50 {
        match mcp_initialize(&node).await {
            (200, Some(id), _) => sessions.push(id),
            (status, _, body) => refused.push((status, body)),
        }
    }
    assert_eq!(sessions.len(), 4, "one client's share");
    let (status, body) = &refused[0];
    assert_eq!(*status, 429);
    let body: Value = serde_json::from_str(body).expect("OpenAI's error JSON");
    assert_eq!(body["error"]["code"], "too_many_sessions", "{body}");
    assert_eq!(
        metric(&node, "atmosphere_budget_held{budget=\"mcp_sessions\"}").await,
        4
    );

    // The first session is used; the others idle out, and their places
    // are free again.
    let kept = sessions[0].clone();
    let until = tokio::time::Instant::now() + Duration::from_secs(6);
    while tokio::time::Instant::now() < until {
        assert_eq!(
            mcp_list(&node, &kept).await,
            200,
            "a session in use is kept"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eventually("the idle sessions are closed", || async {
        metric(&node, "atmosphere_budget_held{budget=\"mcp_sessions\"}").await == 1
    })
    .await;
    assert_eq!(
        mcp_list(&node, &sessions[1]).await,
        404,
        "an idle session is gone"
    );
    assert_eq!(mcp_initialize(&node).await.0, 200, "a new one may open");
    node.shutdown().await;
}

/// An MCP `initialize` through the node's router, as if from `from`, with
/// `key` as its bearer token: the status and the error code.
async fn mcp_from(node: &Node, from: &str, key: Option<&str>) -> (u16, Option<String>) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "budget-test", "version": "1"}}});
    let mut req = axum::http::Request::builder()
        .method("POST")
        .uri("/mcp")
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    if let Some(key) = key {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    let mut req = req
        .body(axum::body::Body::from(body.to_string()))
        .expect("request");
    req.extensions_mut()
        .insert(atmosphere::http::ClientAddr(from.parse().expect("addr")));
    let resp = tokio::time::timeout(WAIT, node.app().oneshot(req))
        .await
        .expect("answered in time")
        .expect("infallible");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let code = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
    (status, code)
}

#[tokio::test]
async fn mcp_without_a_key_is_for_loopback_clients_unless_opened() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let node = start(common::config(Vec::new(), Vec::new(), dirs[0].path())).await;
    assert_eq!(
        mcp_from(&node, "198.51.100.7:40000", None).await,
        (403, Some("mcp_needs_key".into()))
    );
    assert_eq!(mcp_from(&node, "127.0.0.1:40000", None).await.0, 200);

    let mut open = common::config(Vec::new(), Vec::new(), dirs[1].path());
    open.http.open_mcp = true;
    let open = start(open).await;
    assert_eq!(mcp_from(&open, "198.51.100.7:40000", None).await.0, 200);

    let mut keyed = common::config(Vec::new(), Vec::new(), dirs[2].path());
    keyed.http.api_keys = vec!["sesame".into()];
    let keyed = start(keyed).await;
    assert_eq!(
        mcp_from(&keyed, "198.51.100.7:40000", Some("sesame"))
            .await
            .0,
        200
    );
    assert_eq!(mcp_from(&keyed, "198.51.100.7:40000", None).await.0, 401);
}

#[tokio::test]
async fn the_bytes_of_first_frames_are_held_to_a_peers_share() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().expect("dir")).collect();
    let farm = farm_node(dirs[0].path()).await;
    let hub = honest_node(&farm, dirs[1].path(), "farm/llama-expert").await;
    let mut control = bare_peer(&mesh_addr(&farm).await).await;
    // Eight streams announcing 4 MiB request frames; 3 MiB of each sent, then
    // nothing: 24 MiB, more than the 16 MiB one peer's frames may hold.
    let mut writers = Vec::new();
    for _ in 0..8 {
        let mut io = control
            .open_stream(
                farm.peer_id,
                StreamProtocol::new(atmosphere::wire::STREAM_PROTOCOL),
            )
            .await
            .expect("stream opens");
        writers.push(tokio::spawn(async move {
            let mut prefix = unsigned_varint::encode::usize_buffer();
            let prefix = unsigned_varint::encode::usize(4 << 20, &mut prefix).to_vec();
            let sent = async {
                io.write_all(&prefix).await?;
                for _ in 0..3 {
                    io.write_all(&vec![b'x'; 1 << 20]).await?;
                }
                io.flush().await
            };
            let _ = tokio::time::timeout(WAIT, sent).await;
            io
        }));
    }
    eventually("streams past the peer's share are closed", || async {
        metric(&farm, "atmosphere_forwards_total{result=\"frame_refused\"}").await >= 2
    })
    .await;
    assert!(
        metric(
            &farm,
            "atmosphere_budget_held{budget=\"stream_frame_bytes\"}"
        )
        .await
            <= 16 << 20,
        "one peer's frames hold at most its share"
    );
    // Meanwhile another node's streamed chat is served.
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", hub.http_addr))
        .json(&json!({"model": "farm/llama-expert", "stream": true,
            "messages": [{"role": "user", "content": "How do I care for my llama?"}]}))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 200);
    assert!(
        resp.text()
            .await
            .expect("body")
            .ends_with("data: [DONE]\n\n")
    );
    for w in writers {
        drop(w.await);
    }
    hub.shutdown().await;
    farm.shutdown().await;
}
