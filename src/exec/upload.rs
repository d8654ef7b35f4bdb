//! The serving side of `/atmosphere/upload/1.0.0`: a peer's request whose
//! body (over 1 MiB: a chat with images, a transcription, a tool call's
//! arguments) follows in parts.
//! The head is checked first (membership, capability, share, kind, size, the
//! node's budget of bodies held), so a refused upload costs the peer one
//! round trip, not its body; then the parts are read into one buffer of the
//! announced size and the request runs like any other. Spec:
//! `protocols/intent.md`.

use std::sync::Arc;
use std::time::Duration;

use ::http::StatusCode;
use bytes::BytesMut;
use libp2p::PeerId;
use tokio::time::Instant;

use super::inbound::{Inbound, Protocol, Turn, standing};
use super::quota::{PeerRate, admitted};
use super::serve::{
    Forwarded, answer_stream, decode_first, finish, local_entry, refuse, send, send_whole,
};
use super::{ApiError, Core};
use crate::budget::{Budget, Hold, Holder, Limits, Pace, Paced, Refusal};
use crate::network::frames;
use crate::wire::Message;
use crate::wire::intent::{self, Operation, StreamFrame, UploadRequest};

/// Uploads served per peer and in all (as streamed requests).
const PER_PEER: usize = 8;
const AT_ONCE: usize = 64;

/// What peers' uploads may hold: at most `max_body` bytes each, within the
/// node's budget of upload bytes (`http.max_body_bytes_held` in all, half
/// of it for one peer, three quarters for strangers together) taken part by
/// part as the body arrives, at the steady pace and within `body_timeout`
/// (`http.max_body_bytes`, `http.max_body_bytes_held`, `http.body_timeout`,
/// as for the node's own clients).
#[derive(Clone)]
pub struct Uploads {
    max_body: usize,
    budget: Arc<Budget>,
    body_timeout: Duration,
}

impl Uploads {
    pub fn new(http: &crate::config::HttpConfig, metrics: Arc<crate::metrics::Metrics>) -> Self {
        let total = http.max_body_bytes_held;
        Self {
            max_body: http.max_body_bytes,
            budget: Budget::new(
                "upload_bytes",
                Limits::shared(total, (total / 2).max(http.max_body_bytes)),
                metrics,
            ),
            body_timeout: http.body_timeout,
        }
    }

    /// Whether a body of `len` bytes is taken and could find room now:
    /// nothing is reserved (room is taken as the parts arrive), but an
    /// upload that could not fit is refused before its body travels.
    fn check(
        &self,
        peer: PeerId,
        len: u64,
        standing: crate::budget::Standing,
    ) -> Result<Hold, ApiError> {
        if len > self.max_body as u64 {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                format!(
                    "The request body is too large: {len} bytes, over this node's {}.",
                    self.max_body
                ),
            )
            .code("request_too_large"));
        }
        let holder = Holder::Peer(peer);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        self.budget.fits(holder, standing, len).map_err(no_room)?;
        self.budget.take(holder, standing, 0).map_err(no_room)
    }
}

fn no_room(refusal: Refusal) -> ApiError {
    let message = match refusal {
        Refusal::Holder => {
            "This peer's uploads hold as many bytes as one peer may; try again shortly."
        }
        Refusal::Strangers | Refusal::Node => {
            "The node holds as many request bodies as it may; try again shortly."
        }
    };
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message).code("overloaded")
}

/// Serves the uploads peers open to this node ([`super::inbound`]) until
/// `cancel`.
pub async fn serve_uploads(
    core: Core,
    incoming: libp2p_stream::IncomingStreams,
    rate: Arc<PeerRate>,
    uploads: Uploads,
    cancel: tokio_util::sync::CancellationToken,
) {
    let inbound = Inbound::new(
        &core,
        Protocol::Upload,
        "uploads",
        UploadRequest::MAX_BYTES,
        rate,
        (PER_PEER, AT_ONCE),
    );
    super::inbound::serve(
        core,
        incoming,
        inbound,
        cancel,
        move |core, peer, io, first, turn| {
            let uploads = uploads.clone();
            async move { serve_upload(&core, peer, io, first, turn, &uploads).await }
        },
    )
    .await;
}

/// Serves one upload: head, go-ahead, parts, then the answer as on the
/// stream protocol (a whole answer in events, or the events of a stream).
async fn serve_upload(
    core: &Core,
    peer: PeerId,
    mut io: libp2p::Stream,
    first: Vec<u8>,
    turn: Result<Turn, ApiError>,
    uploads: &Uploads,
) {
    let written = match turn {
        Err(e) => refuse(&mut io, &e).await,
        Ok(_turn) => {
            core.metrics.forward("served_upload");
            match decode_first::<UploadRequest>(core, peer, &mut io, &first).await {
                Ok(head) => answer_upload(core, peer, &mut io, head, uploads).await,
                Err(done) => done,
            }
        }
    };
    finish(io, written).await;
}

async fn answer_upload(
    core: &Core,
    peer: PeerId,
    io: &mut libp2p::Stream,
    head: UploadRequest,
    uploads: &Uploads,
) -> std::io::Result<()> {
    let checked = async {
        let roles = admitted(core, peer).await?;
        // A tool call runs the tool found here; other requests are looked
        // up again, with their body, as a request over /stream is.
        let tool = if head.operation == Operation::Tool {
            Some(super::serve_tool::tool_entry(
                core,
                peer,
                &roles,
                &head.capability,
            )?)
        } else {
            local_entry(core, peer, &roles, &head.capability, head.operation)?;
            None
        };
        let held = uploads.check(peer, head.body_len, standing(core, &peer))?;
        Ok::<_, ApiError>((tool, held))
    };
    let (tool, mut held) = match checked.await {
        Ok(ok) => ok,
        Err(e) => return send_whole(io, e.status.as_u16(), e.to_bytes().to_vec()).await,
    };
    send(
        io,
        &StreamFrame::Head {
            status: intent::CONTINUE,
        },
    )
    .await?;
    let len = head.body_len as usize;
    let deadline = Instant::now() + uploads.body_timeout;
    // Room is taken part by part as the body arrives, and the peer keeps
    // the steady pace or is cut off with what it holds.
    let read = async {
        let mut paced = Paced::new(&mut *io, Pace::STEADY);
        let mut body = BytesMut::with_capacity(len.min(intent::MAX_PART_BYTES));
        while body.len() < len {
            let limit = intent::MAX_PART_BYTES.min(len - body.len());
            let part = match frames::read(&mut paced, limit).await {
                Ok(Some(part)) if !part.is_empty() => part,
                Ok(_) => return Err(Ok(broken("the body ended short"))),
                Err(e) => return Err(Ok(e)),
            };
            let wait = deadline.min(Instant::now() + Pace::STEADY.window);
            if let Err(refusal) = held.grow_by(part.len(), wait).await {
                return Err(Err(no_room(refusal)));
            }
            if body.capacity() < len {
                body.reserve(len - body.len());
            }
            body.extend_from_slice(&part);
        }
        Ok(body.freeze())
    };
    let body = match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(body)) => body,
        Ok(Err(Ok(e))) => {
            core.metrics.forward("upload_broken");
            tracing::debug!(%peer, error = %e, "an upload broke off");
            return Err(e);
        }
        Ok(Err(Err(refused))) => {
            core.metrics.forward("upload_broken");
            return refuse(io, &refused).await;
        }
        Err(_) => {
            core.metrics.forward("upload_broken");
            return Err(broken("the body did not arrive in time"));
        }
    };
    if let Some(tool) = tool {
        core.metrics.forward("tool_served");
        let answer = super::serve_tool::run(core, tool, &body, head.deadline_ms).await;
        return send_whole(io, answer.status, answer.body).await;
    }
    let request = Forwarded {
        capability: head.capability,
        operation: head.operation,
        body,
        deadline_ms: head.deadline_ms,
    };
    answer_stream(core, peer, io, request, head.stream).await
}

fn broken(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_owned())
}
