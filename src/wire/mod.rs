//! Wire messages and their encoding: pure data, no I/O. Every protocol id and
//! topic is a constant here; every message type is its own type (never an
//! internal struct reused on the wire), specified in `protocols/` with golden
//! bytes in `protocols/vectors/` that the tests decode and re-encode.

pub mod codec;
pub mod intent;
pub mod kad;
pub mod member;
pub mod route;
pub mod sync;
pub mod tool;

#[cfg(test)]
mod golden;

/// Prefix of every Atmosphere protocol id.
pub const PREFIX: &str = "/atmosphere";

/// Gossipsub topic of route updates (`protocols/route-gossip.md`).
pub const ROUTES_TOPIC: &str = "atmosphere/routes/1";
/// Gossipsub topic of revocations in closed meshes (`protocols/membership.md`).
pub const MEMBERS_TOPIC: &str = "atmosphere/members/1";
/// The hello two nodes of a closed mesh exchange (`protocols/membership.md`).
pub const MEMBER_PROTOCOL: &str = "/atmosphere/member/1.0.0";
/// Kademlia protocol (`protocols/kad.md`).
pub const KAD_PROTOCOL: &str = "/atmosphere/kad/1.0.0";
/// Full route-table snapshot on join (`protocols/sync.md`).
pub const SYNC_PROTOCOL: &str = "/atmosphere/sync/1.0.0";
/// A forwarded request and its answer (`protocols/intent.md`).
pub const INTENT_PROTOCOL: &str = "/atmosphere/intent/1.0.0";
/// A forwarded request answered as a stream of events (`protocols/intent.md`).
pub const STREAM_PROTOCOL: &str = "/atmosphere/stream/1.0.0";
/// A forwarded request whose body follows in parts (`protocols/intent.md`).
pub const UPLOAD_PROTOCOL: &str = "/atmosphere/upload/1.0.0";
/// A tool call run where the tool lives (`protocols/tool.md`).
pub const TOOL_PROTOCOL: &str = "/atmosphere/tool/1.0.0";

pub use codec::Error;

/// A wire message: its size limit, its version, its rules; encoding and
/// decoding go through [`codec`] with that limit, and decoding checks the rest.
pub trait Message: serde::Serialize + serde::de::DeserializeOwned + Sized {
    /// Largest encoding accepted or produced.
    const MAX_BYTES: usize;

    /// The message's version byte, if it carries one.
    fn version(&self) -> Option<u8>;

    /// The version this node speaks.
    const VERSION: u8 = 1;

    /// Protocol rules beyond the encoding (counts, ranges).
    fn check(&self) -> Result<(), Error> {
        Ok(())
    }

    fn encode(&self) -> Result<Vec<u8>, Error> {
        codec::encode(self, Self::MAX_BYTES)
    }

    fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let m: Self = codec::decode(bytes, Self::MAX_BYTES)?;
        match m.version() {
            Some(v) if v != Self::VERSION => Err(Error::Version(v)),
            _ => {
                m.check()?;
                Ok(m)
            }
        }
    }
}
