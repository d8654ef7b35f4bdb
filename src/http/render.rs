//! Answers as HTTP responses: a whole answer as its JSON body and status, a
//! stream as server-sent events (each chunk a `data:` line, then `[DONE]`, or
//! an OpenAI-style error event when it broke off); both with the headers that
//! say which capability and node served it.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;

use crate::answer::{Event, Reply};
use crate::exec::Answer;

/// The response for an answer.
pub fn answer(answer: Answer) -> Response {
    let mut r = match answer.reply {
        Reply::Whole { status, body } => json_response(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            body,
        ),
        Reply::Stream(events) => sse_response(Body::from_stream(
            events.map(|e| Ok::<_, std::convert::Infallible>(event_bytes(&e))),
        )),
    };
    route_headers(&mut r, answer.capability.as_str(), &answer.node);
    let h = r.headers_mut();
    let score = answer
        .score
        .map_or_else(|| "1.0000".to_owned(), |s| format!("{s:.4}"));
    if let Ok(v) = HeaderValue::from_str(&score) {
        h.insert("x-atmosphere-score", v);
    }
    r
}

/// The headers that say which capability and node served an answer.
pub fn route_headers(response: &mut Response, capability: &str, node: &str) {
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(capability) {
        h.insert("x-atmosphere-route", v);
    }
    if let Ok(v) = HeaderValue::from_str(node) {
        h.insert("x-atmosphere-node", v);
    }
}

/// One event as SSE bytes.
fn event_bytes(event: &Event) -> Bytes {
    match event {
        Event::Data(data) => {
            let mut b = Vec::with_capacity(data.len() + 8);
            b.extend_from_slice(b"data: ");
            b.extend_from_slice(data);
            b.extend_from_slice(b"\n\n");
            Bytes::from(b)
        }
        Event::Done => Bytes::from_static(b"data: [DONE]\n\n"),
        Event::Failed { code, message } => {
            let body = json!({"error": {"message": message, "type": "api_error", "param": null, "code": code}});
            Bytes::from(format!("data: {body}\n\n"))
        }
    }
}

/// An SSE response around a body of events, unbuffered by proxies.
fn sse_response(body: Body) -> Response {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

fn json_response(status: StatusCode, bytes: Bytes) -> Response {
    let mut r = Response::new(Body::from(bytes));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_render_as_sse() {
        assert_eq!(
            event_bytes(&Event::Data(Bytes::from_static(b"{\"x\":1}"))),
            Bytes::from_static(b"data: {\"x\":1}\n\n")
        );
        assert_eq!(
            event_bytes(&Event::Done),
            Bytes::from_static(b"data: [DONE]\n\n")
        );
        let failed = event_bytes(&Event::failed("backend_stream_error", "broke"));
        let text = String::from_utf8_lossy(&failed);
        assert!(text.starts_with("data: {\"error\""));
        assert!(text.contains("backend_stream_error"));
    }
}
