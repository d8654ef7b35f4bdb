//! What a capability answers, whichever way the request came and went: a
//! whole JSON body with its status, or a stream of events. Backends produce
//! answers, the request core carries them across the mesh, and each transport
//! renders them its own way (HTTP as a body or server-sent events, the stream
//! protocol as frames).

use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;

/// Largest whole answer: read from a backend, or carried by the intent protocol.
pub const MAX_WHOLE_BYTES: usize = 64 * 1024 * 1024;

/// Largest single event of a streamed answer (its JSON payload).
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// One event of a streamed answer, in OpenAI's chunk shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// One chunk: a JSON object (checked to parse).
    Data(Bytes),
    /// The answer is complete (`[DONE]`).
    Done,
    /// The answer broke off: an OpenAI error code and a message for the client.
    Failed { code: String, message: String },
}

impl Event {
    /// Whether nothing follows this event.
    pub fn is_last(&self) -> bool {
        !matches!(self, Event::Data(_))
    }

    pub fn failed(code: &str, message: &str) -> Self {
        Event::Failed {
            code: code.to_owned(),
            message: message.to_owned(),
        }
    }
}

/// Events in order; the last one is `Done` or `Failed`, and nothing follows it.
pub type Events = Pin<Box<dyn Stream<Item = Event> + Send>>;

/// A capability's answer.
pub enum Reply {
    /// A JSON body (an OpenAI response or an OpenAI error) and its HTTP status.
    Whole { status: u16, body: Bytes },
    /// Events as they are produced (status 200).
    Stream(Events),
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Whole { status, body } => f
                .debug_struct("Whole")
                .field("status", status)
                .field("bytes", &body.len())
                .finish(),
            Reply::Stream(_) => f.write_str("Stream"),
        }
    }
}
