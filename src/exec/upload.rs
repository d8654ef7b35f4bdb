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
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::quota::admitted;
use super::serve::{
    Forwarded, answer_stream, finish, first_message, local_entry, send, send_whole,
};
use super::{ApiError, Core};
use crate::network::frames;
use crate::wire::intent::{self, Operation, StreamFrame, UploadRequest};

/// Longest wait for each part of the body.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What peers' uploads may hold: at most `max_body` bytes each, and
/// `budget` bytes in all at once, the whole body within `body_timeout`
/// (`http.max_body_bytes`, `http.max_body_bytes_held`, `http.body_timeout`,
/// as for the node's own clients).
#[derive(Clone)]
pub struct Uploads {
    max_body: usize,
    budget: Arc<Semaphore>,
    body_timeout: Duration,
}

impl Uploads {
    pub fn new(http: &crate::config::HttpConfig) -> Self {
        Self {
            max_body: http.max_body_bytes,
            budget: Arc::new(Semaphore::new(
                http.max_body_bytes_held.min(Semaphore::MAX_PERMITS),
            )),
            body_timeout: http.body_timeout,
        }
    }

    /// Room for a body of `len` bytes, now or never: an upload does not wait
    /// for others' (the peer tries another node).
    fn room(&self, len: u64) -> Result<OwnedSemaphorePermit, ApiError> {
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
        // Under `max_body`, which the config keeps under 4 GiB.
        let n = u32::try_from(len).unwrap_or(u32::MAX);
        self.budget.clone().try_acquire_many_owned(n).map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "The node holds as many request bodies as it may; try again shortly.",
            )
            .code("overloaded")
        })
    }
}

/// Serves one upload: head, go-ahead, parts, then the answer as on the
/// stream protocol (a whole answer in events, or the events of a stream).
pub async fn serve_upload(core: &Core, peer: PeerId, mut io: libp2p::Stream, uploads: &Uploads) {
    core.metrics.forward("served_upload");
    let written = match first_message::<UploadRequest>(core, peer, &mut io).await {
        Ok(head) => answer_upload(core, peer, &mut io, head, uploads).await,
        Err(done) => done,
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
        Ok::<_, ApiError>((tool, uploads.room(head.body_len)?))
    };
    let (tool, _held) = match checked.await {
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
    let read = async {
        let mut body = BytesMut::with_capacity(len);
        while body.len() < len {
            let limit = intent::MAX_PART_BYTES.min(len - body.len());
            match tokio::time::timeout(READ_TIMEOUT, frames::read(&mut *io, limit)).await {
                Ok(Ok(Some(part))) if !part.is_empty() => body.extend_from_slice(&part),
                Ok(Ok(_)) => return Err(broken("the body ended short")),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(broken("a part of the body did not arrive in time")),
            }
        }
        Ok(body.freeze())
    };
    // A peer that trickles its body does not hold the budget for long.
    let body = match tokio::time::timeout(uploads.body_timeout, read).await {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => {
            core.metrics.forward("upload_broken");
            return Err(e);
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
