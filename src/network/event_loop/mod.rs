//! The task that owns the Swarm: `select! { biased; cancel; commands; swarm; timers }`.
//! This file holds the loop, the commands and the connection events; each
//! protocol's handling is in a file of its own.

mod bootstrap;
mod intent;
mod kad;
mod member;
mod sync;
mod transport;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::identity::{Keypair, PeerId};
use libp2p::request_response::{OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, Swarm, gossipsub, identify, mdns, ping};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::behaviour::{Behaviour, BehaviourEvent};
use super::{
    Command, Config, Error, Event, InboundId, MessageRef, PeerInfo, Verdict, members_topic,
    routes_topic,
};
use crate::wire::Message;
use crate::wire::intent::IntentResponse;
use crate::wire::route::{SignedRouteUpdate, Verified};
use crate::wire::sync::SyncResponse;

/// How long the swarm keeps running after cancellation to flush queued messages.
const DRAIN: Duration = Duration::from_millis(300);

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
    bootstrap: Vec<bootstrap::Redial>,
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
    /// Whether external addresses were configured (else listen addresses are used).
    fixed_external: bool,
    /// Keys this node provides, and when they were last announced.
    provided: Vec<libp2p::kad::RecordKey>,
    last_provide: Option<Instant>,
    /// Whether the keys were last announced with peers in the routing table
    /// (before that, they are only stored locally).
    provided_to_peers: bool,
    lookups: HashMap<u64, kad::Lookup>,
    lookup_queries: HashMap<libp2p::kad::QueryId, u64>,
    next_lookup: u64,
    outbound_sync: HashMap<OutboundRequestId, SyncReply>,
    /// In a closed mesh, who belongs.
    gate: Option<std::sync::Arc<crate::member::Gate>>,
    /// Sync requests of peers whose hello is not judged yet.
    parked_sync: Vec<(PeerId, InboundId)>,
}

type SyncReply = tokio::sync::oneshot::Sender<Result<Vec<(Verified, SignedRouteUpdate)>, Error>>;

impl EventLoop {
    pub(super) fn new(
        key: &Keypair,
        config: Config,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
        cancel: CancellationToken,
    ) -> Result<Self, Error> {
        let setup = |e: &dyn std::fmt::Display| Error::Setup(e.to_string());
        let mut swarm = transport::swarm(key, &config)?;
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
        if config.gate.is_some() {
            swarm
                .behaviour_mut()
                .gossipsub
                .subscribe(&members_topic())
                .map_err(|e| setup(&e))?;
        }
        for addr in &config.external {
            swarm.add_external_address(addr.clone());
        }
        // Nodes are meant to be reachable (LAN, testnet, public bootstrap):
        // serve the DHT rather than wait for an external address confirmation.
        swarm
            .behaviour_mut()
            .kad
            .set_mode(Some(libp2p::kad::Mode::Server));
        let bootstrap = bootstrap::redials(&config.bootstrap);
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
            fixed_external: !config.external.is_empty(),
            provided: Vec::new(),
            last_provide: None,
            provided_to_peers: false,
            lookups: HashMap::new(),
            lookup_queries: HashMap::new(),
            next_lookup: 0,
            outbound_sync: HashMap::new(),
            gate: config.gate,
            parked_sync: Vec::new(),
        })
    }

    /// A handle for opening and accepting raw streams.
    pub fn stream_control(&self) -> libp2p_stream::Control {
        self.swarm.behaviour().stream.new_control()
    }

    pub async fn run(mut self) {
        let mut redial = tokio::time::interval(Duration::from_millis(500));
        redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The library bootstraps Kademlia by itself (every 5 minutes and when
        // its routing table grows); provider records are ours to refresh.
        let mut reprovide = tokio::time::interval(kad::REPROVIDE_EVERY);
        reprovide.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        reprovide.tick().await;
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
                _ = redial.tick() => {
                    self.redial();
                    self.drop_lapsed();
                }
                _ = reprovide.tick() => self.provide_all(),
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
            Command::AnswerSync { id, response } => self.answer_sync(id, response),
            Command::Forward {
                peer,
                request,
                reply,
            } => self.forward(peer, request, reply),
            Command::AnswerIntent { id, response } => self.answer_intent(id, response),
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
            Command::ExternalAddrs { reply } => {
                let _ = reply.send(self.swarm.external_addresses().cloned().collect());
            }
            Command::Provide { keys } => self.set_provided(keys),
            Command::Lookup { keys, reply } => self.lookup(keys, reply),
            Command::Sync { peer, reply } => self.sync_with(peer, reply),
            Command::Revoke { revocation, reply } => self.revoke(revocation, reply),
        }
    }

    fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) if message.topic == members_topic().hash() => {
                self.on_revocation(propagation_source, message_id, &message.data)
            }
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
                // Peers that dialled in are not in the DHT routing table by
                // themselves; a peer refused by a closed mesh stays out.
                let refused = matches!(
                    self.standing(&peer_id),
                    Some(crate::member::Standing::Refused(_))
                );
                for addr in info.listen_addrs.iter().filter(|_| !refused) {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer_id, addr.clone());
                }
                self.provide_if_unannounced();
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
            // The library leaves connection health to us. A peer that does not
            // answer is cut off or gone; the connection would otherwise linger
            // until TCP gives up, and every request sent on it would wait for
            // its stream negotiation to time out before failing over.
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Err(error),
            })) if !matches!(error, ping::Failure::Unsupported) => {
                tracing::info!(%peer, %error, "peer stopped answering; closing the connection");
                self.metrics.dead_connections.inc();
                self.swarm.close_connection(connection);
                // Nor should DHT queries wait on it; identify adds it back
                // when it connects again.
                self.swarm.behaviour_mut().kad.remove_peer(&peer);
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
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => self.on_kad(event),
            SwarmEvent::Behaviour(BehaviourEvent::Intent(event)) => self.on_intent(event),
            SwarmEvent::Behaviour(BehaviourEvent::Member(event)) => self.on_member(event),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                endpoint,
                ..
            } if num_established.get() == 1 => {
                let dialled = endpoint.is_dialer().then(|| endpoint.get_remote_address());
                self.bootstrap_connected(peer_id, dialled);
                if let Some(addr) = dialled {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer_id, addr.clone());
                    self.provide_if_unannounced();
                }
                // Every new connection is asked for its table; in a closed
                // mesh, once its hello shows it a member.
                if self.gate.is_some() {
                    self.greet(peer_id);
                } else if !self.synced.contains(&peer_id) {
                    self.request_sync(peer_id);
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
                if let Some(gate) = &self.gate {
                    gate.forget(&peer_id);
                    self.drop_parked(peer_id);
                }
                self.emit(Event::PeerDisconnected(peer_id));
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.redial_now();
                // Provider records and route updates carry the external
                // addresses; without configured ones, the listen addresses are
                // what other nodes can dial (LAN, testnet, public host).
                if !self.fixed_external {
                    self.swarm.add_external_address(address);
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } if !self.fixed_external => {
                self.swarm.remove_external_address(&address);
            }
            _ => {}
        }
    }

    fn on_gossip(&mut self, source: PeerId, id: gossipsub::MessageId, data: Vec<u8>) {
        let checked =
            SignedRouteUpdate::decode(&data).and_then(|s| s.verify(self.dim).map(|v| (v, s)));
        match checked {
            Ok((verified, signed)) => {
                if let Some(verdict) =
                    self.origin_refused(verified.origin, verified.update.certificate.as_ref())
                {
                    self.metrics.gossip("not_member");
                    tracing::debug!(%source, origin = %verified.origin, "route update of a non-member dropped");
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .gossipsub
                        .report_message_validation_result(&id, &source, verdict.into());
                    return;
                }
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
}
