//! Proxy overhead and idle memory of a real node process.
//!
//!   cargo build --release --bins && cargo bench --bench proxy
//!
//! Starts `echo-backend` and `atmosphere start` as separate processes on
//! loopback, then drives both with this file's load generator (reqwest over
//! HTTP/1.1 keep-alive on a single-threaded tokio runtime, C concurrent clients
//! each sending requests back to back). The same chat request goes to the backend
//! directly and through the node (explicit model: proxying only; and `auto`:
//! proxying plus the routing decision). Overhead = node minus direct, per
//! percentile. Idle RSS is read from /proc after the node has settled.

mod support;

use std::time::Duration;

use support::*;

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench());
}

async fn bench() {
    let backend_port = free_port();
    let node_port = free_port();
    let _backend = echo_backend(backend_port);
    let dir = std::env::temp_dir().join(format!("atmosphere-bench-{}", std::process::id()));
    let node = atmosphere(&farm_config(&dir, node_port, backend_port, ""));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    let direct = format!("http://127.0.0.1:{backend_port}/v1/chat/completions");
    let via = format!("http://127.0.0.1:{node_port}/v1/chat/completions");
    wait_ready(&client, &format!("http://127.0.0.1:{node_port}/health")).await;
    wait_ready(
        &client,
        &format!("http://127.0.0.1:{backend_port}/v1/models"),
    )
    .await;

    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = rss_kib(node.0.id());

    println!(
        "## Proxy overhead (loopback, load generator: benches/proxy.rs, reqwest HTTP/1.1 keep-alive, 1 thread)"
    );
    println!();
    println!("| clients | path | requests | p50 ms | p99 ms | added p50 ms | added p99 ms |");
    println!("|---|---|---|---|---|---|---|");
    let mut cpu_per_request = Vec::new();
    for clients in [1usize, 16] {
        let total = if clients == 1 { 4000 } else { 16000 };
        // Warm up both paths, then alternate halves to spread drift evenly.
        chat_load(&client, &direct, "llama3.2", clients, 400).await;
        chat_load(&client, &via, "farm/llama-expert", clients, 400).await;
        let mut d = Vec::new();
        let mut n = Vec::new();
        let mut node_cpu = Duration::ZERO;
        for _ in 0..2 {
            d.extend(chat_load(&client, &direct, "llama3.2", clients, total / 2).await);
            let before = cpu_time(node.0.id());
            n.extend(chat_load(&client, &via, "farm/llama-expert", clients, total / 2).await);
            node_cpu += cpu_time(node.0.id()) - before;
        }
        cpu_per_request.push((clients, node_cpu.as_secs_f64() * 1e6 / n.len() as f64));
        let (d50, d99) = (pct(&mut d, 0.5), pct(&mut d, 0.99));
        let (n50, n99) = (pct(&mut n, 0.5), pct(&mut n, 0.99));
        println!(
            "| {clients} | backend direct | {} | {d50:.3} | {d99:.3} | | |",
            d.len()
        );
        println!(
            "| {clients} | through node (explicit model) | {} | {n50:.3} | {n99:.3} | {:.3} | {:.3} |",
            n.len(),
            n50 - d50,
            n99 - d99
        );
    }
    let mut a = chat_load(&client, &via, "auto", 1, 1000).await;
    println!(
        "| 1 | through node (`auto`: embed + route + proxy) | {} | {:.3} | {:.3} | | |",
        a.len(),
        pct(&mut a, 0.5),
        pct(&mut a, 0.99)
    );
    println!();
    for (clients, us) in cpu_per_request {
        println!(
            "Node CPU per proxied request at {clients} client(s): {us:.0} us (user + system, from /proc)."
        );
    }
    let busy = rss_kib(node.0.id());
    // Long inputs in one embeddings call: the most a client can make the
    // embedder hold (256 tokens each, the limit).
    let long = ["llama alpaca hay fence shearing pasture"; 60].join(" ");
    let mut embedded = Vec::new();
    for n in [32, 128] {
        let input: Vec<String> = (0..n).map(|i| format!("{long} {i}")).collect();
        let r = client
            .post(format!("http://127.0.0.1:{node_port}/v1/embeddings"))
            .json(&serde_json::json!({"model": "auto", "input": input}))
            .send()
            .await
            .expect("embeddings");
        assert!(r.status().is_success(), "{}", r.status());
        r.bytes().await.expect("body");
        embedded.push((n, rss_kib(node.0.id())));
    }
    println!();
    println!("## Node memory");
    println!();
    println!("| state | RSS MiB |");
    println!("|---|---|");
    println!(
        "| idle, model loaded, 3 s after start | {:.1} |",
        idle as f64 / 1024.0
    );
    println!("| after the load above | {:.1} |", busy as f64 / 1024.0);
    for (n, rss) in embedded {
        println!(
            "| after one `/v1/embeddings` call of {n} inputs of 256 tokens | {:.1} |",
            rss as f64 / 1024.0
        );
    }
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}
