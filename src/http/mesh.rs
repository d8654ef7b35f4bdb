//! Requests for capabilities of other nodes: sent whole over
//! `/atmosphere/intent/1.0.0`, or streamed over `/atmosphere/stream/1.0.0`
//! (tokens cross the mesh one by one); and the serving side of both.
//! Spec: `protocols/intent.md`.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use libp2p::PeerId;
use serde_json::{Map, Value};

use super::proxy::{
    MAX_BACKEND_BODY, Target, dispatch, json_response, route_headers, sse_response,
};
use super::{ApiError, AppState, sse};
use crate::backend::Op;
use crate::capability::CapabilityId;
use crate::network::{self, frames};
use crate::wire::Message;
use crate::wire::intent::{self, IntentRequest, IntentResponse, Operation, StreamFrame};

fn operation(op: Op) -> Operation {
    match op {
        Op::Chat => Operation::Chat,
        Op::Completions => Operation::Completions,
        Op::Embeddings => Operation::Embeddings,
    }
}

/// Sends the request to the node that offers the capability. If that node
/// cannot be reached, or answers 503, before any of the answer arrived, the
/// next candidate is tried.
pub(super) async fn forward(
    state: &AppState,
    target: Target,
    op: Op,
    body: Map<String, Value>,
    stream: bool,
) -> Result<Response, ApiError> {
    let Some(client) = state.network.clone() else {
        return Err(ApiError::internal(
            "forward",
            "remote entry without a network",
        ));
    };
    let started = Instant::now();
    let deadline = state.http.request_timeout;
    let mut candidates = vec![(target.entry, target.score)];
    candidates.extend(target.fallbacks);
    let mut last_error = None;
    for (i, (entry, score)) in candidates.into_iter().enumerate() {
        if i > 0 {
            state.metrics.forward("failover");
        }
        if entry.local {
            let t = Target {
                entry,
                score,
                fallbacks: Vec::new(),
            };
            return Box::pin(dispatch(state, t, op, body, stream)).await;
        }
        let Ok(peer) = entry.node.parse::<PeerId>() else {
            continue;
        };
        let mut body = body.clone();
        body.insert(
            "model".into(),
            Value::String(entry.capability.id.to_string()),
        );
        let remaining = deadline.saturating_sub(started.elapsed());
        let request = IntentRequest {
            version: intent::VERSION,
            capability: entry.capability.id.to_string(),
            operation: operation(op),
            body: serde_json::to_vec(&body).map_err(|e| ApiError::internal("forward", e))?,
            deadline_ms: remaining.as_millis().min(u128::from(u32::MAX)) as u32,
            hops: intent::MAX_HOPS - 1,
        };
        let attempt = if stream {
            tokio::time::timeout(remaining, open_stream(state, &client, peer, request)).await
        } else {
            tokio::time::timeout(remaining, whole(&client, peer, request)).await
        };
        match attempt {
            Ok(Ok(mut r)) => {
                state.metrics.forward("ok");
                route_headers(&mut r, &entry, score);
                return Ok(r);
            }
            Ok(Err(reason)) => {
                tracing::warn!(%peer, %reason, "forwarding failed before the answer began");
                last_error = Some(reason);
            }
            Err(_) => {
                state.metrics.forward("timeout");
                return Err(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "api_error",
                    format!("Node {peer} did not answer in time."),
                )
                .code("forward_timeout"));
            }
        }
    }
    state.metrics.forward("failed");
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "api_error",
        format!(
            "No node that offers this capability could serve it: {}.",
            last_error.unwrap_or_else(|| "no reachable node".into())
        ),
    )
    .code("capability_unreachable"))
}

/// A whole answer; `Err` (try the next node) when nothing usable came back.
async fn whole(
    client: &network::Client,
    peer: PeerId,
    request: IntentRequest,
) -> Result<Response, String> {
    let answer = client
        .forward(peer, request)
        .await
        .map_err(|e| e.to_string())?;
    if answer.status == 503 {
        return Err(format!("node {peer} is overloaded or its backend is down"));
    }
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    Ok(json_response(status, Bytes::from(answer.body)))
}

async fn read_frame(io: &mut libp2p::Stream) -> Result<Option<StreamFrame>, String> {
    match frames::read(io, intent::MAX_FRAME_BYTES).await {
        Ok(Some(bytes)) => StreamFrame::decode(&bytes)
            .map(Some)
            .map_err(|e| e.to_string()),
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Opens a stream and waits for the answer's head; then relays its frames as
/// SSE while they arrive. `Err` (try the next node) before the head only.
async fn open_stream(
    state: &AppState,
    client: &network::Client,
    peer: PeerId,
    request: IntentRequest,
) -> Result<Response, String> {
    let mut io = client.open_stream(peer).await.map_err(|e| e.to_string())?;
    let bytes = request.encode().map_err(|e| e.to_string())?;
    frames::write(&mut io, &bytes)
        .await
        .map_err(|e| e.to_string())?;
    let status = match read_frame(&mut io).await? {
        Some(StreamFrame::Head { status }) => status,
        other => return Err(format!("expected the answer's head, got {other:?}")),
    };
    if status == 503 {
        return Err(format!("node {peer} is overloaded or its backend is down"));
    }
    if status != 200 {
        // An error answer: its JSON body follows as one event.
        let body = match read_frame(&mut io).await? {
            Some(StreamFrame::Event(b)) => b,
            _ => Vec::new(),
        };
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        return Ok(json_response(code, Bytes::from(body)));
    }
    let idle = state.http.request_timeout;
    let metrics = state.metrics.clone();
    let events = futures::stream::unfold(Some(io), move |io| {
        let metrics = metrics.clone();
        async move {
            let mut io = io?;
            let next = tokio::time::timeout(idle, read_frame(&mut io)).await;
            let (bytes, more) = match next {
                Ok(Ok(Some(StreamFrame::Event(data)))) => {
                    let mut b = Vec::with_capacity(data.len() + 8);
                    b.extend_from_slice(b"data: ");
                    b.extend_from_slice(&data);
                    b.extend_from_slice(b"\n\n");
                    (Bytes::from(b), true)
                }
                Ok(Ok(Some(StreamFrame::End))) => (Bytes::from_static(b"data: [DONE]\n\n"), false),
                Ok(Ok(Some(StreamFrame::Failed { code, message }))) => {
                    (sse::error_event(&message, &code), false)
                }
                Ok(Ok(Some(StreamFrame::Head { .. }))) | Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                    metrics.forward("stream_broken");
                    let msg = "The node serving this request stopped answering mid-stream.";
                    (sse::error_event(msg, "mesh_stream_error"), false)
                }
            };
            Some((Ok::<_, std::convert::Infallible>(bytes), more.then_some(io)))
        }
    });
    Ok(sse_response(Body::from_stream(events)))
}

/// Checks a forwarded request and finds the local capability it names.
fn local_target(
    state: &AppState,
    request: &IntentRequest,
) -> Result<(Target, Op, Map<String, Value>), ApiError> {
    let body: Value = serde_json::from_slice(&request.body).map_err(|e| {
        ApiError::invalid("body", format!("The forwarded body is not JSON: {e}"))
            .code("invalid_json")
    })?;
    let body = super::openai::object(body)?;
    let id: CapabilityId = request
        .capability
        .parse()
        .map_err(|_| ApiError::model_not_found(&request.capability))?;
    let table = state.catalog.table();
    let entry = table
        .lookup(&id)
        .find(|e| e.local)
        .cloned()
        .ok_or_else(|| ApiError::model_not_found(&request.capability))?;
    let op = match request.operation {
        Operation::Chat => Op::Chat,
        Operation::Completions => Op::Completions,
        Operation::Embeddings => Op::Embeddings,
    };
    let target = Target {
        entry,
        score: None,
        fallbacks: Vec::new(),
    };
    Ok((target, op, body))
}

fn deadline_of(state: &AppState, request: &IntentRequest) -> Duration {
    Duration::from_millis(u64::from(request.deadline_ms)).min(state.http.request_timeout)
}

fn out_of_time() -> ApiError {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "api_error",
        "The request ran out of time.",
    )
    .code("deadline_exceeded")
}

/// Serves a request a peer sent over `/atmosphere/intent/1.0.0`.
pub async fn serve_forwarded(state: &AppState, request: IntentRequest) -> IntentResponse {
    state.metrics.forward("served");
    let result: Result<Response, ApiError> = async {
        let (target, op, mut body) = local_target(state, &request)?;
        // Answers travel whole over this protocol.
        body.insert("stream".into(), Value::Bool(false));
        tokio::time::timeout(
            deadline_of(state, &request),
            dispatch(state, target, op, body, false),
        )
        .await
        .map_err(|_| out_of_time())?
    }
    .await;
    let (status, body) = into_parts(result).await;
    IntentResponse {
        version: intent::VERSION,
        status,
        body,
    }
}

async fn into_parts(result: Result<Response, ApiError>) -> (u16, Vec<u8>) {
    match result {
        Ok(resp) => {
            let status = resp.status().as_u16();
            match axum::body::to_bytes(resp.into_body(), MAX_BACKEND_BODY).await {
                Ok(bytes) => (status, bytes.to_vec()),
                Err(e) => {
                    let err = ApiError::internal("serve forwarded", e);
                    (err.status.as_u16(), err.body().to_string().into_bytes())
                }
            }
        }
        Err(e) => (e.status.as_u16(), e.body().to_string().into_bytes()),
    }
}

async fn send(io: &mut libp2p::Stream, frame: &StreamFrame) -> std::io::Result<()> {
    let bytes = frame
        .encode()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    frames::write(io, &bytes).await
}

/// Serves a request a peer sent over `/atmosphere/stream/1.0.0`: runs it on the
/// local backend with `stream: true` and writes each event as a frame the
/// moment it arrives.
pub async fn serve_stream(state: AppState, peer: PeerId, mut io: libp2p::Stream) {
    state.metrics.forward("served_stream");
    let request = match frames::read(&mut io, intent::MAX_REQUEST_BYTES).await {
        Ok(Some(bytes)) => match IntentRequest::decode(&bytes) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "invalid forwarded stream request");
                let err = ApiError::invalid("body", "invalid forwarded request");
                let _ = send(&mut io, &StreamFrame::Head { status: 400 }).await;
                let _ = send(
                    &mut io,
                    &StreamFrame::Event(err.body().to_string().into_bytes()),
                )
                .await;
                let _ = send(&mut io, &StreamFrame::End).await;
                return;
            }
        },
        _ => return,
    };
    let result: Result<Response, ApiError> = async {
        let (target, op, mut body) = local_target(&state, &request)?;
        body.insert("stream".into(), Value::Bool(true));
        tokio::time::timeout(
            deadline_of(&state, &request),
            dispatch(&state, target, op, body, true),
        )
        .await
        .map_err(|_| out_of_time())?
    }
    .await;
    let streaming = result.as_ref().is_ok_and(|r| {
        r.status() == StatusCode::OK
            && r.headers()
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
    });
    if !streaming {
        let (status, body) = into_parts(result).await;
        let _ = send(&mut io, &StreamFrame::Head { status }).await;
        let _ = send(&mut io, &StreamFrame::Event(body)).await;
        let _ = send(&mut io, &StreamFrame::End).await;
        return;
    }
    let Ok(resp) = result else { return };
    if send(&mut io, &StreamFrame::Head { status: 200 })
        .await
        .is_err()
    {
        return;
    }
    let mut data = resp.into_body().into_data_stream();
    let mut parser = sse::Parser::default();
    while let Some(chunk) = data.next().await {
        let Ok(chunk) = chunk else { break };
        parser.push(&chunk);
        while let Some(event) = parser.next_event() {
            let frame = match event {
                Ok(sse::Event::Data(d)) => match serde_json::from_str::<Value>(&d)
                    .ok()
                    .and_then(|v| v.get("error").cloned())
                {
                    Some(err) => StreamFrame::Failed {
                        code: err["code"].as_str().unwrap_or("backend_error").to_owned(),
                        message: err["message"]
                            .as_str()
                            .unwrap_or("The stream broke off.")
                            .to_owned(),
                    },
                    None => StreamFrame::Event(d.into_bytes()),
                },
                Ok(sse::Event::Done) => StreamFrame::End,
                Ok(sse::Event::Ignored) => continue,
                Err(_) => StreamFrame::Failed {
                    code: "backend_bad_response".into(),
                    message: "The backend sent an invalid stream event.".into(),
                },
            };
            let last = !matches!(frame, StreamFrame::Event(_));
            if send(&mut io, &frame).await.is_err() || last {
                return;
            }
        }
    }
    let _ = send(&mut io, &StreamFrame::End).await;
}
