//! The HTTP edge under hostile clients, against a real node process.
//!
//!   cargo build --release --bins && cargo bench --bench edges
//!
//! 1. 1,000 connections that trickle (500 send a request head one byte every
//!    5 s, 500 send a head and then a body one byte every 5 s) while a normal
//!    client asks 50 chats one after the other: its latency, and how many
//!    trickling connections the node has closed after 15 s and after 65 s
//!    (defaults: head 10 s, body 60 s).
//! 2. Eight clients each sending a 10 MB chat body at once to a node with
//!    `http.max_body_bytes` = 16 MiB: answers, peak and settled RSS.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::*;

const TRICKLERS: usize = 1000;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench());
}

/// A node process on `node_port` with the farm capabilities on the echo
/// backend; `http` lines go into its `[http]` section.
fn node(backend_port: u16, node_port: u16, http: &str) -> (Killed, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "atmosphere-bench-edges-{}-{node_port}",
        std::process::id()
    ));
    let n = atmosphere(&farm_config(&dir, node_port, backend_port, http));
    (n, dir)
}

/// A connection that sends a request head (and, with `body`, the start of a
/// body) one byte every 5 s; reports when the node closed it.
async fn trickle(port: u16, body: bool) -> Option<Instant> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let start: &[u8] = if body {
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
    } else {
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: node\r\nX-Slow: "
    };
    s.write_all(start).await.ok()?;
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            if wr.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let mut buf = [0u8; 1024];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    writer.abort();
    Some(Instant::now())
}

async fn one_chat(client: &reqwest::Client, url: &str, body: &[u8]) -> (Duration, u16) {
    let t = Instant::now();
    let status = match client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .timeout(Duration::from_secs(30))
        .send()
        .await
    {
        Ok(r) => {
            let s = r.status().as_u16();
            let _ = r.bytes().await;
            s
        }
        Err(_) => 0,
    };
    (t.elapsed(), status)
}

async fn bench() {
    let backend_port = free_port();
    let _backend = echo_backend(backend_port);
    let client = reqwest::Client::new();

    // 1. Trickling connections.
    let port = free_port();
    let (n, dir) = node(backend_port, port, "");
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    wait_ready(&client, &format!("http://127.0.0.1:{port}/health")).await;
    let chat = serde_json::to_vec(&json!({
        "model": "farm/llama-expert",
        "messages": [{"role": "user", "content": "What should I feed my alpacas in winter?"}]
    }))
    .expect("json");
    let mut quiet = Vec::new();
    for _ in 0..50 {
        quiet.push(one_chat(&client, &url, &chat).await.0);
    }
    let opened = Instant::now();
    let tricklers: Vec<_> = (0..TRICKLERS)
        .map(|i| tokio::spawn(trickle(port, i % 2 == 1)))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_trickled = rss_kib(n.0.id());
    let mut busy = Vec::new();
    let mut failed = 0;
    for _ in 0..50 {
        let (t, status) = one_chat(&client, &url, &chat).await;
        busy.push(t);
        failed += usize::from(status != 200);
    }
    let closed_by = |tricklers: &[tokio::task::JoinHandle<Option<Instant>>], after: Duration| {
        tricklers
            .iter()
            .filter(|t| t.is_finished())
            .count()
            .min(TRICKLERS)
            .to_string()
            + &format!(" after {} s", after.as_secs())
    };
    tokio::time::sleep(Duration::from_secs(15).saturating_sub(opened.elapsed())).await;
    let at_15 = closed_by(&tricklers, Duration::from_secs(15));
    tokio::time::sleep(Duration::from_secs(65).saturating_sub(opened.elapsed())).await;
    let at_65 = closed_by(&tricklers, Duration::from_secs(65));
    for t in tricklers {
        t.abort();
    }
    println!("## HTTP edge: {TRICKLERS} trickling connections (benches/edges.rs)");
    println!();
    println!("| chats, one at a time | requests | p50 ms | p99 ms | max ms | failed |");
    println!("|---|---|---|---|---|---|");
    let max = |s: &[Duration]| s.iter().max().map_or(0.0, |d| d.as_secs_f64() * 1e3);
    let qmax = max(&quiet);
    let bmax = max(&busy);
    println!(
        "| no other client | {} | {:.3} | {:.3} | {qmax:.3} | 0 |",
        quiet.len(),
        pct(&mut quiet, 0.5),
        pct(&mut quiet, 0.99)
    );
    println!(
        "| while {TRICKLERS} connections trickle | {} | {:.3} | {:.3} | {bmax:.3} | {failed} |",
        busy.len(),
        pct(&mut busy, 0.5),
        pct(&mut busy, 0.99)
    );
    println!();
    println!(
        "Trickling connections closed by the node: {at_15}, {at_65} (500 trickle a head, 500 a body). Node RSS with them open: {:.1} MiB.",
        rss_trickled as f64 / 1024.0
    );
    drop(n);
    let _ = std::fs::remove_dir_all(&dir);

    // 2. Eight 10 MB bodies at once.
    let port = free_port();
    let (n, dir) = node(backend_port, port, "max_body_bytes = 16777216");
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    wait_ready(&client, &format!("http://127.0.0.1:{port}/health")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_kib(n.0.id());
    let big = serde_json::to_vec(&json!({
        "model": "farm/llama-expert",
        "messages": [{"role": "user", "content": "alpacas ".repeat(10 * 1024 * 1024 / 8)}]
    }))
    .expect("json");
    let pid = n.0.id();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(idle));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let started = Instant::now();
    let answers = futures::future::join_all((0..8).map(|_| {
        let client = client.clone();
        let url = url.clone();
        let big = big.clone();
        async move { one_chat(&client, &url, &big).await }
    }))
    .await;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    sampler.abort();
    let settled = rss_kib(pid);
    let mut statuses: Vec<u16> = answers.iter().map(|(_, s)| *s).collect();
    statuses.sort_unstable();
    println!();
    println!(
        "## HTTP edge: eight {:.1} MB chat bodies at once",
        big.len() as f64 / 1e6
    );
    println!();
    println!(
        "`http.max_body_bytes` = 16 MiB, `http.max_body_bytes_held` = 64 MiB (default). Statuses: {statuses:?}, all answered in {:.2} s.",
        took.as_secs_f64()
    );
    println!();
    println!("| node RSS | MiB |");
    println!("|---|---|");
    println!("| before | {:.1} |", idle as f64 / 1024.0);
    println!(
        "| peak (sampled every 20 ms) | {:.1} |",
        peak.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0
    );
    println!("| 3 s after | {:.1} |", settled as f64 / 1024.0);
    drop(n);
    let _ = std::fs::remove_dir_all(&dir);
}
