//! Requests routed by what they carry: a chat with an image goes only to a
//! capability that takes images (a vision model, or a chat model declared
//! with `inputs = ["text", "image"]`), ranked by the meaning of its text;
//! the same words without the image go where text goes; what is not an
//! image, and links into private networks, refused. On one node and across
//! the mesh.

mod common;

use atmosphere::config::{BackendKind, CapabilityConfig};
use atmosphere::echo::{Echo, Flavour};
use atmosphere::node::Node;
use serde_json::{Value, json};

use common::{animal_eye, backend, capability, eventually, mesh_addr, mesh_config, start};

/// A chat with `text`, and an image when `image`.
fn chat(model: &str, text: &str, image: bool) -> Value {
    let content = if image {
        json!([
            {"type": "text", "text": text},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
        ])
    } else {
        json!(text)
    };
    json!({"model": model, "messages": [{"role": "user", "content": content}]})
}

/// Sends a chat: status, the capability and node that answered (headers),
/// the body.
async fn ask(node: &Node, body: Value) -> (u16, String, String, Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", node.http_addr))
        .json(&body)
        .send()
        .await
        .expect("chat");
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (route, at) = (header("x-atmosphere-route"), header("x-atmosphere-node"));
    (
        r.status().as_u16(),
        route,
        at,
        r.json().await.expect("json"),
    )
}

fn llama_expert() -> CapabilityConfig {
    capability(
        "farm/llama-expert",
        "gpu",
        "llama-14b",
        "Expert on raising llamas and alpacas: feeding, shearing, health, shelter.",
        &[
            "How much hay does a llama eat?",
            "Can alpacas live alone?",
            "When should I shear my alpacas?",
            "My llama is limping, what should I do?",
        ],
    )
}

#[tokio::test]
async fn an_image_goes_to_a_capability_that_sees_and_text_does_not() {
    let dir = tempfile::tempdir().expect("dir");
    let echo = common::spawn_echo(Echo::new("gpu", Flavour::Openai, &["llama-14b", "eye"])).await;
    let node = start(common::config(
        vec![backend("gpu", BackendKind::Openai, echo, false)],
        vec![llama_expert(), animal_eye()],
        dir.path(),
    ))
    .await;

    let question = "Is this llama healthy?";
    let (status, route, _, body) = ask(&node, chat("auto", question, true)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        route, "farm/animal-eye",
        "an image goes where images are taken"
    );
    let (status, route, _, body) = ask(&node, chat("auto", question, false)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        route, "farm/llama-expert",
        "the same words alone go to text"
    );

    // The explanation says why the text model was passed over.
    let (status, explained) =
        common::post_json(&node, "/v1/route", chat("auto", question, true)).await;
    assert_eq!(status, 200, "{explained}");
    let expert = explained["decision"]["candidates"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == "farm/llama-expert"))
        .cloned()
        .expect("the text model is a candidate");
    assert_eq!(expert["eligible"], false, "{expert}");
    assert!(
        expert["note"]
            .as_str()
            .is_some_and(|n| n.contains("inputs")),
        "{expert}"
    );

    // Named: a text-only model refuses an image clearly; a vision model
    // named for text alone is sent it (the client chose it).
    let (status, _, _, body) = ask(&node, chat("farm/llama-expert", question, true)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "unsupported_input", "{body}");
    assert_eq!(body["error"]["param"], "messages");
    let (status, route, _, body) = ask(&node, chat("farm/animal-eye", question, false)).await;
    assert_eq!((status, route.as_str()), (200, "farm/animal-eye"), "{body}");

    // What is not an image, and links into the operator's network, are
    // refused before any model sees them.
    for (url, code) in [
        ("data:image/png;base64,aGVsbG8gbGxhbWFz", "invalid_image"),
        (
            "http://169.254.169.254/latest/meta-data/",
            "image_link_not_allowed",
        ),
        ("http://127.0.0.1:9000/v1/models", "image_link_not_allowed"),
        ("file:///etc/passwd", "invalid_image"),
    ] {
        let body = json!({"model": "auto", "messages": [{"role": "user", "content": [
            {"type": "text", "text": question},
            {"type": "image_url", "image_url": {"url": url}}
        ]}]});
        let (status, _, _, body) = ask(&node, body).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (400, &json!(code)),
            "{url}: {body}"
        );
        assert_eq!(
            body["error"]["param"],
            "messages[0].content[1].image_url.url"
        );
    }
}

#[tokio::test]
async fn a_chat_model_declared_to_see_takes_images_across_the_mesh() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().expect("dir")).collect();
    // The seeing node: a chat model declared to take images.
    let echo = common::spawn_echo(Echo::new("vlm", Flavour::Openai, &["llava"])).await;
    let mut seeing = capability(
        "farm/herd-camera-reader",
        "vlm",
        "llava",
        "Looks at photos of the herd and says what it sees: animals, breeds, injuries.",
        &[
            "What is wrong with the llama in this picture?",
            "How many alpacas are in this photo?",
            "Does this llama look healthy?",
        ],
    );
    seeing.inputs = Some(serde_json::from_value(json!(["text", "image"])).expect("inputs"));
    let eye = start(mesh_config(
        vec![backend("vlm", BackendKind::Openai, echo, false)],
        vec![seeing],
        dirs[0].path(),
        Vec::new(),
    ))
    .await;
    // The asking node: text only.
    let echo = common::spawn_echo(Echo::new("gpu", Flavour::Openai, &["llama-14b"])).await;
    let mut config = mesh_config(
        vec![backend("gpu", BackendKind::Openai, echo, false)],
        vec![llama_expert()],
        dirs[1].path(),
        vec![mesh_addr(&eye).await],
    );
    // This node lets its clients link images on its own network; the
    // seeing node does not, and checks again what it is sent.
    config.http.private_image_links = true;
    let desk = start(config).await;
    eventually("the seeing capability is known with its inputs", || async {
        common::get_json(&desk, "/v1/mesh/capabilities").await["data"]
            .as_array()
            .is_some_and(|d| {
                d.iter().any(|c| {
                    c["id"] == "farm/herd-camera-reader" && c["inputs"] == json!(["text", "image"])
                })
            })
    })
    .await;

    // Words that fit the text model better: with a photo, they still go
    // where photos are seen; without, to the text model here.
    let question = "How much hay should this llama eat in winter?";
    let (status, route, at, body) = ask(&desk, chat("auto", question, true)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(route, "farm/herd-camera-reader");
    assert_eq!(at, eye.peer_id.to_base58(), "answered where the model sees");
    let (status, route, at, body) = ask(&desk, chat("auto", question, false)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (route.as_str(), at),
        ("farm/llama-expert", desk.peer_id.to_base58())
    );
    // Audio is taken by neither: refused, saying so.
    let voice = json!({"model": "auto", "messages": [{"role": "user", "content": [
        {"type": "text", "text": question},
        {"type": "input_audio", "input_audio": {"data": "UklGRiQAAABXQVZFZm10IA==", "format": "wav"}}
    ]}]});
    let (status, _, _, body) = ask(&desk, voice).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "no_capability_takes_input", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("takes audio")),
        "{body}"
    );

    let linked = json!({"model": "auto", "messages": [{"role": "user", "content": [
        {"type": "text", "text": question},
        {"type": "image_url", "image_url": {"url": "http://192.168.1.20/snapshot.jpg"}}
    ]}]});
    let (status, _, _, body) = ask(&desk, linked).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "image_link_not_allowed", "{body}");
}
