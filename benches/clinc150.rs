//! Routing quality on CLINC150 through the node's own code path: each intent is a
//! capability whose examples are its `train` utterances; the embedder, capability
//! vectors, table and router are the ones the node uses.
//!
//! Choices (description weight, threshold) are made on `val` / `oos_val` only;
//! `test` / `oos_test` are scored once with those choices.
//!
//!   cargo bench --bench clinc150            (CLINC150_DIR overrides the data path)

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use atmosphere::capability::{Capability, Kind, Source};
use atmosphere::config::{EmbedderConfig, RoutingConfig};
use atmosphere::embed::Embedder;
use atmosphere::routing::{Entry, Need, Router, Table, capability_prototypes, capability_vector};
use serde_json::Value;

type Split = Vec<(String, String)>;

fn load() -> (HashMap<String, Split>, HashMap<String, String>) {
    let dir = std::env::var_os("CLINC150_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets/clinc150")
        });
    let read = |name: &str| -> Value {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (set CLINC150_DIR)", path.display()));
        serde_json::from_str(&text).expect("valid JSON")
    };
    let data = read("data_full.json");
    let mut splits = HashMap::new();
    for key in ["train", "val", "test", "oos_val", "oos_test"] {
        let items = data[key].as_array().expect("split");
        let split: Split = items
            .iter()
            .map(|p| {
                (
                    p[0].as_str().expect("text").to_owned(),
                    p[1].as_str().expect("label").to_owned(),
                )
            })
            .collect();
        splits.insert(key.to_owned(), split);
    }
    let mut domain_of = HashMap::new();
    for (domain, intents) in read("domains.json").as_object().expect("domains") {
        for intent in intents.as_array().expect("intents") {
            domain_of.insert(intent.as_str().expect("intent").to_owned(), domain.clone());
        }
    }
    (splits, domain_of)
}

struct Scored {
    /// Predicted label and its score, per query.
    predictions: Vec<(String, f32)>,
}

fn route_all(router: &Router, table: &Table, queries: &[Vec<f32>]) -> Scored {
    let up = |_: &Entry| true;
    let predictions = queries
        .iter()
        .map(|q| {
            let d = router.decide(table, q, Need::Any, &up);
            let best = &d.candidates[0];
            (best.id.name().to_owned(), best.score)
        })
        .collect();
    Scored { predictions }
}

fn table_for(
    groups: &[(String, String, Vec<usize>)],
    train_vecs: &[Vec<f32>],
    profile_vecs: &[Vec<f32>],
    weight: f32,
    prototypes: usize,
) -> Table {
    let entries = groups
        .iter()
        .zip(profile_vecs)
        .map(|((name, domain, rows), profile)| {
            let examples: Vec<Vec<f32>> = rows.iter().map(|&i| train_vecs[i].clone()).collect();
            Entry {
                capability: Capability {
                    id: format!("clinc/{name}").parse().expect("id"),
                    kind: Kind::chat(),
                    domain: domain.clone(),
                    topics: Vec::new(),
                    description: name.replace('_', " "),
                    examples: Vec::new(),
                    backend: "none".into(),
                    model: name.clone(),
                    source: Source::Config,
                },
                node: "bench".into(),
                local: true,
                available: true,
                vector: capability_vector(&examples, profile, weight),
                prototypes: capability_prototypes(&examples, profile, weight, prototypes),
            }
        })
        .collect();
    Table::new(entries)
}

fn accuracy(pred: &Scored, gold: &[String]) -> f64 {
    let hits = pred
        .predictions
        .iter()
        .zip(gold)
        .filter(|((p, _), g)| p == *g)
        .count();
    hits as f64 / gold.len() as f64
}

/// The threshold that rejects at most `max_frr` of in-scope queries.
fn threshold_for(in_scope_scores: &mut [f32], max_frr: f64) -> f32 {
    in_scope_scores.sort_by(|a, b| a.total_cmp(b));
    let k = (in_scope_scores.len() as f64 * max_frr).floor() as usize;
    // Everything strictly below the k-th lowest score is rejected: at most k.
    in_scope_scores[k.min(in_scope_scores.len() - 1)]
}

#[tokio::main]
async fn main() {
    let (splits, domain_of) = load();
    let threads = std::env::var("EMBED_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    let embedder = Embedder::load(&EmbedderConfig {
        threads,
        ..Default::default()
    })
    .expect("embedder: run scripts/fetch-model.sh");
    let started = Instant::now();
    let mut vecs: HashMap<String, Vec<Vec<f32>>> = HashMap::new();
    for key in ["train", "val", "test", "oos_val", "oos_test"] {
        let texts: Vec<String> = splits[key].iter().map(|(t, _)| t.clone()).collect();
        vecs.insert(
            key.to_owned(),
            embedder.embed(texts).await.expect("embed").vectors,
        );
    }
    let embed_secs = started.elapsed().as_secs_f64();

    // Granularities: intents (150 capabilities) and domains (10 capabilities).
    let mut report = Vec::new();
    for granularity in ["intent", "domain"] {
        let label = |intent: &str| -> String {
            if granularity == "intent" {
                intent.to_owned()
            } else {
                domain_of[intent].clone()
            }
        };
        let mut groups: Vec<(String, String, Vec<usize>)> = Vec::new();
        let mut pos: HashMap<String, usize> = HashMap::new();
        for (i, (_, intent)) in splits["train"].iter().enumerate() {
            let l = label(intent);
            let g = *pos.entry(l.clone()).or_insert_with(|| {
                groups.push((l.clone(), domain_of[intent].clone(), Vec::new()));
                groups.len() - 1
            });
            groups[g].2.push(i);
        }
        let profiles: Vec<String> = groups.iter().map(|(n, _, _)| n.replace('_', " ")).collect();
        let profile_vecs = embedder.embed(profiles).await.expect("embed").vectors;
        let gold =
            |key: &str| -> Vec<String> { splits[key].iter().map(|(_, i)| label(i)).collect() };

        // Choose the description weight and the number of prototypes on val.
        let mut best = (f64::MIN, 0.0f32, 0usize);
        let mut grid = Vec::new();
        for p in [0, 2, 4, 8, 16] {
            for w in [0.0, 0.1, 0.2, 0.3] {
                let table = table_for(&groups, &vecs["train"], &profile_vecs, w, p);
                let router = Router::new(RoutingConfig {
                    threshold: -1.0,
                    explain_candidates: 1,
                    ..Default::default()
                });
                let acc = accuracy(&route_all(&router, &table, &vecs["val"]), &gold("val"));
                grid.push(format!("p={p} w={w}: {:.2}%", acc * 100.0));
                if acc > best.0 {
                    best = (acc, w, p);
                }
            }
        }
        eprintln!("{granularity} val grid: {}", grid.join(", "));
        let (weight, prototypes) = (best.1, best.2);
        let table = table_for(&groups, &vecs["train"], &profile_vecs, weight, prototypes);
        let router = Router::new(RoutingConfig {
            threshold: -1.0,
            explain_candidates: 1,
            ..Default::default()
        });
        let val = route_all(&router, &table, &vecs["val"]);
        let mut val_scores: Vec<f32> = val.predictions.iter().map(|p| p.1).collect();
        let threshold = threshold_for(&mut val_scores, 0.05);
        let oos_val = route_all(&router, &table, &vecs["oos_val"]);
        let oos_val_recall = oos_val
            .predictions
            .iter()
            .filter(|p| p.1 < threshold)
            .count() as f64
            / oos_val.predictions.len() as f64;

        let started = Instant::now();
        let test = route_all(&router, &table, &vecs["test"]);
        let per_decision_us = started.elapsed().as_secs_f64() * 1e6 / vecs["test"].len() as f64;
        let test_acc = accuracy(&test, &gold("test"));
        let test_frr = test.predictions.iter().filter(|p| p.1 < threshold).count() as f64
            / test.predictions.len() as f64;
        let oos_test = route_all(&router, &table, &vecs["oos_test"]);
        let oos_recall = oos_test
            .predictions
            .iter()
            .filter(|p| p.1 < threshold)
            .count() as f64
            / oos_test.predictions.len() as f64;
        // Intent routing judged at domain level: right domain, any intent in it.
        let domain_acc = if granularity == "intent" {
            let hits = test
                .predictions
                .iter()
                .zip(&splits["test"])
                .filter(|((p, _), (_, g))| domain_of[p] == domain_of[g])
                .count();
            Some(hits as f64 / test.predictions.len() as f64)
        } else {
            None
        };
        report.push(format!(
            "| {granularity} ({n} capabilities) | {w}, {prototypes} | {vacc:.2}% | {t:.3} | {test_acc:.2}% | {dacc} | {frr:.2}% | {oos:.1}% | {oosv:.1}% | {us:.1} |",
            n = groups.len(),
            w = weight,
            vacc = best.0 * 100.0,
            t = threshold,
            test_acc = test_acc * 100.0,
            dacc = domain_acc.map_or("-".to_owned(), |d| format!("{:.2}%", d * 100.0)),
            frr = test_frr * 100.0,
            oos = oos_recall * 100.0,
            oosv = oos_val_recall * 100.0,
            us = per_decision_us,
        ));
    }
    println!(
        "CLINC150 routing quality (all-MiniLM-L6-v2, {threads} threads; embedding {:.0} texts took {embed_secs:.1} s)",
        23_600.0
    );
    println!();
    println!(
        "| capabilities | description weight, prototypes (chosen on val) | val accuracy | threshold (val, FRR<=5%) | test accuracy | test accuracy at domain level | test false reject | oos_test recall | oos_val recall | decision us |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for line in report {
        println!("{line}");
    }
}
