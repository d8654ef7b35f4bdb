//! The `atmosphere` binary as a user runs it.

mod common;

use std::process::{Command, Output};

use atmosphere::config::BackendKind;
use atmosphere::echo::{Echo, Flavour};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_atmosphere");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn id_is_created_once_and_stable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf8");
    let first = run(&["id", "--data-dir", d]);
    assert!(first.status.success(), "{}", stderr(&first));
    let id = stdout(&first).trim().to_owned();
    assert!(id.starts_with("12D3KooW"), "{id}");
    let again = run(&["id", "--data-dir", d]);
    assert_eq!(stdout(&again).trim(), id);
}

#[test]
fn missing_model_names_the_file_and_the_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n[embedder]\nmodel_dir = \"{0}/nothing\"\nruntime = \"{0}/nothing/libonnxruntime.so\"\n",
            dir.path().display()
        ),
    )
    .expect("write");
    let out = Command::new(BIN)
        .args([
            "start",
            "--config",
            config.to_str().expect("utf8"),
            "--data-dir",
            dir.path().to_str().expect("utf8"),
        ])
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = stderr(&out);
    let last = err.lines().last().expect("a message");
    assert!(
        last.contains("libonnxruntime.so") && last.contains("scripts/fetch-model.sh"),
        "{err}"
    );
}

#[test]
fn bad_config_is_one_clear_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "[routing]\nthreshold = \"high\"\n").expect("write");
    let out = run(&["start", "--config", config.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with("atmosphere: invalid config"), "{err}");
    assert!(err.contains("threshold"), "{err}");
    let out = run(&["start", "--config", "/nonexistent/node.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot read config /nonexistent/node.toml"));
}

#[test]
fn client_commands_explain_an_unreachable_node() {
    for command in ["capabilities", "health"] {
        let out = run(&[command, "--node", "http://127.0.0.1:9"]);
        assert_eq!(out.status.code(), Some(1), "{command}");
        assert!(
            stderr(&out).contains("cannot reach the node at http://127.0.0.1:9"),
            "{command}: {}",
            stderr(&out)
        );
    }
}

#[tokio::test]
async fn route_and_capabilities_against_a_running_node() {
    let addr = spawn_echo(Echo::new("echo", Flavour::Openai, &["m"])).await;
    let second = spawn_echo(Echo::new("echo-2", Flavour::Openai, &["m"])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // The llama expert runs on two backends: they share its requests.
    let mut caps = farm_capabilities("local");
    caps[0].backend.push("second".into());
    let node = start(config(
        vec![
            backend("local", BackendKind::Openai, addr, false),
            backend("second", BackendKind::Openai, second, false),
        ],
        caps,
        dir.path(),
    ))
    .await;
    let url = format!("http://{}", node.http_addr);
    let out = tokio::task::spawn_blocking({
        let url = url.clone();
        move || run(&["route", "How much hay does a llama eat?", "--node", &url])
    })
    .await
    .expect("join");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("route: farm/llama-expert (matched"),
        "{text}"
    );
    assert!(
        text.contains("farm/coder"),
        "ranked list shows the others: {text}"
    );
    assert!(
        text.contains("shared by 2 providers (least_cost"),
        "the group is shown: {text}"
    );
    let group = text.split("shared by").nth(1).unwrap_or_default();
    for backend in [" local ", " second "] {
        assert!(
            group
                .lines()
                .any(|l| l.contains("farm/llama-expert") && l.contains(backend)),
            "a line per backend: {text}"
        );
    }
    let out = tokio::task::spawn_blocking({
        let url = url.clone();
        move || run(&["capabilities", "--node", &url, "--json"])
    })
    .await
    .expect("join");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["data"].as_array().expect("data").len(), 2);
    let out = tokio::task::spawn_blocking(move || run(&["health", "--node", &url]))
        .await
        .expect("join");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!("ok: test-node ({})", node.peer_id)),
        "{text}"
    );
    node.shutdown().await;
}
