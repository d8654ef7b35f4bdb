//! What a client can make the node hold: request bodies are read within a
//! size limit, a deadline and a node-wide budget of bytes held at once, and
//! requests run under one node-wide cap on concurrency (not one per route).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{StatusCode, header};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, timeout, timeout_at};

use super::ApiError;
use crate::config::HttpConfig;

/// The node's limits on what clients' requests hold.
pub struct Gates {
    max_body: usize,
    body_timeout: Duration,
    /// One permit per byte of request body held.
    held: Arc<Semaphore>,
    /// One permit per request being run.
    slots: Arc<Semaphore>,
    slot_wait: Duration,
}

/// A request body, counted against the node's budget until dropped.
pub struct Body {
    pub bytes: Bytes,
    pub held: Held,
}

/// Room taken in the node's budget of body bytes.
pub struct Held(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

/// A place among the requests the node runs at once.
pub struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

impl Gates {
    pub fn new(http: &HttpConfig) -> Self {
        Self {
            max_body: http.max_body_bytes,
            body_timeout: http.body_timeout,
            held: Arc::new(Semaphore::new(
                http.max_body_bytes_held.min(Semaphore::MAX_PERMITS),
            )),
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
    /// and discarding up to as much again so that the client, still sending,
    /// gets the answer rather than a reset), within `body_timeout` (408), once
    /// the node's budget of bytes held has room for it.
    pub async fn read(&self, req: Request) -> Result<Body, ApiError> {
        let deadline = Instant::now() + self.body_timeout;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut chunks = req.into_body().into_data_stream();
        if let Some(n) = declared
            && n > self.max_body as u64
        {
            if n <= 2 * self.max_body as u64 {
                discard(&mut chunks, n as usize, deadline).await;
            }
            return Err(too_large());
        }
        let mut held = match declared {
            // Room for the whole body at once: bodies never wait on each
            // other half-read.
            Some(n) => Some(self.room(n as usize, deadline).await?),
            None => None,
        };
        let mut buf = BytesMut::with_capacity(declared.unwrap_or(0) as usize);
        loop {
            let chunk = match timeout_at(deadline, chunks.next()).await {
                Err(_) => return Err(too_slow(self.body_timeout)),
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err(ApiError::invalid(
                        "body",
                        format!("The request body could not be read: {e}"),
                    ));
                }
                Ok(Some(Ok(chunk))) => chunk,
            };
            if buf.len() + chunk.len() > self.max_body {
                discard(&mut chunks, self.max_body, deadline).await;
                return Err(too_large());
            }
            if declared.is_none() {
                let more = self.room(chunk.len(), deadline).await?;
                match &mut held {
                    Some(h) => h.merge(more),
                    None => held = Some(more),
                }
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Body {
            bytes: buf.freeze(),
            held: Held(held),
        })
    }

    async fn room(
        &self,
        bytes: usize,
        deadline: Instant,
    ) -> Result<OwnedSemaphorePermit, ApiError> {
        // `bytes` <= max_body_bytes, which the config keeps under 4 GiB.
        let n = u32::try_from(bytes).map_err(|_| too_large())?;
        match timeout_at(deadline, self.held.clone().acquire_many_owned(n)).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(overloaded(
                "The node holds as many request bodies as it may; try again shortly.",
            )),
        }
    }
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

fn overloaded(message: &str) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message).code("overloaded")
}
