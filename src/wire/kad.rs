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

/// The key text of a capability kind, e.g. `kind:llm/chat`; kinds are
/// normalised like domains (`llm/Chat` and `llm/chat` are one key).
pub fn kind_text(kind: &str) -> String {
    format!("kind:{}", normalised(kind))
}

/// The key text of a domain, e.g. `domain:camelids`; `None` for no domain.
pub fn domain_text(domain: &str) -> Option<String> {
    let d = normalised(domain);
    (!d.is_empty()).then(|| format!("domain:{d}"))
}

/// The DHT key of a key text.
pub fn record_key(text: &str) -> RecordKey {
    RecordKey::new(&key_bytes(text))
}

/// The key of a capability kind.
pub fn kind_key(kind: &str) -> RecordKey {
    record_key(&kind_text(kind))
}

/// Trimmed and lower-cased: the form key texts are hashed in.
fn normalised(text: &str) -> String {
    text.trim().to_lowercase()
}

/// The key of a domain; domains are compared without regard to case or
/// surrounding space.
pub fn domain_key(domain: &str) -> RecordKey {
    record_key(&format!("domain:{}", normalised(domain)))
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
        assert_eq!(kind_key(" llm/Chat").to_vec(), k);
        assert_eq!(
            domain_key(" Camelids ").to_vec(),
            key_bytes("domain:camelids")
        );
    }
}
