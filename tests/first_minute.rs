//! The first minute: a node started without a config finds the model servers
//! running on this machine and serves their models.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use atmosphere::backend::local::{WellKnown, probe};
use atmosphere::config::BackendKind;
use atmosphere::echo::{Echo, Flavour};
use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn a_found_server_becomes_a_discovering_backend_and_its_models_answer() {
    let ollama = spawn_echo(Echo::new(
        "ollama",
        Flavour::Ollama,
        &["llama3.2", "qwen2.5-coder"],
    ))
    .await;
    let nobody = dead_addr().await;
    let candidates = vec![
        WellKnown {
            name: "ollama",
            label: "Ollama",
            kind: BackendKind::Ollama,
            url: format!("http://{ollama}"),
        },
        WellKnown {
            name: "lmstudio",
            label: "LM Studio",
            kind: BackendKind::Openai,
            url: format!("http://{nobody}"),
        },
        WellKnown {
            name: "vllm",
            label: "vLLM",
            kind: BackendKind::Openai,
            url: "http://127.0.0.1:8000".into(),
        },
    ];
    // Port 8000 is this node's own: not probed, whatever listens there.
    let found = probe(candidates, Some(8000)).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].name, "ollama");
    assert!(found[0].discover);

    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(config(found, Vec::new(), dir.path())).await;
    let ids: Vec<String> = get_json(&node, "/v1/models").await["data"]
        .as_array()
        .expect("models")
        .iter()
        .filter_map(|m| m["id"].as_str().map(str::to_owned))
        .collect();
    assert!(ids.iter().any(|i| i == "ollama/qwen2.5-coder"), "{ids:?}");
    // Models known by name only are general: `auto` never refuses them.
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", node.http_addr))
        .json(&json!({"model": "auto", "messages": [{"role": "user", "content": "What is the capital of France?"}]}))
        .send()
        .await
        .expect("chat");
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["x-atmosphere-route"]
            .to_str()
            .expect("header")
            .starts_with("ollama/")
    );
    let v: Value = resp.json().await.expect("json");
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .is_some_and(|c| c.starts_with("[ollama]"))
    );
    node.shutdown().await;
}

/// Runs `atmosphere start` with these arguments until it logs that it started,
/// and returns its log.
fn start_log(extra: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_atmosphere"))
        .args([
            "start",
            "--http",
            "127.0.0.1:0",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-mdns",
        ])
        .args(["--data-dir", dir.path().to_str().expect("utf8")])
        .args(extra)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("starts");
    let stderr = child.stderr.take().expect("stderr");
    // A start logs a few dozen lines; the reader waits when this many queue.
    let (tx, rx) = std::sync::mpsc::sync_channel(256);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + WAIT;
    let mut log = String::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left.min(Duration::from_millis(200))) {
            Ok(line) => {
                log.push_str(&line);
                log.push('\n');
                if line.contains("node started") {
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(log.contains("node started"), "{log}");
    log
}

#[test]
fn without_a_config_each_well_known_server_gets_one_line() {
    let log = start_log(&[]);
    for label in [
        "Ollama",
        "LlamaFarm",
        "llama.cpp server",
        "LM Studio",
        "vLLM",
    ] {
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.contains(&format!("backend=\"{label}\""))
                    || l.contains(&format!("backend={label} "))
            })
            .collect();
        assert_eq!(lines.len(), 1, "{label}: {log}");
        // What is not there says how to add it.
        assert!(
            lines[0].contains("found a local model server") || lines[0].contains("[[backend]]"),
            "{}",
            lines[0]
        );
    }
    let quiet = start_log(&["--no-discover"]);
    assert!(!quiet.contains("[[backend]]"), "{quiet}");
}
