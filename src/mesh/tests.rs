//! Updates this node makes pass its peers' checks.

use super::*;
use crate::capability::{Capability, Source};

/// This node's entry for `capability`.
fn local(capability: Capability) -> Entry {
    Entry {
        capability: std::sync::Arc::new(capability),
        node: String::new(),
        local: true,
        available: true,
        vector: vec![0.6, 0.8],
        prototypes: Vec::new(),
        reference: None,
        trust: crate::routing::Trust::Local,
    }
}

#[test]
fn long_configured_texts_still_make_a_valid_update() {
    let long = "é".repeat(2000);
    let entry = local(Capability {
        domain: long.clone(),
        topics: vec![long.clone(); 40],
        description: long.clone(),
        examples: vec![long.clone(); 40],
        ..Capability::new(
            format!("{}/{}", "n".repeat(128), "c".repeat(128))
                .parse()
                .expect("id"),
            format!("agent/{}", "k".repeat(128)).parse().expect("kind"),
            Source::Config,
            "b",
            "m",
        )
    });
    let update = RouteUpdate {
        version: route::VERSION,
        seq: 1,
        ttl_secs: 30,
        node_name: route::clip(&long, route::MAX_NODE_NAME),
        addrs: Vec::new(),
        dim: 2,
        body: RouteBody::Full(vec![record(&entry, 0)]),
        certificate: None,
    };
    update
        .check(2)
        .expect("clipped texts pass the receiver's checks");
}

/// A vision model configured to take text alone (`inputs = []`) is not
/// announced as taking what its kind takes (an empty list would say so).
#[test]
fn inputs_are_announced_as_configured_even_when_none_beyond_text() {
    use crate::capability::{Input, Inputs};
    let vision = |inputs: Inputs| {
        local(Capability {
            inputs,
            ..Capability::new(
                "farm/eye".parse().expect("id"),
                "vision/classify".parse().expect("kind"),
                Source::Config,
                "b",
                "m",
            )
        })
    };
    assert_eq!(record(&vision(Inputs::NONE), 0).inputs, vec!["text"]);
    assert_eq!(
        record(&vision(Inputs::TEXT.with(Input::Image)), 0).inputs,
        vec!["text", "image"]
    );
}
