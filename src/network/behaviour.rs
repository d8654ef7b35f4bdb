//! The composed libp2p behaviour and how it is configured.

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{StreamProtocol, gossipsub, identify, kad, mdns, ping, request_response};

use super::codec::Codec;
use crate::wire::{self, intent, member, sync};

/// Every connection is pinged this often; a ping unanswered within
/// [`PING_TIMEOUT`] closes the connection (see the event loop), so a peer cut
/// off by the network is noticed within 20 s rather than when TCP gives up
/// (minutes), and is dialled afresh once it is back.
const PING_INTERVAL: Duration = Duration::from_secs(10);
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// Sync exchanges are small and rare: a whole snapshot must arrive in this time.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent inbound sync streams per connection.
const SYNC_CONCURRENT: usize = 8;

pub type SyncCodec = Codec<sync::SyncRequest, sync::SyncResponse>;
pub type IntentCodec = Codec<intent::IntentRequest, intent::IntentResponse>;
pub type MemberCodec = Codec<member::Hello, member::Hello>;

/// A hello is answered at once, or the peer is taken for a non-member.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest a forwarded request may take (the HTTP request deadline's ceiling).
const INTENT_TIMEOUT: Duration = Duration::from_secs(300);
/// Concurrent inbound forwarded requests per connection.
const INTENT_CONCURRENT: usize = 256;

/// Peer scoring for the route topic. Updates are rare (a refresh every ttl/3),
/// so mesh-delivery rates (P3) are not scored: honest peers would be punished
/// for quiet periods. Invalid messages (P4) weigh heavily: one forged or stale
/// update takes its sender below the graylist threshold (-80), and the
/// penalty decays over minutes. Address co-location is not penalised.
fn score_params() -> gossipsub::PeerScoreParams {
    let topic = gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 100.0,
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_decay: 0.9,
        first_message_deliveries_cap: 20.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -100.0,
        invalid_message_deliveries_decay: 0.99,
        ..Default::default()
    };
    let mut params = gossipsub::PeerScoreParams {
        // Many nodes share one address in testnets, on one host or behind one
        // NAT: co-location is normal here, not a Sybil signal.
        ip_colocation_factor_weight: 0.0,
        ..Default::default()
    };
    // Revocations are rarer still, and scored alike.
    params
        .topics
        .insert(super::members_topic().hash(), topic.clone());
    params.topics.insert(super::routes_topic().hash(), topic);
    params
}

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    pub gossipsub: gossipsub::Behaviour,
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub sync: request_response::Behaviour<SyncCodec>,
    pub intent: request_response::Behaviour<IntentCodec>,
    /// Hellos of closed meshes (`/atmosphere/member/1.0.0`).
    pub member: request_response::Behaviour<MemberCodec>,
    /// Streamed answers (`/atmosphere/stream/1.0.0`), used through its `Control`.
    pub stream: libp2p_stream::Behaviour,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
}

impl Behaviour {
    /// `registry` receives gossipsub's own metrics (envelopes dropped before
    /// the node sees them among them).
    pub fn new(
        key: &Keypair,
        enable_mdns: bool,
        node_name: &str,
        registry: &mut prometheus_client::registry::Registry,
    ) -> Result<Self, String> {
        let peer_id = key.public().to_peer_id();
        // Mesh parameters set together: the builder does not check them.
        let gossip_config = gossipsub::ConfigBuilder::default()
            .heartbeat_interval(Duration::from_millis(500))
            .mesh_n(6)
            .mesh_n_low(4)
            .mesh_n_high(12)
            .mesh_outbound_min(2)
            .max_transmit_size(wire::route::MAX_SIGNED_BYTES + 4096)
            // The node validates every update (signature, limits, seq) and reports.
            .validate_messages()
            .validation_mode(gossipsub::ValidationMode::Strict)
            .build()
            .map_err(|e| format!("gossipsub config: {e}"))?;
        let mut gossipsub = gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(key.clone()),
            gossip_config,
        )
        .map_err(|e| format!("gossipsub: {e}"))?
        .with_metrics(
            registry.sub_registry_with_prefix("gossipsub"),
            gossipsub::MetricsConfig::default(),
        );
        gossipsub
            .with_peer_score(score_params(), gossipsub::PeerScoreThresholds::default())
            .map_err(|e| format!("gossipsub scoring: {e}"))?;
        let mut kad_config = kad::Config::new(StreamProtocol::new(wire::KAD_PROTOCOL));
        kad_config.set_query_timeout(Duration::from_secs(10));
        let kad =
            kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
        let identify = identify::Behaviour::new(
            identify::Config::new("/atmosphere/1.0.0".into(), key.public()).with_agent_version(
                format!("atmosphere/{} ({node_name})", env!("CARGO_PKG_VERSION")),
            ),
        );
        let sync = request_response::Behaviour::with_codec(
            SyncCodec::default(),
            [(
                StreamProtocol::new(wire::SYNC_PROTOCOL),
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default()
                .with_request_timeout(SYNC_TIMEOUT)
                .with_max_concurrent_streams(SYNC_CONCURRENT),
        );
        let intent = request_response::Behaviour::with_codec(
            IntentCodec::default(),
            [(
                StreamProtocol::new(wire::INTENT_PROTOCOL),
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default()
                .with_request_timeout(INTENT_TIMEOUT)
                .with_max_concurrent_streams(INTENT_CONCURRENT),
        );
        let member = request_response::Behaviour::with_codec(
            MemberCodec::default(),
            [(
                StreamProtocol::new(wire::MEMBER_PROTOCOL),
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default()
                .with_request_timeout(HELLO_TIMEOUT)
                .with_max_concurrent_streams(4),
        );
        // A network without multicast (some containers) must not stop the node:
        // it still has its bootstrap peers.
        let mdns = if enable_mdns {
            match mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id) {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::warn!(error = %e, "mDNS unavailable; relying on bootstrap peers");
                    None
                }
            }
        } else {
            None
        };
        Ok(Self {
            gossipsub,
            kad,
            identify,
            ping: ping::Behaviour::new(
                ping::Config::new()
                    .with_interval(PING_INTERVAL)
                    .with_timeout(PING_TIMEOUT),
            ),
            sync,
            intent,
            member,
            stream: libp2p_stream::Behaviour::new(),
            mdns: mdns.into(),
        })
    }
}
