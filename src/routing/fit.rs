//! When does a request fit a capability? No single cosine answers that: with a
//! handful of examples, right answers can score 0.17 on one capability while
//! unrelated ones score 0.33 on another. The rule here is derived from the
//! capability set itself, so it carries from one set to another:
//!
//! - the **background** score of a capability: how high generic requests
//!   (`background.txt`, shipped with the node) score on it, on average;
//! - its **reference** score: how high its own requests score, measured by
//!   scoring each of its examples against the capability built without that
//!   example (leave-one-out);
//! - a request's **fit** places its score between the two: 0 scores like
//!   generic text, 1 like the capability's own examples. It fits when its fit
//!   reaches `routing.min_fit` (default 0.5: closer to the capability's own
//!   requests than to generic ones).
//!
//! Each capability's reference travels with it in route gossip, so every
//! node judges it the same way. A capability with fewer than two examples
//! has no reference (a model discovered on a backend, one described only in
//! words): it cannot be judged, so it is never refused, only ranked.

use serde::Serialize;

use super::vectors::blend;
use crate::embed::normalize;
use crate::index::dot;

/// Generic requests, one per line (`#` starts a comment line).
const BACKGROUND: &str = include_str!("background.txt");

/// The background requests to embed once when the node starts.
pub fn background_texts() -> Vec<String> {
    BACKGROUND
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// The embedded background requests, reduced to what the rule needs.
#[derive(Debug, Clone, Default)]
pub struct Background {
    /// The mean of their unit vectors (not renormalised): the mean background
    /// score of a vector is its dot product with this.
    pub mean: Vec<f32>,
}

impl Background {
    pub fn new(vectors: &[Vec<f32>]) -> Self {
        let dim = vectors.first().map_or(0, Vec::len);
        let mut mean = vec![0f32; dim];
        for v in vectors {
            for (m, x) in mean.iter_mut().zip(v) {
                *m += x;
            }
        }
        let n = vectors.len().max(1) as f32;
        mean.iter_mut().for_each(|m| *m /= n);
        Self { mean }
    }
}

/// The reference score of a capability from its example vectors (unit length)
/// and profile vector: the mean score of each example against the capability
/// vector built without it. `None` with fewer than two examples.
pub fn reference(examples: &[Vec<f32>], profile: &[f32], description_weight: f32) -> Option<f32> {
    if examples.len() < 2 {
        return None;
    }
    let mut sum = vec![0f32; profile.len()];
    for e in examples {
        for (s, x) in sum.iter_mut().zip(e) {
            *s += x;
        }
    }
    let mut total = 0f32;
    let mut rest = vec![0f32; profile.len()];
    for e in examples {
        // The centroid of the others: the sum less this one.
        for ((r, s), x) in rest.iter_mut().zip(&sum).zip(e) {
            *r = s - x;
        }
        normalize(&mut rest);
        total += dot(e, &blend(&rest, profile, description_weight));
    }
    Some(total / examples.len() as f32).filter(|r| r.is_finite())
}

/// How a decision tells whether the best candidate fits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Rule {
    /// Relative to each capability's background and reference scores.
    Relative {
        /// Fit the best candidate must reach.
        min_fit: f32,
    },
    /// A fixed score, set in the config (`routing.threshold`).
    Threshold { threshold: f32 },
}

/// What the table knows about one entry's scores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    /// Mean score of the background requests.
    pub background: f32,
    /// Score of the capability's own requests.
    pub reference: f32,
}

impl Scale {
    /// The scale of a capability with these vectors (main vector, then
    /// prototypes; a request scores the best of them) and this reference.
    /// `None` without a reference or a background of the same width.
    pub fn new<'a>(
        vectors: impl IntoIterator<Item = &'a [f32]>,
        reference: Option<f32>,
        generic: &Background,
    ) -> Option<Self> {
        let reference = reference?;
        let background = vectors
            .into_iter()
            .filter(|v| !v.is_empty() && v.len() == generic.mean.len())
            .map(|v| dot(v, &generic.mean))
            .fold(f32::NAN, f32::max);
        background.is_finite().then_some(Self {
            background,
            reference,
        })
    }

    /// Where `score` lies between background (0) and reference (1). When the
    /// examples score no higher than generic text, the gap is taken as tiny,
    /// so only scores above the background fit.
    pub fn fit(&self, score: f32) -> f32 {
        let gap = (self.reference - self.background).max(MIN_GAP);
        (score - self.background) / gap
    }

    /// The score at which the fit reaches `min_fit`.
    pub fn cutoff(&self, min_fit: f32) -> f32 {
        self.background + min_fit * (self.reference - self.background).max(MIN_GAP)
    }
}

/// Smallest distance between background and reference used as a scale.
const MIN_GAP: f32 = 0.01;

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(mut v: Vec<f32>) -> Vec<f32> {
        normalize(&mut v);
        v
    }

    #[test]
    fn background_is_shipped_and_clean() {
        let texts = background_texts();
        assert!(texts.len() >= 200, "{}", texts.len());
        assert!(texts.iter().all(|t| !t.starts_with('#') && !t.is_empty()));
    }

    #[test]
    fn tight_examples_have_a_higher_reference_than_spread_ones() {
        let profile = unit(vec![0.0, 0.0, 1.0]);
        let tight = [unit(vec![1.0, 0.1, 0.0]), unit(vec![1.0, -0.1, 0.0])];
        let spread = [unit(vec![1.0, 0.0, 0.0]), unit(vec![0.0, 1.0, 0.0])];
        let t = reference(&tight, &profile, 0.0).expect("two examples");
        let s = reference(&spread, &profile, 0.0).expect("two examples");
        assert!(t > 0.9 && s < 0.1, "{t} {s}");
        assert_eq!(reference(&tight[..1], &profile, 0.0), None);
    }

    #[test]
    fn fit_places_a_score_between_background_and_reference() {
        let s = Scale {
            background: 0.1,
            reference: 0.5,
        };
        assert!((s.fit(0.3) - 0.5).abs() < 1e-6);
        assert!((s.cutoff(0.5) - 0.3).abs() < 1e-6);
        // Examples no closer than generic text: only scores above it fit.
        let flat = Scale {
            background: 0.2,
            reference: 0.1,
        };
        assert!(flat.fit(0.19) < 0.0 && flat.fit(0.25) > 1.0);
    }

    #[test]
    fn a_scale_needs_a_reference_and_takes_the_best_vector() {
        let generic = Background::new(&[vec![1.0, 0.0], vec![0.0, 1.0]]);
        let main = [0.6f32, 0.8];
        let proto = [1.0f32, 0.0];
        let s = Scale::new([&main[..], &proto[..]], Some(0.9), &generic).expect("scale");
        // Mean background (0.5, 0.5): 0.7 on the main vector, 0.5 on the other.
        assert!((s.background - 0.7).abs() < 1e-6, "{s:?}");
        assert_eq!(Scale::new([&main[..]], None, &generic), None);
        assert_eq!(
            Scale::new([&main[..]], Some(0.9), &Background::default()),
            None
        );
    }
}
