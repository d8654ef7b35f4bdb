//! The route table and the decision, on hand-made vectors.
use super::*;
use crate::capability::{Kind, Source};
use crate::embed::normalize;

fn entry(id: &str, kind: &str, vector: Vec<f32>, local: bool) -> Entry {
    let mut v = vector;
    normalize(&mut v);
    Entry {
        capability: std::sync::Arc::new(Capability::new(
            id.parse().expect("id"),
            kind.parse::<Kind>().expect("kind"),
            Source::Config,
            "b",
            "m",
        )),
        node: if local { "self".into() } else { "peer".into() },
        local,
        available: true,
        vector: v,
        prototypes: Vec::new(),
        reference: None,
        trust: if local { Trust::Local } else { Trust::Stranger },
    }
}

fn router(threshold: f32, default: Option<&str>) -> Router {
    Router::new(RoutingConfig {
        threshold: Some(threshold),
        default: default.map(|d| d.parse().expect("id")),
        ..Default::default()
    })
}

fn all_up(_: &Entry) -> bool {
    true
}

#[test]
fn best_match_wins_and_is_explained() {
    let table = Table::new(vec![
        entry("a/x", "llm/chat", vec![1.0, 0.0, 0.0], true),
        entry("a/y", "llm/chat", vec![0.0, 1.0, 0.0], true),
    ]);
    let d = router(0.3, None).decide(&table, &[0.9, 0.1, 0.0], &Need::TEXT, &all_up);
    assert_eq!(d.outcome, Outcome::Matched);
    assert_eq!(d.chosen.expect("chosen").id.as_str(), "a/x");
    assert_eq!(d.candidates.len(), 2);
    assert!(d.candidates[0].score > d.candidates[1].score);
}

#[test]
fn wrong_kind_and_unavailable_are_skipped() {
    let table = Table::new(vec![
        entry("v/cls", "vision/classify", vec![1.0, 0.0], true),
        entry("a/down", "llm/chat", vec![0.9, 0.1], true),
        entry("a/up", "llm/chat", vec![0.7, 0.3], true),
    ]);
    let up = |e: &Entry| e.capability.id.as_str() != "a/down";
    let d = router(0.1, None).decide(&table, &[1.0, 0.0], &Need::TEXT, &up);
    assert_eq!(d.chosen.expect("chosen").id.as_str(), "a/up");
    let notes: Vec<_> = d.candidates.iter().filter_map(|c| c.note).collect();
    assert!(notes.contains(&"unavailable"));
    assert!(notes.contains(&"kind does not answer this request"));
}

#[test]
fn below_threshold_uses_default_or_fails() {
    let table = Table::new(vec![
        entry("a/x", "llm/chat", vec![1.0, 0.0], true),
        entry("a/general", "llm/chat", vec![0.0, 1.0], true),
    ]);
    let q = [0.3, -0.95];
    let d = router(0.5, Some("a/general")).decide(&table, &q, &Need::TEXT, &all_up);
    assert_eq!(d.outcome, Outcome::Default);
    assert_eq!(d.chosen.expect("default").id.as_str(), "a/general");
    let d = router(0.5, None).decide(&table, &q, &Need::TEXT, &all_up);
    assert_eq!(d.outcome, Outcome::NoFit);
    assert!(d.chosen.is_none());
    assert!(!d.candidates.is_empty(), "still explains what was close");
}

#[test]
fn a_model_known_by_name_only_takes_what_no_judged_capability_fits() {
    let mut judged = entry("a/judged", "llm/chat", vec![1.0, 0.0, 0.0], true);
    judged.reference = Some(0.9);
    std::sync::Arc::make_mut(&mut judged.capability).examples = vec!["e1".into(), "e2".into()];
    let general = entry("a/general", "llm/chat", vec![0.0, 0.0, 1.0], true);
    let background = fit::Background::new(&[vec![0.0, 1.0, 0.0]]);
    let table = Table::calibrated(vec![judged, general], &background);
    let relative = Router::new(RoutingConfig::default());
    // Close to the judged one: it fits.
    let d = relative.decide(&table, &[0.95, 0.3, 0.0], &Need::TEXT, &all_up);
    assert_eq!(d.outcome, Outcome::Matched);
    assert_eq!(d.chosen.expect("chosen").id.as_str(), "a/judged");
    // Ranked first but short of its cutoff: the general model takes it.
    let q = [0.3, 0.9, 0.2];
    let d = relative.decide(&table, &q, &Need::TEXT, &all_up);
    assert_eq!(d.outcome, Outcome::General, "{:?}", d.candidates);
    assert_eq!(d.chosen.expect("chosen").id.as_str(), "a/general");
    // A configured default comes first; a fixed threshold judges everything.
    let with_default = Router::new(RoutingConfig {
        default: Some("a/judged".parse().expect("id")),
        ..Default::default()
    });
    assert_eq!(
        with_default
            .decide(&table, &q, &Need::TEXT, &all_up)
            .outcome,
        Outcome::Default
    );
    let d = router(0.5, None).decide(&table, &q, &Need::TEXT, &all_up);
    assert_eq!(d.outcome, Outcome::NoFit);
}

#[test]
fn local_wins_a_tie() {
    let table = Table::new(vec![
        entry("a/x", "llm/chat", vec![1.0, 0.0], false),
        entry("a/x2", "llm/chat", vec![1.0, 0.0], true),
    ]);
    let d = router(0.1, None).decide(&table, &[1.0, 0.0], &Need::TEXT, &all_up);
    assert!(d.chosen.expect("chosen").local);
}

#[test]
fn prototypes_let_a_varied_capability_match_each_kind_of_request() {
    // Two tight clusters of examples in different directions.
    let mut examples = Vec::new();
    for i in 0..10 {
        let t = i as f32 * 0.01;
        let mut a = vec![1.0, t, 0.0];
        let mut b = vec![0.0, t, 1.0];
        normalize(&mut a);
        normalize(&mut b);
        examples.push(a);
        examples.push(b);
    }
    let profile = vec![0.0, 1.0, 0.0];
    let protos = capability_prototypes(&examples, &profile, 0.0, 4);
    assert_eq!(protos.len(), 2);
    let main = capability_vector(&examples, &profile, 0.0);
    let mut broad = entry("a/broad", "llm/chat", main.clone(), true);
    broad.prototypes = protos;
    let narrow = entry("a/narrow", "llm/chat", vec![0.8, 0.0, 0.6], true);
    let table = Table::new(vec![broad, narrow]);
    // Close to one cluster of the broad capability, but the average of its
    // examples (main vector) is further away than the narrow capability.
    let q = [1.0, 0.0, 0.05];
    let d = router(0.1, None).decide(&table, &q, &Need::TEXT, &all_up);
    assert_eq!(d.chosen.expect("chosen").id.as_str(), "a/broad");
    assert!(capability_prototypes(&examples[..5], &profile, 0.0, 4).is_empty());
}

#[test]
fn strangers_rank_below_trusted_nodes_by_the_margin() {
    // Unit vectors at a chosen cosine to the query [1, 0].
    let at = |cos: f32| vec![cos, (1.0 - cos * cos).sqrt()];
    let trusted = |mut e: Entry| {
        e.trust = Trust::Allowed;
        e
    };
    let table = Table::new(vec![
        entry("a/mine", "llm/chat", at(0.80), true),
        entry("b/close", "llm/chat", at(0.81), false),
        trusted(entry("c/friend", "llm/chat", at(0.79), false)),
    ]);
    let q = [1.0, 0.0];
    let d = router(0.5, None).decide(&table, &q, &Need::TEXT, &all_up);
    // The stranger scores 0.01 higher than this node's own: not enough.
    assert_eq!(d.chosen.as_ref().expect("chosen").id.as_str(), "a/mine");
    let stranger = d
        .candidates
        .iter()
        .find(|c| c.id.as_str() == "b/close")
        .expect("listed");
    assert_eq!(stranger.trust, Trust::Stranger);
    assert!(
        (stranger.score - (0.81 - 0.02)).abs() < 1e-4,
        "{}",
        stranger.score
    );
    // 0.05 higher is.
    let table = Table::new(vec![
        entry("a/mine", "llm/chat", at(0.80), true),
        entry("b/better", "llm/chat", at(0.85), false),
    ]);
    let d = router(0.5, None).decide(&table, &q, &Need::TEXT, &all_up);
    assert_eq!(d.chosen.expect("chosen").id.as_str(), "b/better");
    // Unless auto may only use trusted nodes.
    let only_trusted = Router::new(RoutingConfig {
        threshold: Some(0.5),
        auto_origins: crate::config::AutoOrigins::Trusted,
        ..Default::default()
    });
    let d = only_trusted.decide(&table, &q, &Need::TEXT, &all_up);
    assert_eq!(d.chosen.expect("chosen").id.as_str(), "a/mine");
    let stranger = d
        .candidates
        .iter()
        .find(|c| c.id.as_str() == "b/better")
        .expect("listed");
    assert!(!stranger.eligible);
    assert!(stranger.note.is_some_and(|n| n.contains("trusted")));
}

#[test]
fn an_announced_vector_is_checked_against_its_texts() {
    let unit = |v: Vec<f32>| {
        let mut v = v;
        normalize(&mut v);
        v
    };
    let profile = unit(vec![1.0, 0.2, 0.0, 0.0]);
    let examples = vec![
        unit(vec![0.3, 1.0, 0.1, 0.0]),
        unit(vec![0.2, 0.9, 0.0, 0.3]),
    ];
    for w in [0.0, 0.2, 0.5, 1.0] {
        let v = capability_vector(&examples, &profile, w);
        assert!(explained(&v, &examples, &profile) > 0.999, "weight {w}");
    }
    // A vector made for other texts.
    let elsewhere = unit(vec![0.0, 0.1, 0.2, 1.0]);
    assert!(explained(&elsewhere, &examples, &profile) < 0.5);
    // Outside the blends (a negative weight on the profile): the nearest end.
    let beyond = unit(vec![-0.8, 1.0, 0.1, 0.1]);
    let score = explained(&beyond, &examples, &profile);
    assert!(score < 0.95, "{score}");
}
