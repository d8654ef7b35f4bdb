//! Embedding and routing latency, through the node's own types.
//!
//!   cargo bench --bench latency
//!
//! - embed latency for 8/32/128-token inputs with 1 and 2 intra-op threads;
//! - `auto` decision (embed a 16-token query + score 1k capabilities);
//! - scoring given an embedding at 100 / 1k / 10k capabilities, exact vs HNSW,
//!   with HNSW build time and recall@1 against exact search.

mod support;

use std::time::Instant;

use atmosphere::config::{EmbedderConfig, RoutingConfig};
use atmosphere::embed::{Embedder, normalize};
use atmosphere::index::{Exact, Hnsw, Quantized, VectorIndex};
use atmosphere::routing::{Entry, Need, Router, Table};
use rand::{Rng, SeedableRng};
use support::{local_entry, pct};

const WORDS: &[&str] = &[
    "llama", "alpaca", "winter", "feed", "hay", "shearing", "the", "herd", "needs", "fresh",
    "water", "and", "shelter", "from", "wind", "during", "cold", "nights", "on", "farm",
];

/// A sentence of exactly `tokens` tokens (counting [CLS] and [SEP]).
async fn text_of(embedder: &Embedder, tokens: usize) -> String {
    let mut words = Vec::new();
    loop {
        let text = words.join(" ");
        let got = embedder
            .embed(vec![text.clone()])
            .await
            .expect("embed")
            .tokens;
        if got >= tokens {
            return text;
        }
        words.push(WORDS[words.len() % WORDS.len()]);
    }
}

fn random_unit(rng: &mut impl Rng, dim: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dim).map(|_| rng.r#gen::<f32>() - 0.5).collect();
    normalize(&mut v);
    v
}

fn entries(vectors: &[Vec<f32>]) -> Vec<Entry> {
    vectors
        .iter()
        .enumerate()
        .map(|(i, v)| Entry {
            node: "bench".into(),
            ..local_entry(&format!("bench/cap-{i}"), v.clone())
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    println!(
        "machine: {} cores, {cpu}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!("## Embedding latency (one request at a time, 300 runs after 30 warm-up)");
    println!();
    println!("| input tokens | threads | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    let skip_embed = std::env::var_os("BENCH_SCORING_ONLY").is_some();
    for threads in [1, 2] {
        if skip_embed {
            break;
        }
        // No cache: every run goes through the model.
        let embedder = Embedder::load(&EmbedderConfig {
            threads,
            cache_entries: 0,
            ..Default::default()
        })
        .expect("run scripts/fetch-model.sh");
        for tokens in [8, 32, 128] {
            let text = text_of(&embedder, tokens).await;
            for _ in 0..30 {
                embedder.embed_one(&text).await.expect("embed");
            }
            let mut samples = Vec::new();
            for _ in 0..300 {
                let t = Instant::now();
                embedder.embed_one(&text).await.expect("embed");
                samples.push(t.elapsed());
            }
            println!(
                "| {tokens} | {threads} | {:.2} | {:.2} |",
                pct(&mut samples, 0.5),
                pct(&mut samples, 0.99)
            );
        }
    }

    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let dim = 384;
    let router = Router::new(RoutingConfig {
        threshold: Some(-1.0),
        ..Default::default()
    });
    let up = |_: &Entry| true;

    println!();
    println!(
        "## `auto` decision: embed a 16-token query and score 1,000 capabilities (2 threads, exact index)"
    );
    println!();
    // A novel request every time: no cache. The repeated case below has one.
    let embedder = Embedder::load(&EmbedderConfig {
        threads: 2,
        cache_entries: 0,
        ..Default::default()
    })
    .expect("embedder");
    let query_text = text_of(&embedder, 16).await;
    let caps: Vec<Vec<f32>> = (0..1000).map(|_| random_unit(&mut rng, dim)).collect();
    let table = Table::new(entries(&caps));
    for _ in 0..30 {
        let q = embedder.embed_one(&query_text).await.expect("embed");
        router.decide(&table, &q, &Need::TEXT, &up);
    }
    let mut samples = Vec::new();
    for _ in 0..500 {
        let t = Instant::now();
        let q = embedder.embed_one(&query_text).await.expect("embed");
        let d = router.decide(&table, &q, &Need::TEXT, &up);
        std::hint::black_box(d);
        samples.push(t.elapsed());
    }
    println!("| query tokens | capabilities | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    println!(
        "| 16 | 1000 | {:.2} | {:.2} |",
        pct(&mut samples, 0.5),
        pct(&mut samples, 0.99)
    );
    // The same request again: its vector comes from the embedder's cache.
    let embedder = Embedder::load(&EmbedderConfig {
        threads: 2,
        ..Default::default()
    })
    .expect("embedder");
    embedder.embed_one(&query_text).await.expect("embed");
    let mut samples = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        let q = embedder.embed_one(&query_text).await.expect("embed");
        let d = router.decide(&table, &q, &Need::TEXT, &up);
        std::hint::black_box(d);
        samples.push(t.elapsed());
    }
    println!(
        "| 16, repeated (cached vector) | 1000 | {:.3} | {:.3} |",
        pct(&mut samples, 0.5),
        pct(&mut samples, 0.99)
    );
    drop(embedder);

    println!();
    println!("## Scoring given an embedding (Router::decide, random unit vectors, 2,000 queries)");
    println!();
    println!("| capabilities | index | build ms | p50 us | p99 us | recall@1 vs exact |");
    println!("|---|---|---|---|---|---|");
    // HNSW at 50k takes minutes to build: BENCH_HNSW=1 includes it.
    for n in [100, 1_000, 10_000, 50_000] {
        let vectors: Vec<Vec<f32>> = (0..n).map(|_| random_unit(&mut rng, dim)).collect();
        let queries: Vec<Vec<f32>> = (0..2000)
            .map(|_| {
                // Queries near a capability, as real requests are.
                let base = &vectors[rng.gen_range(0..n)];
                let noise = random_unit(&mut rng, dim);
                let mut q: Vec<f32> = base.iter().zip(&noise).map(|(b, z)| b + 0.8 * z).collect();
                normalize(&mut q);
                q
            })
            .collect();
        let exact_truth: Vec<usize> = {
            let e = Exact::new(vectors.clone());
            queries.iter().map(|q| e.search(q, 1)[0].0).collect()
        };
        for kind in ["exact", "quantized", "hnsw"] {
            if kind == "hnsw" && n > 10_000 && std::env::var_os("BENCH_HNSW").is_none() {
                continue; // minutes to build; BENCH_HNSW=1 includes it
            }
            let t = Instant::now();
            let index: Box<dyn VectorIndex> = match kind {
                "exact" => Box::new(Exact::new(vectors.clone())),
                "quantized" => Box::new(Quantized::new(vectors.clone())),
                _ => Box::new(Hnsw::build(vectors.clone())),
            };
            let build_ms = t.elapsed().as_secs_f64() * 1e3;
            let table = Table::with_index(entries(&vectors), index, &Default::default());
            let mut samples = Vec::with_capacity(queries.len());
            let mut hits = 0;
            for (q, truth) in queries.iter().zip(&exact_truth) {
                let t = Instant::now();
                let d = router.decide(&table, q, &Need::TEXT, &up);
                samples.push(t.elapsed());
                if d.candidates[0].id.as_str() == format!("bench/cap-{truth}") {
                    hits += 1;
                }
            }
            println!(
                "| {n} | {kind} | {build_ms:.1} | {:.1} | {:.1} | {:.3} |",
                pct(&mut samples, 0.5) * 1e3,
                pct(&mut samples, 0.99) * 1e3,
                hits as f64 / queries.len() as f64
            );
        }
    }
}
