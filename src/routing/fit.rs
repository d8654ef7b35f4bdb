//! When does a request fit a capability? No single cosine answers that: with a
//! handful of examples, right answers score 0.15 on one capability and wrong
//! ones 0.33 on another. The rule here is derived from the capability set
//! itself, so it carries from one set to another:
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
//! A capability whose examples are not known here (a remote one, or one with
//! fewer than two examples) borrows the median distance between background
//! and reference of the capabilities that have one. When no capability has
//! one, the highest score of any background request stands in for the
//! reference.

use serde::Serialize;

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

/// The embedded background requests.
#[derive(Debug, Clone, Default)]
pub struct Background {
    /// One unit vector per request.
    pub vectors: Vec<Vec<f32>>,
    /// Their mean (not renormalised): the mean background score of a vector
    /// is its dot product with this.
    pub mean: Vec<f32>,
}

impl Background {
    pub fn new(vectors: Vec<Vec<f32>>) -> Self {
        let dim = vectors.first().map_or(0, Vec::len);
        let mut mean = vec![0f32; dim];
        for v in &vectors {
            for (m, x) in mean.iter_mut().zip(v) {
                *m += x;
            }
        }
        let n = vectors.len().max(1) as f32;
        mean.iter_mut().for_each(|m| *m /= n);
        Self { vectors, mean }
    }

    /// The highest score of any background request on a vector.
    fn max(&self, v: &[f32]) -> f32 {
        self.vectors
            .iter()
            .map(|b| dot(b, v))
            .fold(f32::MIN, f32::max)
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
    let w = description_weight.clamp(0.0, 1.0);
    let mut total = 0f32;
    let mut v = vec![0f32; profile.len()];
    for e in examples {
        for ((vi, s), x) in v.iter_mut().zip(&sum).zip(e) {
            *vi = s - x;
        }
        normalize(&mut v);
        for (vi, p) in v.iter_mut().zip(profile) {
            *vi = (1.0 - w) * *vi + w * p;
        }
        normalize(&mut v);
        total += dot(e, &v);
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
    /// Score of the capability's own requests (measured or borrowed).
    pub reference: f32,
    /// Whether `reference` is the capability's own (not borrowed).
    pub own: bool,
}

impl Scale {
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

/// Scales for every entry of a table, in entry order. `vectors(i)` gives the
/// entry's main vector and prototypes; `own(i)` its reference, if known.
/// Entries get `None` when there is no background (or its width differs).
pub fn scales<'a>(
    n: usize,
    vectors: impl Fn(usize) -> Vec<&'a [f32]>,
    own: impl Fn(usize) -> Option<f32>,
    generic: &Background,
) -> Vec<Option<Scale>> {
    let dim = generic.mean.len();
    if dim == 0 {
        return vec![None; n];
    }
    let best = |i: usize, score: &dyn Fn(&[f32]) -> f32| {
        vectors(i)
            .into_iter()
            .filter(|v| v.len() == dim)
            .map(score)
            .fold(f32::MIN, f32::max)
    };
    let backgrounds: Vec<f32> = (0..n)
        .map(|i| best(i, &|v| dot(v, &generic.mean)))
        .collect();
    let mut gaps: Vec<f32> = (0..n)
        .filter_map(|i| own(i).map(|r| r - backgrounds[i]))
        .filter(|g| g.is_finite())
        .collect();
    gaps.sort_by(f32::total_cmp);
    let borrowed = gaps.get(gaps.len() / 2).copied();
    (0..n)
        .map(|i| {
            let background = backgrounds[i];
            if !background.is_finite() || background == f32::MIN {
                return None;
            }
            match own(i) {
                Some(reference) => Some(Scale {
                    background,
                    reference,
                    own: true,
                }),
                None => Some(Scale {
                    background,
                    reference: match borrowed {
                        Some(gap) => background + gap,
                        None => best(i, &|v| generic.max(v)),
                    },
                    own: false,
                }),
            }
        })
        .collect()
}

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
            own: true,
        };
        assert!((s.fit(0.3) - 0.5).abs() < 1e-6);
        assert!((s.cutoff(0.5) - 0.3).abs() < 1e-6);
        // Examples no closer than generic text: only scores above it fit.
        let flat = Scale {
            background: 0.2,
            reference: 0.1,
            own: true,
        };
        assert!(flat.fit(0.19) < 0.0 && flat.fit(0.25) > 1.0);
    }

    #[test]
    fn entries_without_examples_borrow_the_median_gap() {
        let background = Background::new(vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
        let vecs = [vec![1.0, 0.0], vec![0.0, 1.0], vec![0.6, 0.8]];
        let refs = [Some(0.9), Some(0.9), None];
        let s = scales(3, |i| vec![vecs[i].as_slice()], |i| refs[i], &background);
        let borrowed = s[2].expect("borrowed");
        assert!(!borrowed.own);
        // Backgrounds 0.5, 0.5, 0.7; gaps 0.4 and 0.4: the third borrows 0.4.
        assert!((borrowed.reference - 1.1).abs() < 1e-6, "{borrowed:?}");
        // Nothing to borrow from: the best background request stands in.
        let alone =
            scales(1, |_| vec![vecs[2].as_slice()], |_| None, &background)[0].expect("scale");
        assert!((alone.reference - 0.8).abs() < 1e-6, "{alone:?}");
        let none = scales(
            1,
            |_| vec![vecs[0].as_slice()],
            |_| None,
            &Background::default(),
        );
        assert_eq!(none, vec![None]);
    }
}
