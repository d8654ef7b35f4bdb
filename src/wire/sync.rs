//! Anti-entropy on join: a peer's whole route table at once.
//! Spec: `protocols/sync.md` (`/atmosphere/sync/1.0.0`).

use serde::{Deserialize, Serialize};

use super::codec::Error;
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

impl super::Message for SyncRequest {
    const MAX_BYTES: usize = MAX_REQUEST_BYTES;
    fn version(&self) -> Option<u8> {
        Some(self.version)
    }
}

impl super::Message for SyncResponse {
    const MAX_BYTES: usize = MAX_RESPONSE_BYTES;
    fn version(&self) -> Option<u8> {
        Some(self.version)
    }
    fn check(&self) -> Result<(), Error> {
        if self.updates.len() > MAX_ORIGINS {
            return Err(Error::Invalid(format!(
                "{} origins (max {MAX_ORIGINS})",
                self.updates.len()
            )));
        }
        Ok(())
    }
}
