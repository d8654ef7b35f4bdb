//! Budgets under attack (README "Budgets"), against real node processes.
//!
//!   cargo build --release --bins && cargo bench --bench budgets
//!
//! 1. Honest chats through a node, quiet and while each attack runs: their
//!    count, failures, p50 and p99. The honest client is node B, forwarding
//!    to node A (a streamed chat, on `/atmosphere/stream`; with a 2 MB body,
//!    an upload); the attacks are against A:
//!    - idle streams: 9 fresh keys open 8 stream-protocol streams each and
//!      send nothing (opened again as A closes them);
//!    - upload trickle: 3 fresh keys announce 32 MiB uploads, then send a
//!      byte every 5 s (announced again as A cuts them off);
//!    - body trickle: 5 HTTP connections to A declare 32 MiB bodies and send
//!      a byte every 5 s (opened again); the honest chats go to A's HTTP API.
//! 2. An `/mcp` flood: 15,000 `initialize` requests, 16 at a time, no key:
//!    answers by status, A's RSS before, after, and 75 s later.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use atmosphere::network::frames;
use atmosphere::wire::Message;
use atmosphere::wire::intent::{self, Operation, UploadRequest};
use futures::{AsyncWriteExt, StreamExt};
use libp2p::{Multiaddr, PeerId, StreamProtocol, noise, tcp, yamux};
use serde_json::json;
use tokio::io::AsyncWriteExt as _;

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

/// A bare libp2p peer with a fresh key connected to `addr`.
async fn bare_peer(addr: &str) -> libp2p_stream::Control {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("tcp")
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    swarm
        .dial(addr.parse::<Multiaddr>().expect("multiaddr"))
        .expect("dial");
    let control = swarm.behaviour().new_control();
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    control
}

/// Nine fresh keys holding 8 silent stream-protocol streams each, until `stop`.
async fn idle_streams(addr: String, node: PeerId, stop: Arc<AtomicBool>) {
    let mut peers = Vec::new();
    for _ in 0..9 {
        peers.push(bare_peer(&addr).await);
    }
    let protocol = StreamProtocol::new(atmosphere::wire::STREAM_PROTOCOL);
    while !stop.load(Ordering::Relaxed) {
        let mut held = Vec::new();
        for control in &mut peers {
            for _ in 0..8 {
                if let Ok(Ok(s)) = tokio::time::timeout(
                    Duration::from_secs(2),
                    control.open_stream(node, protocol.clone()),
                )
                .await
                {
                    held.push(s);
                }
            }
        }
        // A closes them after 10 s; open them again a little before.
        for _ in 0..16 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        drop(held);
    }
}

/// Three fresh keys announcing 32 MiB uploads, then a byte every 5 s,
/// announced again as they are cut off, until `stop`.
async fn upload_trickle(addr: String, node: PeerId, stop: Arc<AtomicBool>) {
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let mut control = bare_peer(&addr).await;
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut io) = control
                    .open_stream(node, StreamProtocol::new(atmosphere::wire::UPLOAD_PROTOCOL))
                    .await
                else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                let head = UploadRequest {
                    version: intent::VERSION,
                    capability: "farm/llama-expert".into(),
                    operation: Operation::Chat,
                    stream: false,
                    body_len: 32 << 20,
                    deadline_ms: 60_000,
                    hops: 0,
                };
                if frames::write(&mut io, &head.encode().expect("encode"))
                    .await
                    .is_err()
                    || frames::read(&mut io, intent::MAX_FRAME_BYTES)
                        .await
                        .is_err()
                {
                    continue;
                }
                let mut prefix = unsigned_varint::encode::usize_buffer();
                let prefix = unsigned_varint::encode::usize(1 << 20, &mut prefix).to_vec();
                if io.write_all(&prefix).await.is_err() {
                    continue;
                }
                while !stop.load(Ordering::Relaxed) {
                    if io.write_all(b"x").await.is_err() || io.flush().await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Five HTTP connections declaring 32 MiB bodies, a byte every 5 s, opened
/// again as they are answered, until `stop`.
async fn body_trickle(port: u16, stop: Arc<AtomicBool>) {
    let tasks = (0..5).map(|_| {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
                    return;
                };
                let head = format!(
                    "POST /v1/chat/completions HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    32 << 20
                );
                if s.write_all(head.as_bytes()).await.is_err() {
                    continue;
                }
                while !stop.load(Ordering::Relaxed) {
                    if s.write_all(b" ").await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        })
    });
    futures::future::join_all(tasks).await;
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
    let peer_a: PeerId = addr_a
        .rsplit('/')
        .next()
        .and_then(|id| id.parse().ok())
        .expect("peer id");
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
    for (name, attack) in ["idle streams", "upload trickle", "body trickle"]
        .into_iter()
        .enumerate()
    {
        let (url, body, stream) = match name {
            0 => (&url_b, &streamed, true),
            1 => (&url_b, &large, false),
            _ => (&url_a, &small, false),
        };
        let quiet = row(
            &format!("{attack}: quiet"),
            honest(&client, url, body, stream).await,
        );
        let stop = Arc::new(AtomicBool::new(false));
        let attacker = match name {
            0 => tokio::spawn(idle_streams(addr_a.clone(), peer_a, stop.clone())),
            1 => tokio::spawn(upload_trickle(addr_a.clone(), peer_a, stop.clone())),
            _ => tokio::spawn(body_trickle(pa, stop.clone())),
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        let attacked = row(
            &format!("{attack}: attacked"),
            honest(&client, url, body, stream).await,
        );
        ratios.push((attack, attacked / quiet));
        stop.store(true, Ordering::Relaxed);
        attacker.abort();
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
