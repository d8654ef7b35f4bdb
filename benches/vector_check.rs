//! How the check of announced vectors separates honest announcements from
//! lies, on CLINC150: each intent's first 16 training examples (what a route
//! update carries) and its name as profile text make an announcement. An
//! honest one announces the quantised vector of its own texts, a lie the
//! vector of another intent under these texts; `explained` scores both
//! (description weights 0, 0.2 and 0.5) against `catalog::MIN_EXPLAINED`.
//!
//! `cargo bench --bench vector_check` (needs ../shared/datasets/clinc150 or
//! CLINC150_DIR, and the model).

use std::collections::BTreeMap;
use std::path::PathBuf;

use atmosphere::catalog::MIN_EXPLAINED;
use atmosphere::config::EmbedderConfig;
use atmosphere::embed::Embedder;
use atmosphere::routing::{capability_vector, explained};
use atmosphere::wire::route::{MAX_EXAMPLES, WireVector};

#[tokio::main]
async fn main() {
    let dir = std::env::var_os("CLINC150_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets/clinc150"),
        PathBuf::from,
    );
    let text =
        std::fs::read_to_string(dir.join("data_full.json")).expect("CLINC150 data_full.json");
    let data: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let mut by_intent: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in data["train"].as_array().expect("train") {
        let (Some(text), Some(intent)) = (row[0].as_str(), row[1].as_str()) else {
            continue;
        };
        by_intent
            .entry(intent.into())
            .or_default()
            .push(text.into());
    }
    let embedder =
        Embedder::load(&EmbedderConfig::default()).expect("embedder: run scripts/fetch-model.sh");
    let mut texts = Vec::new();
    for (intent, examples) in &by_intent {
        let profile = embedder
            .embed_one(&intent.replace('_', " "))
            .await
            .expect("embed");
        let first: Vec<String> = examples.iter().take(MAX_EXAMPLES).cloned().collect();
        let examples = embedder.embed(first).await.expect("embed").vectors;
        texts.push((profile, examples));
    }
    let mut honest = Vec::new();
    let mut lies = Vec::new();
    for w in [0.0f32, 0.2, 0.5] {
        let announced: Vec<Vec<f32>> = texts
            .iter()
            .map(|(p, e)| WireVector::quantize(&capability_vector(e, p, w)).dequantize())
            .collect();
        for (i, (profile, examples)) in texts.iter().enumerate() {
            for (j, vector) in announced.iter().enumerate() {
                let score = explained(vector, examples, profile);
                if i == j {
                    honest.push(score)
                } else {
                    lies.push(score)
                }
            }
        }
    }
    honest.sort_by(f32::total_cmp);
    lies.sort_by(f32::total_cmp);
    let at = |v: &[f32], q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    println!("| announcements | n | min | p50 | p99.9 | max | refused at {MIN_EXPLAINED} |");
    println!("|---|---|---|---|---|---|---|");
    for (name, v) in [
        ("honest (own texts)", &honest),
        ("lies (another intent's vector)", &lies),
    ] {
        let refused = v.iter().filter(|s| **s < MIN_EXPLAINED).count();
        println!(
            "| {name} | {} | {:.4} | {:.4} | {:.4} | {:.4} | {refused} ({:.2}%) |",
            v.len(),
            v[0],
            at(v, 0.5),
            at(v, 0.999),
            v[v.len() - 1],
            100.0 * refused as f64 / v.len() as f64
        );
    }
}
