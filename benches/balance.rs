//! Spreading one capability's requests over the nodes that offer it.
//!
//!   cargo build --release --bins && cargo bench --bench balance
//!
//! Processes on loopback: three `echo-backend`s standing in for GPUs with a
//! few batch slots (answers take 5, 20 and 50 ms before the first byte; 4
//! answers at a time each, the rest queue: together 4/5 + 4/20 + 4/50 =
//! 1,080 answers/s), nodes B, C and D each offering `farm/coder` on one of
//! them, and four nodes A (one per `balance.strategy`: `first`, which is the
//! rule before balancing, `round_robin`, `power_of_two` and `least_cost`,
//! the default) joined to B, C and D. 16 clients send the same chat to one A, back to back, for
//! 10 s after 2 s of warm-up; the provider that answered is read from
//! `x-atmosphere-node`, the CPU time of every process (this one included)
//! from `/proc`. The same runs with backends four times slower (20 / 80 /
//! 200 ms, 270 answers/s together) come first: at full speed the testbed's
//! ten processes need more than this machine's two cores. Then, with
//! `least_cost` at full speed, B (the fastest) is killed
//! 8 s into a 40 s run and started again 10 s later; A's `POST /v1/route
//! {"model": "farm/coder"}` is polled every 100 ms for its numbers on B
//! (attempts sent, backoff).
//!
//! Between the two, the issue's report: two nodes with the same capability
//! on identical backends, 200 requests one at a time and 200 eight at a
//! time, under `first` and `least_cost`. Then two routers over the same two
//! providers: one whose clients all name B (`farm/coder@b`), one free to
//! choose, with and without `balance.advertised_load` (whether B's own
//! figure of the requests it runs counts).
//!
//! The providers allow A's load (`peer_rate`, `peer_requests`); with the
//! defaults (100 requests/s and 16 at once per peer) they would refuse most
//! of it, and A would back them off.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Value, json};
use support::*;

const CLIENTS: usize = 16;
const WARMUP: Duration = Duration::from_secs(2);
const RUN: Duration = Duration::from_secs(10);
/// (name, ms before the first byte); 4 slots each.
const PROVIDERS: [(&str, u64); 3] = [("b", 5), ("c", 20), ("d", 50)];
const SLOTS: usize = 4;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench());
}

fn slow_echo(port: u16, latency_ms: u64) -> Killed {
    echo_backend_with(
        port,
        &[
            "--latency-ms",
            &latency_ms.to_string(),
            "--slots",
            &SLOTS.to_string(),
        ],
    )
}

/// A provider node: `farm/coder` on the backend at `backend`.
fn provider_config(dir: &Path, name: &str, http: u16, backend: u16, bootstrap: &str) -> Killed {
    atmosphere(&node_config(
        dir,
        name,
        http,
        &format!(
            r#"bootstrap = [{bootstrap}]
peer_rate = 100000
peer_requests = 256
[[backend]]
name = "gpu"
kind = "openai"
url = "http://127.0.0.1:{backend}"
[[capability]]
id = "farm/coder"
description = "Writes and fixes code."
examples = ["Write a Rust function that reverses a string."]
backend = "gpu"
model = "llama3.2"
"#
        ),
    ))
}

/// `listen/p2p/peer` of the node with HTTP on `port`, and its PeerId.
async fn mesh_addr(client: &reqwest::Client, port: u16) -> (String, String) {
    let peers = get(client, &format!("http://127.0.0.1:{port}/v1/mesh/peers"))
        .await
        .expect("peers");
    let peer = peers["peer_id"].as_str().expect("peer id").to_owned();
    (
        format!(
            "{}/p2p/{peer}",
            peers["listen"][0].as_str().expect("listen")
        ),
        peer,
    )
}

/// How many nodes the node on `port` knows offer `farm/coder`.
async fn providers_known(client: &reqwest::Client, port: u16) -> usize {
    get(
        client,
        &format!("http://127.0.0.1:{port}/v1/mesh/capabilities"),
    )
    .await
    .and_then(|v| {
        v["data"].as_array().map(|d| {
            d.iter()
                .filter(|c| c["id"] == "farm/coder" && c["available"] == true)
                .count()
        })
    })
    .unwrap_or(0)
}

/// The attempts the node on `port` has sent to `peer`'s `farm/coder`
/// (`POST /v1/route`); 0 when it does not list that provider.
async fn sent_to(client: &reqwest::Client, port: u16, peer: &str) -> u64 {
    let Ok(r) = client
        .post(format!("http://127.0.0.1:{port}/v1/route"))
        .json(&json!({"model": "farm/coder"}))
        .send()
        .await
    else {
        return 0;
    };
    let Ok(v) = r.json::<Value>().await else {
        return 0;
    };
    v["group"]["members"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(v["group"]["fallbacks"].as_array().into_iter().flatten())
        .find(|m| m["node"] == peer)
        .and_then(|m| m["requests"].as_u64())
        .unwrap_or(0)
}

/// One answered request: when it was sent (since the run began), how long it
/// took, who answered (PeerId) or its status.
struct Sample {
    at: Duration,
    took: Duration,
    node: Option<String>,
    status: u16,
}

/// How long each client of a load sends.
#[derive(Clone, Copy)]
enum Until {
    Elapsed(Duration),
    Sent(usize),
}

/// `clients` clients, back to back, until `until`.
async fn load(client: &reqwest::Client, url: &str, clients: usize, until: Until) -> Vec<Sample> {
    load_model(client, url, "farm/coder", clients, until).await
}

/// [`load`], asking for `model`.
async fn load_model(
    client: &reqwest::Client,
    url: &str,
    model: &str,
    clients: usize,
    until: Until,
) -> Vec<Sample> {
    let body = serde_json::to_vec(&json!({
        "model": model,
        "messages": [{"role": "user", "content": "Write a Rust function that reverses a string."}]
    }))
    .expect("json");
    let start = Instant::now();
    let tasks = (0..clients).map(|_| {
        let client = client.clone();
        let url = url.to_owned();
        let body = body.clone();
        tokio::spawn(async move {
            let mut out = Vec::new();
            while match until {
                Until::Elapsed(time) => start.elapsed() < time,
                Until::Sent(n) => out.len() < n,
            } {
                let t = Instant::now();
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                let (status, node) = match r {
                    Ok(r) => {
                        let node = r
                            .headers()
                            .get("x-atmosphere-node")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        let status = r.status().as_u16();
                        let _ = r.bytes().await;
                        (status, node)
                    }
                    Err(_) => (0, None),
                };
                out.push(Sample {
                    at: t - start,
                    took: t.elapsed(),
                    node,
                    status,
                });
            }
            out
        })
    });
    futures::future::join_all(tasks)
        .await
        .into_iter()
        .flat_map(|r| r.expect("client"))
        .collect()
}

fn summary(samples: &[Sample], time: Duration, names: &HashMap<String, &str>) -> String {
    let ok: Vec<&Sample> = samples.iter().filter(|s| s.status == 200).collect();
    let mut took: Vec<Duration> = ok.iter().map(|s| s.took).collect();
    let mut share: HashMap<&str, usize> = HashMap::new();
    for s in &ok {
        let name = s
            .node
            .as_ref()
            .and_then(|n| names.get(n).copied())
            .unwrap_or("?");
        *share.entry(name).or_default() += 1;
    }
    let shares: Vec<String> = PROVIDERS
        .iter()
        .map(|(n, _)| {
            format!(
                "{:.1}%",
                100.0 * share.get(n).copied().unwrap_or(0) as f64 / ok.len().max(1) as f64
            )
        })
        .collect();
    format!(
        "{} | {:.0} | {:.2} | {:.2} | {} | {}",
        ok.len(),
        ok.len() as f64 / time.as_secs_f64(),
        pct(&mut took, 0.5),
        pct(&mut took, 0.99),
        shares.join(" / "),
        samples.len() - ok.len(),
    )
}

/// The processes of one run: backends, providers B, C, D and the four A.
struct Testbed {
    dir: std::path::PathBuf,
    backends: Vec<Killed>,
    b: Option<Killed>,
    others: Vec<Killed>,
    fronts: Vec<(&'static str, u16, Killed)>,
    names: HashMap<String, &'static str>,
    b_http: u16,
    b_backend: u16,
    join_c: String,
    b_peer: String,
}

impl Testbed {
    /// Every process of the run, for their CPU time.
    fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.backends.iter().map(|k| k.0.id()).collect();
        pids.extend(self.b.iter().chain(&self.others).map(|k| k.0.id()));
        pids.extend(self.fronts.iter().map(|f| f.2.0.id()));
        pids.push(std::process::id());
        pids
    }
}

fn cpu(pids: &[u32]) -> Duration {
    pids.iter().map(|p| cpu_time(*p)).sum()
}

/// Starts the backends (their latencies times `scale`), B, C, D and the
/// four A, and waits until every A knows the three providers.
async fn testbed(client: &reqwest::Client, scale: u64) -> Testbed {
    let dir =
        std::env::temp_dir().join(format!("atmosphere-balance-{}-{scale}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let mut backends = Vec::new();
    let mut http = HashMap::new();
    for (name, ms) in PROVIDERS {
        let port = free_port();
        backends.push(slow_echo(port, ms * scale));
        http.insert(name, (free_port(), port));
    }
    // C first; B and D join it.
    let (c_http, c_backend) = http["c"];
    let c = provider_config(&dir, "c", c_http, c_backend, "");
    wait_ready(client, &format!("http://127.0.0.1:{c_http}/health")).await;
    let (c_addr, c_peer) = mesh_addr(client, c_http).await;
    let join_c = format!("\"{c_addr}\"");
    let (b_http, b_backend) = http["b"];
    let b = provider_config(&dir, "b", b_http, b_backend, &join_c);
    let (d_http, d_backend) = http["d"];
    let d = provider_config(&dir, "d", d_http, d_backend, &join_c);
    wait_ready(client, &format!("http://127.0.0.1:{b_http}/health")).await;
    wait_ready(client, &format!("http://127.0.0.1:{d_http}/health")).await;
    let (b_addr, b_peer) = mesh_addr(client, b_http).await;
    let (d_addr, d_peer) = mesh_addr(client, d_http).await;
    let names = HashMap::from([(b_peer.clone(), "b"), (c_peer, "c"), (d_peer, "d")]);
    let join_all = format!("\"{b_addr}\", \"{c_addr}\", \"{d_addr}\"");
    let mut fronts = Vec::new();
    for strategy in ["first", "round_robin", "power_of_two", "least_cost"] {
        let port = free_port();
        let node = atmosphere(&node_config(
            &dir,
            &format!("a-{strategy}"),
            port,
            &format!("bootstrap = [{join_all}]\n[balance]\nstrategy = \"{strategy}\""),
        ));
        fronts.push((strategy, port, node));
    }
    for (strategy, port, _) in &fronts {
        wait_ready(client, &format!("http://127.0.0.1:{port}/health")).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while providers_known(client, *port).await < 3 {
            assert!(
                Instant::now() < deadline,
                "A ({strategy}) never learnt the three providers"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Testbed {
        dir,
        backends,
        b: Some(b),
        others: vec![c, d],
        fronts,
        names,
        b_http,
        b_backend,
        join_c,
        b_peer,
    }
}

/// The three strategies, one after the other, on one testbed.
async fn compare(client: &reqwest::Client, bed: &Testbed, scale: u64) {
    let ms: Vec<String> = PROVIDERS
        .iter()
        .map(|(_, ms)| (ms * scale).to_string())
        .collect();
    let capacity: f64 = PROVIDERS
        .iter()
        .map(|(_, ms)| SLOTS as f64 * 1000.0 / (ms * scale) as f64)
        .sum();
    println!(
        "## Three providers of one capability ({} ms, {SLOTS} slots each, {capacity:.0} answers/s together), {CLIENTS} clients for {} s",
        ms.join(" / "),
        RUN.as_secs()
    );
    println!();
    println!(
        "| balance.strategy | answered | answers/s | p50 ms | p99 ms | share B / C / D | errors | of capacity | CPU used (of 2 cores) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let pids = bed.pids();
    for (strategy, port, _) in &bed.fronts {
        let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
        load(client, &url, CLIENTS, Until::Elapsed(WARMUP)).await;
        let cpu_before = cpu(&pids);
        let samples = load(client, &url, CLIENTS, Until::Elapsed(RUN)).await;
        let busy = (cpu(&pids) - cpu_before).as_secs_f64() / (2.0 * RUN.as_secs_f64());
        let ok = samples.iter().filter(|s| s.status == 200).count() as f64;
        println!(
            "| `{strategy}` | {} | {:.0}% | {:.0}% |",
            summary(&samples, RUN, &bed.names),
            100.0 * ok / RUN.as_secs_f64() / capacity,
            100.0 * busy
        );
    }
    println!();
}

/// Two provider nodes named `names` (the second joined to the first), each
/// on its own backend answering in `ms` with [`SLOTS`] slots: their
/// processes, their names by PeerId, and both addresses to bootstrap from.
async fn two_providers(
    client: &reqwest::Client,
    dir: &Path,
    names: [&'static str; 2],
    ms: u64,
) -> (Vec<Killed>, HashMap<String, &'static str>, String) {
    let mut procs = Vec::new();
    let mut by_peer = HashMap::new();
    let mut joins: Vec<String> = Vec::new();
    for name in names {
        let (http, backend) = (free_port(), free_port());
        procs.push(slow_echo(backend, ms));
        let join = joins.first().map_or(String::new(), |a| format!("\"{a}\""));
        procs.push(provider_config(dir, name, http, backend, &join));
        wait_ready(client, &format!("http://127.0.0.1:{http}/health")).await;
        let (addr, peer) = mesh_addr(client, http).await;
        by_peer.insert(peer, name);
        joins.push(addr);
    }
    let join = format!("\"{}\", \"{}\"", joins[0], joins[1]);
    (procs, by_peer, join)
}

/// The issue's report: two nodes with the same capability on identical
/// backends (20 ms, 4 slots), a third joined to both; 200 requests one at a
/// time, then 200 with 8 at a time, under `first` (the rule before) and
/// `least_cost`.
async fn twins(client: &reqwest::Client) {
    let dir = std::env::temp_dir().join(format!("atmosphere-twins-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let (mut procs, names, join) = two_providers(client, &dir, ["c", "b"], 20).await;
    println!(
        "## Two nodes offering `farm/coder` on identical backends (20 ms, {SLOTS} slots), 200 requests"
    );
    println!();
    println!("| balance.strategy | one at a time: B / C | 8 at a time: B / C |");
    println!("|---|---|---|");
    for strategy in ["first", "least_cost"] {
        let port = free_port();
        procs.push(atmosphere(&node_config(
            &dir,
            &format!("a-{strategy}"),
            port,
            &format!("bootstrap = [{join}]\n[balance]\nstrategy = \"{strategy}\""),
        )));
        wait_ready(client, &format!("http://127.0.0.1:{port}/health")).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while providers_known(client, port).await < 2 {
            assert!(Instant::now() < deadline, "A never learnt both providers");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
        let mut cells = Vec::new();
        for (clients, each) in [(1, 200), (8, 25)] {
            let who = load(client, &url, clients, Until::Sent(each)).await;
            let count = |n: &str| {
                who.iter()
                    .filter(|s| s.status == 200)
                    .filter(|s| s.node.as_ref().and_then(|p| names.get(p)) == Some(&n))
                    .count()
            };
            let failed = who.iter().filter(|s| s.status != 200).count();
            cells.push(format!(
                "{} / {}{}",
                count("b"),
                count("c"),
                if failed > 0 {
                    format!(" ({failed} failed)")
                } else {
                    String::new()
                }
            ));
        }
        println!("| `{strategy}` | {} |", cells.join(" | "));
    }
    println!();
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two routers over B and D (50 ms, 4 slots each: 160 answers/s together):
/// R1's 6 clients all name B, R2's 6 may go anywhere. R2 runs once with
/// `balance.advertised_load = false` (only its own requests count) and once
/// with the default; R1 is the same node both times.
async fn routers(client: &reqwest::Client) {
    const MS: u64 = 50;
    const EACH: usize = 6;
    let dir = std::env::temp_dir().join(format!("atmosphere-routers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    // Nodes are named: R1's clients ask for `farm/coder@b`.
    let (mut procs, names, join) = two_providers(client, &dir, ["b", "d"], MS).await;
    let mut fronts = Vec::new();
    for (name, advertised) in [("r1", true), ("r2-own", false), ("r2", true)] {
        let port = free_port();
        procs.push(atmosphere(&node_config(
            &dir,
            name,
            port,
            &format!("bootstrap = [{join}]\n[balance]\nadvertised_load = {advertised}"),
        )));
        wait_ready(client, &format!("http://127.0.0.1:{port}/health")).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while providers_known(client, port).await < 2 {
            assert!(
                Instant::now() < deadline,
                "{name} never learnt both providers"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        fronts.push(port);
    }
    println!(
        "## Two routers, two providers (B and D: {MS} ms, {SLOTS} slots each, {:.0} answers/s together): R1's {EACH} clients all name B, R2's {EACH} choose; {} s after {} s of warm-up",
        2.0 * SLOTS as f64 * 1000.0 / MS as f64,
        RUN.as_secs(),
        WARMUP.as_secs()
    );
    println!();
    println!(
        "| R2's `balance.advertised_load` | answers/s (both) | R1 mean / p99 ms | R2 mean / p99 ms | R2's share to B | errors |"
    );
    println!("|---|---|---|---|---|---|");
    let url = |port: u16| format!("http://127.0.0.1:{port}/v1/chat/completions");
    for (label, r2) in [
        ("false (own requests only)", fronts[1]),
        ("true (default)", fronts[2]),
    ] {
        let both = |time| {
            let (r1, r2) = (url(fronts[0]), url(r2));
            let client = client.clone();
            async move {
                let pinned = load_model(&client, &r1, "farm/coder@b", EACH, Until::Elapsed(time));
                let free = load(&client, &r2, EACH, Until::Elapsed(time));
                futures::future::join(pinned, free).await
            }
        };
        both(WARMUP).await;
        let (pinned, free) = both(RUN).await;
        // Means, not medians: with 6 clients on 4 slots a request either
        // waits a turn or not, and the median falls on either side.
        let p = |samples: &[Sample]| {
            let mut took: Vec<Duration> = samples
                .iter()
                .filter(|s| s.status == 200)
                .map(|s| s.took)
                .collect();
            let mean = took.iter().sum::<Duration>().as_secs_f64() * 1e3 / took.len().max(1) as f64;
            format!("{mean:.1} / {:.1}", pct(&mut took, 0.99))
        };
        let ok = |samples: &[Sample]| samples.iter().filter(|s| s.status == 200).count();
        let to_b = free
            .iter()
            .filter(|s| s.status == 200)
            .filter(|s| s.node.as_ref().and_then(|n| names.get(n)) == Some(&"b"))
            .count();
        println!(
            "| {label} | {:.0} | {} | {} | {:.1}% | {} |",
            (ok(&pinned) + ok(&free)) as f64 / RUN.as_secs_f64(),
            p(&pinned),
            p(&free),
            100.0 * to_b as f64 / ok(&free).max(1) as f64,
            pinned.len() + free.len() - ok(&pinned) - ok(&free),
        );
    }
    println!();
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
}

async fn bench() {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    // At 5 / 20 / 50 ms the whole testbed runs on this machine's two cores;
    // four times slower backends need a quarter of the CPU for the same
    // share of their capacity.
    let slow = testbed(&client, 4).await;
    compare(&client, &slow, 4).await;
    let dir = slow.dir.clone();
    drop(slow);
    let _ = std::fs::remove_dir_all(&dir);
    twins(&client).await;
    routers(&client).await;
    let mut bed = testbed(&client, 1).await;
    compare(&client, &bed, 1).await;

    // B dies and comes back, under the shipped rule.
    let (_, port, _) = bed.fronts.last().expect("least_cost");
    let port = *port;
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    let total = Duration::from_secs(40);
    let kill_at = Duration::from_secs(8);
    let back_at = Duration::from_secs(18);
    let polls: Arc<Mutex<Vec<(Duration, u64)>>> = Arc::default();
    let start = Instant::now();
    let poller = {
        let client = client.clone();
        let polls = polls.clone();
        let b_peer = bed.b_peer.clone();
        tokio::spawn(async move {
            while start.elapsed() < total {
                let sent = sent_to(&client, port, &b_peer).await;
                polls.lock().push((start.elapsed(), sent));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let loader = {
        let client = client.clone();
        tokio::spawn(async move { load(&client, &url, CLIENTS, Until::Elapsed(total)).await })
    };
    tokio::time::sleep(kill_at.saturating_sub(start.elapsed())).await;
    let at_kill = sent_to(&client, port, &bed.b_peer).await;
    let killed = start.elapsed();
    drop(bed.b.take());
    tokio::time::sleep(back_at.saturating_sub(start.elapsed())).await;
    let restarted = start.elapsed();
    bed.b = Some(provider_config(
        &bed.dir,
        "b",
        bed.b_http,
        bed.b_backend,
        &bed.join_c,
    ));
    wait_ready(&client, &format!("http://127.0.0.1:{}/health", bed.b_http)).await;
    let b_ready = start.elapsed();
    let samples = loader.await.expect("load");
    poller.await.expect("poller");

    let secs = |d: Duration| d.as_secs_f64();
    let b_peer = bed.b_peer.clone();
    let by_b = |s: &&Sample| s.node.as_deref() == Some(b_peer.as_str()) && s.status == 200;
    let last_before = samples
        .iter()
        .filter(by_b)
        .filter(|s| s.at < killed)
        .map(|s| s.at + s.took)
        .max();
    let first_after = samples
        .iter()
        .filter(by_b)
        .filter(|s| s.at > restarted)
        .map(|s| s.at)
        .min();
    let errors = samples.iter().filter(|s| s.status != 200).count();
    // Attempts sent to B after its death, from A's own count.
    let polls = polls.lock().clone();
    let mut attempts = Vec::new();
    let mut last = at_kill;
    for (t, n) in &polls {
        if *t > killed && *t < restarted && *n > last {
            attempts.push(format!("+{} at {:.1} s", n - last, secs(*t - killed)));
            last = *n;
        }
    }
    let phase = |from: Duration, to: Duration| {
        let n = samples
            .iter()
            .filter(|s| s.status == 200 && s.at >= from && s.at < to)
            .count();
        n as f64 / secs(to - from)
    };
    println!(
        "## B (the fastest) killed {:.1} s into a {} s run and started again at {:.1} s (`least_cost`)",
        secs(killed),
        total.as_secs(),
        secs(restarted)
    );
    println!();
    println!("| | |");
    println!("|---|---|");
    println!(
        "| answered / failed (whole run) | {} / {errors} |",
        samples.len() - errors
    );
    println!(
        "| answers/s before the kill, B dead, B back (from 10 s after restart) | {:.0} / {:.0} / {:.0} |",
        phase(Duration::from_secs(2), killed),
        phase(killed + Duration::from_secs(1), restarted),
        phase(restarted + Duration::from_secs(10), total),
    );
    println!(
        "| B's last answer before the kill ended at | {} |",
        last_before.map_or("none".into(), |t| format!("{:.3} s", secs(t)))
    );
    println!(
        "| attempts A sent B after the kill, until the restart (A's count, read at the kill, then every 100 ms: +new attempts at seconds after the kill) | {} |",
        if attempts.is_empty() {
            "none".into()
        } else {
            attempts.join(", ")
        }
    );
    println!(
        "| B's HTTP ready after restart | {:.1} s |",
        secs(b_ready - restarted)
    );
    println!(
        "| B's first answer after restart, from the restart | {} |",
        first_after.map_or("none".into(), |t| format!("{:.1} s", secs(t - restarted)))
    );
    let late = samples.iter().filter(|s| s.at >= back_at);
    let (mut n, mut from_b) = (0usize, 0usize);
    for s in late.filter(|s| s.status == 200 && s.at >= back_at + Duration::from_secs(10)) {
        n += 1;
        from_b += usize::from(s.node.as_deref() == Some(b_peer.as_str()));
    }
    println!(
        "| B's share from 10 s after restart to the end | {:.1}% |",
        100.0 * from_b as f64 / n.max(1) as f64
    );
    println!();
    let dir = bed.dir.clone();
    drop(bed);
    let _ = std::fs::remove_dir_all(&dir);
}
