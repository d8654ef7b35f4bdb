//! What a client can make the node hold: request bodies are read within a
//! size limit, at the pace every holder keeps ([`crate::budget::Pace`]), and
//! within a node-wide budget of body bytes of which each client address and
//! strangers together have a share, taken as the bytes arrive (never by the
//! `Content-Length` a client declares); requests run under one node-wide
//! cap on concurrency (not one per route).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{StatusCode, header};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, timeout, timeout_at};

use super::ApiError;
use crate::budget::{Budget, Hold, Holder, Limits, Pace, Refusal, Standing};
use crate::config::HttpConfig;
use crate::metrics::Metrics;

/// A body over `max_body_bytes` is read and dropped up to this many times
/// the limit (at the pace every holder keeps, within `body_timeout`), so
/// that a client still sending gets the 413 rather than a reset
/// connection; past it the connection is closed on it.
const DISCARD_FACTOR: u64 = 8;

/// Bytes of a declared body allocated before any arrived; the rest once
/// this much has (a client that declares 32 MiB and sends nothing costs
/// this, not 32 MiB).
const FIRST_ALLOCATION: usize = 1024 * 1024;

/// The node's limits on what clients' requests hold.
pub struct Gates {
    max_body: usize,
    body_timeout: Duration,
    /// Bytes of request bodies held, by client address.
    held: Arc<Budget>,
    /// One permit per request being run.
    slots: Arc<Semaphore>,
    slot_wait: Duration,
}

/// The address a request came from (set by the server on every request of
/// a connection; absent for requests made in process).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

/// Set on a request that carried one of `http.api_keys`.
#[derive(Clone, Copy, Debug)]
pub struct Keyed;

/// Who holds what a request holds: its client's address, known when on
/// loopback or with a key.
pub fn holder_of<B>(req: &axum::http::Request<B>) -> (Holder, Standing) {
    let keyed = req.extensions().get::<Keyed>().is_some();
    match req.extensions().get::<ClientAddr>() {
        Some(ClientAddr(addr)) => {
            let known = keyed || addr.ip().to_canonical().is_loopback();
            let standing = if known {
                Standing::Known
            } else {
                Standing::Stranger
            };
            (Holder::addr(addr.ip()), standing)
        }
        None => (Holder::Unknown, Standing::Known),
    }
}

/// A request body, counted against the node's budget until dropped.
pub struct Body {
    pub bytes: Bytes,
    pub held: Held,
}

/// Room taken in the node's budget of body bytes.
pub struct Held(#[allow(dead_code)] Hold);

/// A place among the requests the node runs at once.
pub struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

impl Gates {
    pub fn new(http: &HttpConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            max_body: http.max_body_bytes,
            body_timeout: http.body_timeout,
            held: Budget::new("http_body_bytes", body_limits(http), metrics),
            slots: Arc::new(Semaphore::new(http.max_concurrent_requests)),
            slot_wait: http.request_timeout,
        }
    }

    /// Waits for a place among the requests run at once (503 when none frees
    /// up in time).
    pub async fn slot(&self) -> Result<Slot, ApiError> {
        match timeout(self.slot_wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Slot(permit)),
            _ => Err(overloaded(
                "The node is running as many requests as it may.",
            )),
        }
    }

    /// Reads a request's body: at most `max_body_bytes` (413, after reading
    /// and discarding up to [`DISCARD_FACTOR`] times as much so that the
    /// client, still sending, gets the answer rather than a reset), at the
    /// body pace and within
    /// `body_timeout` (408), its bytes counted against the client's share
    /// of the node's budget as they arrive (503 when there is no room).
    pub async fn read(&self, req: Request) -> Result<Body, ApiError> {
        let deadline = Instant::now() + self.body_timeout;
        let (holder, standing) = holder_of(&req);
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut chunks = req.into_body().into_data_stream();
        if let Some(n) = declared
            && n > self.max_body as u64
        {
            if n <= DISCARD_FACTOR * self.max_body as u64 {
                discard(&mut chunks, n as usize, deadline).await;
            }
            return Err(too_large());
        }
        let mut held = self
            .held
            .take(holder, standing, 0)
            .map_err(|r| no_room(r, holder))?;
        let declared = declared.map(|n| n as usize);
        let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(FIRST_ALLOCATION));
        let mut progress = Pace::STEADY.start();
        loop {
            let cut = progress.deadline().min(deadline);
            let chunk = match timeout_at(cut, chunks.next()).await {
                Err(_) if cut == deadline => return Err(too_slow(self.body_timeout)),
                Err(_) => return Err(behind_pace()),
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err(ApiError::invalid(
                        "body",
                        format!("The request body could not be read: {e}"),
                    ));
                }
                Ok(Some(Ok(chunk))) => chunk,
            };
            progress.arrived(chunk.len());
            if buf.len() + chunk.len() > self.max_body {
                let rest = (DISCARD_FACTOR as usize * self.max_body).saturating_sub(buf.len());
                discard(&mut chunks, rest, deadline).await;
                return Err(too_large());
            }
            // Waiting for room others hold counts against neither the
            // client's pace nor more than one window.
            let wait = deadline.min(Instant::now() + Pace::STEADY.window);
            held.grow_by(chunk.len(), wait)
                .await
                .map_err(|r| no_room(r, holder))?;
            if let Some(n) = declared
                && buf.len() < FIRST_ALLOCATION
                && buf.len() + chunk.len() >= FIRST_ALLOCATION
            {
                buf.reserve(n.min(self.max_body).saturating_sub(buf.len()));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Body {
            bytes: buf.freeze(),
            held: Held(held),
        })
    }
}

/// `http.max_body_bytes_held` in all; for one client address, half of it
/// (at least one whole body); for strangers together, three quarters.
fn body_limits(http: &HttpConfig) -> Limits {
    let total = http.max_body_bytes_held;
    Limits::shared(total, (total / 2).max(http.max_body_bytes))
}

/// Reads and drops up to `limit` more bytes of a body the node refuses.
async fn discard<S>(chunks: &mut S, limit: usize, deadline: Instant)
where
    S: futures::Stream<Item = Result<Bytes, axum::Error>> + Unpin,
{
    let mut left = limit;
    while let Ok(Some(Ok(chunk))) = timeout_at(deadline, chunks.next()).await {
        if chunk.len() >= left {
            return;
        }
        left -= chunk.len();
    }
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request_error",
        "The request body is too large.",
    )
    .code("request_too_large")
}

fn too_slow(limit: Duration) -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "invalid_request_error",
        format!(
            "The request body did not arrive within {} s.",
            limit.as_secs_f64()
        ),
    )
    .code("body_timeout")
}

fn behind_pace() -> ApiError {
    let pace = Pace::STEADY;
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "invalid_request_error",
        format!(
            "The request body arrived too slowly: the first bytes must come within {} s, then at least {} KiB every {} s.",
            pace.first.as_secs(),
            pace.min_bytes / 1024,
            pace.window.as_secs()
        ),
    )
    .code("body_too_slow")
}

/// No room for a body's bytes: the client has its share (429) or the node
/// is full (503).
fn no_room(refusal: Refusal, holder: Holder) -> ApiError {
    match refusal {
        Refusal::Holder => {
            tracing::debug!(?holder, "a client holds its share of request bodies");
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "This client holds as many request body bytes as one client may; send the next body when one is done.",
            )
            .code("client_over_quota")
        }
        Refusal::Strangers | Refusal::Node => {
            overloaded("The node holds as many request bodies as it may; try again shortly.")
        }
    }
}

fn overloaded(message: &str) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message).code("overloaded")
}
