//! A capability's routing vectors, built from its examples and its profile
//! text, and a request's query vector from its turns. All unit length.

use crate::embed::normalize;
use crate::index::dot;

/// `(1 - w) * a + w * profile`, normalised: how example vectors and the
/// profile are mixed everywhere (`w` is `routing.description_weight`).
pub(crate) fn blend(a: &[f32], profile: &[f32], description_weight: f32) -> Vec<f32> {
    let w = description_weight.clamp(0.0, 1.0);
    let mut v: Vec<f32> = a
        .iter()
        .zip(profile)
        .map(|(x, p)| (1.0 - w) * x + w * p)
        .collect();
    normalize(&mut v);
    v
}

/// Builds a capability's routing vector from its example vectors and its profile
/// vector (all unit length).
pub fn capability_vector(
    examples: &[Vec<f32>],
    profile: &[f32],
    description_weight: f32,
) -> Vec<f32> {
    if examples.is_empty() {
        return profile.to_vec();
    }
    let mut centroid = vec![0f32; profile.len()];
    for e in examples {
        for (c, x) in centroid.iter_mut().zip(e) {
            *c += x;
        }
    }
    normalize(&mut centroid);
    blend(&centroid, profile, description_weight)
}

/// How well a capability's texts explain an announced `vector`: the cosine
/// between it and the nearest blend `a * centroid + b * profile` with
/// `a, b >= 0` (what [`capability_vector`] makes under any description
/// weight). About 1 for a vector built from these texts; lower for one
/// built from other texts.
pub fn explained(vector: &[f32], examples: &[Vec<f32>], profile: &[f32]) -> f32 {
    let centroid = if examples.is_empty() {
        profile.to_vec()
    } else {
        let mut c = vec![0f32; profile.len()];
        for e in examples {
            for (s, x) in c.iter_mut().zip(e) {
                *s += x;
            }
        }
        normalize(&mut c);
        c
    };
    let a = dot(&centroid, vector);
    let b = dot(profile, vector);
    let g = dot(&centroid, profile);
    let edge = a.max(b);
    let det = 1.0 - g * g;
    if det < 1e-6 {
        return edge;
    }
    let x = (a - g * b) / det;
    let y = (b - g * a) / det;
    if x < 0.0 || y < 0.0 {
        // The nearest blend with both weights >= 0 is one of the two ends.
        return edge;
    }
    (x * a + y * b).clamp(0.0, 1.0).sqrt().max(edge)
}

/// Examples per prototype: fewer would make prototypes of single sentences.
const EXAMPLES_PER_PROTOTYPE: usize = 8;

/// Extra vectors for a capability with varied examples: the centroids of up to
/// `max` clusters of its examples (spherical k-means, deterministic), each
/// blended with the profile like the main vector. Empty when there are too few
/// examples to cluster or `max` is 0.
pub fn capability_prototypes(
    examples: &[Vec<f32>],
    profile: &[f32],
    description_weight: f32,
    max: usize,
) -> Vec<Vec<f32>> {
    let k = max.min(examples.len() / EXAMPLES_PER_PROTOTYPE);
    if k < 2 {
        return Vec::new();
    }
    let dim = profile.len();
    // Farthest-point initialisation from the first example: deterministic.
    let mut centres: Vec<Vec<f32>> = vec![examples[0].clone()];
    while centres.len() < k {
        let next = examples
            .iter()
            .max_by(|a, b| {
                let da = centres.iter().map(|c| dot(a, c)).fold(f32::MIN, f32::max);
                let db = centres.iter().map(|c| dot(b, c)).fold(f32::MIN, f32::max);
                db.total_cmp(&da)
            })
            .cloned();
        match next {
            Some(n) => centres.push(n),
            None => break,
        }
    }
    let mut assign = vec![0usize; examples.len()];
    for _ in 0..10 {
        for (a, e) in assign.iter_mut().zip(examples) {
            *a = centres
                .iter()
                .enumerate()
                .max_by(|x, y| dot(e, x.1).total_cmp(&dot(e, y.1)))
                .map_or(0, |(i, _)| i);
        }
        let mut sums = vec![vec![0f32; dim]; centres.len()];
        for (&a, e) in assign.iter().zip(examples) {
            for (s, x) in sums[a].iter_mut().zip(e) {
                *s += x;
            }
        }
        for (c, mut sum) in centres.iter_mut().zip(sums) {
            if sum.iter().any(|x| *x != 0.0) {
                normalize(&mut sum);
                *c = sum;
            }
        }
    }
    centres
        .into_iter()
        .enumerate()
        .filter(|(i, _)| assign.iter().filter(|&&a| a == *i).count() >= 2)
        .map(|(_, c)| blend(&c, profile, description_weight))
        .collect()
}

/// Combines the embeddings of a conversation's user turns, oldest first, into one
/// query vector; the newest turn weighs most (each older turn half the next).
pub fn query_vector(turns: &[Vec<f32>]) -> Vec<f32> {
    let Some(last) = turns.last() else {
        return Vec::new();
    };
    let mut q = vec![0f32; last.len()];
    let mut weight = 1.0f32;
    for turn in turns.iter().rev() {
        for (a, x) in q.iter_mut().zip(turn) {
            *a += weight * x;
        }
        weight *= 0.5;
    }
    normalize(&mut q);
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_weights_newest_turn_most() {
        let q = query_vector(&[vec![1.0, 0.0], vec![0.0, 1.0]]);
        assert!(q[1] > q[0]);
        assert!(query_vector(&[]).is_empty());
    }

    #[test]
    fn capability_vector_blends() {
        let v = capability_vector(&[vec![1.0, 0.0]], &[0.0, 1.0], 0.0);
        assert!((v[0] - 1.0).abs() < 1e-6);
        let v = capability_vector(&[], &[0.0, 1.0], 0.3);
        assert_eq!(v, vec![0.0, 1.0]);
        let v = capability_vector(&[vec![1.0, 0.0]], &[0.0, 1.0], 0.5);
        assert!((v[0] - v[1]).abs() < 1e-6);
    }
}
