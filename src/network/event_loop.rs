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
/// Provider records are announced again this often (other nodes come and go;
/// the records they hold last 48 h by the library default).
const REPROVIDE_EVERY: Duration = Duration::from_secs(600);
/// A bootstrap (the library runs one every 5 minutes and when its routing
/// table grows) announces the provider records again if the last
/// announcement is older than this.
const REPROVIDE_AFTER_BOOTSTRAP: Duration = Duration::from_secs(60);
/// Lookups in flight; more are answered at once with no providers.
const MAX_LOOKUPS: usize = 4;
/// Providers kept per lookup (the library's default per key, too).
const MAX_PROVIDERS: usize = 20;
/// How long the swarm keeps running after cancellation to flush queued messages.
const DRAIN: Duration = Duration::from_millis(300);
/// Sync answers the node has not given yet; older requests time out at the peer.
const MAX_PENDING_SYNC: usize = 64;

struct Redial {
    addr: Multiaddr,
    peer: Option<PeerId>,
    /// The address named the peer (`/p2p/<id>`); otherwise `peer` is whoever
    /// answered there last.
    named: bool,
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
    /// Whether external addresses were configured (else listen addresses are used).
    fixed_external: bool,
    /// Keys this node provides, and when they were last announced.
    provided: Vec<kad::RecordKey>,
    last_provide: Option<Instant>,
    /// Whether the keys were last announced with peers in the routing table
    /// (before that, they are only stored locally).
    provided_to_peers: bool,
    lookups: HashMap<u64, Lookup>,
    lookup_queries: HashMap<kad::QueryId, u64>,
    next_lookup: u64,
    outbound_sync: HashMap<OutboundRequestId, SyncReply>,
}

type SyncReply = tokio::sync::oneshot::Sender<
    Result<Vec<(crate::wire::route::Verified, SignedRouteUpdate)>, Error>,
>;

/// A provider lookup over one or more keys.
struct Lookup {
    /// Queries not finished yet.
    remaining: usize,
    found: Vec<PeerId>,
    reply: tokio::sync::oneshot::Sender<Vec<PeerId>>,
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
        for addr in &config.external {
            swarm.add_external_address(addr.clone());
        }
        // Nodes are meant to be reachable (LAN, testnet, public bootstrap):
        // serve the DHT rather than wait for an external address confirmation.
        swarm.behaviour_mut().kad.set_mode(Some(kad::Mode::Server));
        let now = Instant::now();
        let bootstrap = config
            .bootstrap
            .iter()
            .map(|addr| Redial {
                peer: peer_of(addr),
                named: peer_of(addr).is_some(),
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
            fixed_external: !config.external.is_empty(),
            provided: Vec::new(),
            last_provide: None,
            provided_to_peers: false,
            lookups: HashMap::new(),
            lookup_queries: HashMap::new(),
            next_lookup: 0,
            outbound_sync: HashMap::new(),
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
        let mut reprovide = tokio::time::interval(REPROVIDE_EVERY);
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
                _ = redial.tick() => self.redial(),
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
            Command::ExternalAddrs { reply } => {
                let _ = reply.send(self.swarm.external_addresses().cloned().collect());
            }
            Command::Provide { keys } => {
                let kad = &mut self.swarm.behaviour_mut().kad;
                for old in &self.provided {
                    if !keys.contains(old) {
                        kad.stop_providing(old);
                    }
                }
                self.provided = keys;
                self.provide_all();
            }
            Command::Lookup { keys, reply } => {
                if self.lookups.len() >= MAX_LOOKUPS || keys.is_empty() {
                    let _ = reply.send(Vec::new());
                    return;
                }
                let id = self.next_lookup;
                self.next_lookup += 1;
                for key in &keys {
                    let query = self.swarm.behaviour_mut().kad.get_providers(key.clone());
                    self.lookup_queries.insert(query, id);
                }
                self.lookups.insert(
                    id,
                    Lookup {
                        remaining: keys.len(),
                        found: Vec::new(),
                        reply,
                    },
                );
            }
            Command::Sync { peer, reply } => {
                // The connection's own sync is not needed on top of this one.
                self.synced.insert(peer);
                let id = self.swarm.behaviour_mut().sync.send_request(
                    &peer,
                    SyncRequest {
                        version: sync::VERSION,
                    },
                );
                self.outbound_sync.insert(id, reply);
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
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                endpoint,
                ..
            } if num_established.get() == 1 => {
                if endpoint.is_dialer() {
                    // A bootstrap address given without /p2p/<id> (a DNS name
                    // of a service): learn whose it is, so it is not dialled
                    // again while connected (a restarted peer may have a new one).
                    let remote = endpoint.get_remote_address();
                    for r in &mut self.bootstrap {
                        if !r.named && &r.addr == remote {
                            r.peer = Some(peer_id);
                        }
                    }
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer_id, endpoint.get_remote_address().clone());
                    self.provide_if_unannounced();
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
                // A new interface address often means the network is back
                // (a cable, a Wi-Fi join, a container reattached): try the
                // bootstrap peers now instead of after a long backoff.
                let now = Instant::now();
                for r in &mut self.bootstrap {
                    r.next = now;
                    r.backoff = REDIAL_MIN;
                }
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

    /// Announces every provided key to the closest peers (stored locally too,
    /// so a lookup from this node finds it).
    fn provide_all(&mut self) {
        if self.provided.is_empty() {
            return;
        }
        let kad = &mut self.swarm.behaviour_mut().kad;
        self.provided_to_peers = kad.kbuckets().any(|b| b.num_entries() > 0);
        for key in &self.provided {
            if let Err(e) = kad.start_providing(key.clone()) {
                tracing::warn!(error = %e, "cannot provide a capability key");
            }
        }
        self.last_provide = Some(Instant::now());
    }

    /// The first peer in the routing table: announce what was so far only
    /// stored locally.
    fn provide_if_unannounced(&mut self) {
        if !self.provided_to_peers && !self.provided.is_empty() {
            self.provide_all();
        }
    }

    fn on_kad(&mut self, event: kad::Event) {
        let kad::Event::OutboundQueryProgressed {
            id, result, step, ..
        } = event
        else {
            return;
        };
        match result {
            kad::QueryResult::Bootstrap(Ok(_))
                if step.last
                    && (!self.provided_to_peers
                        || self
                            .last_provide
                            .is_none_or(|t| t.elapsed() >= REPROVIDE_AFTER_BOOTSTRAP)) =>
            {
                self.provide_all();
            }
            kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                providers,
                ..
            })) => {
                let me = *self.swarm.local_peer_id();
                let Some(lookup) = self
                    .lookup_queries
                    .get(&id)
                    .and_then(|l| self.lookups.get_mut(l))
                else {
                    return;
                };
                let mut new = Vec::new();
                for p in providers {
                    if p != me && !lookup.found.contains(&p) && lookup.found.len() < MAX_PROVIDERS {
                        lookup.found.push(p);
                        new.push(p);
                    }
                }
                // Dial now: the query knows the provider's addresses only
                // while it runs.
                for p in new {
                    if !self.swarm.is_connected(&p) {
                        let _ = self.swarm.dial(p);
                    }
                }
            }
            kad::QueryResult::StartProviding(Err(e)) => {
                tracing::debug!(error = %e, "providing a key reached no peer");
            }
            _ => {}
        }
        if step.last
            && let Some(lookup_id) = self.lookup_queries.remove(&id)
            && let Some(lookup) = self.lookups.get_mut(&lookup_id)
        {
            lookup.remaining = lookup.remaining.saturating_sub(1);
            if lookup.remaining == 0
                && let Some(done) = self.lookups.remove(&lookup_id)
            {
                let _ = done.reply.send(done.found);
            }
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
                message:
                    request_response::Message::Response {
                        response,
                        request_id,
                    },
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
                match self.outbound_sync.remove(&request_id) {
                    Some(reply) => {
                        let _ = reply.send(Ok(updates));
                    }
                    None => self.emit(Event::Synced { peer, updates }),
                }
            }
            request_response::Event::OutboundFailure {
                peer,
                error,
                request_id,
                ..
            } => {
                tracing::debug!(%peer, %error, "sync request failed");
                if let Some(reply) = self.outbound_sync.remove(&request_id) {
                    let _ = reply.send(Err(Error::Sync {
                        peer,
                        reason: error.to_string(),
                    }));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "sync answer failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }
}
