//! Forwarded requests: one request, one answer (`/atmosphere/intent/1.0.0`),
//! one request and a stream of frames (`/atmosphere/stream/1.0.0`), or a
//! request whose body follows in parts (`/atmosphere/upload/1.0.0`).
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
/// Bodies larger than this are sent over the upload protocol, in parts:
/// in one message they would be copied whole at each end.
pub const UPLOAD_ABOVE: usize = 1024 * 1024;
/// Largest upload this version allows (a node takes at most its own
/// `http.max_body_bytes`).
pub const MAX_UPLOAD_BYTES: u64 = 1 << 30;
/// Parts of an uploaded body are written this size (the last one shorter)
/// and read at most [`MAX_PART_BYTES`].
pub const PART_BYTES: usize = 256 * 1024;
pub const MAX_PART_BYTES: usize = 1024 * 1024;
/// The status of the `Head` that asks for an upload's body.
pub const CONTINUE: u16 = 100;
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
    /// A call of a tool (`tool/<name>`) whose arguments are too large for
    /// `/atmosphere/tool/1.0.0`: on the upload protocol only, the body the
    /// arguments (a JSON object), the answer whole, as a tool call's.
    Tool,
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

/// The head of an upload: the request without its body, which follows in
/// frames (parts) once the receiver answers `Head { status: 100 }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadRequest {
    pub version: u8,
    /// The capability id at the receiving node.
    pub capability: String,
    pub operation: Operation,
    /// Whether the answer is a stream of events or a whole body.
    pub stream: bool,
    /// Bytes of body that follow, in parts.
    pub body_len: u64,
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

fn check_hops(hops: u8) -> Result<(), Error> {
    if hops > MAX_HOPS {
        return Err(Error::Invalid(format!("hops {hops} over {MAX_HOPS}")));
    }
    Ok(())
}

impl super::Message for IntentRequest {
    const MAX_BYTES: usize = MAX_REQUEST_BYTES;
    fn version(&self) -> Option<u8> {
        Some(self.version)
    }
    fn check(&self) -> Result<(), Error> {
        check_hops(self.hops)
    }
}

impl super::Message for UploadRequest {
    const MAX_BYTES: usize = 64 * 1024;
    fn version(&self) -> Option<u8> {
        Some(self.version)
    }
    fn check(&self) -> Result<(), Error> {
        check_hops(self.hops)?;
        if self.body_len > MAX_UPLOAD_BYTES {
            return Err(Error::Invalid(format!(
                "a body of {} bytes, over {MAX_UPLOAD_BYTES}",
                self.body_len
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
