//! A hostile peer built in the tests: a bare libp2p gossipsub swarm, as a
//! peer built on any libp2p implementation could be, that publishes whatever
//! the test gives it on the route topic.

use std::io;
use std::time::Duration;

use atmosphere::wire::Message;
use atmosphere::wire::member::{Certificate, Hello};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::identity::{Keypair, ed25519};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, StreamProtocol, gossipsub, noise, request_response, tcp, yamux};

use super::{WAIT, metric, metrics_text};

pub fn key(seed: u8) -> Keypair {
    ed25519::Keypair::from(ed25519::SecretKey::try_from_bytes([seed; 32]).expect("32 bytes")).into()
}

pub type Hostile = libp2p::Swarm<gossipsub::Behaviour>;

/// A bare gossipsub peer connected to the node, once the node's subscription
/// to the route topic is known. `signed: false` sends envelopes without
/// `from`, `seqno` and signature.
pub async fn hostile(seed: u8, addr: &Multiaddr, signed: bool) -> Hostile {
    let mut swarm = bare(seed, signed);
    swarm.dial(addr.clone()).expect("dial");
    tokio::time::timeout(WAIT, async {
        loop {
            if let SwarmEvent::Behaviour(gossipsub::Event::Subscribed { .. }) =
                swarm.select_next_some().await
            {
                return;
            }
        }
    })
    .await
    .expect("the node subscribes to the route topic");
    swarm
}

/// The bare gossipsub peer, subscribed to the route topic, not connected.
pub fn bare(seed: u8, signed: bool) -> Hostile {
    let mut swarm = swarm(seed, |k| gossip(k, signed));
    swarm
        .behaviour_mut()
        .subscribe(&topic())
        .expect("subscribe");
    swarm
}

/// A TCP swarm of peer `seed` (noise, yamux) running `behaviour`.
fn swarm<B: libp2p::swarm::NetworkBehaviour>(
    seed: u8,
    behaviour: impl FnOnce(&Keypair) -> B,
) -> libp2p::Swarm<B> {
    libp2p::SwarmBuilder::with_existing_identity(key(seed))
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("tcp")
        .with_behaviour(behaviour)
        .expect("behaviour")
        .build()
}

/// Gossipsub as the hostile peers run it.
fn gossip(k: &Keypair, signed: bool) -> gossipsub::Behaviour {
    let (authenticity, mode) = if signed {
        (
            gossipsub::MessageAuthenticity::Signed(k.clone()),
            gossipsub::ValidationMode::Strict,
        )
    } else {
        (
            gossipsub::MessageAuthenticity::Anonymous,
            gossipsub::ValidationMode::Anonymous,
        )
    };
    let config = gossipsub::ConfigBuilder::default()
        .heartbeat_interval(Duration::from_millis(200))
        .max_transmit_size(2 * 1024 * 1024)
        .validation_mode(mode)
        .build()
        .expect("config");
    gossipsub::Behaviour::new(authenticity, config).expect("gossipsub")
}

/// The wall clock in ms, as an origin's `seq` reads it.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

pub fn topic() -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new(atmosphere::wire::ROUTES_TOPIC)
}

/// Publishes messages one after the other, driving the swarm meanwhile.
pub async fn send(swarm: &mut Hostile, messages: Vec<Vec<u8>>) {
    for m in messages {
        swarm.behaviour_mut().publish(topic(), m).expect("publish");
        let _ = tokio::time::timeout(Duration::from_millis(100), swarm.select_next_some()).await;
    }
}

/// Drives the hostile swarms until the node's counters reach the wanted values.
pub async fn wait_counts(
    node: &atmosphere::node::Node,
    swarms: &mut [Hostile],
    want: &[(&str, u64)],
) {
    wait_lines(
        node,
        swarms,
        &want
            .iter()
            .map(|(result, n)| {
                (
                    format!("atmosphere_gossip_updates_total{{result=\"{result}\"}}"),
                    *n,
                )
            })
            .collect::<Vec<_>>(),
    )
    .await;
}

/// Drives the hostile swarms until each metric line reaches its value.
pub async fn wait_lines(
    node: &atmosphere::node::Node,
    swarms: &mut [Hostile],
    want: &[(String, u64)],
) {
    let check = async {
        loop {
            for s in swarms.iter_mut() {
                let _ = tokio::time::timeout(Duration::from_millis(20), s.select_next_some()).await;
            }
            let mut ok = true;
            for (line, n) in want {
                ok &= metric(node, line).await >= *n;
            }
            if ok {
                return;
            }
        }
    };
    if tokio::time::timeout(WAIT, check).await.is_err() {
        let text = metrics_text(node).await;
        let gossip: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("gossip") || l.contains("peers"))
            .collect();
        panic!("counters never reached {want:?}: {gossip:#?}");
    }
}

/// The member hello (`/atmosphere/member/1.0.0`) as protocols/membership.md
/// gives it: one encoded `Hello` each way, written whole and closed.
#[derive(Clone, Default)]
pub struct HelloCodec;

impl request_response::Codec for HelloCodec {
    type Protocol = StreamProtocol;
    type Request = Hello;
    type Response = Hello;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Hello> {
        read_hello(io).await
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Hello> {
        read_hello(io).await
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        hello: Hello,
    ) -> io::Result<()> {
        write_hello(io, &hello).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        hello: Hello,
    ) -> io::Result<()> {
        write_hello(io, &hello).await
    }
}

async fn read_hello<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Hello> {
    let mut bytes = Vec::new();
    io.read_to_end(&mut bytes).await?;
    Hello::decode(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

async fn write_hello<T: AsyncWrite + Unpin + Send>(io: &mut T, hello: &Hello) -> io::Result<()> {
    let bytes = hello
        .encode()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    io.write_all(&bytes).await?;
    io.close().await
}

/// A bare peer that is a member of a closed mesh: it says hello with its
/// certificate and gossips on the route topic whatever the test gives it.
#[derive(NetworkBehaviour)]
pub struct MemberPeer {
    pub gossipsub: gossipsub::Behaviour,
    pub hello: request_response::Behaviour<HelloCodec>,
}

pub struct Member {
    pub swarm: libp2p::Swarm<MemberPeer>,
    hello: Hello,
}

impl Member {
    /// Peer `seed` holding `certificate`, connected to the node at `addr`.
    pub fn dial(seed: u8, certificate: Certificate, addr: &Multiaddr) -> Self {
        let mut swarm = swarm(seed, |k| MemberPeer {
            gossipsub: gossip(k, true),
            hello: request_response::Behaviour::new(
                [(
                    StreamProtocol::new(atmosphere::wire::MEMBER_PROTOCOL),
                    request_response::ProtocolSupport::Full,
                )],
                request_response::Config::default(),
            ),
        });
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&topic())
            .expect("subscribe");
        swarm.dial(addr.clone()).expect("dial");
        let hello = Hello {
            version: atmosphere::wire::member::VERSION,
            certificate: Some(certificate),
            revocations: Vec::new(),
        };
        Self { swarm, hello }
    }

    /// Publishes `message` on the route topic (again, until the node has
    /// joined the topic's mesh with this peer).
    pub fn publish(&mut self, message: Vec<u8>) {
        let _ = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(topic(), message);
    }

    /// Drives the swarm for `time`, saying hello to each peer that connects
    /// and answering its hello.
    pub async fn run_for(&mut self, time: Duration) {
        let _ = tokio::time::timeout(time, async {
            loop {
                match self.swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                        let hello = self.hello.clone();
                        self.swarm
                            .behaviour_mut()
                            .hello
                            .send_request(&peer_id, hello);
                    }
                    SwarmEvent::Behaviour(MemberPeerEvent::Hello(
                        request_response::Event::Message {
                            message: request_response::Message::Request { channel, .. },
                            ..
                        },
                    )) => {
                        let hello = self.hello.clone();
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .hello
                            .send_response(channel, hello);
                    }
                    _ => {}
                }
            }
        })
        .await;
    }
}

/// A swarm with a fresh identity and only `behaviour`, dialling `addr`.
pub fn bare_swarm<B: NetworkBehaviour>(behaviour: B, addr: &str) -> libp2p::Swarm<B> {
    bare_swarm_keyed(Keypair::generate_ed25519(), behaviour, addr)
}

/// A swarm with identity `key` and only `behaviour`, dialling `addr`.
pub fn bare_swarm_keyed<B: NetworkBehaviour>(
    key: Keypair,
    behaviour: B,
    addr: &str,
) -> libp2p::Swarm<B> {
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("tcp")
        .with_behaviour(|_| behaviour)
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    swarm
        .dial(addr.parse::<Multiaddr>().expect("multiaddr"))
        .expect("dial");
    swarm
}

/// A bare stream peer with a fresh key connected to `addr`; its swarm runs
/// in the background.
pub async fn bare_peer(addr: &str) -> libp2p_stream::Control {
    let mut swarm = bare_swarm(libp2p_stream::Behaviour::new(), addr);
    let control = swarm.behaviour().new_control();
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    control
}
