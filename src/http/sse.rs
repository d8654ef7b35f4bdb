//! Relays a backend's server-sent events to the client, event by event, as they
//! arrive. Each `data:` payload must be JSON or `[DONE]`; anything else, a broken
//! connection or a stall past the backend timeout ends the stream with an
//! OpenAI-style error event instead of passing garbage on.

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use serde_json::json;

/// Longest single event accepted from a backend.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// Splits a byte stream into SSE events (separated by a blank line).
#[derive(Default)]
pub struct Parser {
    buf: BytesMut,
}

/// What a parsed event holds.
#[derive(Debug, PartialEq)]
pub enum Event {
    /// A JSON payload (already checked to parse).
    Data(String),
    /// The `[DONE]` marker.
    Done,
    /// Comments, ids, retries: nothing to forward.
    Ignored,
}

/// Why an event was refused.
#[derive(Debug, PartialEq)]
pub enum Refused {
    TooLarge,
    NotJson,
}

impl Parser {
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete event, if one has arrived.
    pub fn next_event(&mut self) -> Option<Result<Event, Refused>> {
        let end = find_event_end(&self.buf);
        let Some((end, sep)) = end else {
            if self.buf.len() > MAX_EVENT_BYTES {
                return Some(Err(Refused::TooLarge));
            }
            return None;
        };
        let raw = self.buf.split_to(end + sep);
        let text = String::from_utf8_lossy(&raw[..end]);
        let mut data = String::new();
        let mut has_data = false;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("data:") {
                if has_data {
                    data.push('\n');
                }
                data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
                has_data = true;
            }
        }
        if !has_data {
            return Some(Ok(Event::Ignored));
        }
        let trimmed = data.trim();
        if trimmed == "[DONE]" {
            return Some(Ok(Event::Done));
        }
        if serde_json::from_str::<serde::de::IgnoredAny>(trimmed).is_err() {
            return Some(Err(Refused::NotJson));
        }
        Some(Ok(Event::Data(trimmed.to_owned())))
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

/// An SSE error event in OpenAI's error shape, then the end of the stream.
pub fn error_event(message: &str, code: &str) -> Bytes {
    let body =
        json!({"error": {"message": message, "type": "api_error", "param": null, "code": code}});
    Bytes::from(format!("data: {body}\n\n"))
}

/// What happened to a relayed stream, reported once it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The backend sent `[DONE]` or closed cleanly.
    Complete,
    /// The stream was cut with an error event (code given).
    Failed(&'static str),
}

/// Relays `upstream` as SSE bytes; `on_end` is told how it ended.
pub fn relay<S, E, F>(
    upstream: S,
    on_end: F,
) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> + Send
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: std::fmt::Display + Send,
    F: FnOnce(End) + Send + 'static,
{
    struct St<S, F> {
        upstream: S,
        parser: Parser,
        finished: bool,
        on_end: Option<F>,
    }
    let state = St {
        upstream,
        parser: Parser::default(),
        finished: false,
        on_end: Some(on_end),
    };
    futures::stream::unfold(state, |mut st| async move {
        if st.finished {
            return None;
        }
        let finish = |st: &mut St<S, F>, end: End| {
            st.finished = true;
            if let Some(f) = st.on_end.take() {
                f(end);
            }
        };
        loop {
            match st.parser.next_event() {
                Some(Ok(Event::Data(d))) => {
                    return Some((Ok(Bytes::from(format!("data: {d}\n\n"))), st));
                }
                Some(Ok(Event::Done)) => {
                    finish(&mut st, End::Complete);
                    return Some((Ok(Bytes::from_static(b"data: [DONE]\n\n")), st));
                }
                Some(Ok(Event::Ignored)) => continue,
                Some(Err(refused)) => {
                    let (msg, code) = match refused {
                        Refused::TooLarge => (
                            "The backend sent an oversized stream event.",
                            "backend_bad_response",
                        ),
                        Refused::NotJson => (
                            "The backend sent a stream event that is not JSON.",
                            "backend_bad_response",
                        ),
                    };
                    finish(&mut st, End::Failed(code));
                    return Some((Ok(error_event(msg, code)), st));
                }
                None => {}
            }
            match st.upstream.next().await {
                Some(Ok(chunk)) => st.parser.push(&chunk),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "backend stream broke");
                    finish(&mut st, End::Failed("backend_stream_error"));
                    let msg = "The backend's stream broke off before it finished.";
                    return Some((Ok(error_event(msg, "backend_stream_error")), st));
                }
                None => {
                    finish(&mut st, End::Complete);
                    return None;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_split_events() {
        let mut p = Parser::default();
        p.push(b"data: {\"a\":");
        assert!(p.next_event().is_none());
        p.push(b"1}\n\n: comment\n\ndata: [DONE]\r\n\r\n");
        assert_eq!(p.next_event(), Some(Ok(Event::Data("{\"a\":1}".into()))));
        assert_eq!(p.next_event(), Some(Ok(Event::Ignored)));
        assert_eq!(p.next_event(), Some(Ok(Event::Done)));
        assert!(p.next_event().is_none());
    }

    #[test]
    fn refuses_garbage() {
        let mut p = Parser::default();
        p.push(b"data: <html>oops</html>\n\n");
        assert_eq!(p.next_event(), Some(Err(Refused::NotJson)));
        let mut p = Parser::default();
        p.push(&vec![b'x'; MAX_EVENT_BYTES + 1]);
        assert_eq!(p.next_event(), Some(Err(Refused::TooLarge)));
    }

    #[tokio::test]
    async fn relay_ends_with_error_event_on_broken_stream() {
        let chunks: Vec<Result<Bytes, String>> = vec![
            Ok(Bytes::from_static(b"data: {\"x\":1}\n\n")),
            Err("reset".into()),
        ];
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let out: Vec<_> = relay(futures::stream::iter(chunks), move |end| {
            tx.send(end).expect("send");
        })
        .collect()
        .await;
        let text: String = out
            .into_iter()
            .map(|b| String::from_utf8(b.expect("infallible").to_vec()).expect("utf8"))
            .collect();
        assert!(text.starts_with("data: {\"x\":1}\n\n"));
        assert!(text.contains("backend_stream_error"));
        assert_eq!(rx.recv().expect("end"), End::Failed("backend_stream_error"));
    }
}
