//! Soak through forwarding: whether a node's memory stays flat while it
//! forwards and serves requests for minutes on end.
//!
//!   cargo build --release --bins && SOAK_SECS=600 cargo bench --bench soak
//!
//! Three processes on loopback: `echo-backend`, node A (offers the
//! capability on it, `mesh.peer_rate` raised so the rate limit is not what
//! is measured) and node B (offers nothing, joined to A). Eight clients send
//! chats for A's capability to B, back to back, alternating whole answers
//! (`/atmosphere/intent/1.0.0`) and streams (`/atmosphere/stream/1.0.0`),
//! for `SOAK_SECS` (default 600). Both nodes' RSS is read every 30 s; the
//! growth per minute is the least-squares slope after the first minute
//! (warm-up: allocator pools, connection buffers).

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::json;
use support::*;

const CLIENTS: usize = 8;
const SAMPLE_EVERY: Duration = Duration::from_secs(30);

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench());
}

/// Least-squares slope of `(seconds, kib)` in MiB per minute.
fn slope_mib_per_min(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    if den == 0.0 {
        return 0.0;
    }
    num / den * 60.0 / 1024.0
}

async fn bench() {
    let soak = Duration::from_secs(
        std::env::var("SOAK_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(600),
    );
    let client = reqwest::Client::new();
    let backend_port = free_port();
    let _backend = echo_backend(backend_port);
    let dir = std::env::temp_dir().join(format!("atmosphere-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let (a, _, b, pb) = forwarding_pair(
        &client,
        &dir,
        backend_port,
        "",
        r#"id = "farm/llama-expert"
description = "Expert on raising llamas and alpacas."
examples = ["What should I feed my alpacas in winter?"]"#,
    )
    .await;

    let url = format!("http://127.0.0.1:{pb}/v1/chat/completions");
    let statuses: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (client, url, statuses, stop) =
                (client.clone(), url.clone(), statuses.clone(), stop.clone());
            tokio::spawn(async move {
                let mut stream = i % 2 == 0;
                while !stop.load(Ordering::Relaxed) {
                    let body = json!({
                        "model": "farm/llama-expert",
                        "stream": stream,
                        "messages": [{"role": "user", "content": "What should I feed my alpacas in winter?"}]
                    });
                    let outcome = match client.post(&url).json(&body).send().await {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            match r.bytes().await {
                                Ok(b)
                                    if stream
                                        && status == 200
                                        && !b.ends_with(b"data: [DONE]\n\n") =>
                                {
                                    "stream without [DONE]".to_owned()
                                }
                                Ok(_) => status.to_string(),
                                Err(_) => "body broke".to_owned(),
                            }
                        }
                        Err(_) => "no answer".to_owned(),
                    };
                    *statuses.lock().entry(outcome).or_default() += 1;
                    stream = !stream;
                }
            })
        })
        .collect();

    let started = Instant::now();
    let mut samples: Vec<(f64, u64, u64, u64)> = Vec::new();
    loop {
        let t = started.elapsed();
        let done: u64 = statuses.lock().values().sum();
        samples.push((t.as_secs_f64(), rss_kib(a.0.id()), rss_kib(b.0.id()), done));
        if t >= soak {
            break;
        }
        tokio::time::sleep(SAMPLE_EVERY.min(soak - t)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    let total: u64 = statuses.lock().values().sum();
    let secs = started.elapsed().as_secs_f64();

    println!(
        "## Soak through forwarding ({:.0} s, {CLIENTS} clients to B, A's capability, whole and streamed alternately)",
        soak.as_secs_f64()
    );
    println!();
    println!("| t s | requests so far | A RSS MiB | B RSS MiB |");
    println!("|---|---|---|---|");
    for (t, ra, rb, n) in &samples {
        println!(
            "| {t:.0} | {n} | {:.1} | {:.1} |",
            *ra as f64 / 1024.0,
            *rb as f64 / 1024.0
        );
    }
    let warm: Vec<&(f64, u64, u64, u64)> = samples.iter().filter(|s| s.0 >= 60.0).collect();
    let points = |pick: fn(&(f64, u64, u64, u64)) -> u64| -> Vec<(f64, f64)> {
        warm.iter().map(|s| (s.0, pick(s) as f64)).collect()
    };
    println!();
    println!(
        "{total} requests, {:.0} per second; answers: {:?}",
        total as f64 / secs,
        statuses.lock()
    );
    if warm.len() >= 2 {
        println!(
            "RSS growth after the first minute (least squares): A {:+.3} MiB/min, B {:+.3} MiB/min",
            slope_mib_per_min(&points(|s| s.1)),
            slope_mib_per_min(&points(|s| s.2))
        );
    }
    drop((a, b));
    let _ = std::fs::remove_dir_all(&dir);
}
