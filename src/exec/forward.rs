//! Trying a request's providers in order, and the sending side of
//! `/atmosphere/intent/1.0.0` (a whole answer), `/atmosphere/stream/1.0.0`
//! (events as they are produced) and `/atmosphere/upload/1.0.0` (a body over
//! 1 MiB, sent in parts), with failover: while none of the answer
//! has arrived, an unreachable node, a 503 or a 429 (this node's quota there
//! is used up) moves the request on to the next provider. Spec:
//! `protocols/intent.md`.

use std::time::{Duration, Instant};

use ::http::StatusCode;
use bytes::Bytes;
use futures::StreamExt;
use libp2p::PeerId;

use super::{Answer, ApiError, Core, Next, Request};
use crate::answer::{Event, Reply};
use crate::balance::Provider;
use crate::network::{self, frames};
use crate::wire::Message;
use crate::wire::intent::{self, IntentRequest, StreamFrame, UploadRequest};

/// Why an attempt on one node gave nothing to relay (the next node is tried).
#[derive(Debug, thiserror::Error)]
enum Miss {
    /// No connection, no stream, or the request could not be sent or answered.
    #[error(transparent)]
    Unreachable(#[from] network::Error),
    /// The stream broke before the answer's head.
    #[error("stream: {0}")]
    Stream(#[from] std::io::Error),
    /// The stream was closed or reset before any of the answer came: the
    /// receiver may have dropped it on arrival (its libp2p layer drops an
    /// inbound stream that finds the acceptor busy), so it is worth another try.
    #[error("stream dropped before the answer: {0}")]
    Dropped(std::io::Error),
    /// It answered 503 (its queue is full or its backend is down) or 429
    /// (this node already has its quota of requests running there).
    #[error("node {0} is overloaded, over this node's quota, or its backend is down")]
    Overloaded(PeerId),
    /// The request does not fit the protocol's limits.
    #[error("request cannot be sent: {0}")]
    Unsendable(crate::wire::Error),
    /// It answered something that is not the protocol.
    #[error("bad answer: {0}")]
    BadAnswer(String),
}

impl Miss {
    /// Label for `atmosphere_forwards_total{result}`.
    fn label(&self) -> &'static str {
        match self {
            Miss::Unreachable(_) | Miss::Stream(_) | Miss::Dropped(_) => "unreachable",
            Miss::Overloaded(_) => "overloaded",
            Miss::Unsendable(_) => "unsendable",
            Miss::BadAnswer(_) => "bad_answer",
        }
    }
}

/// Runs the request on the providers in order: the first, then the next
/// while a node cannot be reached or answers 503 or 429, or a local backend
/// cannot be reached or is busy, before any of the answer arrived. Each
/// attempt holds a lease from the balancer, so that what happens is counted
/// against that provider.
pub(super) async fn run_in_order(
    core: &Core,
    order: Vec<Provider>,
    mut request: Request,
) -> Result<Answer, ApiError> {
    let started = Instant::now();
    let client = core.mesh.as_ref().map(|m| m.client.clone());
    // Whether a backend of this node comes at or after each position.
    let mut local_after: Vec<bool> = order.iter().map(|p| p.entry.local).collect();
    for i in (0..local_after.len().saturating_sub(1)).rev() {
        local_after[i] |= local_after[i + 1];
    }
    let mut last_error = None;
    for (i, provider) in order.into_iter().enumerate() {
        if i > 0 {
            core.metrics.forward("failover");
        }
        let next = match local_after.get(i + 1) {
            None => Next::Nothing,
            Some(true) => Next::Local,
            Some(false) => Next::Remote,
        };
        let lease = core.balancer.lease(&provider);
        if provider.entry.local {
            match core.run_local(&provider, lease, request, next).await {
                Ok(answer) => return Ok(answer),
                Err((e, Some(again))) => {
                    tracing::warn!(backend = ?provider.backend, error = %e.message, "backend could not serve; trying the next provider");
                    last_error = Some(e.message.clone());
                    request = again;
                    continue;
                }
                Err((e, None)) => return Err(e),
            }
        }
        let entry = &provider.entry;
        let (Some(client), Ok(peer)) = (&client, entry.node.parse::<PeerId>()) else {
            continue;
        };
        let remaining = core.request_timeout.saturating_sub(started.elapsed());
        let deadline_ms = remaining.as_millis().min(u128::from(u32::MAX)) as u32;
        let capability = entry.capability.id.to_string();
        let attempt = tokio::time::timeout(remaining, async {
            if request.raw.len() > intent::UPLOAD_ABOVE {
                let head = UploadRequest {
                    version: intent::VERSION,
                    capability,
                    operation: request.op.into(),
                    stream: request.stream,
                    body_len: request.raw.len() as u64,
                    deadline_ms,
                    hops: intent::MAX_HOPS - 1,
                };
                retried(core, peer, || {
                    upload(core, client, peer, head.clone(), request.raw.clone())
                })
                .await
            } else {
                let intent = IntentRequest {
                    version: intent::VERSION,
                    capability,
                    operation: request.op.into(),
                    body: request.raw.to_vec(),
                    deadline_ms,
                    hops: intent::MAX_HOPS - 1,
                };
                if request.stream {
                    retried(core, peer, || {
                        open_stream(core, client, peer, intent.clone())
                    })
                    .await
                } else {
                    whole(client, peer, intent).await
                }
            }
        })
        .await;
        match attempt {
            Ok(Ok(reply)) => {
                core.metrics.forward("ok");
                let reply = match reply {
                    Reply::Whole { status, body } => {
                        if status >= 500 {
                            lease.failed();
                        } else {
                            lease.answered();
                        }
                        Reply::Whole { status, body }
                    }
                    Reply::Stream(events) => {
                        lease.answered();
                        Reply::Stream(Box::pin(events.inspect(move |event| {
                            if matches!(event, Event::Failed { .. }) {
                                lease.broke();
                            }
                        })))
                    }
                };
                return Ok(Answer {
                    capability: entry.capability.id.clone(),
                    node: entry.node.clone(),
                    score: provider.score,
                    reply,
                });
            }
            Ok(Err(miss)) => {
                lease.failed();
                tracing::warn!(%peer, reason = %miss, "forwarding failed before the answer began");
                core.metrics.forward(miss.label());
                last_error = Some(miss.to_string());
            }
            Err(_) => {
                lease.failed();
                core.metrics.forward("timeout");
                return Err(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "api_error",
                    format!("Node {peer} did not answer in time."),
                )
                .code("forward_timeout"));
            }
        }
    }
    core.metrics.forward("failed");
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "api_error",
        format!(
            "No provider of this capability could serve it: {}.",
            last_error.unwrap_or_else(|| "no reachable node".into())
        ),
    )
    .code("capability_unreachable"))
}

/// Further streams opened to the same node when one is dropped before any of
/// the answer came, before the next node is tried.
const STREAM_RETRIES: u64 = 2;

/// Runs `attempt` again (after 5 and 10 ms) while its stream is dropped
/// before any of the answer came.
async fn retried<F, Fut>(core: &Core, peer: PeerId, attempt: F) -> Result<Reply, Miss>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Reply, Miss>>,
{
    let mut tries = 0;
    loop {
        match attempt().await {
            Err(Miss::Dropped(e)) if tries < STREAM_RETRIES => {
                tries += 1;
                tracing::debug!(%peer, error = %e, "stream dropped on arrival; opening another");
                core.metrics.forward("stream_retried");
                tokio::time::sleep(Duration::from_millis(5 * tries)).await;
            }
            other => return other,
        }
    }
}

/// Whether an answer says "not now" (try another node) rather than answering.
pub(super) fn busy(status: u16) -> bool {
    status == 503 || status == 429
}

/// A whole answer; `Err` (try the next node) when nothing usable came back.
async fn whole(
    client: &network::Client,
    peer: PeerId,
    request: IntentRequest,
) -> Result<Reply, Miss> {
    let answer = client.forward(peer, request).await?;
    if busy(answer.status) {
        return Err(Miss::Overloaded(peer));
    }
    Ok(Reply::Whole {
        status: answer.status,
        body: Bytes::from(answer.body),
    })
}

async fn read_frame(io: &mut libp2p::Stream) -> Result<Option<StreamFrame>, Miss> {
    match frames::read(io, intent::MAX_FRAME_BYTES).await? {
        Some(bytes) => StreamFrame::decode(&bytes)
            .map(Some)
            .map_err(|e| Miss::BadAnswer(e.to_string())),
        None => Ok(None),
    }
}

/// Opens a stream and waits for the answer's head; the events then follow as
/// they arrive. `Err` (try the next node) before the head only.
async fn open_stream(
    core: &Core,
    client: &network::Client,
    peer: PeerId,
    request: IntentRequest,
) -> Result<Reply, Miss> {
    let io = open_with(client, peer, crate::wire::STREAM_PROTOCOL, &request).await?;
    answer(core, io, peer, true).await
}

/// Opens a stream of `protocol` to `peer` and writes `first` on it.
async fn open_with<M: Message>(
    client: &network::Client,
    peer: PeerId,
    protocol: &'static str,
    first: &M,
) -> Result<libp2p::Stream, Miss> {
    let mut io = client.open_stream(peer, protocol).await?;
    let bytes = first.encode().map_err(Miss::Unsendable)?;
    frames::write(&mut io, &bytes)
        .await
        .map_err(Miss::Dropped)?;
    Ok(io)
}

/// Sends a request over `/atmosphere/upload/1.0.0`: its head, then (once
/// the receiver asks for it) its body in parts, each a slice of `raw`.
async fn upload(
    core: &Core,
    client: &network::Client,
    peer: PeerId,
    head: UploadRequest,
    raw: Bytes,
) -> Result<Reply, Miss> {
    let mut io = open_with(client, peer, crate::wire::UPLOAD_PROTOCOL, &head).await?;
    let status = read_head(&mut io).await?;
    if status != intent::CONTINUE {
        // Refused before the body: the refusal is the answer.
        return answered(core, io, peer, false, status).await;
    }
    for part in raw.chunks(intent::PART_BYTES) {
        frames::write(&mut io, part).await?;
    }
    answer(core, io, peer, head.stream).await
}

/// How an upload asking for a whole answer failed, and why.
pub(super) enum UploadMiss {
    /// No stream to the node: the request did not run.
    Unreachable(String),
    /// Refused 503 or 429 on its head, before the body: it did not run.
    Busy,
    /// It broke off once the body was under way: it may have run.
    Broke(String),
}

/// Sends `raw` as an upload and reads the whole answer: its status and body.
pub(super) async fn upload_whole(
    core: &Core,
    client: &network::Client,
    peer: PeerId,
    head: UploadRequest,
    raw: Bytes,
) -> Result<(u16, Bytes), UploadMiss> {
    match upload(core, client, peer, head, raw).await {
        Ok(Reply::Whole { status, body }) => Ok((status, body)),
        Ok(Reply::Stream(_)) => Err(UploadMiss::Broke(
            "a stream answered a request for a whole answer".into(),
        )),
        Err(Miss::Overloaded(_)) => Err(UploadMiss::Busy),
        Err(miss @ Miss::Unreachable(_)) => Err(UploadMiss::Unreachable(miss.to_string())),
        Err(miss) => Err(UploadMiss::Broke(miss.to_string())),
    }
}

/// Reads an answer from its head: a whole one, or (`stream`, status 200)
/// the events as they arrive. `Err` (try the next node) before the head only.
async fn answer(
    core: &Core,
    mut io: libp2p::Stream,
    peer: PeerId,
    stream: bool,
) -> Result<Reply, Miss> {
    let status = read_head(&mut io).await?;
    answered(core, io, peer, stream, status).await
}

/// The status of an answer's head; `Err` (try the next node) when none came.
async fn read_head(io: &mut libp2p::Stream) -> Result<u16, Miss> {
    match read_frame(io).await {
        Ok(Some(StreamFrame::Head { status })) => Ok(status),
        Ok(None) => Err(Miss::Dropped(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed before the answer's head",
        ))),
        Err(Miss::Stream(e)) => Err(Miss::Dropped(e)),
        Err(other) => Err(other),
        Ok(Some(other)) => Err(Miss::BadAnswer(format!(
            "expected the answer's head, got {other:?}"
        ))),
    }
}

/// The rest of an answer whose head said `status`.
async fn answered(
    core: &Core,
    mut io: libp2p::Stream,
    peer: PeerId,
    stream: bool,
    status: u16,
) -> Result<Reply, Miss> {
    if busy(status) {
        return Err(Miss::Overloaded(peer));
    }
    if status != 200 || !stream {
        // A whole answer: its JSON body follows in events, then `End`.
        let mut body = Vec::new();
        while let Some(StreamFrame::Event(b)) = read_frame(&mut io).await? {
            if body.len() + b.len() > intent::MAX_RESPONSE_BYTES {
                return Err(Miss::BadAnswer("an answer over the size limit".into()));
            }
            body.extend_from_slice(&b);
        }
        return Ok(Reply::Whole {
            status,
            body: Bytes::from(body),
        });
    }
    let idle = core.request_timeout;
    let metrics = core.metrics.clone();
    let events = futures::stream::unfold(Some(io), move |io| {
        let metrics = metrics.clone();
        async move {
            let mut io = io?;
            let event = match tokio::time::timeout(idle, read_frame(&mut io)).await {
                Ok(Ok(Some(StreamFrame::Event(data)))) => Event::Data(Bytes::from(data)),
                Ok(Ok(Some(StreamFrame::End))) => Event::Done,
                Ok(Ok(Some(StreamFrame::Failed { code, message }))) => {
                    Event::Failed { code, message }
                }
                Ok(Ok(Some(StreamFrame::Head { .. }) | None) | Err(_)) | Err(_) => {
                    metrics.forward("stream_broken");
                    Event::failed(
                        "mesh_stream_error",
                        "The node serving this request stopped answering mid-stream.",
                    )
                }
            };
            let more = !event.is_last();
            Some((event, more.then_some(io)))
        }
    });
    Ok(Reply::Stream(Box::pin(events)))
}
