//! The task that owns the Swarm: `select! { biased; cancel; commands; swarm; timers }`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::identity::{Keypair, PeerId};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, Swarm, gossipsub, identify, kad, mdns, noise, ping, tcp, yamux};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::behaviour::{Behaviour, BehaviourEvent};
use super::{
    Command, Config, Error, Event, InboundId, MessageRef, PeerInfo, Verdict, routes_topic,
};
use crate::wire::Message;
use crate::wire::intent::{IntentRequest, IntentResponse};
use crate::wire::route::SignedRouteUpdate;
use crate::wire::sync::{self, SyncRequest, SyncResponse};

/// How often unreachable bootstrap peers are tried again, at first; doubles on
/// every failure up to [`REDIAL_MAX`].
const REDIAL_MIN: Duration = Duration::from_secs(1);
const REDIAL_MAX: Duration = Duration::from_secs(60);
/// Kademlia bootstrap (refreshes the routing table).
const KAD_BOOTSTRAP_EVERY: Duration = Duration::from_secs(300);
/// How long the swarm keeps running after cancellation to flush queued messages.
const DRAIN: Duration = Duration::from_millis(300);
/// Sync answers the node has not given yet; older requests time out at the peer.
const MAX_PENDING_SYNC: usize = 64;

struct Redial {
    addr: Multiaddr,
    peer: Option<PeerId>,
    next: Instant,
    backoff: Duration,
}

#[derive(Default)]
struct PeerState {
    addresses: Vec<Multiaddr>,
    agent: Option<String>,
    rtt: Option<Duration>,
}

pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    cancel: CancellationToken,
    dim: usize,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    bootstrap: Vec<Redial>,
    peers: HashMap<PeerId, PeerState>,
    synced: HashSet<PeerId>,
    pending_sync: HashMap<InboundId, ResponseChannel<SyncResponse>>,
    inbound_intents: HashMap<InboundId, ResponseChannel<IntentResponse>>,
    outbound_intents: HashMap<
        OutboundRequestId,
        (
            PeerId,
            tokio::sync::oneshot::Sender<Result<IntentResponse, Error>>,
        ),
    >,
    next_inbound: u64,
}

fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

impl EventLoop {
    pub(super) fn new(
        key: &Keypair,
        config: Config,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
        cancel: CancellationToken,
    ) -> Result<Self, Error> {
        let setup = |e: &dyn std::fmt::Display| Error::Setup(e.to_string());
        let name = config.node_name.clone();
        let mdns = config.mdns;
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key.clone())
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| setup(&e))?
            .with_quic()
            .with_dns()
            .map_err(|e| setup(&e))?
            .with_behaviour(|key| {
                Behaviour::new(key, mdns, &name)
                    .map_err(Box::<dyn std::error::Error + Send + Sync>::from)
            })
            .map_err(|e| setup(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_timeout))
            .build();
        for addr in &config.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| Error::Setup(format!("cannot listen on {addr}: {e}")))?;
        }
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&routes_topic())
            .map_err(|e| setup(&e))?;
        // Nodes are meant to be reachable (LAN, testnet, public bootstrap):
        // serve the DHT rather than wait for an external address confirmation.
        swarm.behaviour_mut().kad.set_mode(Some(kad::Mode::Server));
        let now = Instant::now();
        let bootstrap = config
            .bootstrap
            .iter()
            .map(|addr| Redial {
                peer: peer_of(addr),
                addr: addr.clone(),
                next: now,
                backoff: REDIAL_MIN,
            })
            .collect();
        Ok(Self {
            swarm,
            commands,
            events,
            cancel,
            dim: config.dim,
            metrics: config.metrics.clone(),
            bootstrap,
            peers: HashMap::new(),
            synced: HashSet::new(),
            pending_sync: HashMap::new(),
            inbound_intents: HashMap::new(),
            outbound_intents: HashMap::new(),
            next_inbound: 0,
        })
    }

    /// A handle for opening and accepting raw streams.
    pub fn stream_control(&self) -> libp2p_stream::Control {
        self.swarm.behaviour().stream.new_control()
    }

    pub async fn run(mut self) {
        let mut redial = tokio::time::interval(Duration::from_millis(500));
        redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut kad_bootstrap = tokio::time::interval(KAD_BOOTSTRAP_EVERY);
        kad_bootstrap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                command = self.commands.recv() => match command {
                    Some(c) => self.on_command(c),
                    // Every client is gone: nobody can use the network any more.
                    None => break,
                },
                event = self.swarm.select_next_some() => self.on_swarm(event),
                _ = redial.tick() => self.redial(),
                _ = kad_bootstrap.tick() => {
                    let _ = self.swarm.behaviour_mut().kad.bootstrap();
                }
            }
        }
        self.drain().await;
        tracing::debug!("network event loop stopped");
    }

    /// Keeps the swarm running briefly so that messages already queued (a
    /// withdrawal on shutdown) reach the peers before the connections close.
    async fn drain(&mut self) {
        let deadline = tokio::time::Instant::now() + DRAIN;
        while let Ok(event) = tokio::time::timeout_at(deadline, self.swarm.select_next_some()).await
        {
            if let SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                message_id,
                propagation_source,
                ..
            })) = event
            {
                // Nobody will judge it now.
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(
                        &message_id,
                        &propagation_source,
                        Verdict::Ignore.into(),
                    );
            }
        }
    }

    fn emit(&self, event: Event) {
        if let Err(e) = self.events.try_send(event) {
            self.metrics.gossip("dropped_busy");
            tracing::warn!(error = %e, "node is not keeping up with network events; one dropped");
        }
    }

    fn redial(&mut self) {
        let now = Instant::now();
        for i in 0..self.bootstrap.len() {
            let r = &self.bootstrap[i];
            if r.next > now {
                continue;
            }
            if r.peer.is_some_and(|p| self.swarm.is_connected(&p)) {
                continue;
            }
            let addr = r.addr.clone();
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::debug!(%addr, error = %e, "bootstrap dial failed");
            }
            let r = &mut self.bootstrap[i];
            r.next = now + r.backoff;
            r.backoff = (r.backoff * 2).min(REDIAL_MAX);
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Publish { data, reply } => {
                let result = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(routes_topic(), data)
                    .map(|_| ())
                    .map_err(|e| Error::Publish(e.to_string()));
                let _ = reply.send(result);
            }
            Command::Report { message, verdict } => {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message.id, &message.source, verdict.into());
            }
            Command::AnswerSync { id, response } => {
                if let Some(channel) = self.pending_sync.remove(&id) {
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .sync
                        .send_response(channel, response);
                }
            }
            Command::Forward {
                peer,
                request,
                reply,
            } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .intent
                    .send_request(&peer, request);
                self.outbound_intents.insert(id, (peer, reply));
            }
            Command::AnswerIntent { id, response } => {
                if let Some(channel) = self.inbound_intents.remove(&id) {
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .intent
                        .send_response(channel, response);
                }
            }
            Command::Dial { addr, reply } => {
                let result = self
                    .swarm
                    .dial(addr)
                    .map_err(|e| Error::Dial(e.to_string()));
                let _ = reply.send(result);
            }
            Command::Peers { reply } => {
                let mut peers: Vec<PeerInfo> = self
                    .swarm
                    .connected_peers()
                    .map(|p| {
                        let state = self.peers.get(p);
                        PeerInfo {
                            peer_id: p.to_base58(),
                            addresses: state
                                .map(|s| s.addresses.iter().map(ToString::to_string).collect())
                                .unwrap_or_default(),
                            agent: state.and_then(|s| s.agent.clone()),
                            rtt_ms: state.and_then(|s| s.rtt).map(|d| d.as_secs_f64() * 1e3),
                            score: self.swarm.behaviour().gossipsub.peer_score(p),
                        }
                    })
                    .collect();
                peers.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
                let _ = reply.send(peers);
            }
            Command::ListenAddrs { reply } => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
        }
    }

    fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => self.on_gossip(propagation_source, message_id, message.data),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                // Peers that dialled in are not in the DHT routing table by themselves.
                for addr in &info.listen_addrs {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer_id, addr.clone());
                }
                let state = self.peers.entry(peer_id).or_default();
                state.addresses = info.listen_addrs;
                state.agent = Some(info.agent_version);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            })) => {
                self.peers.entry(peer).or_default().rtt = Some(rtt);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, addr.clone());
                    if !self.swarm.is_connected(&peer) {
                        let _ = self.swarm.dial(addr);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) => self.on_sync(event),
            SwarmEvent::Behaviour(BehaviourEvent::Intent(event)) => self.on_intent(event),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                endpoint,
                ..
            } if num_established.get() == 1 => {
                if endpoint.is_dialer() {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer_id, endpoint.get_remote_address().clone());
                }
                for r in &mut self.bootstrap {
                    if r.peer == Some(peer_id) {
                        r.backoff = REDIAL_MIN;
                    }
                }
                if self.synced.insert(peer_id) {
                    self.swarm.behaviour_mut().sync.send_request(
                        &peer_id,
                        SyncRequest {
                            version: sync::VERSION,
                        },
                    );
                }
                self.emit(Event::PeerConnected(peer_id));
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.synced.remove(&peer_id);
                self.peers.remove(&peer_id);
                self.emit(Event::PeerDisconnected(peer_id));
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
            }
            _ => {}
        }
    }

    /// Addresses an origin signed for itself go into the DHT routing table, so
    /// that a forwarded request can dial an origin known only by gossip.
    fn learn_addresses(&mut self, verified: &crate::wire::route::Verified) {
        if verified.origin == *self.swarm.local_peer_id() {
            return;
        }
        for a in &verified.update.addrs {
            if let Ok(addr) = a.parse::<Multiaddr>() {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&verified.origin, addr);
            }
        }
    }

    fn on_gossip(&mut self, source: PeerId, id: gossipsub::MessageId, data: Vec<u8>) {
        let checked =
            SignedRouteUpdate::decode(&data).and_then(|s| s.verify(self.dim).map(|v| (v, s)));
        match checked {
            Ok((verified, signed)) => {
                self.learn_addresses(&verified);
                self.emit(Event::Route {
                    verified: Box::new(verified),
                    signed,
                    message: MessageRef { id, source },
                });
            }
            Err(e) => {
                self.metrics.gossip("invalid");
                tracing::debug!(%source, error = %e, "rejected a route update");
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&id, &source, Verdict::Reject.into());
            }
        }
    }

    fn on_intent(&mut self, event: request_response::Event<IntentRequest, IntentResponse>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let id = InboundId(self.next_inbound);
                self.next_inbound += 1;
                self.inbound_intents.insert(id, channel);
                self.emit(Event::Intent { id, peer, request });
            }
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some((_, reply)) = self.outbound_intents.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some((peer, reply)) = self.outbound_intents.remove(&request_id) {
                    let _ = reply.send(Err(Error::Forward {
                        peer,
                        reason: error.to_string(),
                    }));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "answering a forwarded request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_sync(&mut self, event: request_response::Event<SyncRequest, SyncResponse>) {
        match event {
            request_response::Event::Message {
                peer,
                message: request_response::Message::Request { channel, .. },
                ..
            } => {
                if self.pending_sync.len() >= MAX_PENDING_SYNC {
                    tracing::warn!(%peer, "too many sync requests waiting; one dropped");
                    return;
                }
                let id = InboundId(self.next_inbound);
                self.next_inbound += 1;
                self.pending_sync.insert(id, channel);
                self.emit(Event::SyncRequested { id, peer });
            }
            request_response::Event::Message {
                peer,
                message: request_response::Message::Response { response, .. },
                ..
            } => {
                let mut updates = Vec::with_capacity(response.updates.len());
                for signed in response.updates {
                    match signed.verify(self.dim) {
                        Ok(v) => {
                            self.learn_addresses(&v);
                            updates.push((v, signed));
                        }
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "invalid update in a sync answer")
                        }
                    }
                }
                self.emit(Event::Synced { peer, updates });
            }
            request_response::Event::OutboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "sync request failed");
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "sync answer failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }
}
