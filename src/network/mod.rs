//! The only place with a libp2p `Swarm`. An [`EventLoop`] task owns it; the rest
//! of the node holds a cheap, cloneable [`Client`] whose methods send a
//! [`Command`] with a oneshot reply, and reads [`Event`]s from a bounded
//! channel. Answers to peers' requests are matched by opaque ids, never by
//! libp2p's response channels.
//!
//! Message flow: a gossiped route update is decoded and its signature and
//! limits checked here; a valid one goes to the node as [`Event::Route`], which
//! applies it and reports the outcome back ([`Client::report`]) so gossipsub
//! forwards it or penalises the peer that sent it. Invalid ones are rejected
//! here and counted. On each new connection the loop asks the peer for its
//! table (sync) and hands the verified updates to the node.

mod behaviour;
pub(crate) mod codec;
mod event_loop;
pub mod frames;

use std::time::Duration;

use libp2p::gossipsub::{MessageAcceptance, MessageId};
use libp2p::identity::{Keypair, PeerId};
use libp2p::{Multiaddr, gossipsub, kad};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::wire::Message;
use crate::wire::intent::{IntentRequest, IntentResponse};
use crate::wire::route::{SignedRouteUpdate, Verified};
use crate::wire::sync::SyncResponse;

pub use event_loop::EventLoop;

/// Commands waiting for the event loop.
const COMMAND_CAPACITY: usize = 256;
/// Events waiting for the node; when full, new gossip events are dropped (and
/// counted) rather than stalling the swarm: gossipsub then times the
/// validation out, and the next refresh brings the same information.
const EVENT_CAPACITY: usize = 1024;

/// How the swarm is set up.
#[derive(Clone)]
pub struct Config {
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    /// Addresses announced to other nodes; empty: the listen addresses.
    pub external: Vec<Multiaddr>,
    pub mdns: bool,
    pub node_name: String,
    /// Width of routing vectors (updates with another width are rejected).
    pub dim: usize,
    /// Connections with no active stream are closed after this long.
    pub idle_timeout: Duration,
    /// Where rejected messages and dropped events are counted.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// In a closed mesh, who belongs: only members are heard.
    pub gate: Option<std::sync::Arc<crate::member::Gate>>,
    /// A private network's pre-shared key (`mesh.swarm_key`): TCP only,
    /// and only with peers that hold the same key.
    pub swarm_key: Option<libp2p::pnet::PreSharedKey>,
}

/// Why a network call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The swarm could not be built or could not listen.
    #[error("network setup: {0}")]
    Setup(String),
    /// Publishing failed (e.g. no peer subscribed yet).
    #[error("publish: {0}")]
    Publish(String),
    /// A revocation was refused.
    #[error("revocation refused: {0}")]
    Revoke(String),
    /// Dialing failed.
    #[error("dial: {0}")]
    Dial(String),
    /// A forwarded request got no answer (connection lost, timeout, refused).
    #[error("forwarding to {peer} failed: {reason}")]
    Forward { peer: PeerId, reason: String },
    /// A peer's table could not be fetched.
    #[error("sync with {peer} failed: {reason}")]
    Sync { peer: PeerId, reason: String },
    /// The event loop has stopped.
    #[error("the network has stopped")]
    Stopped,
}

/// An inbound request waiting for the node's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InboundId(pub(crate) u64);

/// A gossiped message waiting for its validation result.
#[derive(Debug, Clone)]
pub struct MessageRef {
    pub(crate) id: MessageId,
    pub(crate) source: PeerId,
}

/// The node's verdict on a gossiped update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// New and valid: forward it.
    Accept,
    /// Valid but not worth forwarding (duplicate, own, rate-limited).
    Ignore,
    /// Invalid or stale: drop it and penalise the peer.
    Reject,
}

/// What the network tells the node.
#[derive(Debug)]
pub enum Event {
    /// A verified route update arrived by gossip; answer with [`Client::report`].
    Route {
        verified: Box<Verified>,
        signed: SignedRouteUpdate,
        message: MessageRef,
    },
    /// A peer's table arrived by sync, every update verified.
    Synced {
        peer: PeerId,
        updates: Vec<(Verified, SignedRouteUpdate)>,
    },
    /// A peer asks for the table; answer with [`Client::answer_sync`].
    SyncRequested {
        id: InboundId,
        peer: PeerId,
    },
    /// A peer forwards a request (or one that could not be read: answer
    /// the refusal); answer with [`Client::answer_intent`].
    Intent {
        id: InboundId,
        peer: PeerId,
        request: Result<IntentRequest, crate::wire::Error>,
    },
    PeerConnected(PeerId),
    PeerDisconnected(PeerId),
    /// A revocation voided this node's certificate: its routes must go.
    Revoked(PeerId),
}

/// A connected peer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PeerInfo {
    pub peer_id: String,
    pub addresses: Vec<String>,
    pub agent: Option<String>,
    pub rtt_ms: Option<f64>,
    /// Gossipsub score; negative after invalid messages.
    pub score: Option<f64>,
}

#[derive(Debug)]
pub(crate) enum Command {
    Publish {
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Report {
        message: MessageRef,
        verdict: Verdict,
    },
    AnswerSync {
        id: InboundId,
        response: SyncResponse,
    },
    Forward {
        peer: PeerId,
        request: IntentRequest,
        reply: oneshot::Sender<Result<IntentResponse, Error>>,
    },
    AnswerIntent {
        id: InboundId,
        response: IntentResponse,
    },
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    ExternalAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Provide {
        keys: Vec<kad::RecordKey>,
    },
    Lookup {
        keys: Vec<kad::RecordKey>,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    Sync {
        peer: PeerId,
        reply: oneshot::Sender<Result<Vec<(Verified, SignedRouteUpdate)>, Error>>,
    },
    Revoke {
        revocation: crate::wire::member::Revocation,
        reply: oneshot::Sender<Result<bool, Error>>,
    },
}

/// Cheap, cloneable handle to the event loop.
#[derive(Clone)]
pub struct Client {
    tx: mpsc::Sender<Command>,
    peer_id: PeerId,
    /// Opens and accepts raw streams; a handle to the stream behaviour's own
    /// channels (it never touches the Swarm).
    streams: libp2p_stream::Control,
}

impl Client {
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Error> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// Publishes a signed route update on the route topic.
    pub async fn publish(&self, update: &SignedRouteUpdate) -> Result<(), Error> {
        let data = update.encode().map_err(|e| Error::Publish(e.to_string()))?;
        self.ask(|reply| Command::Publish { data, reply }).await?
    }

    /// Reports the node's verdict on a gossiped update.
    pub async fn report(&self, message: MessageRef, verdict: Verdict) -> Result<(), Error> {
        self.tx
            .send(Command::Report { message, verdict })
            .await
            .map_err(|_| Error::Stopped)
    }

    /// Answers a peer's sync request.
    pub async fn answer_sync(&self, id: InboundId, response: SyncResponse) -> Result<(), Error> {
        self.tx
            .send(Command::AnswerSync { id, response })
            .await
            .map_err(|_| Error::Stopped)
    }

    /// Sends a request to the node that offers its capability; waits for the answer.
    pub async fn forward(
        &self,
        peer: PeerId,
        request: IntentRequest,
    ) -> Result<IntentResponse, Error> {
        self.ask(|reply| Command::Forward {
            peer,
            request,
            reply,
        })
        .await?
    }

    /// Answers a peer's forwarded request.
    pub async fn answer_intent(
        &self,
        id: InboundId,
        response: IntentResponse,
    ) -> Result<(), Error> {
        self.tx
            .send(Command::AnswerIntent { id, response })
            .await
            .map_err(|_| Error::Stopped)
    }

    /// Opens a stream of `protocol` (`/atmosphere/stream/1.0.0` or
    /// `/atmosphere/tool/1.0.0`) to a peer.
    pub async fn open_stream(
        &self,
        peer: PeerId,
        protocol: &'static str,
    ) -> Result<libp2p::Stream, Error> {
        self.streams
            .clone()
            .open_stream(peer, libp2p::StreamProtocol::new(protocol))
            .await
            .map_err(|e| Error::Forward {
                peer,
                reason: e.to_string(),
            })
    }

    /// Inbound streams of `protocol`; call once per protocol.
    pub fn accept_streams(
        &self,
        protocol: &'static str,
    ) -> Result<libp2p_stream::IncomingStreams, Error> {
        self.streams
            .clone()
            .accept(libp2p::StreamProtocol::new(protocol))
            .map_err(|_| Error::Setup(format!("{protocol} streams are already accepted")))
    }

    /// Dials an address (with `/p2p/<id>` or without).
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), Error> {
        self.ask(|reply| Command::Dial { addr, reply }).await?
    }

    /// Connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, Error> {
        self.ask(|reply| Command::Peers { reply }).await
    }

    /// Sets the DHT keys this node provides (replacing the previous set); they
    /// are announced now, after each bootstrap, and every 10 minutes.
    pub async fn provide(&self, keys: Vec<kad::RecordKey>) -> Result<(), Error> {
        self.tx
            .send(Command::Provide { keys })
            .await
            .map_err(|_| Error::Stopped)
    }

    /// Asks the DHT who provides any of `keys`; answers when every query has
    /// finished (at most the query timeout). Providers are dialled as soon as
    /// they are found, while the query still knows their addresses.
    pub async fn lookup(&self, keys: Vec<kad::RecordKey>) -> Result<Vec<PeerId>, Error> {
        self.ask(|reply| Command::Lookup { keys, reply }).await
    }

    /// Asks a peer for its whole route table; every update in the answer is
    /// verified, invalid ones left out.
    pub async fn sync(&self, peer: PeerId) -> Result<Vec<(Verified, SignedRouteUpdate)>, Error> {
        self.ask(|reply| Command::Sync { peer, reply }).await?
    }

    /// Takes in a revocation (closed meshes): kept, spread by gossip, the
    /// node it names dropped. `Ok(false)`: it was known already.
    pub async fn revoke(&self, revocation: crate::wire::member::Revocation) -> Result<bool, Error> {
        self.ask(|reply| Command::Revoke { revocation, reply })
            .await?
    }

    /// Addresses other nodes are told to dial (configured, or the listen
    /// addresses), as put in route updates and provider records.
    pub async fn external_addrs(&self) -> Result<Vec<Multiaddr>, Error> {
        self.ask(|reply| Command::ExternalAddrs { reply }).await
    }

    /// Addresses the swarm listens on (after the OS picked ports).
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, Error> {
        self.ask(|reply| Command::ListenAddrs { reply }).await
    }
}

/// Builds the swarm, starts listening and spawns the event loop.
pub fn spawn(
    key: &Keypair,
    config: Config,
    cancel: CancellationToken,
) -> Result<(Client, mpsc::Receiver<Event>, tokio::task::JoinHandle<()>), Error> {
    let (tx, rx) = mpsc::channel(COMMAND_CAPACITY);
    let (events_tx, events_rx) = mpsc::channel(EVENT_CAPACITY);
    let event_loop = EventLoop::new(key, config, rx, events_tx, cancel)?;
    let client = Client {
        tx,
        peer_id: key.public().to_peer_id(),
        streams: event_loop.stream_control(),
    };
    let handle = tokio::spawn(event_loop.run());
    Ok((client, events_rx, handle))
}

impl From<Verdict> for MessageAcceptance {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Accept => MessageAcceptance::Accept,
            Verdict::Ignore => MessageAcceptance::Ignore,
            Verdict::Reject => MessageAcceptance::Reject,
        }
    }
}

/// The route topic.
pub fn routes_topic() -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new(crate::wire::ROUTES_TOPIC)
}

/// The revocation topic of closed meshes.
pub fn members_topic() -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new(crate::wire::MEMBERS_TOPIC)
}
