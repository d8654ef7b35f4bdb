//! `[mesh]`: how a node joins the peer-to-peer mesh.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Error;

/// `[mesh]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MeshConfig {
    /// Multiaddrs to listen on (TCP and QUIC).
    pub listen: Vec<String>,
    /// Peers to join through, `/ip4/../tcp/../p2p/<id>`, `/dns4/..`, `/dnsaddr/..`;
    /// dialled again with backoff while unreachable.
    pub bootstrap: Vec<String>,
    /// Addresses other nodes should dial to reach this one (behind NAT or a
    /// published container port). Empty: the addresses it listens on.
    pub external: Vec<String>,
    /// Discover peers on the local network with mDNS.
    pub mdns: bool,
    /// How long other nodes keep this node's routes without a refresh (it
    /// refreshes every third of it).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Forwarded requests one peer may have running here at once; more are
    /// answered 429 `peer_over_quota` (honest peers keep their share while
    /// another floods).
    pub peer_requests: usize,
    /// New forwarded requests (intents and streams together) one peer may
    /// send per second; more are answered 429 `peer_over_rate`.
    pub peer_rate: u32,
    /// PeerIds of nodes this one trusts: their capabilities rank with this
    /// node's own (`routing.stranger_margin`, `routing.auto_origins`) and
    /// their routes are kept first when the table is full.
    pub trusted: Vec<String>,
    /// The mesh key's public half (64 hex digits, from `atmosphere mesh
    /// init`). When set, the mesh is closed: only peers and origins holding a
    /// certificate it signed, in force, are heard.
    pub authority: Option<String>,
    /// This node's certificate (`atmosphere mesh admit`); default
    /// `membership.cert` in the data dir.
    pub certificate: Option<std::path::PathBuf>,
    /// A libp2p private network's key file (`atmosphere mesh swarm-key`):
    /// only peers holding the same key can connect at all. TCP only (QUIC
    /// addresses are left out).
    pub swarm_key: Option<std::path::PathBuf>,
    /// Connections without traffic are closed after this long.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            listen: vec![
                "/ip4/0.0.0.0/tcp/11450".into(),
                "/ip4/0.0.0.0/udp/11450/quic-v1".into(),
            ],
            bootstrap: Vec::new(),
            external: Vec::new(),
            mdns: true,
            ttl: Duration::from_secs(30),
            peer_requests: 16,
            peer_rate: 100,
            trusted: Vec::new(),
            authority: None,
            certificate: None,
            swarm_key: None,
            idle_timeout: Duration::from_secs(120),
        }
    }
}

impl MeshConfig {
    /// The addresses a private network can use: QUIC ones left out.
    pub fn tcp_only(addrs: Vec<libp2p::Multiaddr>) -> Vec<libp2p::Multiaddr> {
        use libp2p::multiaddr::Protocol;
        addrs
            .into_iter()
            .filter(|a| {
                let quic = a
                    .iter()
                    .any(|p| matches!(p, Protocol::Quic | Protocol::QuicV1 | Protocol::Udp(_)));
                if quic {
                    tracing::info!(addr = %a, "mesh.swarm_key is set: QUIC is not used");
                }
                !quic
            })
            .collect()
    }

    /// Parses the addresses, naming the first bad one.
    pub fn addrs(list: &[String]) -> Result<Vec<libp2p::Multiaddr>, Error> {
        list.iter()
            .map(|a| {
                a.parse()
                    .map_err(|e| Error::Invalid(format!("mesh address {a:?}: {e}")))
            })
            .collect()
    }
}

/// `[mesh]`: the mesh's settings, plus `enabled` (default `true`), which is
/// read here and not kept: a node without a mesh has no mesh settings.
pub(super) fn section<'de, D>(de: D) -> Result<Option<MeshConfig>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    let mut table = toml::Table::deserialize(de)?;
    let enabled = match table.remove("enabled") {
        None => true,
        Some(toml::Value::Boolean(b)) => b,
        Some(other) => {
            return Err(D::Error::custom(format!(
                "mesh.enabled: expected true or false, found {}",
                other.type_str()
            )));
        }
    };
    let mesh = MeshConfig::deserialize(toml::Value::Table(table)).map_err(D::Error::custom)?;
    Ok(enabled.then_some(mesh))
}

/// The mesh key's public half as written in `mesh.authority`: 64 hex digits.
pub fn authority_text(key: &ed25519_dalek::VerifyingKey) -> String {
    key.to_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads `mesh.authority`.
pub fn parse_authority(text: &str) -> Result<ed25519_dalek::VerifyingKey, String> {
    let text = text.trim();
    let bytes: Option<Vec<u8>> = (text.len() == 64 && text.is_ascii())
        .then(|| {
            (0..64)
                .step_by(2)
                .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
                .collect()
        })
        .flatten();
    let bytes: [u8; 32] = bytes.and_then(|b| b.try_into().ok()).ok_or_else(|| {
        format!(
            "mesh.authority {text:?}: expected 64 hex digits (`atmosphere mesh init` prints it)"
        )
    })?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes)
        .map_err(|_| format!("mesh.authority {text:?} is not an ed25519 public key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_text_round_trips_and_bad_text_is_named() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]).verifying_key();
        let text = authority_text(&key);
        assert_eq!(text.len(), 64);
        assert_eq!(parse_authority(&text).expect("parses"), key);
        for bad in ["", "abc", &"zz".repeat(32), &"é".repeat(32)] {
            let err = parse_authority(bad).unwrap_err();
            assert!(err.contains("mesh.authority"), "{err}");
        }
    }
}
