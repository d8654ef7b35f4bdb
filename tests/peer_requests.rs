//! Forwarded requests as a peer sees them. `/atmosphere/stream/1.0.0`: every
//! answer, refusals included, is a head, events and an end, then the end of
//! the stream; a peer that opens streams and sends nothing cannot take the
//! slots other peers' streamed requests need. `/atmosphere/intent/1.0.0`: a
//! request that cannot be read is answered with a refusal and its code, not
//! a closed stream. The peers are bare libp2p swarms with one behaviour each,
//! as any implementation could be.
//!
//! The node half-closes its side after the last frame instead of dropping
//! the stream (a reset). rust-libp2p's yamux delivers buffered data before a
//! reset and then reads it as an end, so this peer cannot tell the two
//! apart; a peer whose library discards data on reset can.

mod common;

use std::time::Duration;

use atmosphere::config::BackendKind;
use atmosphere::echo::{Echo, Flavour};
use atmosphere::network::frames;
use atmosphere::node::Node;
use atmosphere::wire::Message;
use atmosphere::wire::intent::{self, IntentRequest, Operation, StreamFrame};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{PeerId, StreamProtocol, request_response};
use serde_json::{Value, json};

use common::hostile::{bare_peer, bare_swarm_keyed, key};
use common::*;

fn protocol() -> StreamProtocol {
    StreamProtocol::new(atmosphere::wire::STREAM_PROTOCOL)
}

fn request(capability: &str, operation: Operation, body: Value) -> Vec<u8> {
    IntentRequest {
        version: intent::VERSION,
        capability: capability.into(),
        operation,
        body: serde_json::to_vec(&body).expect("json"),
        deadline_ms: 10_000,
        hops: 0,
    }
    .encode()
    .expect("encode")
}

/// Sends one request frame and reads the answer to its end: the frames, and
/// whether the stream then ended cleanly (end of stream, not a reset).
async fn ask(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    bytes: &[u8],
) -> (Vec<StreamFrame>, bool) {
    let mut io = control
        .open_stream(peer, protocol())
        .await
        .expect("stream opens");
    frames::write(&mut io, bytes)
        .await
        .expect("request written");
    io.close().await.expect("our side closed");
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, async {
        loop {
            match frames::read(&mut io, intent::MAX_FRAME_BYTES).await {
                Ok(Some(b)) => got.push(StreamFrame::decode(&b).expect("a valid frame")),
                Ok(None) => return (got, true),
                Err(_) => return (got, false),
            }
        }
    })
    .await
    .expect("the answer ends in time")
}

fn error_code(frames: &[StreamFrame]) -> Option<String> {
    match frames {
        [
            StreamFrame::Head { .. },
            StreamFrame::Event(body),
            StreamFrame::End,
        ] => {
            let v: Value = serde_json::from_slice(body).ok()?;
            v["error"]["code"].as_str().map(str::to_owned)
        }
        _ => None,
    }
}

#[tokio::test]
async fn every_answer_and_refusal_is_framed_to_its_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = farm_node(dir.path()).await;
    let peer = a.peer_id;
    let mut control = bare_peer(&mesh_addr(&a).await).await;
    let chat = json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]});

    let (answer, clean) = ask(
        &mut control,
        peer,
        &request("farm/llama-expert", Operation::Chat, chat.clone()),
    )
    .await;
    assert!(
        matches!(answer.first(), Some(StreamFrame::Head { status: 200 })),
        "{answer:?}"
    );
    assert!(answer.iter().any(|f| matches!(f, StreamFrame::Event(_))));
    assert_eq!(answer.last(), Some(&StreamFrame::End));
    assert!(clean, "the stream ends after End");

    let cases = [
        (b"\x07garbage".to_vec(), "invalid_forwarded_request"),
        (
            request("farm/nobody", Operation::Chat, chat.clone()),
            "model_not_found",
        ),
        (
            request(
                "farm/llama-expert",
                Operation::Embeddings,
                json!({"input": "hi"}),
            ),
            "wrong_capability_kind",
        ),
        // A tool call goes on the tool protocol or as an upload only.
        (
            request("farm/llama-expert", Operation::Tool, json!({"a": 1})),
            "invalid_forwarded_request",
        ),
    ];
    for (bytes, code) in cases {
        let (answer, clean) = ask(&mut control, peer, &bytes).await;
        assert_eq!(error_code(&answer).as_deref(), Some(code), "{answer:?}");
        assert!(clean, "a refusal ends the stream too: {code}");
    }
    a.shutdown().await;
}

#[tokio::test]
async fn silent_streams_from_one_peer_do_not_block_another_peers_forward() {
    let da = tempfile::tempdir().expect("tempdir");
    let db = tempfile::tempdir().expect("tempdir");
    let a = farm_node(da.path()).await;
    let addr = mesh_addr(&a).await;
    let mut control = bare_peer(&addr).await;
    // 100 streams that never send their request, held open.
    let mut held = Vec::new();
    for _ in 0..100 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_secs(2),
            control.open_stream(a.peer_id, protocol()),
        )
        .await
        {
            held.push(s);
        }
    }
    let b = start(mesh_config(Vec::new(), Vec::new(), db.path(), vec![addr])).await;
    eventually("b learns the llama expert", || async {
        b.catalog
            .table()
            .entries()
            .iter()
            .any(|e| e.capability.id.as_str() == "farm/llama-expert")
    })
    .await;
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", b.http_addr))
        .json(&json!({"model": "farm/llama-expert", "stream": true,
            "messages": [{"role": "user", "content": "How do I care for my llama?"}]}))
        .send()
        .await
        .expect("b answers");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-atmosphere-node"],
        a.peer_id.to_base58().as_str()
    );
    let text = resp.text().await.expect("body");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(
        metric(&a, "atmosphere_forwards_total{result=\"stream_refused\"}").await >= 50,
        "most of the silent streams were refused at once"
    );
    drop(held);
    b.shutdown().await;
    a.shutdown().await;
}

type RawPeer = libp2p::Swarm<request_response::Behaviour<RawCodec>>;

/// A bare request-response peer speaking `protocol` with raw bytes, dialling `node`.
async fn raw_peer(node: &Node, protocol: &'static str) -> RawPeer {
    raw_peer_keyed(
        libp2p::identity::Keypair::generate_ed25519(),
        node,
        protocol,
    )
    .await
}

/// [`raw_peer`] with identity `key`.
async fn raw_peer_keyed(
    key: libp2p::identity::Keypair,
    node: &Node,
    protocol: &'static str,
) -> RawPeer {
    let behaviour = request_response::Behaviour::with_codec(
        RawCodec,
        [(
            StreamProtocol::new(protocol),
            request_response::ProtocolSupport::Outbound,
        )],
        request_response::Config::default(),
    );
    bare_swarm_keyed(key, behaviour, &mesh_addr(node).await)
}

/// Sends one request; its answer, or why none came (the stream closed).
async fn exchange(swarm: &mut RawPeer, peer: PeerId, bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    swarm.behaviour_mut().send_request(&peer, bytes);
    tokio::time::timeout(WAIT, async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { response, .. },
                    ..
                }) => return Ok(response),
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                    error, ..
                }) => {
                    return Err(error.to_string());
                }
                _ => {}
            }
        }
    })
    .await
    .expect("the exchange ends in time")
}

/// Request-response with raw bytes, to send what a node would never send.
#[derive(Clone, Default)]
struct RawCodec;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        io.read_to_end(&mut buf).await?;
        Ok(buf)
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        io.take(1 << 20).read_to_end(&mut buf).await?;
        Ok(buf)
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> std::io::Result<()> {
        io.write_all(&req).await?;
        io.close().await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        resp: Vec<u8>,
    ) -> std::io::Result<()> {
        io.write_all(&resp).await?;
        io.close().await
    }
}

#[tokio::test]
async fn unreadable_intents_are_refused_with_a_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = farm_node(dir.path()).await;
    let mut swarm = raw_peer(&a, atmosphere::wire::INTENT_PROTOCOL).await;
    let chat = json!({"messages": [{"role": "user", "content": "hi"}]});
    // The last byte of an encoded request is its hops; the first its version.
    let valid = request("farm/llama-expert", Operation::Chat, chat);
    let mut too_many_hops = valid.clone();
    *too_many_hops.last_mut().expect("bytes") = intent::MAX_HOPS + 5;
    let mut bad_version = valid.clone();
    bad_version[0] = 9;
    let mut trailing = valid.clone();
    trailing.push(0);
    for bytes in [
        b"\x01\x02garbage".to_vec(),
        too_many_hops,
        bad_version,
        trailing,
    ] {
        let answer = exchange(&mut swarm, a.peer_id, bytes)
            .await
            .expect("an answer, not a closed stream");
        let response = intent::IntentResponse::decode(&answer).expect("an intent response");
        assert_eq!(response.status, 400);
        let v: Value = serde_json::from_slice(&response.body).expect("error JSON");
        assert_eq!(v["error"]["code"], "invalid_forwarded_request", "{v}");
    }
    assert!(metric(&a, "atmosphere_forwards_total{result=\"refused\"}").await >= 4);
    a.shutdown().await;
}

#[tokio::test]
async fn sync_requests_are_answered_and_unreadable_ones_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = farm_node(dir.path()).await;
    let mut swarm = raw_peer(&a, atmosphere::wire::SYNC_PROTOCOL).await;
    let valid = atmosphere::wire::sync::SyncRequest {
        version: atmosphere::wire::sync::VERSION,
    }
    .encode()
    .expect("encode");
    let mut answers = Vec::new();
    for bytes in [valid, b"\x09garbage".to_vec()] {
        answers.push(exchange(&mut swarm, a.peer_id, bytes).await);
    }
    let table =
        atmosphere::wire::sync::SyncResponse::decode(answers[0].as_ref().expect("answered"))
            .expect("a sync response");
    assert_eq!(table.updates.len(), 1, "the node's own update");
    assert!(
        answers[1].as_ref().is_err() || answers[1].as_ref().is_ok_and(Vec::is_empty),
        "no table for an unreadable request: {:?}",
        answers[1]
    );
    eventually("both counted", || async {
        metric(&a, "atmosphere_sync_total{result=\"answered\"}").await >= 1
            && metric(&a, "atmosphere_sync_total{result=\"invalid_request\"}").await == 1
    })
    .await;
    a.shutdown().await;
}

/// A node with the llama expert on a backend that answers and the coder on
/// one that stalls for 60 s; `mesh` changes its `[mesh]`.
async fn stalled_coder(
    mesh: impl FnOnce(&mut atmosphere::config::MeshConfig),
) -> (Node, tempfile::TempDir) {
    let mut slow = Echo::new("slow-backend", Flavour::Openai, &["qwen2.5-coder"]);
    slow.fault = atmosphere::echo::Fault::Stall;
    slow.stall = Duration::from_secs(60);
    let slow = spawn_echo(slow).await;
    let fast = spawn_echo(Echo::new("farm-backend", Flavour::Openai, &["llama3.2"])).await;
    let caps = farm_capabilities("fast");
    let mut coder = caps[1].clone();
    coder.backend = vec!["slow".into()];
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = mesh_config(
        vec![
            backend("fast", BackendKind::Openai, fast, false),
            backend("slow", BackendKind::Openai, slow, false),
        ],
        vec![caps[0].clone(), coder],
        dir.path(),
        Vec::new(),
    );
    mesh(config.mesh.as_mut().expect("mesh"));
    (start(config).await, dir)
}

/// One peer flooding a node with intents on a stalled backend holds at most
/// its quota (`mesh.peer_requests`): the rest are refused at once with
/// `peer_over_quota`, and another peer's intent is served meanwhile.
#[tokio::test]
async fn a_flooding_peer_gets_its_quota_and_another_peer_is_served() {
    let (node, _dir) = stalled_coder(|m| m.peer_requests = 4).await;
    let chat = json!({"model": "x", "messages": [{"role": "user", "content": "hi"}]});

    // The flood: 20 intents at once for the stalled capability.
    let mut flooder = raw_peer(&node, atmosphere::wire::INTENT_PROTOCOL).await;
    for _ in 0..20 {
        flooder.behaviour_mut().send_request(
            &node.peer_id,
            request("farm/coder", Operation::Chat, chat.clone()),
        );
    }
    let mut refused = 0;
    tokio::time::timeout(WAIT, async {
        while refused < 16 {
            if let SwarmEvent::Behaviour(request_response::Event::Message {
                message: request_response::Message::Response { response, .. },
                ..
            }) = flooder.select_next_some().await
            {
                let answer = intent::IntentResponse::decode(&response).expect("a response");
                assert_eq!(
                    answer.status, 429,
                    "only refusals come back before the stall ends"
                );
                let v: Value = serde_json::from_slice(&answer.body).expect("json");
                assert_eq!(v["error"]["code"], "peer_over_quota");
                refused += 1;
            }
        }
    })
    .await
    .expect("16 of 20 refused at once");
    let counted = format!(
        "atmosphere_peer_refusals_total{{peer=\"{}\",reason=\"peer_over_quota\"}}",
        flooder.local_peer_id()
    );
    assert_eq!(
        metric(&node, &counted).await,
        16,
        "refusals counted by peer"
    );

    // Another peer, while the flooder's four are still running.
    let mut honest = raw_peer(&node, atmosphere::wire::INTENT_PROTOCOL).await;
    let node_id = node.peer_id;
    let served = tokio::spawn(async move {
        // Keep the flooder's connection alive meanwhile.
        let _flooder = flooder;
        exchange(
            &mut honest,
            node_id,
            request("farm/llama-expert", Operation::Chat, chat),
        )
        .await
    });
    let answer = intent::IntentResponse::decode(&served.await.expect("task").expect("answered"))
        .expect("a response");
    assert_eq!(answer.status, 200);
}

/// Fresh keys flooding a node with intents on a stalled backend hold at most
/// the strangers' share of its places (48 of 64): a trusted peer's intent is
/// served meanwhile, not queued behind theirs.
#[tokio::test]
async fn strangers_together_leave_trusted_peers_their_share() {
    let friend = key(77);
    let trusted = vec![friend.public().to_peer_id().to_base58()];
    let (node, _dir) = stalled_coder(|m| m.trusted = trusted).await;
    let chat = json!({"model": "x", "messages": [{"role": "user", "content": "hi"}]});

    // Six fresh keys, 16 stalled intents each (their whole quota): 96, more
    // than the node serves at once.
    let mut flooders = Vec::new();
    for _ in 0..6 {
        let mut flooder = raw_peer(&node, atmosphere::wire::INTENT_PROTOCOL).await;
        for _ in 0..16 {
            // Deadlines as long as the stall: nothing frees a place early.
            let long = IntentRequest {
                deadline_ms: 60_000,
                ..IntentRequest::decode(&request("farm/coder", Operation::Chat, chat.clone()))
                    .expect("decodes")
            };
            flooder
                .behaviour_mut()
                .send_request(&node.peer_id, long.encode().expect("encodes"));
        }
        flooders.push(tokio::spawn(async move {
            loop {
                flooder.select_next_some().await;
            }
        }));
    }
    eventually(
        "every intent of the flood is running or refused",
        || async {
            metric(&node, "atmosphere_budget_held{budget=\"intent_serving\"}").await
                + metric(&node, "atmosphere_forwards_total{result=\"overloaded\"}").await
                == 96
        },
    )
    .await;

    let mut trusted = raw_peer_keyed(friend, &node, atmosphere::wire::INTENT_PROTOCOL).await;
    let answer = exchange(
        &mut trusted,
        node.peer_id,
        request("farm/llama-expert", Operation::Chat, chat),
    )
    .await
    .expect("answered");
    let answer = intent::IntentResponse::decode(&answer).expect("a response");
    assert_eq!(answer.status, 200);
    assert_eq!(
        metric(&node, "atmosphere_budget_held{budget=\"intent_serving\"}").await,
        48,
        "strangers hold three quarters"
    );
    assert_eq!(
        metric(&node, "atmosphere_forwards_total{result=\"overloaded\"}").await,
        48,
        "the rest of their intents were refused at once"
    );
    for f in flooders {
        f.abort();
    }
}

/// A peer with as many streamed requests running as it may gets the next one
/// refused with a framed 429 `peer_over_quota` (not a reset), and counted.
#[tokio::test]
async fn a_stream_over_the_peers_quota_is_refused_with_a_reason() {
    let mut slow = Echo::new("slow-backend", Flavour::Openai, &["qwen2.5-coder"]);
    slow.fault = atmosphere::echo::Fault::Stall;
    slow.stall = Duration::from_secs(60);
    let slow = spawn_echo(slow).await;
    let mut coder = farm_capabilities("slow")[1].clone();
    coder.backend = vec!["slow".into()];
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(mesh_config(
        vec![backend("slow", BackendKind::Openai, slow, false)],
        vec![coder],
        dir.path(),
        Vec::new(),
    ))
    .await;
    let addr = mesh_addr(&node).await;
    let mut control = bare_peer(&addr).await;
    let chat = json!({"model": "x", "messages": [{"role": "user", "content": "hi"}]});
    // Eight streams whose answers stall: the peer's whole share.
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut io = control
            .open_stream(node.peer_id, protocol())
            .await
            .expect("stream opens");
        frames::write(
            &mut io,
            &request("farm/coder", Operation::Chat, chat.clone()),
        )
        .await
        .expect("request written");
        held.push(io);
    }
    eventually("the eight are running", || async {
        metric(&node, "atmosphere_forwards_total{result=\"served_stream\"}").await >= 8
    })
    .await;
    let (frames, clean) = ask(
        &mut control,
        node.peer_id,
        &request("farm/coder", Operation::Chat, chat),
    )
    .await;
    assert!(clean, "the refusal ends the stream cleanly");
    assert!(
        matches!(frames.first(), Some(StreamFrame::Head { status: 429 })),
        "{frames:?}"
    );
    assert_eq!(error_code(&frames).as_deref(), Some("peer_over_quota"));
    assert_eq!(
        metric(
            &node,
            "atmosphere_forwards_total{result=\"stream_refused\"}"
        )
        .await,
        1
    );
    drop(held);
}

async fn read_frame(io: &mut libp2p::Stream) -> std::io::Result<Option<StreamFrame>> {
    Ok(frames::read(io, intent::MAX_FRAME_BYTES)
        .await?
        .map(|b| StreamFrame::decode(&b).expect("a valid frame")))
}

/// Sends an upload head and, if the node asks for it, `parts`; the frames
/// after the go-ahead, and whether the stream then ended cleanly.
async fn upload(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    capability: &str,
    operation: Operation,
    body_len: u64,
    parts: &[Vec<u8>],
) -> (Vec<StreamFrame>, bool) {
    let mut io = control
        .open_stream(peer, StreamProtocol::new(atmosphere::wire::UPLOAD_PROTOCOL))
        .await
        .expect("stream opens");
    let head = intent::UploadRequest {
        version: intent::VERSION,
        capability: capability.into(),
        operation,
        stream: false,
        body_len,
        deadline_ms: 10_000,
        hops: 0,
    };
    frames::write(&mut io, &head.encode().expect("encode"))
        .await
        .expect("head written");
    let first = tokio::time::timeout(WAIT, read_frame(&mut io))
        .await
        .expect("the head is answered in time");
    let mut got = Vec::new();
    match first {
        Ok(Some(StreamFrame::Head {
            status: intent::CONTINUE,
        })) => {
            for part in parts {
                if frames::write(&mut io, part).await.is_err() {
                    break;
                }
            }
        }
        Ok(Some(frame)) => got.push(frame),
        Ok(None) | Err(_) => return (got, false),
    }
    tokio::time::timeout(WAIT, async {
        loop {
            match read_frame(&mut io).await {
                Ok(Some(frame)) => got.push(frame),
                Ok(None) => return (got, true),
                Err(_) => return (got, false),
            }
        }
    })
    .await
    .expect("the answer ends in time")
}

#[tokio::test]
async fn uploads_are_refused_before_their_body_and_broken_ones_run_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = farm_node(dir.path()).await;
    let peer = a.peer_id;
    let mut control = bare_peer(&mesh_addr(&a).await).await;

    // Refused on the head alone: nothing of the body is asked for.
    let chat_op = Operation::Chat;
    let (answer, clean) = upload(&mut control, peer, "farm/nobody", chat_op, 2 << 20, &[]).await;
    assert_eq!(error_code(&answer).as_deref(), Some("model_not_found"));
    assert!(clean);
    let (answer, _) = upload(
        &mut control,
        peer,
        "farm/llama-expert",
        chat_op,
        64 << 20,
        &[],
    )
    .await;
    assert_eq!(error_code(&answer).as_deref(), Some("request_too_large"));
    // A tool call's head names a tool the node has: a chat model is none.
    let (answer, clean) = upload(
        &mut control,
        peer,
        "farm/llama-expert",
        Operation::Tool,
        2 << 20,
        &[],
    )
    .await;
    assert_eq!(error_code(&answer).as_deref(), Some("tool_not_found"));
    assert!(clean);

    // A body of 1.5 MB of words in three parts: run, answered whole in events.
    let chat = serde_json::to_vec(&json!({"model": "auto", "messages": [
        {"role": "user", "content": "hay ".repeat(400_000)}]}))
    .expect("json");
    let parts: Vec<Vec<u8>> = chat.chunks(600_000).map(<[u8]>::to_vec).collect();
    let (answer, clean) = upload(
        &mut control,
        peer,
        "farm/llama-expert",
        chat_op,
        chat.len() as u64,
        &parts,
    )
    .await;
    assert!(
        matches!(answer.first(), Some(StreamFrame::Head { status: 200 })),
        "{:?}",
        answer.first()
    );
    let body: Vec<u8> = answer
        .iter()
        .filter_map(|f| match f {
            StreamFrame::Event(b) => Some(b.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    let body: Value = serde_json::from_slice(&body).expect("the events make one JSON body");
    assert_eq!(body["object"], "chat.completion", "{body}");
    assert_eq!(answer.last(), Some(&StreamFrame::End));
    assert!(clean);

    // More than it announced: the stream is reset, nothing runs.
    let (answer, _) = upload(
        &mut control,
        peer,
        "farm/llama-expert",
        chat_op,
        (chat.len() - 1000) as u64,
        &parts,
    )
    .await;
    assert!(answer.is_empty(), "no answer to a broken body: {answer:?}");
    assert_eq!(
        metric(&a, "atmosphere_forwards_total{result=\"upload_broken\"}").await,
        1
    );
    a.shutdown().await;
}
