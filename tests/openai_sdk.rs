//! A running node driven over a real socket by the official `openai` Python
//! package (installed by scripts/test.sh; `ATMOSPHERE_PYTHON` names the
//! interpreter that has it).

mod common;

use atmosphere::config::BackendKind;
use atmosphere::echo::{Echo, Flavour};
use serde_json::Value;

use common::*;

#[tokio::test]
async fn official_openai_sdk_works_against_a_node() {
    let addr = spawn_echo(Echo::new("echo", Flavour::Openai, &["llama3.2"])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut whisper = capability(
        "speech/whisper",
        "local",
        "whisper-small",
        "Speech to text.",
        &[],
    );
    whisper.kind = "audio/transcribe".parse().expect("kind");
    let mut capabilities = farm_capabilities("local");
    capabilities.push(whisper);
    let node = start(config(
        vec![backend("local", BackendKind::Openai, addr, false)],
        capabilities,
        dir.path(),
    ))
    .await;
    let base = format!("http://{}", node.http_addr);
    let v = run_python(
        "sdk/openai_client.py",
        &[&base],
        std::time::Duration::from_secs(120),
        "the openai package",
    )
    .await;

    let models: Vec<&str> = v["models"]
        .as_array()
        .expect("models")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        models.contains(&"auto") && models.contains(&"farm/llama-expert"),
        "{models:?}"
    );

    assert_eq!(v["chat"]["route"], "farm/llama-expert");
    assert_eq!(v["chat"]["node"], node.peer_id.to_base58());
    assert_eq!(v["chat"]["finish_reason"], "stop");
    assert!(
        v["chat"]["content"]
            .as_str()
            .expect("content")
            .contains("alpacas in winter")
    );

    assert!(
        v["stream"]["chunks"].as_u64().expect("chunks") > 3,
        "{}",
        v["stream"]
    );
    assert!(
        v["stream"]["content"]
            .as_str()
            .expect("content")
            .contains("model=qwen2.5-coder")
    );

    assert_eq!(v["embeddings"]["count"], 2);
    assert_eq!(v["embeddings"]["dim"], 384);

    assert_eq!(
        v["transcription"]["text"],
        format!(
            "[echo] model=whisper-small heard {} bytes of clip.wav (audio/wav)",
            v["transcription"]["bytes"]
        )
    );

    assert_eq!(v["error"]["status"], 404);
    assert_eq!(v["error"]["code"], "model_not_found");
    node.shutdown().await;
}
