//! Anti-entropy on join: a peer's whole route table at once.
//! Spec: `protocols/sync.md` (`/atmosphere/sync/1.0.0`).

use serde::{Deserialize, Serialize};

use super::codec::{self, Error};
use super::route::{MAX_SIGNED_BYTES, SignedRouteUpdate};

pub const VERSION: u8 = 1;
/// A request is a version byte and a flag; anything bigger is hostile.
pub const MAX_REQUEST_BYTES: usize = 64;
/// Most origins in one snapshot.
pub const MAX_ORIGINS: usize = 512;
/// Largest snapshot: 16 full-size updates, far more than typical tables.
pub const MAX_RESPONSE_BYTES: usize = 16 * MAX_SIGNED_BYTES;

/// "Send me what you know."
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncRequest {
    pub version: u8,
}

/// The latest signed update of every origin the peer holds (its own included);
/// each is verified by the receiver exactly as if it had arrived by gossip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncResponse {
    pub version: u8,
    pub updates: Vec<SignedRouteUpdate>,
}

impl SyncRequest {
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        codec::encode(self, MAX_REQUEST_BYTES)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let r: Self = codec::decode(bytes, MAX_REQUEST_BYTES)?;
        if r.version != VERSION {
            return Err(Error::Version(r.version));
        }
        Ok(r)
    }
}

impl SyncResponse {
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        codec::encode(self, MAX_RESPONSE_BYTES)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let r: Self = codec::decode(bytes, MAX_RESPONSE_BYTES)?;
        if r.version != VERSION {
            return Err(Error::Version(r.version));
        }
        if r.updates.len() > MAX_ORIGINS {
            return Err(Error::Invalid(format!(
                "{} origins (max {MAX_ORIGINS})",
                r.updates.len()
            )));
        }
        Ok(r)
    }
}
