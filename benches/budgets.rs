//! Budgets under attack (README "Budgets"), against real node processes.
//!
//!   cargo build --release --bins && cargo bench --bench budgets
//!
//! 1. Honest chats through a node, quiet and while each attack of the
//!    `chaos` binary runs against it: their count, failures, p50 and p99.
//!    The honest client is node B, forwarding to node A (a streamed chat, on
//!    `/atmosphere/stream`, during `idle-streams`; a 2 MB chat, an upload,
//!    during `upload-trickle`), or A's own HTTP client (during
//!    `body-trickle`).
//! 2. An `/mcp` flood: 15,000 `initialize` requests, 16 at a time, no key:
//!    answers by status, A's RSS before, after, and 75 s later.

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;

use support::*;

/// Honest requests in each run.
const HONEST: usize = 200;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench());
}

/// The `chaos` binary running `attack` against node A until dropped.
fn chaos(attack: &str, mesh: &str, http_port: u16) -> Killed {
    Killed(
        std::process::Command::new(bin("chaos"))
            .args([
                "--attack",
                attack,
                "--mesh",
                mesh,
                "--http",
                &format!("127.0.0.1:{http_port}"),
                "--capability",
                "farm/llama-expert",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("chaos"),
    )
}

/// `HONEST` requests one after the other: latencies of the answered ones
/// and how many failed.
async fn honest(
    client: &reqwest::Client,
    url: &str,
    body: &[u8],
    stream: bool,
) -> (Vec<Duration>, usize) {
    let mut times = Vec::with_capacity(HONEST);
    let mut failed = 0;
    for _ in 0..HONEST {
        let t = Instant::now();
        let ok = match client
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .timeout(Duration::from_secs(60))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {
                let text = r.text().await.unwrap_or_default();
                !stream || text.ends_with("data: [DONE]\n\n")
            }
            _ => false,
        };
        if ok {
            times.push(t.elapsed());
        } else {
            failed += 1;
        }
    }
    (times, failed)
}

/// Waits (30 s at most) until A's metric line `sign` reads `least` or more:
/// the attack is in place.
async fn in_place(client: &reqwest::Client, port: u16, sign: &str, least: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = match client
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
        {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let value = text
            .lines()
            .find(|l| l.starts_with(sign))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if value >= least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the attack never showed: {sign} = {value}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn row(name: &str, (mut times, failed): (Vec<Duration>, usize)) -> f64 {
    let (p50, p99) = (pct(&mut times, 0.5), pct(&mut times, 0.99));
    println!(
        "| {name} | {} | {failed} | {p50:.3} | {p99:.3} |",
        times.len() + failed
    );
    p99
}

async fn bench() {
    let backend_port = free_port();
    let _backend = echo_backend(backend_port);
    let client = reqwest::Client::new();
    let dir = std::env::temp_dir().join(format!("atmosphere-bench-budgets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let (a, pa, _b, pb) = forwarding_pair(
        &client,
        &dir,
        backend_port,
        "",
        r#"id = "farm/llama-expert"
kind = "llm/chat"
description = "Expert on raising llamas and alpacas."
examples = ["What should I feed my alpacas in winter?"]"#,
    )
    .await;
    let addr_a = mesh_addr(&client, pa).await;
    let streamed = serde_json::to_vec(&json!({"model": "farm/llama-expert", "stream": true,
        "messages": [{"role": "user", "content": "What should I feed my alpacas in winter?"}]}))
    .expect("json");
    let large = serde_json::to_vec(&json!({"model": "farm/llama-expert",
        "messages": [{"role": "user", "content": "hay ".repeat(500_000)}]}))
    .expect("json");
    let url_b = format!("http://127.0.0.1:{pb}/v1/chat/completions");
    let url_a = format!("http://127.0.0.1:{pa}/v1/chat/completions");
    let small = serde_json::to_vec(&json!({"model": "farm/llama-expert",
        "messages": [{"role": "user", "content": "What should I feed my alpacas in winter?"}]}))
    .expect("json");

    println!("## Budgets under attack (benches/budgets.rs)");
    println!();
    println!("| honest requests, one at a time | requests | failed | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|");
    // Warm up, then each way quiet and attacked.
    let _ = honest(&client, &url_b, &streamed, true).await;
    let mut ratios = Vec::new();
    // Each attack and what A shows while it is in place.
    let attacks = [
        (
            "idle-streams",
            "atmosphere_budget_held{budget=\"stream_opening\"}",
            64,
        ),
        (
            "upload-trickle",
            "atmosphere_budget_held{budget=\"upload_serving\"}",
            3,
        ),
        (
            "body-trickle",
            "atmosphere_budget_held{budget=\"http_body_bytes\"}",
            5,
        ),
    ];
    for (name, (attack, sign, least)) in attacks.into_iter().enumerate() {
        let (url, body, stream) = match name {
            0 => (&url_b, &streamed, true),
            1 => (&url_b, &large, false),
            _ => (&url_a, &small, false),
        };
        let quiet = row(
            &format!("{attack}: quiet"),
            honest(&client, url, body, stream).await,
        );
        let mut attacker = chaos(attack, &addr_a, pa);
        in_place(&client, pa, sign, least).await;
        let attacked = row(
            &format!("{attack}: attacked"),
            honest(&client, url, body, stream).await,
        );
        assert!(
            attacker.0.try_wait().expect("chaos").is_none(),
            "chaos stopped during the run"
        );
        ratios.push((attack, attacked / quiet));
        drop(attacker);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!();
    for (attack, r) in ratios {
        println!("- {attack}: attacked p99 / quiet p99 = {r:.2}");
    }

    // The /mcp flood.
    let mcp = format!("http://127.0.0.1:{pa}/mcp");
    let before = rss_kib(a.0.id());
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "flood", "version": "1"}}})
    .to_string();
    let started = Instant::now();
    let statuses: Vec<u16> = futures::stream::iter(0..15_000)
        .map(|_| {
            let client = client.clone();
            let (mcp, init) = (mcp.clone(), init.clone());
            async move {
                match client
                    .post(&mcp)
                    .header("content-type", "application/json")
                    .header("accept", "application/json, text/event-stream")
                    .body(init)
                    .send()
                    .await
                {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        let _ = r.bytes().await;
                        s
                    }
                    Err(_) => 0,
                }
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let took = started.elapsed();
    let after = rss_kib(a.0.id());
    tokio::time::sleep(Duration::from_secs(75)).await;
    let later = rss_kib(a.0.id());
    let count = |s: u16| statuses.iter().filter(|&&x| x == s).count();
    println!();
    println!("## /mcp flood (benches/budgets.rs)");
    println!();
    println!(
        "| initialize requests | 200 | 429 | other | took s | RSS before MiB | after | 75 s later |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
        statuses.len(),
        count(200),
        count(429),
        statuses.len() - count(200) - count(429),
        took.as_secs_f64(),
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        later as f64 / 1024.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}
