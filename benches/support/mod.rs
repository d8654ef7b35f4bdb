//! Helpers shared by the benchmarks that run node processes.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub struct Killed(pub Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("exe");
    let release = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/release");
    let path = release.join(name);
    assert!(
        path.exists(),
        "{} missing: run `cargo build --release --bins` first",
        path.display()
    );
    path
}

pub fn pct(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i].as_secs_f64() * 1e3
}

/// User + system CPU time of a process so far.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    // After ')': state, then ppid (field 4) onwards; utime and stime are fields 14, 15.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| {
        f.get(n - 3)
            .and_then(|x| x.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let ticks = field(14) + field(15);
    Duration::from_secs_f64(ticks as f64 / 100.0)
}

pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_owned)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

pub async fn wait_ready(client: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} not ready");
}

/// Sends the same one-message chat request (`model`) from `clients` concurrent
/// clients, back to back, `total` in all; returns each request's latency.
pub async fn chat_load(
    client: &reqwest::Client,
    url: &str,
    model: &str,
    clients: usize,
    total: usize,
) -> Vec<Duration> {
    let body = serde_json::to_vec(&json!({
        "model": model,
        "messages": [{"role": "user", "content": "What should I feed my alpacas in winter?"}]
    }))
    .expect("json");
    let per = total / clients;
    let tasks = (0..clients).map(|_| {
        let client = client.clone();
        let url = url.to_owned();
        let body = body.clone();
        async move {
            let mut out = Vec::with_capacity(per);
            for _ in 0..per {
                let t = Instant::now();
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("send");
                assert!(r.status().is_success(), "{}", r.status());
                r.bytes().await.expect("body");
                out.push(t.elapsed());
            }
            out
        }
    });
    futures::future::join_all(tasks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Starts `echo-backend` on loopback `port`, serving `llama3.2`.
pub fn echo_backend(port: u16) -> Killed {
    echo_backend_with(port, &[])
}

/// Starts `echo-backend` on loopback `port`, serving `llama3.2`, with more
/// arguments (`--latency-ms`, `--slots`, ...).
pub fn echo_backend_with(port: u16, more: &[&str]) -> Killed {
    Killed(
        std::process::Command::new(bin("echo-backend"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--model",
                "llama3.2",
            ])
            .args(more)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("echo-backend"),
    )
}

/// Starts `atmosphere start --config <config>` (warnings to stderr).
pub fn atmosphere(config: &std::path::Path) -> Killed {
    Killed(
        std::process::Command::new(bin("atmosphere"))
            .args([
                "start",
                "--config",
                config.to_str().expect("utf8"),
                "--log",
                // ATMOSPHERE_BENCH_LOG: another filter, to see why.
                &std::env::var("ATMOSPHERE_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("atmosphere"),
    )
}

/// Writes the config of a standalone node on `node_port` with the two farm
/// capabilities on an echo backend at `backend_port`; `http` lines go into
/// its `[http]` section. Returns the config's path.
pub fn farm_config(
    dir: &std::path::Path,
    node_port: u16,
    backend_port: u16,
    http: &str,
) -> PathBuf {
    std::fs::create_dir_all(dir).expect("tmp");
    let config = dir.join("node.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[node]
name = "bench"
data_dir = "{dir}"
[http]
listen = "127.0.0.1:{node_port}"
{http}
[embedder]
threads = 2
[mesh]
enabled = false
[[backend]]
name = "echo"
kind = "openai"
url = "http://127.0.0.1:{backend_port}"
[[capability]]
id = "farm/llama-expert"
description = "Expert on raising llamas and alpacas."
examples = ["What should I feed my alpacas in winter?", "How do I care for my llama?"]
backend = "echo"
model = "llama3.2"
[[capability]]
id = "farm/coder"
description = "Writes and fixes code."
examples = ["Write a Rust function that reverses a string."]
backend = "echo"
model = "llama3.2"
"#,
            dir = dir.display()
        ),
    )
    .expect("config");
    config
}

/// Writes the config of a mesh node `name` on loopback (HTTP on `http`, an
/// ephemeral TCP mesh port, no mDNS); `extra` goes into its `[mesh]` section
/// and may add sections after it. Returns the config's path.
pub fn node_config(
    dir: &std::path::Path,
    name: &str,
    http: u16,
    extra: &str,
) -> std::path::PathBuf {
    let text = format!(
        r#"
[node]
name = "{name}"
data_dir = "{dir}/{name}"
[http]
listen = "127.0.0.1:{http}"
[embedder]
threads = 1
[mesh]
listen = ["/ip4/127.0.0.1/tcp/0"]
mdns = false
{extra}
"#,
        dir = dir.display()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("config");
    path
}

/// Two mesh nodes on loopback: `a` offering one capability on the echo
/// backend at `backend_port` (`capability`: its `[[capability]]` lines but
/// `backend` and `model`), and `b` bootstrapped from `a`, returned once `b`
/// has learnt that capability. `mesh` goes into both nodes' `[mesh]`
/// section. The per-peer rate limit (100/s by default) is lifted on `a`: it
/// is not what the benches measure, and one client sends faster than that.
pub async fn forwarding_pair(
    client: &reqwest::Client,
    dir: &std::path::Path,
    backend_port: u16,
    mesh: &str,
    capability: &str,
) -> (Killed, u16, Killed, u16) {
    let (pa, pb) = (free_port(), free_port());
    let a = atmosphere(&node_config(
        dir,
        "a",
        pa,
        &format!(
            r#"{mesh}
peer_rate = 100000
[[backend]]
name = "echo"
kind = "openai"
url = "http://127.0.0.1:{backend_port}"
[[capability]]
{capability}
backend = "echo"
model = "llama3.2"
"#
        ),
    ));
    let addr_a = mesh_addr(client, pa).await;
    let b = atmosphere(&node_config(
        dir,
        "b",
        pb,
        &format!("{mesh}\nbootstrap = [\"{addr_a}\"]"),
    ));
    wait_for_capability(client, pb).await;
    (a, pa, b, pb)
}

/// The mesh address (`.../p2p/<id>`) of the node whose API is on `port`,
/// once that API answers.
pub async fn mesh_addr(client: &reqwest::Client, port: u16) -> String {
    wait_ready(client, &format!("http://127.0.0.1:{port}/health")).await;
    let peers = get(client, &format!("http://127.0.0.1:{port}/v1/mesh/peers"))
        .await
        .expect("peers");
    format!(
        "{}/p2p/{}",
        peers["listen"][0].as_str().expect("listen"),
        peers["peer_id"].as_str().expect("peer id")
    )
}

/// Waits (30 s at most) until the node whose API is on `port` answers and
/// has learnt a capability of another node.
pub async fn wait_for_capability(client: &reqwest::Client, port: u16) {
    wait_ready(client, &format!("http://127.0.0.1:{port}/health")).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = format!("http://127.0.0.1:{port}/v1/mesh/capabilities");
    loop {
        let caps = get(client, &url).await;
        if caps.is_some_and(|c| c["data"].as_array().is_some_and(|d| !d.is_empty())) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the node never learnt a capability"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET url` as JSON; `None` on any failure.
pub async fn get(client: &reqwest::Client, url: &str) -> Option<Value> {
    client.get(url).send().await.ok()?.json().await.ok()
}

/// A chat capability of this node with one vector, as the benches that
/// build tables without a catalog need it.
pub fn local_entry(id: &str, vector: Vec<f32>) -> atmosphere::routing::Entry {
    use atmosphere::capability::{Capability, Kind, Source};
    atmosphere::routing::Entry {
        capability: std::sync::Arc::new(Capability::new(
            id.parse().expect("id"),
            Kind::chat(),
            Source::Config,
            "b",
            "m",
        )),
        node: String::new(),
        local: true,
        available: true,
        vector,
        prototypes: Vec::new(),
        reference: None,
        trust: atmosphere::routing::Trust::Local,
    }
}

/// The Python with the `mcp` package: `ATMOSPHERE_PYTHON`, else the venv
/// scripts/test.sh makes, else `python3`.
pub fn python() -> String {
    std::env::var("ATMOSPHERE_PYTHON").unwrap_or_else(|_| {
        let venv = std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
            .join(".cache/atmosphere/venv/bin/python");
        if venv.exists() {
            venv.display().to_string()
        } else {
            "python3".into()
        }
    })
}

/// The test MCP server's script (`tests/mcp/tools_server.py`).
pub fn script() -> String {
    format!("{}/tests/mcp/tools_server.py", env!("CARGO_MANIFEST_DIR"))
}

/// Prints a markdown table of the ways timed (p50, p90, p99 in ms) and
/// returns those figures, in order.
pub fn percentile_table(ways: &mut [(&str, &mut Vec<Duration>)]) -> Vec<[f64; 3]> {
    println!("| way | p50 ms | p90 ms | p99 ms |\n|---|---|---|---|");
    ways.iter_mut()
        .map(|(name, samples)| {
            let p = [pct(samples, 0.5), pct(samples, 0.9), pct(samples, 0.99)];
            println!("| {name} | {:.3} | {:.3} | {:.3} |", p[0], p[1], p[2]);
            p
        })
        .collect()
}
