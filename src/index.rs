//! Nearest-neighbour search over unit vectors (cosine = dot product).
//!
//! Three implementations behind [`VectorIndex`]: [`Exact`] scans every vector
//! (SIMD dot products; fastest for small tables, and exact), [`Quantized`]
//! scans 8-bit copies of them (a quarter of the bytes: faster from about ten
//! thousand vectors, and built in one pass) and [`Hnsw`] (instant-distance's
//! HNSW graph, approximate, immutable after build). [`build`] picks one by
//! size; the sizes come from the benchmark (`scripts/bench.sh`,
//! BENCHMARKS.md).

use instant_distance::{Builder, HnswMap, Search};

/// From this many vectors on, [`build`] returns a [`Quantized`] index.
/// Measured (BENCHMARKS.md): exact search is a little faster at 1k, the
/// quantized scan twice as fast at 10k and 2.5x at 50k.
pub const QUANTIZED_MIN_VECTORS: usize = 10_000;

/// From this many vectors on, [`build`] returns an HNSW index. Below it a
/// scan wins on the whole: at 50k vectors HNSW answered in 0.65 ms where the
/// quantized scan takes 1.5 ms, but it took 43 s to build (and every change
/// of the table rebuilds it) and found the true nearest for only 79 % of the
/// queries. A full route table (8,192 remote capabilities with their
/// prototypes) stays far below this.
pub const HNSW_MIN_VECTORS: usize = 200_000;

/// HNSW build breadth: lower builds faster; 40 keeps recall@1 at 1.0 on the
/// benchmark's 10k set.
const HNSW_EF_CONSTRUCTION: usize = 40;
/// HNSW search breadth (at least the `k` asked for).
const HNSW_EF_SEARCH: usize = 32;

/// A searchable, immutable set of vectors, each labelled by its position.
pub trait VectorIndex: Send + Sync {
    /// The `k` nearest vectors to `query`, best first, as `(position, cosine)`.
    fn search(&self, query: &[f32], k: usize) -> Vec<(usize, f32)>;
    /// Number of vectors.
    fn len(&self) -> usize;
    /// Whether there are no vectors.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Name shown in explanations and metrics.
    fn name(&self) -> &'static str;
}

/// Builds the index that suits `vectors` in size.
pub fn build(vectors: Vec<Vec<f32>>) -> Box<dyn VectorIndex> {
    if vectors.len() >= HNSW_MIN_VECTORS {
        Box::new(Hnsw::build(vectors))
    } else if vectors.len() >= QUANTIZED_MIN_VECTORS {
        Box::new(Quantized::new(vectors))
    } else {
        Box::new(Exact::new(vectors))
    }
}

/// Brute-force search over a contiguous matrix.
pub struct Exact {
    dim: usize,
    data: Vec<f32>,
}

impl Exact {
    pub fn new(vectors: Vec<Vec<f32>>) -> Self {
        let dim = vectors.first().map_or(0, Vec::len);
        let mut data = Vec::with_capacity(vectors.len() * dim);
        for v in &vectors {
            assert_eq!(v.len(), dim, "all vectors of an index have one width");
            data.extend_from_slice(v);
        }
        Self { dim, data }
    }

    /// Cosine of `query` with every vector, in order.
    pub fn scores(&self, query: &[f32]) -> Vec<f32> {
        if self.dim == 0 || query.len() != self.dim {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(self.data.len() / self.dim);
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: the CPU supports avx2 and fma, checked just above.
                unsafe { scan_avx2(query, &self.data, self.dim, &mut out) };
                return out;
            }
        }
        scan(query, &self.data, self.dim, &mut out);
        out
    }
}

/// Dot products of `query` with each `dim`-wide row of `data`.
#[inline(always)]
fn scan(query: &[f32], data: &[f32], dim: usize, out: &mut Vec<f32>) {
    // A plain loop, not a closure: closures do not inherit `target_feature`.
    for row in data.chunks_exact(dim) {
        out.push(dot_portable(query, row));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn scan_avx2(query: &[f32], data: &[f32], dim: usize, out: &mut Vec<f32>) {
    // The whole loop is compiled for AVX2 so the dot products inline into it.
    scan(query, data, dim, out);
}

impl VectorIndex for Exact {
    fn search(&self, query: &[f32], k: usize) -> Vec<(usize, f32)> {
        best_of(self.scores(query), k)
    }

    fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    fn name(&self) -> &'static str {
        "exact"
    }
}

/// Brute-force search over vectors stored as 8-bit integers: a quarter of
/// [`Exact`]'s memory and of the bytes each search reads, and built by one
/// pass over the vectors. Each vector keeps its own scale (its largest
/// component maps to 127), so a score is off by at most about 1e-3 of a
/// cosine; the table re-scores the hits it ranks with the full vectors.
pub struct Quantized {
    dim: usize,
    data: Vec<i8>,
    /// Per vector: what one unit of its integers is worth.
    scales: Vec<f32>,
}

/// A vector's integers and the scale that turns them back into floats.
fn quantize(v: &[f32], out: &mut Vec<i8>) -> f32 {
    let largest = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if largest == 0.0 || !largest.is_finite() {
        out.extend(std::iter::repeat_n(0, v.len()));
        return 0.0;
    }
    let to_int = 127.0 / largest;
    out.extend(
        v.iter()
            .map(|x| (x * to_int).round().clamp(-127.0, 127.0) as i8),
    );
    largest / 127.0
}

impl Quantized {
    pub fn new(vectors: Vec<Vec<f32>>) -> Self {
        let dim = vectors.first().map_or(0, Vec::len);
        let mut data = Vec::with_capacity(vectors.len() * dim);
        let mut scales = Vec::with_capacity(vectors.len());
        for v in &vectors {
            assert_eq!(v.len(), dim, "all vectors of an index have one width");
            scales.push(quantize(v, &mut data));
        }
        Self { dim, data, scales }
    }

    /// Approximate cosine of `query` with every vector, in order.
    pub fn scores(&self, query: &[f32]) -> Vec<f32> {
        if self.dim == 0 || query.len() != self.dim {
            return Vec::new();
        }
        let mut q = Vec::with_capacity(self.dim);
        let q_scale = quantize(query, &mut q);
        let mut out = Vec::with_capacity(self.scales.len());
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports avx2, checked just above.
                unsafe { scan_i8_avx2(&q, &self.data, self.dim, &mut out) };
            } else {
                scan_i8(&q, &self.data, self.dim, &mut out);
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        scan_i8(&q, &self.data, self.dim, &mut out);
        for (score, scale) in out.iter_mut().zip(&self.scales) {
            *score *= scale * q_scale;
        }
        out
    }
}

/// Integer dot products of `query` with each `dim`-wide row of `data`, as floats.
#[inline(always)]
fn scan_i8(query: &[i8], data: &[i8], dim: usize, out: &mut Vec<f32>) {
    for row in data.chunks_exact(dim) {
        // Integer sums may be reordered, so this vectorises as written.
        let sum: i32 = row
            .iter()
            .zip(query)
            .map(|(&a, &b)| i32::from(a) * i32::from(b))
            .sum();
        out.push(sum as f32);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn scan_i8_avx2(query: &[i8], data: &[i8], dim: usize, out: &mut Vec<f32>) {
    scan_i8(query, data, dim, out);
}

impl VectorIndex for Quantized {
    fn search(&self, query: &[f32], k: usize) -> Vec<(usize, f32)> {
        best_of(self.scores(query), k)
    }

    fn len(&self) -> usize {
        self.scales.len()
    }

    fn name(&self) -> &'static str {
        "quantized"
    }
}

/// Below this `k`, the scans keep a running top-k instead of sorting all scores.
const SMALL_K: usize = 64;

/// The `k` best of `scores` as `(position, score)`, best first; equal
/// scores in order of position.
fn best_of(scores: Vec<f32>, k: usize) -> Vec<(usize, f32)> {
    if k >= SMALL_K {
        return top_k(scores, k);
    }
    // Few results wanted: keep them in a small sorted buffer.
    let mut best: Vec<(usize, f32)> = Vec::with_capacity(k + 1);
    for (i, &s) in scores.iter().enumerate() {
        if best.len() == k && best.last().is_some_and(|w| s <= w.1) {
            continue;
        }
        let at = best.partition_point(|b| b.1 >= s);
        best.insert(at, (i, s));
        best.truncate(k);
    }
    best
}

/// The `k` best `(position, score)` pairs, best first.
pub fn top_k(scores: Vec<f32>, k: usize) -> Vec<(usize, f32)> {
    let mut pairs: Vec<(usize, f32)> = scores.into_iter().enumerate().collect();
    let k = k.min(pairs.len());
    if k == 0 {
        return Vec::new();
    }
    let by_score = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if k < pairs.len() {
        pairs.select_nth_unstable_by(k - 1, by_score);
        pairs.truncate(k);
    }
    pairs.sort_unstable_by(by_score);
    pairs
}

/// Dot product, with an AVX2+FMA path chosen at run time on x86-64.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports avx2 and fma, checked just above.
            return unsafe { dot_avx2(a, b) };
        }
    }
    dot_portable(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    // Same code as the portable version; compiled for wider registers.
    dot_portable(a, b)
}

#[inline(always)]
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    // Sixteen independent lanes let the compiler vectorise without reassociating
    // one float sum (which it may not do on its own).
    let mut acc = [0f32; 16];
    let chunks = a.len().min(b.len()) / 16;
    for (ca, cb) in a.chunks_exact(16).zip(b.chunks_exact(16)) {
        for i in 0..16 {
            // Not `mul_add`: without hardware FMA it is a slow library call.
            acc[i] += ca[i] * cb[i];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for i in chunks * 16..a.len().min(b.len()) {
        sum += a[i] * b[i];
    }
    sum
}

#[derive(Clone)]
struct Point(Vec<f32>);

impl instant_distance::Point for Point {
    fn distance(&self, other: &Self) -> f32 {
        1.0 - dot(&self.0, &other.0)
    }
}

/// Approximate search on an HNSW graph; built once, searched many times.
pub struct Hnsw {
    map: HnswMap<Point, usize>,
    len: usize,
}

impl Hnsw {
    /// Builds the graph; slow for large sets (seconds at 10k), so callers run it
    /// off the async runtime.
    pub fn build(vectors: Vec<Vec<f32>>) -> Self {
        let len = vectors.len();
        let points: Vec<Point> = vectors.into_iter().map(Point).collect();
        let values: Vec<usize> = (0..len).collect();
        let map = Builder::default()
            .ef_construction(HNSW_EF_CONSTRUCTION)
            .ef_search(HNSW_EF_SEARCH)
            .seed(0x41544d4f)
            .build(points, values);
        Self { map, len }
    }
}

impl VectorIndex for Hnsw {
    fn search(&self, query: &[f32], k: usize) -> Vec<(usize, f32)> {
        let mut search = Search::default();
        let query = Point(query.to_vec());
        self.map
            .search(&query, &mut search)
            .take(k)
            .map(|item| (*item.value, 1.0 - item.distance))
            .collect()
    }

    fn len(&self) -> usize {
        self.len
    }

    fn name(&self) -> &'static str {
        "hnsw"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random_unit(rng: &mut impl Rng, dim: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim).map(|_| rng.r#gen::<f32>() - 0.5).collect();
        crate::embed::normalize(&mut v);
        v
    }

    #[test]
    fn dot_matches_naive() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for dim in [1, 15, 16, 17, 384] {
            let a = random_unit(&mut rng, dim);
            let b = random_unit(&mut rng, dim);
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - naive).abs() < 1e-5, "dim {dim}");
        }
    }

    #[test]
    fn exact_finds_the_true_neighbours_in_order() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let vectors: Vec<Vec<f32>> = (0..500).map(|_| random_unit(&mut rng, 32)).collect();
        let index = Exact::new(vectors.clone());
        let hits = index.search(&vectors[42], 3);
        assert_eq!(hits[0].0, 42);
        assert!((hits[0].1 - 1.0).abs() < 1e-5);
        assert!(hits[0].1 >= hits[1].1 && hits[1].1 >= hits[2].1);
        assert_eq!(index.search(&vectors[0], 10_000).len(), 500);
        assert!(
            index.search(&[1.0; 3], 3).is_empty(),
            "wrong width: no hits, no panic"
        );
    }

    #[test]
    fn hnsw_recall_against_exact() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let vectors: Vec<Vec<f32>> = (0..2000).map(|_| random_unit(&mut rng, 48)).collect();
        let exact = Exact::new(vectors.clone());
        let hnsw = Hnsw::build(vectors);
        let mut found = 0;
        for _ in 0..100 {
            let q = random_unit(&mut rng, 48);
            let truth = exact.search(&q, 1)[0].0;
            if hnsw.search(&q, 10).iter().any(|(i, _)| *i == truth) {
                found += 1;
            }
        }
        assert!(found >= 90, "recall@10 of the true nearest: {found}/100");
    }

    #[test]
    fn quantized_scores_are_close_and_ties_keep_their_order() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut vectors: Vec<Vec<f32>> = (0..1000).map(|_| random_unit(&mut rng, 384)).collect();
        // Copies of one vector: equal scores come back in order of position.
        vectors.extend(std::iter::repeat_n(vectors[7].clone(), 5));
        let exact = Exact::new(vectors.clone());
        let quantized = Quantized::new(vectors.clone());
        for _ in 0..50 {
            let q = random_unit(&mut rng, 384);
            let (a, b) = (exact.scores(&q), quantized.scores(&q));
            assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 2e-3));
        }
        let hits = quantized.search(&vectors[7], 6);
        let positions: Vec<usize> = hits.iter().map(|h| h.0).collect();
        assert_eq!(positions, vec![7, 1000, 1001, 1002, 1003, 1004]);
        assert!((hits[0].1 - 1.0).abs() < 2e-3);
        assert!(quantized.search(&[1.0; 3], 3).is_empty(), "wrong width");
        let zero = Quantized::new(vec![vec![0.0; 4]]);
        assert_eq!(zero.search(&[1.0, 0.0, 0.0, 0.0], 1)[0].1, 0.0);
    }

    #[test]
    fn build_switches_by_size() {
        assert_eq!(build(vec![vec![1.0, 0.0]]).name(), "exact");
        assert_eq!(
            build(vec![vec![1.0, 0.0]; QUANTIZED_MIN_VECTORS]).name(),
            "quantized"
        );
        assert!(build(Vec::new()).is_empty());
    }
}
