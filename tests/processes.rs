//! `atmosphere` processes on loopback. Three joined in a line: a capability
//! only the third offers is asked for at the first; the third is killed, its
//! route disappears, and it comes back when the third restarts. Three in a
//! star: two offer the same capability, the one serving is killed, and the
//! very next request is served by the other, long before any route expires.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use atmosphere::echo::{Echo, Flavour};
use serde_json::{Value, json};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_atmosphere");

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn write_config(
    dir: &Path,
    name: &str,
    http: u16,
    bootstrap: Option<&str>,
    backend: Option<std::net::SocketAddr>,
    ttl: &str,
) -> std::path::PathBuf {
    let mut text = format!(
        "[node]\nname = \"{name}\"\ndata_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n[embedder]\nthreads = 1\n[mesh]\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nmdns = false\nttl = \"{ttl}\"\n",
        dir.join(name).display()
    );
    if let Some(b) = bootstrap {
        text.push_str(&format!("bootstrap = [\"{b}\"]\n"));
    }
    if let Some(addr) = backend {
        text.push_str(&format!(
            "[[backend]]\nname = \"farm\"\nkind = \"openai\"\nurl = \"http://{addr}\"\n\n[[capability]]\nid = \"farm/llama-expert\"\ndescription = \"Expert on raising llamas and alpacas.\"\nexamples = [\"What should I feed my alpacas in winter?\", \"How do I care for my llama?\"]\nbackend = \"farm\"\nmodel = \"llama3.2\"\n"
        ));
    }
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("config");
    path
}

fn spawn(config: &Path) -> Proc {
    Proc(
        Command::new(BIN)
            .args([
                "start",
                "--config",
                config.to_str().expect("utf8"),
                "--log",
                "warn",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("atmosphere starts"),
    )
}

async fn get(port: u16, path: &str) -> Option<Value> {
    reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// Waits for a node's API, then returns its PeerId and dialable mesh address.
async fn ready(port: u16) -> (String, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = get(port, "/v1/mesh/peers").await
            && let Some(addr) = v["listen"]
                .as_array()
                .and_then(|a| a.first())
                .and_then(Value::as_str)
        {
            let id = v["peer_id"].as_str().expect("peer id").to_owned();
            return (id.clone(), format!("{addr}/p2p/{id}"));
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node on port {port} never became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn knows(port: u16, id: &str) -> bool {
    get(port, "/v1/mesh/capabilities")
        .await
        .and_then(|v| v["data"].as_array().cloned())
        .is_some_and(|d| d.iter().any(|c| c["id"] == id))
}

async fn ask(port: u16) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .json(&json!({"model": "auto", "messages": [{"role": "user", "content": "What should I feed my alpacas in winter?"}]}))
        .send()
        .await
        .expect("node 1 answers")
}

#[tokio::test]
async fn a_capability_on_the_third_process_answers_at_the_first_and_follows_its_life() {
    let backend = spawn_echo(Echo::new("third-backend", Flavour::Openai, &["llama3.2"])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let _n1 = spawn(&write_config(dir.path(), "one", p1, None, None, "5s"));
    let (_, addr1) = ready(p1).await;
    let _n2 = spawn(&write_config(
        dir.path(),
        "two",
        p2,
        Some(&addr1),
        None,
        "5s",
    ));
    let (_, addr2) = ready(p2).await;
    let config3 = write_config(dir.path(), "three", p3, Some(&addr2), Some(backend), "5s");
    let mut n3 = spawn(&config3);
    let (id3, _) = ready(p3).await;

    eventually("node 1 learns the third's capability", || {
        knows(p1, "farm/llama-expert")
    })
    .await;
    let resp = ask(p1).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-atmosphere-node"], id3.as_str());
    let v: Value = resp.json().await.expect("json");
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .expect("content")
            .starts_with("[third-backend]")
    );

    // Killed without a goodbye: the route expires within its TTL (5 s), and
    // meanwhile requests fail with a clear error, never hang.
    drop(n3);
    eventually("node 1 drops the dead node's route", || async {
        !knows(p1, "farm/llama-expert").await
    })
    .await;
    let resp = ask(p1).await;
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["error"]["code"], "no_capability_fits");

    // Restarted with the same data dir: same PeerId, routable again.
    n3 = spawn(&config3);
    let (id3_again, _) = ready(p3).await;
    assert_eq!(id3_again, id3);
    eventually("node 1 learns the capability again", || {
        knows(p1, "farm/llama-expert")
    })
    .await;
    let resp = ask(p1).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-atmosphere-node"], id3.as_str());
    drop(n3);
}

async fn capability_count(port: u16, id: &str) -> usize {
    get(port, "/v1/mesh/capabilities")
        .await
        .and_then(|v| v["data"].as_array().cloned())
        .map_or(0, |d| d.iter().filter(|c| c["id"] == id).count())
}

#[tokio::test]
async fn when_the_serving_node_dies_the_next_request_fails_over_at_once() {
    let second = spawn_echo(Echo::new("second-backend", Flavour::Openai, &["llama3.2"])).await;
    let third = spawn_echo(Echo::new("third-backend", Flavour::Openai, &["llama3.2"])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    // A long TTL: expiry cannot explain what follows. Node 1 tries the two
    // copies in a fixed order (`balance.strategy = "first"`), so that the
    // node that served first is tried first again once dead: by default the
    // survivor, once measured faster, may simply get every request.
    let config1 = write_config(dir.path(), "one", p1, None, None, "10m");
    let mut text = std::fs::read_to_string(&config1).expect("config");
    text.push_str("[balance]\nstrategy = \"first\"\n");
    std::fs::write(&config1, text).expect("config");
    let _n1 = spawn(&config1);
    let (_, addr1) = ready(p1).await;
    let n2 = spawn(&write_config(
        dir.path(),
        "two",
        p2,
        Some(&addr1),
        Some(second),
        "10m",
    ));
    let n3 = spawn(&write_config(
        dir.path(),
        "three",
        p3,
        Some(&addr1),
        Some(third),
        "10m",
    ));
    let (id2, _) = ready(p2).await;
    let (id3, _) = ready(p3).await;
    eventually("node 1 knows both offers", || async {
        capability_count(p1, "farm/llama-expert").await == 2
    })
    .await;

    let resp = ask(p1).await;
    assert_eq!(resp.status(), 200);
    let served = resp.headers()["x-atmosphere-node"]
        .to_str()
        .expect("header")
        .to_owned();
    let (victim, survivor, survivor_backend) = if served == id2 {
        (n2, (n3, id3), "[third-backend]")
    } else {
        assert_eq!(served, id3);
        (n3, (n2, id2), "[second-backend]")
    };

    // Killed: its route is still held (TTL 10 min), so the next request
    // tries it first, finds the connection gone and goes to the other node;
    // every request is answered, by the survivor.
    drop(victim);
    for _ in 0..20 {
        let resp = ask(p1).await;
        assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
        assert_eq!(resp.headers()["x-atmosphere-node"], survivor.1.as_str());
        let v: Value = resp.json().await.expect("json");
        assert!(
            v["choices"][0]["message"]["content"]
                .as_str()
                .expect("content")
                .starts_with(survivor_backend)
        );
    }
    // And the dead node was tried: a failover, not a fresh choice.
    let metrics = reqwest::get(format!("http://127.0.0.1:{p1}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.lines().any(
            |l| l.starts_with("atmosphere_forwards_total{result=\"failover\"} ")
                && !l.ends_with(" 0")
        ),
        "no failover counted: {}",
        metrics
            .lines()
            .filter(|l| l.contains("forwards"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    drop(survivor);
}
