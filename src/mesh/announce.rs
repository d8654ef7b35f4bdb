//! What this node tells the mesh about its capabilities: texts clipped to
//! their wire limits, the wire record of each, and the load figures they
//! carry (`balance::load`).

use std::collections::HashMap;

use crate::balance::moved;
use crate::capability::CapabilityId;
use crate::routing::Entry;
use crate::wire::route::{self, CapabilityRecord, RouteBody, RouteUpdate, WireVector};

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

/// The wire record of a local entry (whose capability is [`announced`]),
/// with `in_flight` requests running on it.
pub fn record(entry: &Entry, in_flight: u32) -> CapabilityRecord {
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
        in_flight,
        reference: entry.reference,
        examples: c.examples,
        input_schema: c
            .input_schema
            .as_ref()
            .and_then(|s| serde_json::to_string(s).ok())
            .filter(|s| s.len() <= route::MAX_SCHEMA),
        // Never empty: receivers read an empty list as "what its kind
        // takes", and text is taken by every capability anyway.
        inputs: if c.inputs.is_empty() {
            crate::capability::Inputs::TEXT.into()
        } else {
            c.inputs.into()
        },
    }
}

/// The load figures an update carries (each capability's `in_flight`,
/// zeros included).
pub fn figures(update: &RouteUpdate) -> Vec<(CapabilityId, u32)> {
    match &update.body {
        RouteBody::Full(records) => records
            .iter()
            .filter_map(|r| Some((r.id.parse().ok()?, r.in_flight)))
            .collect(),
        RouteBody::Withdraw => Vec::new(),
    }
}

/// Whether this node's load (`now`, from `Loads::sample`) moved enough
/// since it announced `announced` to announce it again before the next
/// refresh.
pub fn load_moved(
    announced: &HashMap<CapabilityId, u32>,
    now: &HashMap<CapabilityId, u32>,
) -> bool {
    announced
        .iter()
        .any(|(id, before)| moved(*before, now.get(id).copied().unwrap_or(0)))
}
