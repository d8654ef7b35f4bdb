//! Large bodies across the mesh: a chat carrying a photo of several MB (more
//! than one forwarded message may hold) reaches the vision capability on
//! another node whole, in parts over `/atmosphere/upload/1.0.0`, answered
//! whole or streamed; a node whose own limit is smaller refuses it before
//! the body is sent, and says why.

mod common;

use atmosphere::config::{BackendKind, Config};
use atmosphere::echo::{Echo, Flavour};
use atmosphere::node::Node;
use base64::Engine;
use serde_json::{Value, json};
use sha2::Digest;

use common::{animal_eye, backend, eventually, mesh_addr, mesh_config, start};

/// A PNG's signature followed by `len` pseudo-random bytes (what the node
/// checks of an image is its first bytes and its base64).
fn photo(len: usize) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    bytes.extend((0..len).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u8
    }));
    bytes
}

fn data_url(photo: &[u8]) -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(photo)
    )
}

/// How the echo backend shows a long string it received.
fn echoed(s: &str) -> String {
    let hex: String = sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("[{} bytes, sha256 {hex}]", s.len())
}

fn chat(url: &str, stream: bool) -> Value {
    json!({"model": "auto", "stream": stream, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Which breed is this llama?"},
        {"type": "image_url", "image_url": {"url": url}}
    ]}]})
}

/// A node with the vision capability (its HTTP limits set by `limits`), and
/// a node with none that knows it.
async fn pair(dirs: &[tempfile::TempDir], limits: impl FnOnce(&mut Config)) -> (Node, Node) {
    let echo = common::spawn_echo(Echo::new("gpu", Flavour::Openai, &["eye"])).await;
    let mut config = mesh_config(
        vec![backend("gpu", BackendKind::Openai, echo, false)],
        vec![animal_eye()],
        dirs[0].path(),
        Vec::new(),
    );
    limits(&mut config);
    let eye = start(config).await;
    let desk = start(mesh_config(
        Vec::new(),
        Vec::new(),
        dirs[1].path(),
        vec![mesh_addr(&eye).await],
    ))
    .await;
    eventually("the desk knows the vision capability", || async {
        common::get_json(&desk, "/v1/mesh/capabilities").await["data"]
            .as_array()
            .is_some_and(|d| d.iter().any(|c| c["id"] == "farm/animal-eye"))
    })
    .await;
    (eye, desk)
}

async fn post(node: &Node, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", node.http_addr))
        .json(body)
        .send()
        .await
        .expect("chat")
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn a_photo_of_several_megabytes_crosses_the_mesh_whole() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().expect("dir")).collect();
    let (eye, desk) = pair(&dirs, |_| {}).await;
    // 6 MB of photo: 8 MB of JSON, over the 5 MiB of one forwarded message.
    let url = data_url(&photo(6_000_000));
    assert!(url.len() > 5 * 1024 * 1024);

    let r = post(&desk, &chat(&url, false)).await;
    let at = header(&r, "x-atmosphere-node");
    let status = r.status().as_u16();
    let body: Value = r.json().await.expect("json");
    assert_eq!(status, 200, "{body}");
    assert_eq!(at, eye.peer_id.to_base58(), "answered where the model sees");
    let seen = &body["x_echo_request"]["messages"][0]["content"][1]["image_url"]["url"];
    assert_eq!(
        seen,
        &json!(echoed(&url)),
        "the backend got the photo whole"
    );
    assert_eq!(body["x_echo_request"]["model"], "eye");
    assert_eq!(
        common::metric(&eye, "atmosphere_forwards_total{result=\"served_upload\"}").await,
        1,
        "it came in parts"
    );

    // Streamed: the events come back as they are made, then [DONE].
    let r = post(&desk, &chat(&url, true)).await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(header(&r, "x-atmosphere-node"), eye.peer_id.to_base58());
    let text = r.text().await.expect("sse");
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{text}");
    let said: String = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|e| {
            e["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert!(said.starts_with("[gpu] model=eye"), "{said}");

    // Asked on the node that sees, the same photo reaches its backend whole.
    let r = post(&eye, &chat(&url, false)).await;
    let body: Value = r.json().await.expect("json");
    let seen = &body["x_echo_request"]["messages"][0]["content"][1]["image_url"]["url"];
    assert_eq!(seen, &json!(echoed(&url)), "{body}");
}

#[tokio::test]
async fn a_node_refuses_an_upload_over_its_limit_before_the_body() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().expect("dir")).collect();
    let (eye, desk) = pair(&dirs, |c| c.http.max_body_bytes = 2 * 1024 * 1024).await;
    let url = data_url(&photo(3_000_000));
    let r = post(&desk, &chat(&url, false)).await;
    let status = r.status().as_u16();
    let body: Value = r.json().await.expect("json");
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "request_too_large", "{body}");
    assert_eq!(
        common::metric(&eye, "atmosphere_forwards_total{result=\"served_upload\"}").await,
        1
    );
    // A body within its limit still goes.
    let url = data_url(&photo(1_200_000));
    let r = post(&desk, &chat(&url, false)).await;
    assert_eq!(r.status().as_u16(), 200);
}
