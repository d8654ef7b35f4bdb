//! Closed meshes (`protocols/membership.md`): the hello on
//! `/atmosphere/member/1.0.0` that each side sends when a connection opens,
//! judged before the peer is synced with or its table answered; a peer that
//! is not a member is disconnected. Revocations arrive by gossip on
//! `atmosphere/members/1` and in hellos; a node they void is dropped.

use libp2p::gossipsub;
use libp2p::identity::PeerId;
use libp2p::request_response;
use tokio::sync::oneshot;

use super::EventLoop;
use crate::member::{Gate, Refusal, Standing, now_ms};
use crate::network::codec::Decoded;
use crate::network::{Error, Event, Verdict, members_topic};
use crate::wire::Message;
use crate::wire::member::{self, Hello, Revocation};

impl EventLoop {
    /// A new connection in a closed mesh: the peer is pending until its
    /// hello is judged.
    pub(super) fn greet(&mut self, peer: PeerId) {
        let Some(gate) = &self.gate else { return };
        gate.settle(peer, Standing::Pending);
        let hello = gate.hello();
        self.swarm
            .behaviour_mut()
            .member
            .send_request(&peer, Decoded::Valid(hello));
    }

    /// A connected peer's standing; `None` in an open mesh, where every
    /// peer is heard.
    pub(super) fn standing(&self, peer: &PeerId) -> Option<Standing> {
        let gate = self.gate.as_ref()?;
        Some(
            gate.standing(peer, now_ms())
                .unwrap_or(Standing::Refused(Refusal::NoHello)),
        )
    }

    pub(super) fn on_member(&mut self, event: request_response::Event<Decoded<Hello>, Hello>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                // Answered in an open mesh too: with no certificate.
                let answer = self.gate.as_ref().map_or_else(
                    || Hello {
                        version: member::VERSION,
                        certificate: None,
                        revocations: Vec::new(),
                    },
                    |g| g.hello(),
                );
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .member
                    .send_response(channel, answer);
                match request {
                    Decoded::Valid(hello) => self.judge_hello(peer, hello),
                    Decoded::Refused(e) => {
                        tracing::debug!(%peer, error = %e, "unreadable hello");
                        self.refuse(peer, Refusal::BadCertificate);
                    }
                }
            }
            request_response::Event::Message {
                peer,
                message: request_response::Message::Response { response, .. },
                ..
            } => self.judge_hello(peer, response),
            request_response::Event::OutboundFailure { peer, error, .. } => {
                if matches!(self.standing(&peer), Some(Standing::Pending)) {
                    tracing::debug!(%peer, %error, "no hello from the peer");
                    self.refuse(peer, Refusal::NoHello);
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "answering a hello failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// A peer's hello (its request or its answer, whichever comes first):
    /// its certificate judged; a member's revocations taken in (a stranger's
    /// are not even checked: a thousand signatures per connection would be
    /// work for anyone to make this node do).
    fn judge_hello(&mut self, peer: PeerId, hello: Hello) {
        let Some(gate) = self.gate.clone() else {
            return;
        };
        match self.standing(&peer) {
            Some(Standing::Pending) => {}
            Some(Standing::Member(_)) => {
                for r in &hello.revocations {
                    let _ = self.learn(&gate, r);
                }
                return;
            }
            _ => return,
        }
        match gate.judge(hello.certificate.as_ref(), peer, now_ms()) {
            Ok(member) => {
                self.metrics.member("member");
                tracing::debug!(%peer, roles = ?member.roles, "a member of the mesh connected");
                gate.settle(peer, Standing::Member(member));
                for r in &hello.revocations {
                    let _ = self.learn(&gate, r);
                }
                // Its table, and the sync requests it sent meanwhile.
                if !self.synced.contains(&peer) {
                    self.request_sync(peer);
                }
                let (ready, waiting) = std::mem::take(&mut self.parked_sync)
                    .into_iter()
                    .partition(|(p, _)| *p == peer);
                self.parked_sync = waiting;
                for (peer, id) in ready {
                    self.emit(Event::SyncRequested { id, peer });
                }
            }
            Err(refusal) => self.refuse(peer, refusal),
        }
    }

    /// A peer that is not a member (any more): disconnected, its waiting
    /// sync requests dropped, out of the DHT routing table.
    pub(super) fn refuse(&mut self, peer: PeerId, refusal: Refusal) {
        let Some(gate) = &self.gate else { return };
        // Standings are kept for connected peers only.
        if gate.standing(&peer, now_ms()).is_none() {
            return;
        }
        self.metrics.member(refusal.as_str());
        tracing::info!(%peer, reason = refusal.as_str(), "peer is not a member of this closed mesh; disconnected");
        gate.settle(peer, Standing::Refused(refusal));
        self.drop_parked(peer);
        self.swarm.behaviour_mut().kad.remove_peer(&peer);
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    /// Drops the sync requests of `peer` waiting for its hello (their
    /// streams close unanswered).
    pub(super) fn drop_parked(&mut self, peer: PeerId) {
        let (dropped, kept) = std::mem::take(&mut self.parked_sync)
            .into_iter()
            .partition(|(p, _)| *p == peer);
        self.parked_sync = kept;
        for (_, id) in dropped {
            self.pending_sync.remove(&id);
        }
    }

    /// Members whose certificate expired (or was revoked) while connected.
    pub(super) fn drop_lapsed(&mut self) {
        let Some(gate) = self.gate.clone() else {
            return;
        };
        for peer in gate.lapsed(now_ms()) {
            let refusal = match gate.standing(&peer, now_ms()) {
                Some(Standing::Refused(r)) => r,
                _ => Refusal::Expired,
            };
            self.refuse(peer, refusal);
        }
    }

    /// Takes in a revocation: `Ok(true)` when new (the node it voids is
    /// dropped: its routes by the node, its connection here).
    fn learn(&mut self, gate: &Gate, revocation: &Revocation) -> Result<bool, String> {
        match gate.learn(revocation) {
            Ok(Some(peer)) => {
                self.metrics.member("revocation_new");
                tracing::warn!(%peer, "a revocation of the mesh key took a node out of the mesh");
                self.emit(Event::Revoked(peer));
                if let Some(Standing::Refused(r)) = gate.standing(&peer, now_ms()) {
                    self.refuse(peer, r);
                }
                Ok(true)
            }
            Ok(None) => {
                self.metrics.member("revocation_known");
                Ok(false)
            }
            Err(e) => {
                self.metrics.member("revocation_invalid");
                Err(e)
            }
        }
    }

    /// A revocation gossiped on the members topic.
    pub(super) fn on_revocation(&mut self, source: PeerId, id: gossipsub::MessageId, data: &[u8]) {
        let verdict = match (self.gate.clone(), Revocation::decode(data)) {
            (None, _) => Verdict::Ignore,
            (Some(_), Err(e)) => {
                tracing::debug!(%source, error = %e, "unreadable revocation");
                self.metrics.member("revocation_invalid");
                Verdict::Reject
            }
            (Some(gate), Ok(r)) => match self.learn(&gate, &r) {
                Ok(true) => Verdict::Accept,
                Ok(false) => Verdict::Ignore,
                Err(e) => {
                    tracing::debug!(%source, error = %e, "revocation refused");
                    Verdict::Reject
                }
            },
        };
        let _ = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&id, &source, verdict.into());
    }

    /// A revocation the operator hands this node: kept and gossiped.
    pub(super) fn revoke(
        &mut self,
        revocation: Revocation,
        reply: oneshot::Sender<Result<bool, Error>>,
    ) {
        let Some(gate) = self.gate.clone() else {
            let _ = reply.send(Err(Error::Revoke(
                "this node is not in a closed mesh (mesh.authority is not set)".into(),
            )));
            return;
        };
        let learnt = self.learn(&gate, &revocation).map_err(Error::Revoke);
        if let (Ok(true), Ok(data)) = (&learnt, revocation.encode()) {
            // No peer yet is no failure: hellos carry it to later ones.
            if let Err(e) = self
                .swarm
                .behaviour_mut()
                .gossipsub
                .publish(members_topic(), data)
            {
                tracing::debug!(error = %e, "revocation not gossiped now");
            }
        }
        let _ = reply.send(learnt);
    }

    /// Whether a route update's origin may be heard: in a closed mesh, its
    /// certificate must be in force. The verdict for gossip when not.
    pub(super) fn origin_refused(
        &self,
        origin: PeerId,
        certificate: Option<&member::Certificate>,
    ) -> Option<Verdict> {
        let gate = self.gate.as_ref()?;
        match gate.judge(certificate, origin, now_ms()) {
            Ok(_) => None,
            Err(refusal) => {
                self.metrics.member(refusal.as_str());
                // The relay may not know of an expiry or revocation yet: not
                // its fault. A certificate that never was valid is.
                Some(match refusal {
                    Refusal::Expired | Refusal::Revoked => Verdict::Ignore,
                    _ => Verdict::Reject,
                })
            }
        }
    }
}
