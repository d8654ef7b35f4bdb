//! `/atmosphere/sync/1.0.0`: a peer's whole route table, asked for on every
//! new connection and on demand; and answers to peers that ask for ours
//! (`protocols/sync.md`).

use libp2p::identity::PeerId;
use libp2p::request_response;

use super::{EventLoop, SyncReply};
use crate::member::Standing;
use crate::network::codec::Decoded;
use crate::network::{Error, Event, InboundId};
use crate::wire::sync::{self, SyncRequest, SyncResponse};

/// Sync answers the node has not given yet; older requests time out at the peer.
const MAX_PENDING_SYNC: usize = 64;

impl EventLoop {
    /// Asks a peer for its table (once per connection unless asked again).
    pub(super) fn request_sync(
        &mut self,
        peer: PeerId,
    ) -> libp2p::request_response::OutboundRequestId {
        self.synced.insert(peer);
        self.swarm.behaviour_mut().sync.send_request(
            &peer,
            Decoded::Valid(SyncRequest {
                version: sync::VERSION,
            }),
        )
    }

    /// Asks a peer for its table on the node's behalf.
    pub(super) fn sync_with(&mut self, peer: PeerId, reply: SyncReply) {
        // The connection's own sync is not needed on top of this one.
        let id = self.request_sync(peer);
        self.outbound_sync.insert(id, reply);
    }

    pub(super) fn answer_sync(&mut self, id: InboundId, response: SyncResponse) {
        if let Some(channel) = self.pending_sync.remove(&id) {
            let _ = self
                .swarm
                .behaviour_mut()
                .sync
                .send_response(channel, response);
        }
    }

    pub(super) fn on_sync(
        &mut self,
        event: request_response::Event<Decoded<SyncRequest>, SyncResponse>,
    ) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        channel, request, ..
                    },
                ..
            } => {
                if let Decoded::Refused(e) = request {
                    // Nothing to answer with: a sync answer is the table.
                    tracing::debug!(%peer, error = %e, "invalid sync request");
                    self.metrics.sync("invalid_request");
                    return;
                }
                let standing = self.standing(&peer);
                if matches!(standing, Some(Standing::Refused(_))) {
                    self.metrics.sync("not_member");
                    return;
                }
                if self.pending_sync.len() >= MAX_PENDING_SYNC {
                    tracing::warn!(%peer, "too many sync requests waiting; one dropped");
                    self.metrics.sync("busy");
                    return;
                }
                let id = InboundId(self.next_inbound);
                self.next_inbound += 1;
                self.pending_sync.insert(id, channel);
                if matches!(standing, Some(Standing::Pending)) {
                    // Answered once its hello shows it a member.
                    self.parked_sync.push((peer, id));
                } else {
                    self.emit(Event::SyncRequested { id, peer });
                }
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
                self.metrics.sync("received");
                let mut updates = Vec::with_capacity(response.updates.len());
                for signed in response.updates {
                    match signed.verify(self.dim) {
                        Ok(v)
                            if self
                                .origin_refused(v.origin, v.update.certificate.as_ref())
                                .is_some() =>
                        {
                            self.metrics.sync("not_member");
                        }
                        Ok(v) => {
                            self.learn_addresses(&v);
                            updates.push((v, signed));
                        }
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "invalid update in a sync answer");
                            self.metrics.sync("invalid_update");
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
                self.metrics.sync("failed");
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
            request_response::Event::ResponseSent { .. } => self.metrics.sync("answered"),
        }
    }
}
