//! A backend's server-sent events: split into events as the bytes arrive,
//! translated by the backend's adapter into OpenAI chunks, and ended
//! explicitly. Every stream ends with `Done` or `Failed`: an oversized or
//! non-JSON event, a broken connection, a stall past the backend's read
//! timeout and a connection closed before the backend said it was done each
//! end it with `Failed`, never silently and never with garbage passed on.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use serde_json::Value;

use crate::answer::{Event, Events, MAX_EVENT_BYTES};

/// One event as the backend sent it: its `event:` name and its `data:` lines.
#[derive(Debug, Default, PartialEq)]
pub struct Raw {
    pub name: Option<String>,
    /// `None` when the event had no `data:` line (comments, ids, retries).
    pub data: Option<String>,
}

/// Splits a byte stream into events (separated by a blank line).
#[derive(Default)]
pub struct Parser {
    buf: BytesMut,
}

/// An event over [`MAX_EVENT_BYTES`].
#[derive(Debug, PartialEq)]
pub struct TooLarge;

impl Parser {
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete event, if one has arrived.
    pub fn next_event(&mut self) -> Option<Result<Raw, TooLarge>> {
        let Some((end, sep)) = find_event_end(&self.buf) else {
            return (self.buf.len() > MAX_EVENT_BYTES).then_some(Err(TooLarge));
        };
        if end > MAX_EVENT_BYTES {
            return Some(Err(TooLarge));
        }
        let raw = self.buf.split_to(end + sep);
        let text = String::from_utf8_lossy(&raw[..end]);
        let mut event = Raw::default();
        for line in text.lines() {
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "data" => match &mut event.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => event.data = Some(value.to_owned()),
                },
                "event" => event.name = Some(value.to_owned()),
                _ => {}
            }
        }
        Some(Ok(event))
    }
}

fn find_event_end(buf: &[u8]) -> Option<(usize, usize)> {
    // Events end at "\n\n" or "\r\n\r\n".
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2));
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// Turns a backend's events into OpenAI chunks; one per stream (it may keep
/// state, such as the message id every chunk repeats).
pub trait Translate: Send {
    /// Zero or more events for the client; a `Done` or `Failed` ends the stream.
    fn event(&mut self, raw: Raw) -> Vec<Event>;
}

/// Streams already in OpenAI's shape: each `data:` is a chunk or `[DONE]`;
/// an `{"error": ...}` chunk ends the stream as a failure.
pub struct Passthrough;

impl Translate for Passthrough {
    fn event(&mut self, raw: Raw) -> Vec<Event> {
        let Some(data) = raw.data else {
            return Vec::new();
        };
        let data = data.trim();
        if data == "[DONE]" {
            return vec![Event::Done];
        }
        match serde_json::from_str::<Value>(data) {
            Ok(Value::Object(chunk)) => match chunk.get("error") {
                Some(error) => vec![failure(error)],
                None => vec![Event::Data(Bytes::copy_from_slice(data.as_bytes()))],
            },
            _ => vec![Event::failed(
                "backend_bad_response",
                "The backend sent a stream event that is not a JSON object.",
            )],
        }
    }
}

/// An error object a backend put in its stream, as the stream's end.
pub fn failure(error: &Value) -> Event {
    let text = |key: &str| error.get(key).and_then(Value::as_str);
    Event::Failed {
        code: text("code")
            .or_else(|| text("type"))
            .unwrap_or("backend_error")
            .to_owned(),
        message: text("message")
            .unwrap_or("The backend's stream broke off.")
            .to_owned(),
    }
}

/// The backend's byte stream as events for the client.
pub fn events<S, E>(upstream: S, translate: Box<dyn Translate>) -> Events
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: std::fmt::Display + Send,
{
    struct St<S> {
        upstream: S,
        parser: Parser,
        translate: Box<dyn Translate>,
        ready: VecDeque<Event>,
        ended: bool,
    }
    let state = St {
        upstream,
        parser: Parser::default(),
        translate,
        ready: VecDeque::new(),
        ended: false,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        loop {
            if st.ended {
                return None;
            }
            if let Some(event) = st.ready.pop_front() {
                st.ended = event.is_last();
                return Some((event, st));
            }
            match st.parser.next_event() {
                Some(Ok(raw)) => {
                    st.ready.extend(st.translate.event(raw));
                    continue;
                }
                Some(Err(TooLarge)) => {
                    st.ready.push_back(Event::failed(
                        "backend_bad_response",
                        "The backend sent an oversized stream event.",
                    ));
                    continue;
                }
                None => {}
            }
            let end = match st.upstream.next().await {
                Some(Ok(chunk)) => {
                    st.parser.push(&chunk);
                    continue;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "backend stream broke");
                    "The backend's stream broke off before it finished."
                }
                None => "The backend closed its stream before it finished.",
            };
            st.ready
                .push_back(Event::failed("backend_stream_error", end));
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(s: &str) -> Raw {
        Raw {
            name: None,
            data: Some(s.into()),
        }
    }

    #[test]
    fn parses_split_events_with_names() {
        let mut p = Parser::default();
        p.push(b"data: {\"a\":");
        assert!(p.next_event().is_none());
        p.push(b"1}\n\n: comment\n\nevent: ping\r\ndata: {}\r\n\r\ndata: [DONE]\n\n");
        assert_eq!(p.next_event(), Some(Ok(data("{\"a\":1}"))));
        assert_eq!(p.next_event(), Some(Ok(Raw::default())));
        assert_eq!(
            p.next_event(),
            Some(Ok(Raw {
                name: Some("ping".into()),
                data: Some("{}".into())
            }))
        );
        assert_eq!(p.next_event(), Some(Ok(data("[DONE]"))));
        assert!(p.next_event().is_none());
        let mut p = Parser::default();
        p.push(&vec![b'x'; MAX_EVENT_BYTES + 1]);
        assert_eq!(p.next_event(), Some(Err(TooLarge)));
    }

    #[test]
    fn passthrough_refuses_garbage_and_ends_on_errors() {
        let mut t = Passthrough;
        assert!(matches!(
            t.event(data("<html>oops</html>"))[..],
            [Event::Failed { .. }]
        ));
        assert_eq!(
            t.event(data(r#"{"error": {"message": "m", "code": "c"}}"#)),
            vec![Event::failed("c", "m")]
        );
        assert_eq!(t.event(data("[DONE]")), vec![Event::Done]);
        assert!(t.event(Raw::default()).is_empty());
    }

    async fn collect(chunks: Vec<Result<Bytes, String>>) -> Vec<Event> {
        events(futures::stream::iter(chunks), Box::new(Passthrough))
            .collect()
            .await
    }

    #[tokio::test]
    async fn every_stream_ends_explicitly() {
        let one = || Ok(Bytes::from_static(b"data: {\"x\":1}\n\n"));
        let broken = collect(vec![one(), Err("reset".into())]).await;
        assert_eq!(broken.len(), 2);
        assert!(matches!(&broken[1], Event::Failed { code, .. } if code == "backend_stream_error"));
        let closed = collect(vec![one()]).await;
        assert!(matches!(&closed[1], Event::Failed { code, .. } if code == "backend_stream_error"));
        let done = collect(vec![
            one(),
            Ok(Bytes::from_static(
                b"data: [DONE]\n\ndata: {\"late\":1}\n\n",
            )),
        ])
        .await;
        assert_eq!(done.last(), Some(&Event::Done));
        assert_eq!(done.len(), 2, "nothing after [DONE]");
    }
}
