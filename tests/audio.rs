//! Transcriptions: `POST /v1/audio/transcriptions` (OpenAI's form) or a
//! typed intent with the recording goes to an `audio/transcribe`
//! capability, never to a chat model, on this node or another one; what is not a form, not audio, or asks for what the node
//! does not serve is refused clearly.

mod common;

use atmosphere::config::{BackendKind, Config};
use atmosphere::echo::{Echo, Flavour};
use atmosphere::node::Node;
use reqwest::multipart::{Form, Part};
use serde_json::Value;

use common::{backend, capability, eventually, get_json, mesh_addr, mesh_config, start};

/// A WAV file's first bytes and some samples.
fn wav() -> Vec<u8> {
    let mut bytes = b"RIFF\x24\x08\0\0WAVEfmt \x10\0\0\0\x01\0\x01\0\x80\x3e\0\0".to_vec();
    bytes.extend(std::iter::repeat_n(0u8, 2048));
    bytes
}

fn form(model: &str, file: Vec<u8>, name: &str) -> Form {
    Form::new()
        .text("model", model.to_owned())
        .text("language", "en")
        .part(
            "file",
            Part::bytes(file)
                .file_name(name.to_owned())
                .mime_str("audio/wav")
                .expect("mime"),
        )
}

async fn transcribe(node: &Node, form: Form) -> (u16, Option<String>, Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{}/v1/audio/transcriptions", node.http_addr))
        .multipart(form)
        .send()
        .await
        .expect("post");
    let status = r.status().as_u16();
    let served_by = r
        .headers()
        .get("x-atmosphere-node")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, served_by, r.json().await.expect("json"))
}

/// A node with a chat model and a transcriber, each on its own backend.
async fn ears(config: &mut Config) {
    let ear = common::spawn_echo(Echo::new("ear", Flavour::Openai, &["whisper-small"])).await;
    let chat = common::spawn_echo(Echo::new("chatty", Flavour::Openai, &["chatty"])).await;
    config.backends = vec![
        backend("ear", BackendKind::Openai, ear, false),
        backend("chatty", BackendKind::Openai, chat, false),
    ];
    let mut whisper = capability(
        "speech/whisper",
        "ear",
        "whisper-small",
        "Turns speech into text.",
        &[],
    );
    whisper.kind = "audio/transcribe".parse().expect("kind");
    config.capabilities = vec![
        whisper,
        capability(
            "llm/chatty",
            "chatty",
            "chatty",
            "Talks about recordings and transcriptions of speech.",
            &[
                "Transcribe this recording.",
                "What did they say in the audio?",
            ],
        ),
    ];
}

#[tokio::test]
async fn a_transcription_goes_to_the_transcriber_here_and_across_the_mesh() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().expect("dir")).collect();
    let mut a = mesh_config(Vec::new(), Vec::new(), dirs[0].path(), Vec::new());
    ears(&mut a).await;
    let home = start(a).await;
    let b = mesh_config(
        Vec::new(),
        Vec::new(),
        dirs[1].path(),
        vec![mesh_addr(&home).await],
    );
    let hub = start(b).await;
    let home_id = home.peer_id.to_base58();

    let (status, node, body) = transcribe(&home, form("auto", wav(), "clip.wav")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(node.as_deref(), Some(home_id.as_str()));
    assert_eq!(
        body["text"],
        format!(
            "[ear] model=whisper-small heard {} bytes of clip.wav (audio/wav)",
            wav().len()
        )
    );
    assert_eq!(
        body["language"], "en",
        "the form's other fields reach the backend"
    );

    eventually("the hub knows the transcriber", || async {
        get_json(&hub, "/v1/models").await["data"]
            .as_array()
            .is_some_and(|d| d.iter().any(|m| m["id"] == "speech/whisper"))
    })
    .await;
    for model in ["auto", "speech/whisper"] {
        let (status, node, body) = transcribe(&hub, form(model, wav(), "clip.wav")).await;
        assert_eq!(status, 200, "{model}: {body}");
        assert_eq!(node.as_deref(), Some(home_id.as_str()), "{model}");
        assert!(
            body["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("[ear]")),
            "{body}"
        );
    }

    // A recording of several megabytes crosses as an upload, whole.
    let mut long = wav();
    long.resize(3_000_000, 7);
    let (status, node, body) = transcribe(&hub, form("auto", long, "long.wav")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(node.as_deref(), Some(home_id.as_str()));
    assert_eq!(
        body["text"],
        "[ear] model=whisper-small heard 3000000 bytes of long.wav (audio/wav)"
    );
    assert_eq!(
        common::metric(&home, "atmosphere_forwards_total{result=\"served_upload\"}").await,
        1
    );

    // The same recording as a typed intent, here and from the other node.
    let recording = {
        use base64::Engine;
        format!(
            "data:audio/wav;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(wav())
        )
    };
    for node in [&home, &hub] {
        let (status, answer) = common::post_json(
            node,
            "/v1/intent",
            serde_json::json!({"type": "audio/*", "data": {"audio": recording, "language": "en"}}),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["node"], home_id.as_str(), "{answer}");
        assert_eq!(
            answer["result"]["text"],
            format!(
                "[ear] model=whisper-small heard {} bytes of audio.wav (audio/wav)",
                wav().len()
            )
        );
        assert_eq!(answer["result"]["language"], "en", "{answer}");
    }
    let not_audio = "data:audio/wav;base64,aGVsbG8sIG5vdCBhdWRpbw==";
    for (audio, code) in [
        (not_audio, "unsupported_audio_format"),
        ("clip.wav", "invalid_request_error"),
    ] {
        let (status, e) = common::post_json(
            &hub,
            "/v1/intent",
            serde_json::json!({"type": "audio/transcribe", "data": {"audio": audio}}),
        )
        .await;
        assert_eq!(status, 400, "{e}");
        assert_eq!(e["error"]["param"], "data.audio", "{e}");
        assert!(
            e["error"]["code"] == code || e["error"]["type"] == code,
            "{e}"
        );
    }

    // Refusals.
    let (status, _, e) = transcribe(&hub, form("llm/chatty", wav(), "clip.wav")).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("wrong_capability_kind")),
        "{e}"
    );
    let (status, _, e) =
        transcribe(&hub, form("auto", b"hello, not audio".to_vec(), "x.wav")).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("unsupported_audio_format")),
        "{e}"
    );
    let (status, _, e) = transcribe(&hub, form("auto", Vec::new(), "x.wav")).await;
    assert_eq!(
        (status, e["error"]["param"].as_str()),
        (400, Some("file")),
        "{e}"
    );
    let (status, _, e) = transcribe(&hub, Form::new().text("model", "auto")).await;
    assert_eq!(
        (status, e["error"]["param"].as_str()),
        (400, Some("file")),
        "{e}"
    );
    let srt = form("auto", wav(), "clip.wav").text("response_format", "srt");
    let (status, _, e) = transcribe(&hub, srt).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("unsupported_response_format")),
        "{e}"
    );
    let (status, e) = common::post_json(
        &hub,
        "/v1/audio/transcriptions",
        serde_json::json!({"model": "auto", "file": "clip.wav"}),
    )
    .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("invalid_content_type")),
        "{e}"
    );

    // A node that knows no transcriber says so.
    let dir = tempfile::tempdir().expect("dir");
    let alone = start(common::config(Vec::new(), Vec::new(), dir.path())).await;
    let (status, _, e) = transcribe(&alone, form("auto", wav(), "clip.wav")).await;
    assert_eq!(status, 404, "{e}");
}
