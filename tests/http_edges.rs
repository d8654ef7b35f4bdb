//! The HTTP edge under clients that are slow, large or many: deadlines for a
//! request's head and body, one node-wide cap on requests run at once, a
//! bound on body bytes held, oversize bodies answered with their 413, and
//! what `/health` and the API key check give away.

mod common;

use std::time::Duration;

use atmosphere::config::{BackendKind, HttpConfig};
use atmosphere::echo::{Echo, Fault, Flavour};
use atmosphere::node::Node;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use common::*;

/// A node with the farm capabilities on an echo backend (with `fault`) and
/// its HTTP settings changed by `http`.
async fn node_with(fault: Fault, http: impl FnOnce(&mut HttpConfig)) -> (Node, tempfile::TempDir) {
    let mut echo = Echo::new("farm-backend", Flavour::Openai, &["llama3.2"]);
    echo.fault = fault;
    let addr = spawn_echo(echo).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = config(
        vec![backend("farm", BackendKind::Openai, addr, false)],
        farm_capabilities("farm"),
        dir.path(),
    );
    http(&mut c.http);
    (start(c).await, dir)
}

fn chat_body(text: &str) -> Value {
    json!({"model": "farm/llama-expert", "messages": [{"role": "user", "content": text}]})
}

/// Sends a request head and the first `sent` bytes of a body that claims
/// `length` bytes, then nothing more.
async fn stalled_body(node: &Node, length: usize, sent: usize) -> TcpStream {
    let mut s = TcpStream::connect(node.http_addr).await.expect("connect");
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.expect("head");
    s.write_all(&vec![b' '; sent]).await.expect("body");
    s
}

/// Reads what the server sends until it closes the connection or `WAIT`
/// passes (`None`).
async fn read_until_closed(s: &mut TcpStream) -> Option<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(WAIT, read).await.ok()?;
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Reads one response: its head, then as many body bytes as it declares.
async fn read_response(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = s.read(&mut buf).await.expect("the answer, not a reset");
            assert!(n > 0, "closed before the answer ended: {out:?}");
            out.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&out);
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().expect("length"))
                    })
                    .unwrap_or(0);
                if out.len() >= end + 4 + length {
                    return;
                }
            }
        }
    };
    let timed_out = tokio::time::timeout(WAIT, read).await.is_err();
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(!timed_out, "no whole answer within {WAIT:?}: {text:?}");
    text
}

#[tokio::test]
async fn a_client_that_trickles_its_request_head_is_cut_off() {
    let (node, _dir) = node_with(Fault::None, |h| h.header_timeout = Duration::from_secs(1)).await;
    let s = TcpStream::connect(node.http_addr).await.expect("connect");
    let (mut rd, mut wr) = s.into_split();
    wr.write_all(b"GET /health HTTP/1.1\r\nHost: node\r\nX-Slow: ")
        .await
        .expect("start");
    // One byte of a header every 200 ms: the head never ends.
    let trickle = tokio::spawn(async move {
        while wr.write_all(b"a").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    trickle.abort();
    assert!(
        closed.is_ok(),
        "the connection was still open after {WAIT:?}"
    );
}

#[tokio::test]
async fn a_client_that_trickles_its_body_gets_408() {
    let (node, _dir) = node_with(Fault::None, |h| h.body_timeout = Duration::from_secs(1)).await;
    let mut s = stalled_body(&node, 1000, 1).await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = s.write_all(b" ").await;
    }
    let answer = read_until_closed(&mut s).await.expect("answered");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"body_timeout\""), "{answer}");
}

/// Slow uploads do not hold the places of requests that are ready to run:
/// the node-wide cap counts requests once their body is in.
#[tokio::test]
async fn many_slow_uploads_do_not_hold_back_a_ready_request() {
    let (node, _dir) = node_with(Fault::None, |h| h.max_concurrent_requests = 4).await;
    let mut slow = Vec::new();
    for _ in 0..64 {
        slow.push(stalled_body(&node, 1000, 10).await);
    }
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", node.http_addr))
        .json(&chat_body("What should I feed my alpacas in winter?"))
        .timeout(WAIT)
        .send()
        .await
        .expect("answered while 64 uploads stall");
    assert_eq!(resp.status(), 200);
    drop(slow);
}

/// A client that sends its whole body before it reads (as most HTTP
/// libraries do) must get to read the 413, not have its upload reset.
#[tokio::test]
async fn an_oversize_body_is_answered_413_not_reset() {
    let limit = 1024 * 1024;
    let (node, _dir) = node_with(Fault::None, |h| h.max_body_bytes = limit).await;
    // Nearly twice the limit, and five times: more than socket buffers hold,
    // so a server that answered without reading would reset the upload.
    let piece = vec![b'a'; 64 * 1024];
    for (chunked, pieces) in [(false, 30), (true, 30), (false, 80), (true, 80)] {
        let length = pieces * piece.len();
        // A small send buffer: the upload sits in the node's receive buffer,
        // not in this client's.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_send_buffer_size(8 * 1024).expect("sndbuf");
        let mut s = socket.connect(node.http_addr).await.expect("connect");
        let framing = if chunked {
            "Transfer-Encoding: chunked".to_owned()
        } else {
            format!("Content-Length: {length}")
        };
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.expect("head");
        for _ in 0..pieces {
            if chunked {
                s.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                    .await
                    .expect("upload not reset");
            }
            s.write_all(&piece).await.expect("upload not reset");
            if chunked {
                s.write_all(b"\r\n").await.expect("upload not reset");
            }
        }
        if chunked {
            s.write_all(b"0\r\n\r\n").await.expect("upload not reset");
        }
        let answer = read_response(&mut s).await;
        assert!(
            answer.starts_with("HTTP/1.1 413"),
            "chunked {chunked}: {answer}"
        );
        assert!(answer.contains("request_too_large"), "{answer}");
    }
}

/// A body whose bytes fill most of the node's budget of body bytes keeps a
/// second one waiting until its own deadline frees the room. (Bytes declared
/// and never sent hold nothing: tests/budgets.rs.)
#[tokio::test]
async fn body_bytes_held_at_once_are_bounded() {
    let (node, _dir) = node_with(Fault::None, |h| {
        h.max_body_bytes = 64 * 1024;
        h.max_body_bytes_held = 64 * 1024;
        h.body_timeout = Duration::from_secs(2);
    })
    .await;
    let mut hog = stalled_body(&node, 64 * 1024, 60 * 1024).await;
    let hog_answer = tokio::spawn(async move {
        let a = read_until_closed(&mut hog).await;
        (a, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", node.http_addr))
        .json(&chat_body(&"b".repeat(10 * 1024)))
        .timeout(WAIT)
        .send()
        .await
        .expect("answered");
    let answered = Instant::now();
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    let (hog, hog_at) = hog_answer.await.expect("hog");
    let hog = hog.expect("the hog was answered");
    assert!(hog.starts_with("HTTP/1.1 408"), "{hog}");
    assert!(
        hog_at <= answered,
        "the second body was read while the first held the budget"
    );
}

/// One cap for the node: a request stuck on one route keeps a request on
/// another route waiting.
#[tokio::test]
async fn the_cap_on_requests_run_at_once_is_node_wide() {
    let (node, _dir) = node_with(Fault::Stall, |h| {
        h.max_concurrent_requests = 1;
        h.request_timeout = Duration::from_secs(2);
    })
    .await;
    let url = |p: &str| format!("http://{}{p}", node.http_addr);
    let stuck = tokio::spawn({
        let url = url("/v1/chat/completions");
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .json(&chat_body("hello"))
                .send()
                .await
                .expect("answered");
            (r.status(), Instant::now())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resp = reqwest::Client::new()
        .post(url("/v1/embeddings"))
        .json(&json!({"model": "all-MiniLM-L6-v2", "input": "alpacas"}))
        .timeout(WAIT)
        .send()
        .await
        .expect("answered");
    let answered = Instant::now();
    assert_eq!(resp.status(), 200);
    let (status, stuck_at) = stuck.await.expect("stuck");
    assert_eq!(status, 504, "the stalled backend timed out");
    assert!(
        stuck_at <= answered,
        "the embedding ran while the chat held the node's only place"
    );
}

#[tokio::test]
async fn health_and_keys_give_nothing_away() {
    let (node, _dir) = node_with(Fault::None, |h| h.api_keys = vec!["s3cret-key".into()]).await;
    let get = |auth: Option<&'static str>| {
        let url = format!("http://{}/health", node.http_addr);
        async move {
            let mut r = reqwest::Client::new().get(url);
            if let Some(a) = auth {
                r = r.header("authorization", a);
            }
            r.send().await.expect("health")
        }
    };
    let open: Value = get(None).await.json().await.expect("json");
    assert_eq!(open, json!({"status": "ok"}), "no key: no details");
    let wrong: Value = get(Some("Bearer s3cret-kez"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(wrong, json!({"status": "ok"}));
    let full: Value = get(Some("bearer s3cret-key"))
        .await
        .json()
        .await
        .expect("json");
    assert!(full["backends"]["farm"].is_object(), "{full}");

    let models = |auth: &'static str| {
        let url = format!("http://{}/v1/models", node.http_addr);
        async move {
            reqwest::Client::new()
                .get(url)
                .header("authorization", auth)
                .send()
                .await
                .expect("models")
                .status()
        }
    };
    // The scheme in any case; keys of any length, right or wrong.
    assert_eq!(models("BEARER s3cret-key").await, 200);
    assert_eq!(models("Bearer s3cret-key").await, 200);
    assert_eq!(models("Bearer s").await, 401);
    assert_eq!(models("Bearer s3cret-key-and-more").await, 401);
    assert_eq!(models("Basic s3cret-key").await, 401);
}

#[tokio::test]
async fn auto_says_when_what_fits_is_down() {
    let dead = dead_addr().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(config(
        vec![backend("farm", BackendKind::Openai, dead, false)],
        farm_capabilities("farm"),
        dir.path(),
    ))
    .await;
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", node.http_addr))
        .json(&json!({"model": "auto", "messages": [{"role": "user", "content": "What should I feed my alpacas in winter?"}]}))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 503);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["error"]["code"], "capability_unavailable", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("farm/llama-expert")),
        "{v}"
    );
}
