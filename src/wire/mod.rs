//! Wire messages and their encoding: pure data, no I/O. Every protocol id and
//! topic is a constant here; every message type is its own type (never an
//! internal struct reused on the wire), specified in `protocols/` with golden
//! bytes in `protocols/vectors/` that the tests decode and re-encode.

pub mod codec;
pub mod intent;
pub mod route;
pub mod sync;

#[cfg(test)]
mod golden;

/// Prefix of every Atmosphere protocol id.
pub const PREFIX: &str = "/atmosphere";

/// Gossipsub topic of route updates (`protocols/route-gossip.md`).
pub const ROUTES_TOPIC: &str = "atmosphere/routes/1";
/// Kademlia protocol (`protocols/kad.md`).
pub const KAD_PROTOCOL: &str = "/atmosphere/kad/1.0.0";
/// Full route-table snapshot on join (`protocols/sync.md`).
pub const SYNC_PROTOCOL: &str = "/atmosphere/sync/1.0.0";
/// A forwarded request and its answer (`protocols/intent.md`).
pub const INTENT_PROTOCOL: &str = "/atmosphere/intent/1.0.0";
/// A forwarded request answered as a stream of events (`protocols/intent.md`).
pub const STREAM_PROTOCOL: &str = "/atmosphere/stream/1.0.0";

pub use codec::Error;
