//! Route gossip messages: what a node offers, signed by the node.
//! Spec: `protocols/route-gossip.md` (topic `atmosphere/routes/1`).

use ed25519_dalek::{Signature, VerifyingKey};
use libp2p::identity::{Keypair, PeerId};
use serde::{Deserialize, Serialize};

use super::codec::{self, Error};

mod old;

/// Version byte of [`SignedRouteUpdate`] (the envelope).
pub const ENVELOPE_VERSION: u8 = 1;
/// Version byte of [`RouteUpdate`]: 2 added each capability's reference
/// score, 3 its examples (receivers compute its vectors from its texts), 4
/// the origin's membership certificate, 5 a tool's input schema, 6 the
/// inputs a capability takes. Versions 3 to 5 are still accepted (`old`:
/// read as the current version without what they lack; version 3 is heard
/// in open meshes only, having no certificate).
pub const VERSION: u8 = 6;
/// Largest encoded [`SignedRouteUpdate`]: 256 capabilities with 5 vectors of
/// 384 bytes each and their texts fit with room to spare.
pub const MAX_SIGNED_BYTES: usize = 1024 * 1024;
/// Most capabilities one origin may announce.
pub const MAX_CAPABILITIES: usize = 256;
/// Most prototype vectors per capability.
pub const MAX_PROTOTYPES: usize = 8;
/// Most examples per capability, and their length (bytes).
pub const MAX_EXAMPLES: usize = 16;
pub const MAX_EXAMPLE: usize = 256;
/// Longest text fields (bytes).
pub const MAX_ID: usize = 257;
/// Same as a parsed `Kind` can be: category (<= 5) + `/` + name (<= 128).
pub const MAX_KIND: usize = 134;
pub const MAX_DOMAIN: usize = 128;
pub const MAX_TOPICS: usize = 32;
pub const MAX_TOPIC: usize = 64;
pub const MAX_DESCRIPTION: usize = 1024;
pub const MAX_NODE_NAME: usize = 128;
/// Longest input schema (bytes of JSON); a tool with a longer one is
/// announced without it (its node still checks the arguments).
pub const MAX_SCHEMA: usize = 4096;
/// Most inputs a capability may name, and their length.
pub const MAX_INPUTS: usize = 8;
pub const MAX_INPUT: usize = 16;
/// Addresses an origin may announce, and their length.
pub const MAX_ADDRS: usize = 16;
pub const MAX_ADDR: usize = 256;
/// TTL bounds (seconds): expiry cannot be disabled or set absurdly long.
pub const MIN_TTL_SECS: u32 = 5;
pub const MAX_TTL_SECS: u32 = 3600;
/// Domain separation for signatures: a route signature can never be replayed as
/// a signature of anything else.
pub const SIGNING_CONTEXT: &[u8] = b"atmosphere/routes/1\0";

/// A unit vector quantised to one byte per component: `x ~= value * scale / 127`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireVector {
    pub scale: f32,
    pub values: Vec<i8>,
}

impl WireVector {
    /// Quantises a vector (cosine error about 1e-4 for 384-d unit vectors).
    pub fn quantize(v: &[f32]) -> Self {
        let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
        if max == 0.0 || !max.is_finite() {
            return Self {
                scale: 0.0,
                values: vec![0; v.len()],
            };
        }
        let values = v
            .iter()
            .map(|x| (x / max * 127.0).round().clamp(-127.0, 127.0) as i8)
            .collect();
        Self { scale: max, values }
    }

    /// Back to floats, renormalised to unit length.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut v: Vec<f32> = self
            .values
            .iter()
            .map(|&q| f32::from(q) * self.scale / 127.0)
            .collect();
        crate::embed::normalize(&mut v);
        v
    }
}

/// One capability as announced to the mesh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapabilityRecord {
    pub id: String,
    pub kind: String,
    pub domain: String,
    pub topics: Vec<String>,
    pub description: String,
    /// The capability's main routing vector.
    pub vector: WireVector,
    /// Cluster prototypes (at most [`MAX_PROTOTYPES`]).
    pub prototypes: Vec<WireVector>,
    /// Whether its backend answers at the origin.
    pub available: bool,
    /// Requests in flight at the origin (a load hint).
    pub in_flight: u32,
    /// How high the capability's own requests score on `vector`, measured
    /// on its examples at the origin (leave-one-out); none without two
    /// examples. Receivers compute their own from `examples`.
    pub reference: Option<f32>,
    /// Requests the capability is for (at most [`MAX_EXAMPLES`]): with the
    /// description, domain and topics, what receivers embed to route by and
    /// check `vector` against.
    pub examples: Vec<String>,
    /// For a tool (`tool/*`): the JSON Schema of its arguments, a JSON
    /// object at most [`MAX_SCHEMA`] bytes long.
    pub input_schema: Option<String>,
    /// What its requests may carry (`text`, `image`, `audio`; names a
    /// receiver does not know are ignored); empty: what its kind takes.
    pub inputs: Vec<String>,
}

/// What an origin says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RouteBody {
    /// The origin's complete capability set; replaces what was held.
    Full(Vec<CapabilityRecord>),
    /// The origin is leaving: drop its capabilities now.
    Withdraw,
}

/// The signed content of a route announcement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteUpdate {
    pub version: u8,
    /// Strictly increasing per origin, across restarts: the origin uses
    /// `max(previous + 1, unix time in ms)`.
    pub seq: u64,
    /// Seconds after receipt until the entries expire unless refreshed.
    pub ttl_secs: u32,
    /// Display name of the origin.
    pub node_name: String,
    /// Multiaddrs the origin listens on, so that nodes it is not connected to
    /// can reach it when they forward a request.
    pub addrs: Vec<String>,
    /// Width of every vector.
    pub dim: u16,
    pub body: RouteBody,
    /// The origin's certificate from the mesh key, in a closed mesh
    /// (`protocols/membership.md`).
    pub certificate: Option<super::member::Certificate>,
}

/// A [`RouteUpdate`] with its origin's public key and signature; what travels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignedRouteUpdate {
    pub version: u8,
    /// The origin's ed25519 public key (32 bytes); the origin's PeerId derives from it.
    pub public_key: Vec<u8>,
    /// The encoded [`RouteUpdate`], exactly the bytes that were signed.
    pub payload: Vec<u8>,
    /// ed25519 signature (64 bytes) of `SIGNING_CONTEXT || payload`.
    pub signature: Vec<u8>,
}

/// An update whose signature and contents checked out.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub origin: PeerId,
    pub update: RouteUpdate,
}

fn signed_message(payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNING_CONTEXT.len() + payload.len());
    m.extend_from_slice(SIGNING_CONTEXT);
    m.extend_from_slice(payload);
    m
}

impl SignedRouteUpdate {
    /// Encodes and signs an update with the node's key (must be ed25519).
    pub fn sign(update: &RouteUpdate, keypair: &Keypair) -> Result<Self, Error> {
        let ed = keypair
            .clone()
            .try_into_ed25519()
            .map_err(|_| Error::Invalid("the node key is not ed25519".into()))?;
        let payload = codec::encode(update, MAX_SIGNED_BYTES)?;
        let signature = keypair
            .sign(&signed_message(&payload))
            .map_err(|e| Error::Encode(e.to_string()))?;
        Ok(Self {
            version: ENVELOPE_VERSION,
            public_key: ed.public().to_bytes().to_vec(),
            payload,
            signature,
        })
    }

    /// Checks version, signature (strict ed25519) and every limit; returns the
    /// origin and the update. `dim` is the receiver's vector width.
    pub fn verify(&self, dim: usize) -> Result<Verified, Error> {
        if self.version != ENVELOPE_VERSION {
            return Err(Error::Version(self.version));
        }
        let key: [u8; 32] = self
            .public_key
            .as_slice()
            .try_into()
            .map_err(|_| Error::Invalid("public key is not 32 bytes".into()))?;
        let sig: [u8; 64] = self
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| Error::Invalid("signature is not 64 bytes".into()))?;
        let verifying =
            VerifyingKey::from_bytes(&key).map_err(|_| Error::Invalid("bad public key".into()))?;
        verifying
            .verify_strict(&signed_message(&self.payload), &Signature::from_bytes(&sig))
            .map_err(|_| Error::Invalid("bad signature".into()))?;
        // Only verified bytes are decoded further. A payload starts with its
        // version byte (a `u8` is one byte in the codec).
        let update: RouteUpdate = match self.payload.first() {
            Some(&version) if version < VERSION => old::decode(version, &self.payload)?,
            _ => codec::decode(&self.payload, MAX_SIGNED_BYTES)?,
        };
        update.check(dim)?;
        let public = libp2p::identity::ed25519::PublicKey::try_from_bytes(&key)
            .map_err(|_| Error::Invalid("bad public key".into()))?;
        let origin = libp2p::identity::PublicKey::from(public).to_peer_id();
        Ok(Verified { origin, update })
    }
}

impl super::Message for SignedRouteUpdate {
    const MAX_BYTES: usize = MAX_SIGNED_BYTES;
    /// The version is checked by [`SignedRouteUpdate::verify`], which also
    /// checks the signature: a message of another version is rejected there.
    fn version(&self) -> Option<u8> {
        None
    }
}

/// The longest prefix of `s` that fits in `max` bytes, cut on a char boundary.
pub fn clip(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn check_len(what: &str, s: &str, max: usize) -> Result<(), Error> {
    if s.len() > max {
        return Err(Error::Invalid(format!("{what} longer than {max} bytes")));
    }
    Ok(())
}

impl RouteUpdate {
    /// Every limit of the spec, and that each vector has `dim` components.
    pub fn check(&self, dim: usize) -> Result<(), Error> {
        if self.version != VERSION {
            return Err(Error::Version(self.version));
        }
        if !(MIN_TTL_SECS..=MAX_TTL_SECS).contains(&self.ttl_secs) {
            return Err(Error::Invalid(format!(
                "ttl {} s out of range",
                self.ttl_secs
            )));
        }
        check_len("node name", &self.node_name, MAX_NODE_NAME)?;
        if self.addrs.len() > MAX_ADDRS {
            return Err(Error::Invalid(format!(
                "{} addresses (max {MAX_ADDRS})",
                self.addrs.len()
            )));
        }
        if let Some(c) = &self.certificate
            && (c.body.len() > super::member::MAX_SIGNED_BYTES || c.signature.len() != 64)
        {
            return Err(Error::Invalid("malformed certificate".into()));
        }
        for a in &self.addrs {
            check_len("address", a, MAX_ADDR)?;
            a.parse::<libp2p::Multiaddr>()
                .map_err(|e| Error::Invalid(format!("address {a:?}: {e}")))?;
        }
        let RouteBody::Full(caps) = &self.body else {
            return Ok(());
        };
        if usize::from(self.dim) != dim {
            return Err(Error::Invalid(format!(
                "vectors are {}-d, this node uses {dim}-d",
                self.dim
            )));
        }
        if caps.len() > MAX_CAPABILITIES {
            return Err(Error::Invalid(format!(
                "{} capabilities (max {MAX_CAPABILITIES})",
                caps.len()
            )));
        }
        let mut ids = std::collections::HashSet::new();
        for c in caps {
            check_len("capability id", &c.id, MAX_ID)?;
            c.id.parse::<crate::capability::CapabilityId>()
                .map_err(|e| Error::Invalid(e.to_string()))?;
            if !ids.insert(c.id.as_str()) {
                return Err(Error::Invalid(format!("capability {} listed twice", c.id)));
            }
            check_len("kind", &c.kind, MAX_KIND)?;
            c.kind
                .parse::<crate::capability::Kind>()
                .map_err(|e| Error::Invalid(e.to_string()))?;
            check_len("domain", &c.domain, MAX_DOMAIN)?;
            check_len("description", &c.description, MAX_DESCRIPTION)?;
            if c.topics.len() > MAX_TOPICS {
                return Err(Error::Invalid("too many topics".into()));
            }
            for t in &c.topics {
                check_len("topic", t, MAX_TOPIC)?;
            }
            if c.examples.len() > MAX_EXAMPLES {
                return Err(Error::Invalid(format!(
                    "capability {}: more than {MAX_EXAMPLES} examples",
                    c.id
                )));
            }
            for e in &c.examples {
                check_len("example", e, MAX_EXAMPLE)?;
            }
            if let Some(schema) = &c.input_schema {
                check_len("input schema", schema, MAX_SCHEMA)?;
                if !matches!(
                    serde_json::from_str(schema),
                    Ok(serde_json::Value::Object(_))
                ) {
                    return Err(Error::Invalid(format!(
                        "capability {}: input schema is not a JSON object",
                        c.id
                    )));
                }
            }
            if c.inputs.len() > MAX_INPUTS {
                return Err(Error::Invalid(format!(
                    "capability {}: more than {MAX_INPUTS} inputs",
                    c.id
                )));
            }
            for i in &c.inputs {
                check_len("input", i, MAX_INPUT)?;
            }
            if c.prototypes.len() > MAX_PROTOTYPES {
                return Err(Error::Invalid("too many prototypes".into()));
            }
            if c.reference
                .is_some_and(|r| !r.is_finite() || !(-1.0..=1.0).contains(&r))
            {
                return Err(Error::Invalid(format!(
                    "capability {}: reference score out of range",
                    c.id
                )));
            }
            for v in std::iter::once(&c.vector).chain(&c.prototypes) {
                if v.values.len() != dim || !v.scale.is_finite() || v.scale < 0.0 {
                    return Err(Error::Invalid(format!(
                        "capability {}: malformed vector",
                        c.id
                    )));
                }
            }
        }
        Ok(())
    }
}
