//! `/atmosphere/intent/1.0.0`: requests this node forwards, and peers'
//! requests handed to the node with an id to answer by (`protocols/intent.md`).

use libp2p::identity::PeerId;
use libp2p::request_response;
use tokio::sync::oneshot;

use super::EventLoop;
use crate::network::codec::Decoded;
use crate::network::{Error, Event, InboundId};
use crate::wire::intent::{IntentRequest, IntentResponse};

impl EventLoop {
    pub(super) fn forward(
        &mut self,
        peer: PeerId,
        request: IntentRequest,
        reply: oneshot::Sender<Result<IntentResponse, Error>>,
    ) {
        let id = self
            .swarm
            .behaviour_mut()
            .intent
            .send_request(&peer, Decoded::Valid(request));
        self.outbound_intents.insert(id, (peer, reply));
    }

    pub(super) fn answer_intent(&mut self, id: InboundId, response: IntentResponse) {
        if let Some(channel) = self.inbound_intents.remove(&id) {
            let _ = self
                .swarm
                .behaviour_mut()
                .intent
                .send_response(channel, response);
        }
    }

    pub(super) fn on_intent(
        &mut self,
        event: request_response::Event<Decoded<IntentRequest>, IntentResponse>,
    ) {
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
                let request = match request {
                    Decoded::Valid(r) => Ok(r),
                    Decoded::Refused(e) => Err(e),
                };
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
}
