//! Kademlia provider keys (`protocols/kad.md`): a node provides one key per
//! kind and per domain of its capabilities, so that a node whose table has
//! nothing fitting can find who offers it. Keys are sha256 multihashes of a
//! short text, the form every libp2p implementation can address.

use libp2p::kad::RecordKey;
use libp2p::multihash::Multihash;
use sha2::{Digest, Sha256};

/// Multihash code of sha2-256.
const SHA2_256: u64 = 0x12;

/// Largest number of keys one node provides (kinds plus domains).
pub const MAX_PROVIDED: usize = 64;

/// The multihash bytes for `text` (`0x12 0x20` followed by the digest).
pub fn key_bytes(text: &str) -> Vec<u8> {
    let digest = Sha256::digest(text.as_bytes());
    Multihash::<64>::wrap(SHA2_256, &digest)
        .map(|m| m.to_bytes())
        // A 32-byte digest always fits a 64-byte multihash.
        .unwrap_or_default()
}

/// The key of a capability kind, e.g. `kind:llm/chat`.
pub fn kind_key(kind: &str) -> RecordKey {
    RecordKey::new(&key_bytes(&format!("kind:{kind}")))
}

/// The key of a domain, e.g. `domain:camelids`; domains are compared without
/// regard to case or surrounding space.
pub fn domain_key(domain: &str) -> RecordKey {
    RecordKey::new(&key_bytes(&format!(
        "domain:{}",
        domain.trim().to_lowercase()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sha256_multihashes() {
        let k = key_bytes("kind:llm/chat");
        assert_eq!(k.len(), 34);
        assert_eq!(&k[..2], &[0x12, 0x20]);
        assert_eq!(kind_key("llm/chat").to_vec(), k);
        assert_eq!(
            domain_key(" Camelids ").to_vec(),
            key_bytes("domain:camelids")
        );
    }
}
