//! Forwarded requests: one request, one answer (`/atmosphere/intent/1.0.0`), or
//! one request and a stream of frames (`/atmosphere/stream/1.0.0`).
//! Spec: `protocols/intent.md`.

use serde::{Deserialize, Serialize};

use super::codec::Error;

pub const VERSION: u8 = 1;
/// Largest forwarded request: the HTTP body limit (4 MiB) plus headroom.
pub const MAX_REQUEST_BYTES: usize = 5 * 1024 * 1024;
/// Largest answer: the largest whole answer a node reads from its backend.
pub const MAX_RESPONSE_BYTES: usize = crate::answer::MAX_WHOLE_BYTES;
/// Largest stream frame: one event plus headroom for the frame's own fields.
pub const MAX_FRAME_BYTES: usize = crate::answer::MAX_EVENT_BYTES + 1024;
/// Most hops a request may still travel; a node forwards only with hops > 0.
pub const MAX_HOPS: u8 = 4;

/// What the request asks the capability to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    Chat,
    Completions,
    Embeddings,
    /// Added after version 1's first three: a node that predates it
    /// cannot decode such a request and drops it.
    Transcription,
}

/// A request for a capability that the receiving node offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntentRequest {
    pub version: u8,
    /// The capability id at the receiving node.
    pub capability: String,
    pub operation: Operation,
    /// The OpenAI request body, JSON, as the client sent it.
    pub body: Vec<u8>,
    /// Milliseconds the sender will still wait; the receiver gives up after.
    pub deadline_ms: u32,
    /// Further forwards allowed.
    pub hops: u8,
}

/// The receiving node's answer: an HTTP status and the JSON body it would
/// have sent its own client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntentResponse {
    pub version: u8,
    pub status: u16,
    pub body: Vec<u8>,
}

/// One frame of a streamed answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StreamFrame {
    /// First frame: the status; 200 means events follow, anything else is an
    /// error whose JSON body follows in one `Event` before `End`.
    Head { status: u16 },
    /// One SSE `data:` payload (JSON), in order.
    Event(Vec<u8>),
    /// The answer is complete (`[DONE]`).
    End,
    /// The answer broke off; an OpenAI-style error code and message.
    Failed { code: String, message: String },
}

impl super::Message for IntentRequest {
    const MAX_BYTES: usize = MAX_REQUEST_BYTES;
    fn version(&self) -> Option<u8> {
        Some(self.version)
    }
    fn check(&self) -> Result<(), Error> {
        if self.hops > MAX_HOPS {
            return Err(Error::Invalid(format!(
                "hops {} over {MAX_HOPS}",
                self.hops
            )));
        }
        Ok(())
    }
}

impl super::Message for IntentResponse {
    const MAX_BYTES: usize = MAX_RESPONSE_BYTES;
    fn version(&self) -> Option<u8> {
        Some(self.version)
    }
}

/// Frames travel in a stream whose first message carried the version.
impl super::Message for StreamFrame {
    const MAX_BYTES: usize = MAX_FRAME_BYTES;
    fn version(&self) -> Option<u8> {
        None
    }
}
