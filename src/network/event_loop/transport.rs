//! The swarm's transports: TCP (noise, yamux) and QUIC, behind DNS; or, with
//! a swarm key (libp2p private network, `pnet`), TCP alone, where both ends
//! must prove the same pre-shared key before anything else is said. QUIC
//! cannot carry the pre-shared-key handshake, so a private network has none.

use libp2p::core::transport::Boxed;
use libp2p::core::upgrade::Version;
use libp2p::core::{Transport, muxing::StreamMuxerBox};
use libp2p::identity::Keypair;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::{Swarm, noise, tcp, yamux};

use super::super::behaviour::Behaviour;
use super::super::{Config, Error};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Builds the swarm with the transports `config` asks for.
pub(super) fn swarm(key: &Keypair, config: &Config) -> Result<Swarm<Behaviour>, Error> {
    let setup = |e: &dyn std::fmt::Display| Error::Setup(e.to_string());
    let name = config.node_name.clone();
    let mdns = config.mdns;
    let behaviour = |key: &Keypair| -> Result<Behaviour, BoxError> {
        config
            .metrics
            .with_libp2p_registry(|registry| Behaviour::new(key, mdns, &name, registry))
            .map_err(BoxError::from)
    };
    let idle = config.idle_timeout;
    let builder = libp2p::SwarmBuilder::with_existing_identity(key.clone()).with_tokio();
    let swarm = match config.swarm_key {
        None => builder
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| setup(&e))?
            .with_quic()
            .with_dns()
            .map_err(|e| setup(&e))?
            .with_behaviour(behaviour)
            .map_err(|e| setup(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build(),
        Some(psk) => builder
            .with_other_transport(|key| private_tcp(key, psk))
            .map_err(|e| setup(&e))?
            .with_dns()
            .map_err(|e| setup(&e))?
            .with_behaviour(behaviour)
            .map_err(|e| setup(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build(),
    };
    Ok(swarm)
}

/// TCP whose every connection starts with the private network's handshake
/// (a peer without the key cannot go further), then noise and yamux.
fn private_tcp(
    key: &Keypair,
    psk: PreSharedKey,
) -> Result<Boxed<(libp2p::PeerId, StreamMuxerBox)>, BoxError> {
    let noise = noise::Config::new(key)?;
    Ok(
        tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
            .and_then(move |socket, _| PnetConfig::new(psk).handshake(socket))
            .upgrade(Version::V1)
            .authenticate(noise)
            .multiplex(yamux::Config::default())
            .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
            .boxed(),
    )
}
