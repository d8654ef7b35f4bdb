//! What this node tells the mesh about its capabilities: texts clipped to
//! their wire limits, and the wire record of each.

use crate::routing::Entry;
use crate::wire::route::{self, CapabilityRecord, WireVector};

/// A capability as the mesh is told of it: every text clipped to its wire
/// limit (one over-long field would make peers reject the whole update, and
/// score this node down), the first [`route::MAX_EXAMPLES`] examples.
/// Receivers route by these texts, so the vectors announced with them are
/// built from them too.
pub fn announced(c: &crate::capability::Capability) -> crate::capability::Capability {
    crate::capability::Capability {
        domain: route::clip(&c.domain, route::MAX_DOMAIN),
        topics: c
            .topics
            .iter()
            .take(route::MAX_TOPICS)
            .map(|t| route::clip(t, route::MAX_TOPIC))
            .collect(),
        description: route::clip(&c.description, route::MAX_DESCRIPTION),
        examples: c
            .examples
            .iter()
            .take(route::MAX_EXAMPLES)
            .map(|e| route::clip(e, route::MAX_EXAMPLE))
            .collect(),
        ..c.clone()
    }
}

/// The wire record of a local entry (whose capability is [`announced`]).
pub fn record(entry: &Entry) -> CapabilityRecord {
    let c = announced(&entry.capability);
    CapabilityRecord {
        id: c.id.to_string(),
        kind: c.kind.to_string(),
        domain: c.domain,
        topics: c.topics,
        description: c.description,
        vector: WireVector::quantize(&entry.vector),
        prototypes: entry
            .prototypes
            .iter()
            .take(route::MAX_PROTOTYPES)
            .map(|p| WireVector::quantize(p))
            .collect(),
        available: entry.available,
        in_flight: 0,
        reference: entry.reference,
        examples: c.examples,
    }
}
