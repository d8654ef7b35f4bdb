//! A forwarded (one-hop) request against a local one, and how long a dead
//! node's routes outlive it elsewhere.
//!
//!   cargo build --release --bins && cargo bench --bench forward
//!
//! Three processes on loopback: `echo-backend`, node A (offers the capability
//! on that backend) and node B (offers nothing, joined to A). The same chat
//! request with an explicit model goes to A (handled locally) and to B (sent
//! over `/atmosphere/intent/1.0.0` to A), one client, back to back, halves
//! alternated. Added = B minus A, per percentile. Then A is killed (no
//! withdrawal) and B's `/v1/mesh/capabilities` is polled every 20 ms until
//! the capability is gone; B's RSS is read before that (B has the model
//! loaded; the network's share is measured by `--bench mesh`).

mod support;

use std::time::{Duration, Instant};

use support::*;

const TTL_SECS: u64 = 30;

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench());
}

async fn capability_count(client: &reqwest::Client, port: u16) -> usize {
    get(
        client,
        &format!("http://127.0.0.1:{port}/v1/mesh/capabilities"),
    )
    .await
    .and_then(|v| v["data"].as_array().map(Vec::len))
    .unwrap_or(0)
}

async fn bench() {
    let client = reqwest::Client::new();
    let backend_port = free_port();
    let _backend = echo_backend(backend_port);
    let dir = std::env::temp_dir().join(format!("atmosphere-fwd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let (a, pa, b, pb) = forwarding_pair(
        &client,
        &dir,
        backend_port,
        &format!("ttl = \"{TTL_SECS}s\""),
        r#"id = "farm/llama-expert"
description = "Expert on raising llamas and alpacas."
examples = ["What should I feed my alpacas in winter?"]"#,
    )
    .await;

    let local = format!("http://127.0.0.1:{pa}/v1/chat/completions");
    let forwarded = format!("http://127.0.0.1:{pb}/v1/chat/completions");
    chat_load(&client, &local, "farm/llama-expert", 1, 300).await;
    chat_load(&client, &forwarded, "farm/llama-expert", 1, 300).await;
    let (mut l, mut f) = (Vec::new(), Vec::new());
    for _ in 0..4 {
        l.extend(chat_load(&client, &local, "farm/llama-expert", 1, 1000).await);
        f.extend(chat_load(&client, &forwarded, "farm/llama-expert", 1, 1000).await);
    }
    let (l50, l99) = (pct(&mut l, 0.5), pct(&mut l, 0.99));
    let (f50, f99) = (pct(&mut f, 0.5), pct(&mut f, 0.99));
    println!("## Forwarded request vs local (loopback, 1 client, explicit model)");
    println!();
    println!("| path | requests | p50 ms | p99 ms | added p50 ms | added p99 ms |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| node A, capability local | {} | {l50:.3} | {l99:.3} | | |",
        l.len()
    );
    println!(
        "| node B, forwarded to A over intent/1.0.0 | {} | {f50:.3} | {f99:.3} | {:.3} | {:.3} |",
        f.len(),
        f50 - l50,
        f99 - l99
    );
    println!();
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "Node B idle RSS after the load (model loaded): {:.1} MiB",
        rss_kib(b.0.id()) as f64 / 1024.0
    );
    println!();

    // Death to expiry: A is killed without a withdrawal.
    let killed = Instant::now();
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(TTL_SECS * 3);
    while capability_count(&client, pb).await > 0 {
        assert!(
            Instant::now() < deadline,
            "the dead node's route never expired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "A killed (no withdrawal), TTL {TTL_SECS} s: its route gone at B after {:.2} s.",
        killed.elapsed().as_secs_f64()
    );
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}
