//! The local sentence embedder: all-MiniLM-L6-v2 on ONNX Runtime (`ort`, loaded at
//! run time) with a `tokenizers` tokenizer; mean pooling, L2-normalised, 384-d.
//!
//! One worker thread owns the ONNX session (`Session::run` needs `&mut self`);
//! callers send jobs over a bounded channel and await a oneshot reply. Jobs that
//! queue up while the model runs are merged into one batch, padded to the longest
//! input of the batch (never to a fixed length: see the notes on the shipped
//! tokenizer, which pads to 128).

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;
use tokenizers::{Tokenizer, TruncationParams};
use tokio::sync::{mpsc, oneshot};

use crate::config::EmbedderConfig;

/// Identifier of the embedding model, as served by `POST /v1/embeddings`.
pub const MODEL_ID: &str = "all-MiniLM-L6-v2";

/// Jobs waiting for the worker. Each holds one request's texts; when full,
/// callers wait (backpressure) rather than queueing without bound.
const QUEUE_CAPACITY: usize = 256;

/// Why embedding failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A model or runtime file is not where the config says.
    #[error("{what} not found at {path}; run scripts/fetch-model.sh to fetch it (or set {hint})")]
    Missing {
        what: &'static str,
        path: PathBuf,
        hint: &'static str,
    },
    /// ONNX Runtime could not be loaded or failed to run the model.
    #[error("onnx runtime: {0}")]
    Runtime(String),
    /// The tokenizer file is unusable or failed on an input.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The model's outputs do not look like a sentence encoder's.
    #[error("model output: {0}")]
    Output(String),
    /// The worker thread is gone (the node is shutting down).
    #[error("the embedder has stopped")]
    Stopped,
}

/// Vectors for a list of texts, in order, and how many tokens they took.
#[derive(Debug, Clone)]
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: usize,
}

struct Job {
    texts: Vec<String>,
    reply: oneshot::Sender<Result<Batch, Error>>,
}

/// Vectors of recent texts with their token counts, keyed by the SHA-256 of
/// the text (so a long text costs 32 bytes of key, not its length).
type Cache = Mutex<lru::LruCache<[u8; 32], (Vec<f32>, usize)>>;

/// A cheap, cloneable handle to the embedding worker.
#[derive(Clone)]
pub struct Embedder {
    tx: mpsc::Sender<Job>,
    dim: usize,
    /// `None` when `cache_entries` is 0.
    cache: Option<Arc<Cache>>,
}

static ENVIRONMENT: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

fn environment(runtime: &Path) -> Result<&'static ort::environment::Environment, Error> {
    ENVIRONMENT
        .get_or_init(|| {
            let builder = ort::init_from(runtime).map_err(|e| e.to_string())?;
            builder
                .with_name("atmosphere")
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::Runtime(e.clone()))
}

/// Checks that the model, tokenizer and runtime files exist, naming the missing one.
pub fn check_files(model_dir: &Path, runtime: &Path) -> Result<(), Error> {
    let model = model_dir.join("model.onnx");
    let tokenizer = model_dir.join("tokenizer.json");
    if !runtime.exists() {
        return Err(Error::Missing {
            what: "ONNX Runtime library",
            path: runtime.to_owned(),
            hint: "ORT_DYLIB_PATH or [embedder] runtime",
        });
    }
    for (what, path) in [("embedding model", model), ("tokenizer", tokenizer)] {
        if !path.exists() {
            return Err(Error::Missing {
                what,
                path,
                hint: "[embedder] model_dir",
            });
        }
    }
    Ok(())
}

impl Embedder {
    /// Loads the model and starts the worker thread. Blocking (about 200 ms):
    /// call it before the runtime serves requests, or from `spawn_blocking`.
    pub fn load(config: &EmbedderConfig) -> Result<Self, Error> {
        let (model_dir, runtime) = config.resolved();
        check_files(&model_dir, &runtime)?;
        let env = environment(&runtime)?;
        let mut tokenizer = Tokenizer::from_file(model_dir.join("tokenizer.json"))
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: config.max_tokens,
                ..Default::default()
            }))
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let started = Instant::now();
        let session = Session::builder(env)
            .map_err(|e| Error::Runtime(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| Error::Runtime(e.to_string()))?
            .with_intra_threads(config.threads)
            .map_err(|e| Error::Runtime(e.to_string()))?
            .with_inter_threads(1)
            .map_err(|e| Error::Runtime(e.to_string()))?
            // The runtime's own arena and per-shape memory plans keep the
            // peak of every batch shape ever seen: 32 long texts took the
            // node from 227 to 766 MiB, 128 to 1.6 GiB, and it stayed.
            .with_memory_pattern(false)
            .map_err(|e| Error::Runtime(e.to_string()))?
            .with_execution_providers([ort::ep::CPU::default().with_arena_allocator(false).build()])
            .map_err(|e| Error::Runtime(e.to_string()))?
            .commit_from_file(model_dir.join("model.onnx"))
            .map_err(|e| Error::Runtime(e.to_string()))?;
        let mut model = Model::new(session, tokenizer)?;
        // One probe run fixes the output width and warms the session up.
        let probe = model.run(&["probe".to_owned()])?;
        let dim = probe
            .vectors
            .first()
            .map(Vec::len)
            .ok_or_else(|| Error::Output("no vector for the probe input".into()))?;
        tracing::info!(
            model = %model_dir.display(),
            dim,
            threads = config.threads,
            load_ms = started.elapsed().as_millis() as u64,
            "embedder loaded"
        );
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let max_batch = config.max_batch;
        std::thread::Builder::new()
            .name("embedder".into())
            .spawn(move || worker(model, rx, max_batch))
            .map_err(|e| Error::Runtime(format!("cannot start the embedder thread: {e}")))?;
        let cache = NonZeroUsize::new(config.cache_entries)
            .map(|n| Arc::new(Mutex::new(lru::LruCache::new(n))));
        Ok(Self { tx, dim, cache })
    }

    /// Width of the vectors.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Embeds texts (any number; large lists are split into batches). Texts
    /// embedded recently come from the cache.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Embedded, Error> {
        let Some(cache) = &self.cache else {
            let out = self.run(texts).await?;
            return Ok(Embedded {
                vectors: out.vectors,
                tokens: out.per_text_tokens.iter().sum(),
            });
        };
        let keys: Vec<[u8; 32]> = texts.iter().map(|t| Sha256::digest(t).into()).collect();
        let mut found: Vec<Option<(Vec<f32>, usize)>> = {
            let mut cache = cache.lock();
            keys.iter().map(|k| cache.get(k).cloned()).collect()
        };
        let missing: Vec<String> = texts
            .into_iter()
            .zip(&found)
            .filter(|(_, f)| f.is_none())
            .map(|(t, _)| t)
            .collect();
        if !missing.is_empty() {
            let out = self.run(missing).await?;
            let mut fresh = out.vectors.into_iter().zip(out.per_text_tokens);
            let mut cache = cache.lock();
            for (slot, key) in found.iter_mut().zip(&keys) {
                if slot.is_none() {
                    let Some(v) = fresh.next() else {
                        return Err(Error::Output("fewer vectors than texts".into()));
                    };
                    cache.put(*key, v.clone());
                    *slot = Some(v);
                }
            }
        }
        let mut out = Embedded {
            vectors: Vec::with_capacity(found.len()),
            tokens: 0,
        };
        for (v, tokens) in found.into_iter().flatten() {
            out.vectors.push(v);
            out.tokens += tokens;
        }
        Ok(out)
    }

    /// Runs texts through the model (no cache).
    async fn run(&self, texts: Vec<String>) -> Result<Batch, Error> {
        if texts.is_empty() {
            return Ok(Batch {
                vectors: Vec::new(),
                per_text_tokens: Vec::new(),
            });
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { texts, reply })
            .await
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Embeds one text.
    pub async fn embed_one(&self, text: &str) -> Result<Vec<f32>, Error> {
        let mut out = self.embed(vec![text.to_owned()]).await?;
        out.vectors.pop().ok_or(Error::Stopped)
    }
}

fn worker(mut model: Model, mut rx: mpsc::Receiver<Job>, max_batch: usize) {
    while let Some(first) = rx.blocking_recv() {
        // Merge whatever else is already waiting, up to one batch of texts.
        let mut jobs = vec![first];
        let mut count = jobs[0].texts.len();
        while count < max_batch {
            match rx.try_recv() {
                Ok(job) => {
                    count += job.texts.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let texts: Vec<String> = jobs.iter().flat_map(|j| j.texts.iter().cloned()).collect();
        match model.run_chunked(&texts, max_batch) {
            Ok(all) => {
                let mut vectors = all.vectors.into_iter();
                let mut tokens = all.per_text_tokens.into_iter();
                for job in jobs {
                    let n = job.texts.len();
                    let out = Batch {
                        vectors: vectors.by_ref().take(n).collect(),
                        per_text_tokens: tokens.by_ref().take(n).collect(),
                    };
                    let _ = job.reply.send(Ok(out));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "embedding failed");
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
    tracing::debug!("embedder worker stopped");
}

struct Model {
    session: Session,
    tokenizer: Arc<Tokenizer>,
    has_token_types: bool,
}

struct Batch {
    vectors: Vec<Vec<f32>>,
    per_text_tokens: Vec<usize>,
}

impl Model {
    fn new(session: Session, tokenizer: Tokenizer) -> Result<Self, Error> {
        let names: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        for required in ["input_ids", "attention_mask"] {
            if !names.contains(&required) {
                return Err(Error::Output(format!(
                    "model has no {required} input (inputs: {names:?})"
                )));
            }
        }
        let has_token_types = names.contains(&"token_type_ids");
        Ok(Self {
            session,
            tokenizer: Arc::new(tokenizer),
            has_token_types,
        })
    }

    /// Runs texts in batches of at most `max_batch`, grouping texts of similar
    /// length so that little padding is computed; results come back in order.
    fn run_chunked(&mut self, texts: &[String], max_batch: usize) -> Result<Batch, Error> {
        if texts.len() <= max_batch {
            let out = self.run(texts)?;
            return Ok(Batch {
                vectors: out.vectors,
                per_text_tokens: out.per_text_tokens,
            });
        }
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let mut vectors = vec![Vec::new(); texts.len()];
        let mut tokens = vec![0; texts.len()];
        for chunk in order.chunks(max_batch) {
            let batch: Vec<String> = chunk.iter().map(|&i| texts[i].clone()).collect();
            let out = self.run(&batch)?;
            for ((&i, v), t) in chunk.iter().zip(out.vectors).zip(out.per_text_tokens) {
                vectors[i] = v;
                tokens[i] = t;
            }
        }
        Ok(Batch {
            vectors,
            per_text_tokens: tokens,
        })
    }

    fn run(&mut self, texts: &[String]) -> Result<Batch, Error> {
        let mut encodings = Vec::with_capacity(texts.len());
        for text in texts {
            encodings.push(
                self.tokenizer
                    .encode(text.as_str(), true)
                    .map_err(|e| Error::Tokenizer(e.to_string()))?,
            );
        }
        let batch = encodings.len();
        let seq = encodings.iter().map(|e| e.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![0i64; batch * seq];
        let mut mask = vec![0i64; batch * seq];
        let mut types = vec![0i64; batch * seq];
        let mut per_text_tokens = Vec::with_capacity(batch);
        for (row, enc) in encodings.iter().enumerate() {
            let base = row * seq;
            per_text_tokens.push(enc.len());
            for (j, ((&id, &m), &t)) in enc
                .get_ids()
                .iter()
                .zip(enc.get_attention_mask())
                .zip(enc.get_type_ids())
                .enumerate()
            {
                ids[base + j] = i64::from(id);
                mask[base + j] = i64::from(m);
                types[base + j] = i64::from(t);
            }
        }
        let shape = [batch as i64, seq as i64];
        let rt = |e: ort::Error| Error::Runtime(e.to_string());
        let mut inputs = ort::inputs! {
            "input_ids" => Tensor::from_array((shape, ids)).map_err(rt)?,
            "attention_mask" => Tensor::from_array((shape, mask.clone())).map_err(rt)?,
        };
        if self.has_token_types {
            inputs.push((
                "token_type_ids".into(),
                Tensor::from_array((shape, types)).map_err(rt)?.into(),
            ));
        }
        let outputs = self.session.run(inputs).map_err(rt)?;
        let (out_shape, hidden) = outputs[0].try_extract_tensor::<f32>().map_err(rt)?;
        if out_shape.len() != 3 || out_shape[0] as usize != batch || out_shape[1] as usize != seq {
            return Err(Error::Output(format!(
                "expected [batch, seq, dim] = [{batch}, {seq}, _], got {out_shape:?}"
            )));
        }
        let dim = out_shape[2] as usize;
        let mut vectors = Vec::with_capacity(batch);
        for row in 0..batch {
            let mut sum = vec![0f32; dim];
            let mut count = 0f32;
            for j in 0..seq {
                if mask[row * seq + j] == 0 {
                    continue;
                }
                count += 1.0;
                let start = (row * seq + j) * dim;
                for (s, h) in sum.iter_mut().zip(&hidden[start..start + dim]) {
                    *s += h;
                }
            }
            let count = count.max(1.0);
            sum.iter_mut().for_each(|s| *s /= count);
            normalize(&mut sum);
            vectors.push(sum);
        }
        Ok(Batch {
            vectors,
            per_text_tokens,
        })
    }
}

/// Scales a vector to unit length (leaves a zero vector alone).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > f32::EPSILON {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_name_the_file_and_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = check_files(dir.path(), &dir.path().join("libonnxruntime.so")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("libonnxruntime.so"), "{msg}");
        assert!(msg.contains("scripts/fetch-model.sh"), "{msg}");
        std::fs::write(dir.path().join("libonnxruntime.so"), b"").expect("write");
        let msg = check_files(dir.path(), &dir.path().join("libonnxruntime.so"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("model.onnx"), "{msg}");
    }

    #[test]
    fn normalize_gives_unit_length() {
        let mut v = vec![3.0, 4.0];
        normalize(&mut v);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        let mut z = vec![0.0; 3];
        normalize(&mut z);
        assert_eq!(z, vec![0.0; 3]);
    }
}
