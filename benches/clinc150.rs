//! Routing quality on CLINC150 through the node's own code path: each intent
//! (or domain) is a capability whose examples come from `train`; the
//! embedder, capability vectors, references, background, table and router are
//! the ones the node uses.
//!
//! Two parts:
//! - **Few examples** (how people describe capabilities): k = 3, 5, 10
//!   examples per intent drawn from `train`, 5 seeded draws each, with the
//!   rule the node uses by default (nothing fitted on `val` or `test`), next
//!   to the old fixed threshold (0.35) and a plain centroid baseline.
//! - **Full data** (100 examples per intent): the default rule, and the
//!   best the router does when its settings are chosen on `val`.
//!
//!   cargo bench --bench clinc150            (CLINC150_DIR overrides the data path)

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use atmosphere::capability::{Capability, Kind, Source};
use atmosphere::config::{EmbedderConfig, RoutingConfig};
use atmosphere::embed::Embedder;
use atmosphere::routing::fit::{self, Background};
use atmosphere::routing::{
    Entry, Need, Outcome, Router, Table, capability_prototypes, capability_vector,
};
use rand::SeedableRng;
use rand::seq::SliceRandom;
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

/// A capability to build: its name (the label it answers for), its domain, and
/// the rows of `train` that are its examples.
struct Group {
    name: String,
    domain: String,
    rows: Vec<usize>,
}

/// What the bench has embedded.
struct Data {
    splits: HashMap<String, Split>,
    domain_of: HashMap<String, String>,
    vecs: HashMap<String, Vec<Vec<f32>>>,
    /// Embedded names (`_` as spaces) of intents and domains.
    names: HashMap<String, Vec<f32>>,
    background: Background,
}

/// The table the node would build for these groups with `routing`'s settings
/// (as `catalog` does: vector, prototypes and reference from the examples).
fn table_for(data: &Data, groups: &[Group], routing: &RoutingConfig) -> Table {
    let w = routing.description_weight;
    let entries = groups
        .iter()
        .map(|g| {
            let examples: Vec<Vec<f32>> = g
                .rows
                .iter()
                .map(|&i| data.vecs["train"][i].clone())
                .collect();
            let profile = &data.names[&g.name];
            Entry {
                capability: std::sync::Arc::new(Capability {
                    domain: g.domain.clone(),
                    description: g.name.replace('_', " "),
                    ..Capability::new(
                        format!("clinc/{}", g.name).parse().expect("id"),
                        Kind::chat(),
                        Source::Config,
                        "none",
                        &g.name,
                    )
                }),
                node: "bench".into(),
                local: true,
                available: true,
                vector: capability_vector(&examples, profile, w),
                prototypes: capability_prototypes(&examples, profile, w, routing.prototypes),
                reference: fit::reference(&examples, profile, w),
                trust: atmosphere::routing::Trust::Local,
            }
        })
        .collect();
    Table::calibrated(entries, &data.background)
}

/// Per query: the chosen label (None: refused) and the best score.
fn route_all(router: &Router, table: &Table, queries: &[Vec<f32>]) -> Vec<(Option<String>, f32)> {
    let up = |_: &Entry| true;
    queries
        .iter()
        .map(|q| {
            let d = router.decide(table, q, &Need::Any, &up);
            let chosen = match d.outcome {
                Outcome::Matched | Outcome::General => d.chosen.map(|c| c.id.name().to_owned()),
                _ => None,
            };
            (chosen, d.candidates.first().map_or(f32::MIN, |c| c.score))
        })
        .collect()
}

/// In-scope right, in-scope refused, out-of-scope refused (fractions).
#[derive(Clone, Copy, Default)]
struct Scores {
    right: f64,
    refused: f64,
    oos_refused: f64,
}

fn score(data: &Data, router: &Router, table: &Table, label: &dyn Fn(&str) -> String) -> Scores {
    let test = route_all(router, table, &data.vecs["test"]);
    let oos = route_all(router, table, &data.vecs["oos_test"]);
    let n = test.len() as f64;
    let right = test
        .iter()
        .zip(&data.splits["test"])
        .filter(|((p, _), (_, g))| p.as_deref() == Some(label(g).as_str()))
        .count() as f64
        / n;
    let refused = test.iter().filter(|(p, _)| p.is_none()).count() as f64 / n;
    let oos_refused = oos.iter().filter(|(p, _)| p.is_none()).count() as f64 / oos.len() as f64;
    Scores {
        right,
        refused,
        oos_refused,
    }
}

/// The baseline the issue measured: one plain centroid per capability (no
/// description, no prototypes), top-1 with nothing refused; out-of-scope recall
/// at the threshold that refuses at most 5% of `val`, which is fitted on
/// `val` (a user has no such split).
fn centroid_baseline(data: &Data, groups: &[Group], label: &dyn Fn(&str) -> String) -> Scores {
    let routing = RoutingConfig {
        threshold: Some(-1.0),
        description_weight: 0.0,
        prototypes: 0,
        explain_candidates: 1,
        ..Default::default()
    };
    let table = table_for(data, groups, &routing);
    let router = Router::new(routing);
    let test = route_all(&router, &table, &data.vecs["test"]);
    let mut val: Vec<f32> = route_all(&router, &table, &data.vecs["val"])
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    val.sort_by(f32::total_cmp);
    let threshold = val[(val.len() as f64 * 0.05).floor() as usize];
    let oos = route_all(&router, &table, &data.vecs["oos_test"]);
    let right = test
        .iter()
        .zip(&data.splits["test"])
        .filter(|((p, _), (_, g))| p.as_deref() == Some(label(g).as_str()))
        .count() as f64
        / test.len() as f64;
    Scores {
        right,
        refused: 0.0,
        oos_refused: oos.iter().filter(|(_, s)| *s < threshold).count() as f64 / oos.len() as f64,
    }
}

/// The capability that should answer an intent's requests at this
/// granularity: the intent itself, or its domain.
fn label_at(data: &Data, granularity: &str, intent: &str) -> String {
    if granularity == "intent" {
        intent.to_owned()
    } else {
        data.domain_of[intent].clone()
    }
}

/// Capabilities at this granularity from the chosen rows of `train`.
fn groups_of(data: &Data, rows: &[usize], granularity: &str) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    let mut pos: HashMap<String, usize> = HashMap::new();
    for &i in rows {
        let intent = &data.splits["train"][i].1;
        let domain = data.domain_of[intent].clone();
        let name = if granularity == "intent" {
            intent.clone()
        } else {
            domain.clone()
        };
        let g = *pos.entry(name.clone()).or_insert_with(|| {
            groups.push(Group {
                name,
                domain,
                rows: Vec::new(),
            });
            groups.len() - 1
        });
        groups[g].rows.push(i);
    }
    groups
}

/// `k` rows of `train` per intent, drawn with `seed`.
fn draw(data: &Data, k: usize, seed: u64) -> Vec<usize> {
    let mut by_intent: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for (i, (_, intent)) in data.splits["train"].iter().enumerate() {
        by_intent.entry(intent).or_default().push(i);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    by_intent
        .values()
        .flat_map(|rows| {
            rows.choose_multiple(&mut rng, k)
                .copied()
                .collect::<Vec<_>>()
        })
        .collect()
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// Mean and worst of several draws, as table cells.
fn summary(runs: &[Scores]) -> String {
    let n = runs.len() as f64;
    let mean = |f: fn(&Scores) -> f64| runs.iter().map(f).sum::<f64>() / n;
    let min = |f: fn(&Scores) -> f64| runs.iter().map(f).fold(f64::MAX, f64::min);
    let max = |f: fn(&Scores) -> f64| runs.iter().map(f).fold(f64::MIN, f64::max);
    format!(
        "{} ({}) | {} ({}) | {} ({})",
        pct(mean(|s| s.right)),
        pct(min(|s| s.right)),
        pct(mean(|s| s.refused)),
        pct(max(|s| s.refused)),
        pct(mean(|s| s.oos_refused)),
        pct(min(|s| s.oos_refused)),
    )
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
    let mut labels: Vec<String> = domain_of.keys().cloned().collect();
    labels.extend(domain_of.values().cloned());
    labels.sort();
    labels.dedup();
    let named = embedder
        .embed(labels.iter().map(|l| l.replace('_', " ")).collect())
        .await
        .expect("embed")
        .vectors;
    let background = Background::new(
        &embedder
            .embed(fit::background_texts())
            .await
            .expect("embed")
            .vectors,
    );
    let embed_secs = started.elapsed().as_secs_f64();
    let data = Data {
        splits,
        domain_of,
        vecs,
        names: labels.into_iter().zip(named).collect(),
        background,
    };
    println!(
        "CLINC150 routing quality (all-MiniLM-L6-v2, {threads} threads; embedding took {embed_secs:.0} s)"
    );
    println!();
    println!(
        "Cells: mean of 5 draws (worst draw). Right: in-scope requests answered by the right capability; refused: in-scope requests refused; oos refused: out-of-scope requests refused."
    );
    println!();
    println!("| capabilities | examples | rule | right | refused | oos refused |");
    println!("|---|---|---|---|---|---|");
    let defaults = RoutingConfig::default();
    let old = RoutingConfig {
        threshold: Some(0.35),
        ..Default::default()
    };
    for granularity in ["intent", "domain"] {
        let label = |intent: &str| label_at(&data, granularity, intent);
        for k in [3, 5, 10] {
            let mut rule = Vec::new();
            let mut fixed = Vec::new();
            let mut baseline = Vec::new();
            for seed in 0..5 {
                let groups = groups_of(&data, &draw(&data, k, seed), granularity);
                let table = table_for(&data, &groups, &defaults);
                rule.push(score(&data, &Router::new(defaults.clone()), &table, &label));
                fixed.push(score(&data, &Router::new(old.clone()), &table, &label));
                baseline.push(centroid_baseline(&data, &groups, &label));
            }
            let n = if granularity == "intent" { 150 } else { 10 };
            println!(
                "| {n} {granularity}s | {k} per intent | **default (fit >= {})** | {} |",
                defaults.min_fit,
                summary(&rule)
            );
            println!(
                "| {n} {granularity}s | {k} per intent | old default (threshold 0.35) | {} |",
                summary(&fixed)
            );
            println!(
                "| {n} {granularity}s | {k} per intent | centroid, top-1; oos at 5% of val refused (fitted on val) | {} |",
                summary(&baseline)
            );
        }
    }

    // What each part of the default brings, 150 intents, 5 examples.
    println!();
    println!("Parts of the default, 150 intents, 5 examples per intent (mean of 5 draws (worst)):");
    println!();
    println!("| variant | right | refused | oos refused |");
    println!("|---|---|---|---|");
    let variants: Vec<(String, RoutingConfig)> = vec![
        ("default".into(), defaults.clone()),
        (
            "no description blended in (description_weight 0)".into(),
            RoutingConfig {
                description_weight: 0.0,
                ..defaults.clone()
            },
        ),
        (
            "min_fit 0.4".into(),
            RoutingConfig {
                min_fit: 0.4,
                ..defaults.clone()
            },
        ),
        (
            "min_fit 0.6".into(),
            RoutingConfig {
                min_fit: 0.6,
                ..defaults.clone()
            },
        ),
        (
            "min_fit 0.7".into(),
            RoutingConfig {
                min_fit: 0.7,
                ..defaults.clone()
            },
        ),
    ];
    let intent = |i: &str| i.to_owned();
    for (name, routing) in variants {
        let runs: Vec<Scores> = (0..5)
            .map(|seed| {
                let groups = groups_of(&data, &draw(&data, 5, seed), "intent");
                let table = table_for(&data, &groups, &routing);
                score(&data, &Router::new(routing.clone()), &table, &intent)
            })
            .collect();
        println!("| {name} | {} |", summary(&runs));
    }

    full_data(&data);
}

/// All 100 examples per intent: the default rule, and the router's best with
/// settings chosen on `val` (the figures of the first release).
fn full_data(data: &Data) {
    println!();
    println!("Full data (100 examples per intent):");
    println!();
    println!("| capabilities | rule | right | refused | oos refused | decision us |");
    println!("|---|---|---|---|---|---|");
    let all: Vec<usize> = (0..data.splits["train"].len()).collect();
    for granularity in ["intent", "domain"] {
        let label = |intent: &str| label_at(data, granularity, intent);
        let groups = groups_of(data, &all, granularity);
        let n = groups.len();
        let defaults = RoutingConfig::default();
        let table = table_for(data, &groups, &defaults);
        let router = Router::new(defaults.clone());
        let started = Instant::now();
        let s = score(data, &router, &table, &label);
        let us = started.elapsed().as_secs_f64() * 1e6
            / (data.vecs["test"].len() + data.vecs["oos_test"].len()) as f64;
        println!(
            "| {n} {granularity}s | **default (fit >= {})** | {} | {} | {} | {us:.0} |",
            defaults.min_fit,
            pct(s.right),
            pct(s.refused),
            pct(s.oos_refused)
        );

        // Settings chosen on val: description weight, prototypes, then the
        // threshold that refuses at most 5% of val.
        let mut best = (f64::MIN, defaults.clone());
        for prototypes in [0, 2, 4, 8, 16] {
            for description_weight in [0.0, 0.1, 0.2, 0.3] {
                let routing = RoutingConfig {
                    threshold: Some(-1.0),
                    description_weight,
                    prototypes,
                    explain_candidates: 1,
                    ..Default::default()
                };
                let table = table_for(data, &groups, &routing);
                let val = route_all(&Router::new(routing.clone()), &table, &data.vecs["val"]);
                let acc = val
                    .iter()
                    .zip(&data.splits["val"])
                    .filter(|((p, _), (_, g))| p.as_deref() == Some(label(g).as_str()))
                    .count() as f64
                    / val.len() as f64;
                if acc > best.0 {
                    best = (acc, routing);
                }
            }
        }
        let mut routing = best.1;
        let table = table_for(data, &groups, &routing);
        let mut val: Vec<f32> = route_all(&Router::new(routing.clone()), &table, &data.vecs["val"])
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        val.sort_by(f32::total_cmp);
        let threshold = val[(val.len() as f64 * 0.05).floor() as usize];
        routing.threshold = Some(threshold);
        let s = score(data, &Router::new(routing.clone()), &table, &label);
        println!(
            "| {n} {granularity}s | fitted on val (weight {}, {} prototypes, threshold {threshold:.3}) | {} | {} | {} | |",
            routing.description_weight,
            routing.prototypes,
            pct(s.right),
            pct(s.refused),
            pct(s.oos_refused)
        );
    }
}
