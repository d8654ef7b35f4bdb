//! The serving side of `/atmosphere/intent/1.0.0` and `/atmosphere/stream/1.0.0`:
//! a peer's request runs on this node's own capability through the same core
//! as the HTTP API's, and its answer goes back whole or frame by frame.
//! Inbound work is bounded: a number of requests at once per node and per
//! peer, the pace of [`crate::budget`] for a stream's request frame
//! ([`super::inbound`]) and a deadline for every write, so a peer that opens
//! streams and sends nothing cannot take the slots others need. Spec:
//! `protocols/intent.md`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ::http::StatusCode;
use bytes::Bytes;
use futures::{AsyncWriteExt, StreamExt};
use libp2p::PeerId;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::inbound::{Inbound, Protocol, Turn};
use super::quota::{PeerRate, admitted, over_quota};
use super::resolve::{runs, wrong_kind};
use super::{ApiError, Core, Request, Target};
use crate::answer::{Event, Reply};
use crate::backend::Op;
use crate::budget::{Budget, Holder, Limits, Refusal};
use crate::capability::CapabilityId;
use crate::lean::Spans;
use crate::network::{self, frames};
use crate::routing::Entry;
use crate::routing::Need;
use crate::wire::Message;
use crate::wire::intent::{self, IntentRequest, IntentResponse, StreamFrame};

/// Forwarded requests served at once; more wait in the mesh's bounded queue.
const INBOUND_CONCURRENCY: usize = 64;
/// Streamed requests one peer may have open at once; more are refused.
const STREAMS_PER_PEER: usize = 8;
/// Longest wait for one frame to be taken by the peer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves requests that peers send over the intent protocol under the
/// budget `intent_serving` ([`crate::budget`]): [`INBOUND_CONCURRENCY`] at
/// once, `per_peer` at most for each peer and three quarters of the whole
/// for strangers together (more are answered 429 `peer_over_quota` or
/// `overloaded` at once), within each peer's `rate` (429
/// `peer_over_rate`); when the node itself is full, requests wait in the
/// mesh's bounded queue. Ends on `cancel` once the requests being served
/// are answered.
pub async fn serve_intents(
    core: Core,
    client: network::Client,
    mut inbound: mpsc::Receiver<crate::mesh::Inbound>,
    per_peer: usize,
    rate: Arc<PeerRate>,
    cancel: CancellationToken,
) {
    let serving = Budget::new(
        "intent_serving",
        Limits::shared(INBOUND_CONCURRENCY, per_peer),
        core.metrics.clone(),
    );
    let running = TaskTracker::new();
    loop {
        let next = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            n = inbound.recv() => match n { Some(n) => n, None => break },
        };
        let holder = Holder::Peer(next.peer);
        let standing = super::inbound::standing(&core, &next.peer);
        let turn = if !rate.allow(next.peer, Instant::now()) {
            Err(rate.refusal())
        } else {
            match serving.take(holder, standing, 1) {
                Ok(turn) => Ok(turn),
                Err(Refusal::Holder) => Err(over_quota(per_peer, "requests")),
                Err(Refusal::Strangers) => Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    "The node is serving as many requests of peers it does not know as it may.",
                )
                .code("overloaded")),
                // Full: wait for a place (the mesh's queue backs up).
                Err(Refusal::Node) => {
                    let wait = tokio::time::Instant::now() + core.request_timeout;
                    tokio::select! {
                        biased;
                        _ = cancel.cancelled() => break,
                        t = serving.take_by(holder, standing, 1, wait) => {
                            t.map_err(|_| overloaded_node())
                        }
                    }
                }
            }
        };
        let turn = match turn {
            Ok(turn) => turn,
            Err(e) => {
                let reason = e.code.unwrap_or("peer_over_quota");
                core.metrics.forward(reason);
                core.metrics.peer_refusal(&next.peer, reason);
                let _ = client.answer_intent(next.id, refused(&e)).await;
                continue;
            }
        };
        let core = core.clone();
        let client = client.clone();
        running.spawn(async move {
            let response = serve_intent(&core, next.peer, next.request).await;
            let _ = client.answer_intent(next.id, response).await;
            drop(turn);
        });
    }
    running.close();
    running.wait().await;
}

fn overloaded_node() -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_error",
        "The node is serving as many requests as it can.",
    )
    .code("overloaded")
}

/// Serves streamed requests that peers open to this node
/// ([`super::inbound`]: 8 served per peer, 64 in all) until `cancel`, then
/// lets the answers being streamed end.
pub async fn serve_streams(
    core: Core,
    incoming: libp2p_stream::IncomingStreams,
    rate: Arc<PeerRate>,
    cancel: CancellationToken,
) {
    let inbound = Inbound::new(
        &core,
        Protocol::Stream,
        "streamed requests",
        intent::MAX_REQUEST_BYTES,
        rate,
        (STREAMS_PER_PEER, INBOUND_CONCURRENCY),
    );
    super::inbound::serve(core, incoming, inbound, cancel, serve_stream).await;
}

/// A stream's first frame decoded as `M`. `Err` holds what became of the
/// stream instead: a frame that is not an `M` answered 400 (counted
/// `refused`).
pub(super) async fn decode_first<M: Message>(
    core: &Core,
    peer: PeerId,
    io: &mut libp2p::Stream,
    first: &[u8],
) -> Result<M, std::io::Result<()>> {
    match M::decode(first) {
        Ok(message) => Ok(message),
        Err(e) => {
            tracing::debug!(%peer, error = %e, "invalid forwarded request");
            core.metrics.forward("refused");
            Err(send_whole(io, 400, unreadable(&e).to_bytes().to_vec()).await)
        }
    }
}

/// Closes this side of a stream whose answer was written (the peer reads
/// to the end); one whose writing failed is dropped.
pub(super) async fn finish(mut io: libp2p::Stream, written: std::io::Result<()>) {
    if written.is_ok() {
        let _ = tokio::time::timeout(WRITE_TIMEOUT, io.close()).await;
    }
}

/// A request a peer sent, whichever protocol brought it.
pub(super) struct Forwarded {
    pub capability: String,
    pub operation: intent::Operation,
    pub body: Bytes,
    pub deadline_ms: u32,
}

impl From<IntentRequest> for Forwarded {
    fn from(r: IntentRequest) -> Self {
        Self {
            capability: r.capability,
            operation: r.operation,
            body: Bytes::from(r.body),
            deadline_ms: r.deadline_ms,
        }
    }
}

/// The local capability a peer's request names, if the peer may run
/// `operation` on it.
pub(super) fn local_entry(
    core: &Core,
    peer: PeerId,
    roles: &[String],
    capability: &str,
    operation: intent::Operation,
) -> Result<(Arc<Entry>, Op), ApiError> {
    let op = Op::try_from(operation)?;
    let id: CapabilityId = capability
        .parse()
        .map_err(|_| ApiError::model_not_found(capability))?;
    let entry = core
        .catalog
        .table()
        .lookup(&id)
        .find(|e| e.local)
        .cloned()
        .ok_or_else(|| ApiError::model_not_found(capability))?;
    if !entry.capability.share.allows(&peer.to_base58(), roles) {
        core.metrics.peer_refusal(&peer, "capability_not_shared");
        return Err(not_shared(capability));
    }
    if !runs(&entry.capability.kind, op) {
        return Err(wrong_kind(capability, &entry.capability.kind, op));
    }
    Ok((entry, op))
}

/// Checks a forwarded request and finds the local capability it names.
async fn local_request(
    core: &Core,
    peer: PeerId,
    roles: &[String],
    request: Forwarded,
    stream: bool,
) -> Result<(Target, Request), ApiError> {
    let (entry, op) = local_entry(core, peer, roles, &request.capability, request.operation)?;
    let raw = request.body;
    // A chat's images and audio stay in the bytes that came ([`crate::lean`]).
    let parsed = if op == Op::Chat {
        crate::lean::parse(&raw)
    } else {
        serde_json::from_slice(&raw).map(|v| (v, Spans::default()))
    };
    let (body, spans) = parsed.map_err(|e| {
        ApiError::invalid("body", format!("The forwarded body is not JSON: {e}"))
            .code("invalid_json")
    })?;
    let Value::Object(mut body) = body else {
        return Err(ApiError::invalid(
            "body",
            "The request body must be a JSON object.",
        ));
    };
    if op == Op::Chat {
        // What the peer checked is checked again: images and audio are
        // what this node's backends would be sent (and links they fetch).
        super::media::check(&body, &spans, core.media).await?;
        let carries = super::texts::chat_inputs(&body);
        if !Need::Text(carries).takes_inputs(&entry.capability) {
            return Err(super::resolve::not_taken(
                entry.capability.id.as_str(),
                entry.capability.inputs,
                carries,
            ));
        }
    }
    if stream && matches!(op, Op::Embeddings | Op::Transcribe) {
        return Err(ApiError::invalid(
            "stream",
            format!("{} are not streamed.", op.as_str()),
        ));
    }
    if op == Op::Transcribe {
        super::media::check_transcription(&body, "file", core.media)?;
    } else {
        // The protocol decides how the answer travels.
        body.insert("stream".into(), Value::Bool(stream));
    }
    // A session key in the body keeps the conversation on one backend.
    let session = super::session_of(&body, None);
    let request = Request {
        op,
        body,
        raw,
        spans,
        stream,
        session,
        caller: Some(super::Caller {
            peer: peer.to_base58(),
            roles: roles.to_vec(),
        }),
    };
    Ok((core.local_target(&entry), request))
}

/// The refusal of a capability this node does not share with the peer.
fn not_shared(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "invalid_request_error",
        format!("The node does not share `{id}` with this peer."),
    )
    .param("model")
    .code("capability_not_shared")
}

/// How long a peer's request may run here: what the peer will still wait
/// (`deadline_ms`), at most this node's own request timeout.
pub(super) fn deadline_of(core: &Core, deadline_ms: u32) -> Duration {
    Duration::from_millis(u64::from(deadline_ms)).min(core.request_timeout)
}

fn out_of_time() -> ApiError {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "api_error",
        "The request ran out of time.",
    )
    .code("deadline_exceeded")
}

/// Runs a forwarded request within its deadline.
pub(super) async fn run(
    core: &Core,
    peer: PeerId,
    request: Forwarded,
    stream: bool,
) -> Result<Reply, ApiError> {
    let deadline = deadline_of(core, request.deadline_ms);
    let roles = admitted(core, peer).await?;
    let (target, local) = local_request(core, peer, &roles, request, stream).await?;
    let answer = tokio::time::timeout(deadline, core.run(target, local))
        .await
        .map_err(|_| out_of_time())??;
    Ok(answer.reply)
}

/// The refusal of a request that could not be read.
pub(super) fn unreadable(e: &crate::wire::Error) -> ApiError {
    ApiError::invalid("body", format!("Invalid forwarded request: {e}."))
        .code("invalid_forwarded_request")
}

/// Serves a request a peer sent over `/atmosphere/intent/1.0.0`.
pub async fn serve_intent(
    core: &Core,
    peer: PeerId,
    request: Result<IntentRequest, crate::wire::Error>,
) -> IntentResponse {
    core.metrics.forward("served");
    let ran = match request {
        Ok(request) => run(core, peer, request.into(), false).await,
        Err(e) => {
            core.metrics.forward("refused");
            Err(unreadable(&e))
        }
    };
    match ran {
        Ok(Reply::Whole { status, body }) => IntentResponse {
            version: intent::VERSION,
            status,
            body: body.to_vec(),
        },
        Ok(Reply::Stream(_)) => refused(&ApiError::internal(
            "serve forwarded",
            "a stream for a whole request",
        )),
        Err(e) => refused(&e),
    }
}

/// An error as the intent protocol's answer.
fn refused(e: &ApiError) -> IntentResponse {
    IntentResponse {
        version: intent::VERSION,
        status: e.status.as_u16(),
        body: e.to_bytes().to_vec(),
    }
}

/// Writes one frame within [`WRITE_TIMEOUT`].
pub(super) async fn send(io: &mut libp2p::Stream, frame: &StreamFrame) -> std::io::Result<()> {
    let bytes = frame
        .encode()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    tokio::time::timeout(WRITE_TIMEOUT, frames::write(io, &bytes))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out"))?
}

/// An answer that is not a stream: its head, its body in events (one, unless
/// it is over an event's size), `End`.
pub(super) async fn send_whole(
    io: &mut libp2p::Stream,
    status: u16,
    body: Vec<u8>,
) -> std::io::Result<()> {
    send(io, &StreamFrame::Head { status }).await?;
    if body.len() <= crate::answer::MAX_EVENT_BYTES {
        send(io, &StreamFrame::Event(body)).await?;
    } else {
        for part in body.chunks(crate::answer::MAX_EVENT_BYTES) {
            send(io, &StreamFrame::Event(part.to_vec())).await?;
        }
    }
    send(io, &StreamFrame::End).await
}

/// Serves a request a peer sent over `/atmosphere/stream/1.0.0`: runs it with
/// `stream: true` and writes each event as a frame the moment it exists; then
/// closes its side of the stream (the peer reads to the end, nothing is reset).
async fn serve_stream(
    core: Core,
    peer: PeerId,
    mut io: libp2p::Stream,
    first: Vec<u8>,
    turn: Result<Turn, ApiError>,
) {
    let written = match turn {
        Err(e) => refuse(&mut io, &e).await,
        Ok(_turn) => {
            core.metrics.forward("served_stream");
            match decode_first::<IntentRequest>(&core, peer, &mut io, &first).await {
                Ok(request) => answer_stream(&core, peer, &mut io, request.into(), true).await,
                Err(done) => done,
            }
        }
    };
    finish(io, written).await;
}

/// Writes a refusal as a whole answer, so the peer learns why.
pub(super) async fn refuse(io: &mut libp2p::Stream, refusal: &ApiError) -> std::io::Result<()> {
    send_whole(io, refusal.status.as_u16(), refusal.to_bytes().to_vec()).await
}

/// Runs a peer's request and writes its answer: with `stream`, each event as
/// a frame the moment it exists; else whole.
pub(super) async fn answer_stream(
    core: &Core,
    peer: PeerId,
    io: &mut libp2p::Stream,
    request: Forwarded,
    stream: bool,
) -> std::io::Result<()> {
    let mut events = match run(core, peer, request, stream).await {
        Ok(Reply::Stream(events)) => events,
        Ok(Reply::Whole { status, body }) => return send_whole(io, status, body.to_vec()).await,
        Err(e) => return send_whole(io, e.status.as_u16(), e.to_bytes().to_vec()).await,
    };
    send(io, &StreamFrame::Head { status: 200 }).await?;
    while let Some(event) = events.next().await {
        let last = event.is_last();
        let frame = match event {
            Event::Data(data) => StreamFrame::Event(data.to_vec()),
            Event::Done => StreamFrame::End,
            Event::Failed { code, message } => StreamFrame::Failed { code, message },
        };
        send(io, &frame).await?;
        if last {
            return Ok(());
        }
    }
    // Streams from the core always end with `Done` or `Failed`; should one
    // not, the peer still learns that the answer broke off.
    send(
        io,
        &StreamFrame::Failed {
            code: "backend_stream_error".into(),
            message: "The answer ended before it finished.".into(),
        },
    )
    .await
}
