//! The real embedder on the real model (fetched by scripts/fetch-model.sh).

use atmosphere::config::EmbedderConfig;
use atmosphere::embed::Embedder;

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn embedder() -> Embedder {
    let config = EmbedderConfig {
        threads: 1,
        ..Default::default()
    };
    Embedder::load(&config).expect("model fetched by scripts/fetch-model.sh")
}

#[tokio::test]
async fn vectors_are_unit_length_and_meaningful() {
    let e = embedder();
    assert_eq!(e.dim(), 384);
    let out = e
        .embed(vec![
            "What should I feed my alpacas in winter?".into(),
            "Llamas and alpacas need hay and fresh water.".into(),
            "Write a Rust function that reverses a string.".into(),
        ])
        .await
        .expect("embeds");
    assert_eq!(out.vectors.len(), 3);
    for v in &out.vectors {
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
    let related = cosine(&out.vectors[0], &out.vectors[1]);
    let unrelated = cosine(&out.vectors[0], &out.vectors[2]);
    assert!(
        related > unrelated + 0.2,
        "related {related} unrelated {unrelated}"
    );
    assert!(out.tokens > 20, "tokens {}", out.tokens);
}

#[tokio::test]
async fn batching_does_not_change_results() {
    let e = embedder();
    let texts: Vec<String> = (0..70)
        .map(|i| format!("sentence number {i} {}", "word ".repeat(i % 13)))
        .collect();
    let together = e.embed(texts.clone()).await.expect("batch");
    // Concurrent single requests get merged into batches by the worker.
    let singles = futures::future::join_all(texts.iter().map(|t| e.embed_one(t))).await;
    for (a, b) in together.vectors.iter().zip(singles) {
        let b = b.expect("single");
        assert!(cosine(a, &b) > 0.9999, "padding changed a vector");
    }
}

#[tokio::test]
async fn long_input_is_truncated_not_fatal() {
    let e = embedder();
    let long = "llama ".repeat(5000);
    let out = e.embed(vec![long]).await.expect("long input");
    assert_eq!(out.tokens, 256);
}

#[tokio::test]
async fn cached_texts_give_the_model_s_vectors_and_token_counts() {
    let cached = embedder();
    let uncached = Embedder::load(&EmbedderConfig {
        threads: 1,
        cache_entries: 0,
        ..Default::default()
    })
    .expect("model");
    let first = vec!["How much hay does a llama eat?".to_owned()];
    cached.embed(first.clone()).await.expect("embeds");
    // One text seen before between two new ones, and a repeat within the call.
    let texts: Vec<String> = vec![
        "Why does my Python script raise a KeyError?".into(),
        first[0].clone(),
        "Plan a week in Portugal".into(),
        "Why does my Python script raise a KeyError?".into(),
    ];
    let a = cached.embed(texts.clone()).await.expect("cached");
    let b = uncached.embed(texts).await.expect("uncached");
    assert_eq!(a.tokens, b.tokens);
    assert_eq!(a.vectors.len(), 4);
    for (x, y) in a.vectors.iter().zip(&b.vectors) {
        assert!(cosine(x, y) > 0.9999, "a cached vector differs");
    }
}
