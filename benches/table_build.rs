//! Route table builds at the table's full size.
//!
//!   cargo bench --bench table_build
//!
//! A table of 16 local capabilities and N remote ones, each with a main
//! vector and 4 prototypes (the most `routing.prototypes` gives by default), built as the catalog
//! builds it (`Table::calibrated`): the time of one build and the process's
//! RSS after it, for N = 1,024 / 4,096 / 8,192 (the remote limit), once with
//! every remote capability the same (one announcement copied by many origins)
//! and once with random vectors (all different).

mod support;

use std::time::Instant;

use atmosphere::embed::normalize;
use atmosphere::routing::{Entry, Table, Trust, fit};
use rand::{Rng, SeedableRng};
use support::{local_entry, rss_kib};

const DIM: usize = 384;
const PROTOTYPES: usize = 4;

fn random_unit(rng: &mut impl Rng) -> Vec<f32> {
    let mut v: Vec<f32> = (0..DIM).map(|_| rng.r#gen::<f32>() - 0.5).collect();
    normalize(&mut v);
    v
}

fn entry(i: usize, local: bool, vector: Vec<f32>, prototypes: Vec<Vec<f32>>) -> Entry {
    Entry {
        node: if local {
            "self".into()
        } else {
            format!("node-{}", i / 16)
        },
        local,
        prototypes,
        reference: Some(0.6),
        trust: if local { Trust::Local } else { Trust::Stranger },
        ..local_entry(&format!("bench/cap-{i}"), vector)
    }
}

fn main() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let background =
        fit::Background::new(&(0..200).map(|_| random_unit(&mut rng)).collect::<Vec<_>>());
    println!("| remote capabilities | entries | remote vectors | build (ms) | RSS after (MiB) |");
    println!("|---|---|---|---|---|");
    for same in [true, false] {
        for n in [1024usize, 4096, 8192] {
            let copied: Vec<Vec<f32>> = (0..=PROTOTYPES).map(|_| random_unit(&mut rng)).collect();
            let mut entries: Vec<Entry> = (0..16)
                .map(|i| {
                    let v: Vec<Vec<f32>> =
                        (0..=PROTOTYPES).map(|_| random_unit(&mut rng)).collect();
                    entry(i, true, v[0].clone(), v[1..].to_vec())
                })
                .collect();
            for i in 0..n {
                let v = if same {
                    copied.clone()
                } else {
                    (0..=PROTOTYPES).map(|_| random_unit(&mut rng)).collect()
                };
                entries.push(entry(16 + i, false, v[0].clone(), v[1..].to_vec()));
            }
            let start = Instant::now();
            let table = Table::calibrated(entries, &background);
            let took = start.elapsed().as_secs_f64() * 1e3;
            println!(
                "| {n} | {} | {} | {took:.0} | {:.0} |",
                table.len(),
                if same { "the same" } else { "random" },
                rss_kib(std::process::id()) as f64 / 1024.0
            );
            drop(table);
        }
    }
}
