//! Earlier versions of the route payload, still read for peers that send
//! them: each is read as the next version with what it lacks left empty,
//! up to the current one.

use serde::Deserialize;

use super::{MAX_SIGNED_BYTES, WireVector};
use crate::wire::codec::{self, Error};
use crate::wire::member::Certificate;

/// Decodes a payload of an earlier `version` as the current version.
pub(super) fn decode(version: u8, payload: &[u8]) -> Result<super::RouteUpdate, Error> {
    let v5 = match version {
        3 => v4::RouteUpdate::from(codec::decode::<v3::RouteUpdate>(payload, MAX_SIGNED_BYTES)?)
            .into(),
        4 => codec::decode::<v4::RouteUpdate>(payload, MAX_SIGNED_BYTES)?.into(),
        5 => codec::decode::<v5::RouteUpdate>(payload, MAX_SIGNED_BYTES)?,
        other => return Err(Error::Version(other)),
    };
    Ok(v5.into())
}

/// The update's fields around a body of some version.
#[derive(Deserialize)]
struct Update<B> {
    version: u8,
    seq: u64,
    ttl_secs: u32,
    node_name: String,
    addrs: Vec<String>,
    dim: u16,
    body: Body<B>,
    certificate: Option<Certificate>,
}

#[derive(Deserialize)]
enum Body<R> {
    Full(Vec<R>),
    Withdraw,
}

impl<B> Update<B> {
    /// The same update at `version`, its records made into `C`s.
    fn map<C>(self, version: u8, record: impl FnMut(B) -> C) -> Update<C> {
        Update {
            version,
            seq: self.seq,
            ttl_secs: self.ttl_secs,
            node_name: self.node_name,
            addrs: self.addrs,
            dim: self.dim,
            body: match self.body {
                Body::Full(records) => Body::Full(records.into_iter().map(record).collect()),
                Body::Withdraw => Body::Withdraw,
            },
            certificate: self.certificate,
        }
    }
}

/// Version 5: records without the inputs they take (their kind's are meant).
mod v5 {
    use super::*;

    pub const VERSION: u8 = 5;

    #[derive(Deserialize)]
    pub struct CapabilityRecord {
        pub(super) id: String,
        pub(super) kind: String,
        pub(super) domain: String,
        pub(super) topics: Vec<String>,
        pub(super) description: String,
        pub(super) vector: WireVector,
        pub(super) prototypes: Vec<WireVector>,
        pub(super) available: bool,
        pub(super) in_flight: u32,
        pub(super) reference: Option<f32>,
        pub(super) examples: Vec<String>,
        pub(super) input_schema: Option<String>,
    }

    pub type RouteUpdate = Update<CapabilityRecord>;

    impl From<RouteUpdate> for super::super::RouteUpdate {
        fn from(u: RouteUpdate) -> Self {
            debug_assert_eq!(u.version, VERSION);
            let u = u.map(super::super::VERSION, |r| super::super::CapabilityRecord {
                id: r.id,
                kind: r.kind,
                domain: r.domain,
                topics: r.topics,
                description: r.description,
                vector: r.vector,
                prototypes: r.prototypes,
                available: r.available,
                in_flight: r.in_flight,
                reference: r.reference,
                examples: r.examples,
                input_schema: r.input_schema,
                inputs: Vec::new(),
            });
            Self {
                version: u.version,
                seq: u.seq,
                ttl_secs: u.ttl_secs,
                node_name: u.node_name,
                addrs: u.addrs,
                dim: u.dim,
                body: match u.body {
                    Body::Full(records) => super::super::RouteBody::Full(records),
                    Body::Withdraw => super::super::RouteBody::Withdraw,
                },
                certificate: u.certificate,
            }
        }
    }
}

/// Version 4: records without an input schema.
mod v4 {
    use super::*;

    pub const VERSION: u8 = 4;

    #[derive(Deserialize)]
    pub struct CapabilityRecord {
        id: String,
        kind: String,
        domain: String,
        topics: Vec<String>,
        description: String,
        vector: WireVector,
        prototypes: Vec<WireVector>,
        available: bool,
        in_flight: u32,
        reference: Option<f32>,
        examples: Vec<String>,
    }

    pub type RouteUpdate = Update<CapabilityRecord>;

    impl From<RouteUpdate> for v5::RouteUpdate {
        fn from(u: RouteUpdate) -> Self {
            debug_assert_eq!(u.version, VERSION);
            u.map(v5::VERSION, |r| v5::CapabilityRecord {
                id: r.id,
                kind: r.kind,
                domain: r.domain,
                topics: r.topics,
                description: r.description,
                vector: r.vector,
                prototypes: r.prototypes,
                available: r.available,
                in_flight: r.in_flight,
                reference: r.reference,
                examples: r.examples,
                input_schema: None,
            })
        }
    }
}

/// Version 3: version 4 without the origin's certificate.
mod v3 {
    use super::*;

    pub const VERSION: u8 = 3;

    #[derive(Deserialize)]
    pub struct RouteUpdate {
        version: u8,
        seq: u64,
        ttl_secs: u32,
        node_name: String,
        addrs: Vec<String>,
        dim: u16,
        body: Body<v4::CapabilityRecord>,
    }

    impl From<RouteUpdate> for v4::RouteUpdate {
        fn from(u: RouteUpdate) -> Self {
            debug_assert_eq!(u.version, VERSION);
            Update {
                version: v4::VERSION,
                seq: u.seq,
                ttl_secs: u.ttl_secs,
                node_name: u.node_name,
                addrs: u.addrs,
                dim: u.dim,
                body: u.body,
                certificate: None,
            }
        }
    }
}
