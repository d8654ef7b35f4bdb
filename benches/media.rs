//! A 5 MB image forwarded over one hop: the time the hop adds, and what each
//! node holds while the image goes through it.
//!
//!   cargo build --release --bins && cargo bench --bench media
//!
//! Three processes on loopback: `echo-backend`, node A (offers the vision
//! capability `farm/animal-eye` on it) and node B (offers nothing, joined to
//! A). The request: a chat whose image is a PNG signature and 5,000,000
//! pseudo-random bytes as a data URL (6.67 MB of base64; 6.67 MB of JSON in
//! all), `model: auto`, whole answer. The echo backend answers with the
//! request it received, the image as its length and SHA-256, which the
//! bench checks on every answer: the image arrived whole.
//!
//! Time: the same request to A (served there) and to B (sent on to A over
//! `/atmosphere/upload/1.0.0`), one client, back to back, alternated in
//! rounds. Added = B minus A, per percentile.
//!
//! Memory: before each request both nodes' peak RSS is reset
//! (`/proc/PID/clear_refs` = 5) and their RSS read; after it, the peak
//! (`VmHWM`) less that RSS is what the request made the node hold at most.
//! The nodes run with `MALLOC_MMAP_THRESHOLD_=131072`: buffers over 128 KiB
//! are mapped and unmapped as they come and go, so each request's peak is
//! its own and not hidden in memory glibc kept from the previous one (by
//! default, glibc raises that threshold after the first large free and then
//! keeps such buffers in its heap). The first request after start is shown
//! apart: it also pays for the allocator's and the connection's first use.

mod support;

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use sha2::Digest;
use support::*;

const IMAGE_BYTES: usize = 5_000_000;
const ROUNDS: usize = 10;
const PER_ROUND: usize = 5;

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench());
}

/// A PNG signature and then `len` pseudo-random bytes (incompressible, and
/// the node checks an image by its first bytes and its base64).
fn photo(len: usize) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    bytes.extend((0..len).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u8
    }));
    bytes
}

fn kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resets the peak RSS of `pid`; its RSS now, in KiB.
fn reset_peak(pid: u32) -> u64 {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("clear_refs");
    kib(pid, "VmRSS:")
}

/// One chat; its time, after checking the backend got the image whole.
async fn ask(client: &reqwest::Client, url: &str, body: &bytes::Bytes, image: &str) -> Duration {
    let started = Instant::now();
    let r = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .expect("chat");
    let status = r.status();
    let answer: Value = r.json().await.expect("json");
    let took = started.elapsed();
    assert!(status.is_success(), "{status}: {answer}");
    let seen = &answer["x_echo_request"]["messages"][0]["content"][1]["image_url"]["url"];
    assert_eq!(seen.as_str(), Some(image), "the image did not arrive whole");
    took
}

async fn bench() {
    let client = reqwest::Client::new();
    let backend_port = free_port();
    let _backend = echo_backend(backend_port);
    let dir = std::env::temp_dir().join(format!("atmosphere-media-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    // SAFETY: set before any thread of this process reads the environment;
    // the nodes started below inherit it.
    unsafe { std::env::set_var("MALLOC_MMAP_THRESHOLD_", "131072") };
    let (a, pa, b, pb) = forwarding_pair(
        &client,
        &dir,
        backend_port,
        "",
        r#"id = "farm/animal-eye"
kind = "vision/classify"
description = "Recognises farm animals and their breeds in photos."
examples = ["What animal is in this photo?", "Which breed is this llama?"]"#,
    )
    .await;

    let url = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(photo(IMAGE_BYTES))
    );
    let hex: String = sha2::Sha256::digest(url.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let image = format!("[{} bytes, sha256 {hex}]", url.len());
    let body = bytes::Bytes::from(
        serde_json::to_vec(
            &json!({"model": "auto", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "Which breed is this llama?"},
                {"type": "image_url", "image_url": {"url": url}}
            ]}]}),
        )
        .expect("json"),
    );
    drop(url);
    let local = format!("http://127.0.0.1:{pa}/v1/chat/completions");
    let forwarded = format!("http://127.0.0.1:{pb}/v1/chat/completions");
    let (ida, idb) = (a.0.id(), b.0.id());

    // Memory, one request at a time: the first after start, then the rest.
    let peaks = |before: (u64, u64)| {
        (
            kib(ida, "VmHWM:").saturating_sub(before.0),
            kib(idb, "VmHWM:").saturating_sub(before.1),
        )
    };
    let mut memory = Vec::new();
    let before = (reset_peak(ida), reset_peak(idb));
    ask(&client, &forwarded, &body, &image).await;
    memory.push(peaks(before));
    let (mut l, mut f) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        for _ in 0..PER_ROUND {
            l.push(ask(&client, &local, &body, &image).await);
        }
        for _ in 0..PER_ROUND {
            let before = (reset_peak(ida), reset_peak(idb));
            f.push(ask(&client, &forwarded, &body, &image).await);
            memory.push(peaks(before));
        }
    }

    println!(
        "## A {:.2} MB image ({} bytes of JSON) forwarded over one hop (loopback)",
        IMAGE_BYTES as f64 / 1e6,
        body.len()
    );
    println!();
    let p = percentile_table(&mut [
        ("to node A, served there", &mut l),
        ("to node B, sent on to A (upload/1.0.0)", &mut f),
    ]);
    println!(
        "| added by the hop | {:.3} | {:.3} | {:.3} |",
        p[1][0] - p[0][0],
        p[1][1] - p[0][1],
        p[1][2] - p[0][2]
    );
    println!();
    let image_kib = IMAGE_BYTES as f64 / 1024.0;
    let row = |name: &str, runs: &[(u64, u64)]| {
        let mut at_a: Vec<u64> = runs.iter().map(|r| r.0).collect();
        let mut at_b: Vec<u64> = runs.iter().map(|r| r.1).collect();
        at_a.sort_unstable();
        at_b.sort_unstable();
        let (a50, amax) = (at_a[at_a.len() / 2], at_a[at_a.len() - 1]);
        let (b50, bmax) = (at_b[at_b.len() / 2], at_b[at_b.len() - 1]);
        println!(
            "| {name} | {} | {:.1} / {:.1} MiB ({:.2}x / {:.2}x) | {:.1} / {:.1} MiB ({:.2}x / {:.2}x) |",
            runs.len(),
            b50 as f64 / 1024.0,
            bmax as f64 / 1024.0,
            b50 as f64 / image_kib,
            bmax as f64 / image_kib,
            a50 as f64 / 1024.0,
            amax as f64 / 1024.0,
            a50 as f64 / image_kib,
            amax as f64 / image_kib,
        );
    };
    println!("Peak RSS over RSS before, per forwarded request (median / max; x the image):");
    println!();
    println!(
        "| requests | n | node B (receives it from the client, sends it on) | node A (receives it, sends it to the backend) |"
    );
    println!("|---|---|---|---|");
    row("first after start", &memory[..1]);
    row("the rest", &memory[1..]);
    println!();
    drop((a, b));
    let _ = std::fs::remove_dir_all(&dir);
}
