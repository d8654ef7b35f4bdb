//! Golden vectors: every wire message type, built deterministically, must
//! encode to the bytes in `protocols/vectors/<name>.hex` and decode from them
//! to the same value. `ATMOSPHERE_BLESS=1 cargo test wire::golden` rewrites
//! the files (only ever for a new protocol version).

use std::path::PathBuf;

use libp2p::identity::{Keypair, ed25519};

use super::Message;
use super::intent::{IntentRequest, IntentResponse, Operation, StreamFrame, UploadRequest};
use super::member::{self, Certificate, Grant, Hello, Revocation, Revoke, Signed};
use super::route::{
    CapabilityRecord, RouteBody, RouteUpdate, SignedRouteUpdate, VERSION, WireVector,
};
use super::sync::{SyncRequest, SyncResponse};
use super::tool::{ToolRequest, ToolResponse};

/// A fixed key: ed25519 signatures are deterministic, so signed bytes are too.
pub fn test_keypair(seed: u8) -> Keypair {
    let secret = ed25519::SecretKey::try_from_bytes([seed; 32]).expect("32 bytes");
    ed25519::Keypair::from(secret).into()
}

pub fn sample_update(seq: u64) -> RouteUpdate {
    RouteUpdate {
        version: VERSION,
        seq,
        ttl_secs: 30,
        node_name: "rob-mac".into(),
        addrs: vec!["/ip4/192.0.2.7/tcp/11450".into()],
        dim: 4,
        body: RouteBody::Full(vec![
            CapabilityRecord {
                id: "farm/llama-expert".into(),
                kind: "llm/chat".into(),
                domain: "camelids".into(),
                topics: vec!["llamas".into(), "alpacas".into()],
                description: "Expert on raising llamas and alpacas.".into(),
                vector: WireVector::quantize(&[0.5, -0.5, 0.5, 0.5]),
                prototypes: vec![WireVector::quantize(&[0.0, 0.6, 0.8, 0.0])],
                available: true,
                in_flight: 3,
                reference: Some(0.625),
                examples: vec![
                    "How much hay does a llama eat?".into(),
                    "Can alpacas live alone?".into(),
                ],
                input_schema: None,
                inputs: vec!["text".into(), "image".into()],
            },
            CapabilityRecord {
                id: "tool/camera-front".into(),
                kind: "tool/camera".into(),
                domain: "barn".into(),
                topics: Vec::new(),
                description: "Takes a photo with the barn's front camera.".into(),
                vector: WireVector::quantize(&[0.0, 0.0, 0.6, 0.8]),
                prototypes: Vec::new(),
                available: true,
                in_flight: 0,
                reference: None,
                examples: vec!["Take a photo of the paddock".into()],
                input_schema: Some(
                    r#"{"type":"object","properties":{"zoom":{"type":"integer"}}}"#.into(),
                ),
                inputs: Vec::new(),
            },
        ]),
        certificate: Some(sample_certificate()),
    }
}

/// [`sample_update`] as an earlier `version` said it (the golden bytes of
/// that version), read as the current one: no inputs; before version 5
/// its first capability only; before version 4 no certificate.
fn legacy_sample(version: u8, seq: u64) -> RouteUpdate {
    let mut update = sample_update(seq);
    if let RouteBody::Full(records) = &mut update.body {
        if version < 5 {
            records.truncate(1);
        }
        for r in records {
            r.inputs.clear();
        }
    }
    if version < 4 {
        update.certificate = None;
    }
    update
}

/// A fixed mesh key (ed25519 signatures are deterministic).
pub fn test_mesh_key(seed: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
}

/// The certificate mesh key 9 gives node key 7, with a role and an expiry.
pub fn sample_certificate() -> Certificate {
    let key = test_mesh_key(9);
    let grant = Grant {
        version: member::VERSION,
        mesh: key.verifying_key().to_bytes(),
        peer: test_keypair(7).public().to_peer_id().to_bytes(),
        roles: vec!["gpu".into()],
        issued_ms: 1_700_000_000_000,
        expires_ms: Some(1_731_536_000_000),
    };
    Signed::certify(&grant, &key).expect("sign")
}

pub fn sample_revocation() -> Revocation {
    let key = test_mesh_key(9);
    let revoke = Revoke {
        version: member::VERSION,
        mesh: key.verifying_key().to_bytes(),
        peer: test_keypair(7).public().to_peer_id().to_bytes(),
        before_ms: 1_700_000_600_000,
    };
    Signed::revoke(&revoke, &key).expect("sign")
}

#[test]
fn membership_messages() {
    let encode = |v: &Signed| v.encode().expect("encode");
    let decode = |b: &[u8]| Signed::decode(b).expect("decode");
    check("member-certificate", &sample_certificate(), encode, decode);
    check("member-revocation", &sample_revocation(), encode, decode);
    check(
        "member-hello",
        &Hello {
            version: member::VERSION,
            certificate: Some(sample_certificate()),
            revocations: vec![sample_revocation()],
        },
        |v| v.encode().expect("encode"),
        |b| Hello::decode(b).expect("decode"),
    );
    let mesh = test_mesh_key(9).verifying_key();
    let member = sample_certificate().member(&mesh).expect("valid");
    assert_eq!(member.peer, test_keypair(7).public().to_peer_id());
    let revoked = sample_revocation().revoked(&mesh).expect("valid");
    assert!(revoked.voids(&member));
}

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("protocols/vectors")
}

fn check<T: PartialEq + std::fmt::Debug>(
    name: &str,
    value: &T,
    encode: impl Fn(&T) -> Vec<u8>,
    decode: impl Fn(&[u8]) -> T,
) {
    let path = vectors_dir().join(format!("{name}.hex"));
    let bytes = encode(value);
    if std::env::var_os("ATMOSPHERE_BLESS").is_some() {
        std::fs::create_dir_all(vectors_dir()).expect("vectors dir");
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(&path, hex + "\n").expect("write vector");
        return;
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let text = text.trim();
    let golden: Vec<u8> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect();
    assert_eq!(&decode(&golden), value, "{name}: decoding the golden bytes");
    assert_eq!(
        bytes, golden,
        "{name}: encoding differs from the golden bytes"
    );
}

#[test]
fn route_update_and_signed_envelope() {
    check(
        "route-update",
        &sample_update(1_700_000_000_000),
        |v| super::codec::encode(v, super::route::MAX_SIGNED_BYTES).expect("encode"),
        |b| super::codec::decode(b, super::route::MAX_SIGNED_BYTES).expect("decode"),
    );
    let signed =
        SignedRouteUpdate::sign(&sample_update(1_700_000_000_000), &test_keypair(7)).expect("sign");
    check(
        "signed-route-update",
        &signed,
        |v| v.encode().expect("encode"),
        |b| SignedRouteUpdate::decode(b).expect("decode"),
    );
    let withdraw = RouteUpdate {
        body: RouteBody::Withdraw,
        ..sample_update(1_700_000_000_001)
    };
    let signed = SignedRouteUpdate::sign(&withdraw, &test_keypair(7)).expect("sign");
    check(
        "signed-route-withdraw",
        &signed,
        |v| v.encode().expect("encode"),
        |b| SignedRouteUpdate::decode(b).expect("decode"),
    );
}

/// What peers of versions 3 to 5 send (golden bytes from before the next
/// version) is still accepted: read without inputs (their kind's are
/// meant), before version 5 without schemas, before 4 without a certificate.
#[test]
fn version_3_to_5_updates_are_still_accepted() {
    for version in [3, 4, 5] {
        let path = vectors_dir().join(format!("signed-route-update-v{version}.hex"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let text = text.trim();
        let bytes: Vec<u8> = (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
            .collect();
        let signed = SignedRouteUpdate::decode(&bytes).expect("decodes");
        assert_eq!(signed.payload.first(), Some(&version));
        let verified = signed.verify(4).expect("verifies");
        assert_eq!(verified.update, legacy_sample(version, 1_700_000_000_000));
    }
}

#[test]
fn tool_messages() {
    check(
        "tool-request",
        &ToolRequest {
            version: 1,
            tool: "tool/camera-front".into(),
            arguments: br#"{"zoom":2}"#.to_vec(),
            deadline_ms: 30_000,
        },
        |v| v.encode().expect("e"),
        |b| ToolRequest::decode(b).expect("d"),
    );
    check(
        "tool-response",
        &ToolResponse {
            version: 1,
            status: 200,
            body: br#"{"content":[{"type":"text","text":"photo taken"}],"isError":false}"#.to_vec(),
        },
        |v| v.encode().expect("e"),
        |b| ToolResponse::decode(b).expect("d"),
    );
}

#[test]
fn sync_messages() {
    check(
        "sync-request",
        &SyncRequest { version: 1 },
        |v| v.encode().expect("e"),
        |b| SyncRequest::decode(b).expect("d"),
    );
    let update = SignedRouteUpdate::sign(&sample_update(5), &test_keypair(7)).expect("sign");
    let resp = SyncResponse {
        version: 1,
        updates: vec![update],
    };
    check(
        "sync-response",
        &resp,
        |v| v.encode().expect("e"),
        |b| SyncResponse::decode(b).expect("d"),
    );
}

#[test]
fn intent_messages() {
    let req = IntentRequest {
        version: 1,
        capability: "farm/llama-expert".into(),
        operation: Operation::Chat,
        body: br#"{"model":"auto","messages":[{"role":"user","content":"What do llamas eat?"}]}"#
            .to_vec(),
        deadline_ms: 30_000,
        hops: 1,
    };
    check(
        "intent-request",
        &req,
        |v| v.encode().expect("e"),
        |b| IntentRequest::decode(b).expect("d"),
    );
    // Operation 3: a transcription, its form as JSON with the file in base64.
    let transcription = IntentRequest {
        version: 1,
        capability: "speech/whisper".into(),
        operation: Operation::Transcription,
        body: br#"{"model":"auto","file":{"filename":"a.wav","content_type":"audio/wav","data":"UklGRiQAAABXQVZF"},"language":"en"}"#
            .to_vec(),
        deadline_ms: 30_000,
        hops: 3,
    };
    check(
        "intent-request-transcription",
        &transcription,
        |v| v.encode().expect("e"),
        |b| IntentRequest::decode(b).expect("d"),
    );
    // The head of an upload: its body (7 MB here) follows in parts.
    let upload = UploadRequest {
        version: 1,
        capability: "farm/animal-eye".into(),
        operation: Operation::Chat,
        stream: false,
        body_len: 7_000_000,
        deadline_ms: 300_000,
        hops: 3,
    };
    check(
        "upload-request",
        &upload,
        |v| v.encode().expect("e"),
        |b| UploadRequest::decode(b).expect("d"),
    );
    // Operation 4: a tool call's arguments (2 MB here), on uploads only.
    let tool_upload = UploadRequest {
        version: 1,
        capability: "tool/shout".into(),
        operation: Operation::Tool,
        stream: false,
        body_len: 2_000_000,
        deadline_ms: 30_000,
        hops: 0,
    };
    check(
        "upload-request-tool",
        &tool_upload,
        |v| v.encode().expect("e"),
        |b| UploadRequest::decode(b).expect("d"),
    );
    let resp = IntentResponse {
        version: 1,
        status: 200,
        body: br#"{"object":"chat.completion"}"#.to_vec(),
    };
    check(
        "intent-response",
        &resp,
        |v| v.encode().expect("e"),
        |b| IntentResponse::decode(b).expect("d"),
    );
    for (name, frame) in [
        ("stream-head", StreamFrame::Head { status: 200 }),
        ("stream-continue", StreamFrame::Head { status: 100 }),
        (
            "stream-event",
            StreamFrame::Event(br#"{"choices":[{"delta":{"content":"hay"}}]}"#.to_vec()),
        ),
        ("stream-end", StreamFrame::End),
        (
            "stream-failed",
            StreamFrame::Failed {
                code: "backend_stream_error".into(),
                message: "The backend's stream broke off.".into(),
            },
        ),
    ] {
        check(
            name,
            &frame,
            |v| v.encode().expect("e"),
            |b| StreamFrame::decode(b).expect("d"),
        );
    }
}

#[test]
fn signed_update_verifies_and_names_its_origin() {
    let key = test_keypair(7);
    let signed = SignedRouteUpdate::sign(&sample_update(9), &key).expect("sign");
    let verified = signed.verify(4).expect("verifies");
    assert_eq!(verified.origin, key.public().to_peer_id());
    assert_eq!(verified.update, sample_update(9));
}

#[test]
fn tampering_and_limits_are_rejected() {
    let signed = SignedRouteUpdate::sign(&sample_update(9), &test_keypair(7)).expect("sign");
    let mut tampered = signed.clone();
    let last = tampered.payload.len() - 1;
    tampered.payload[last] ^= 1;
    assert!(
        tampered
            .verify(4)
            .unwrap_err()
            .to_string()
            .contains("signature")
    );
    let mut other_key = signed.clone();
    other_key.public_key = SignedRouteUpdate::sign(&sample_update(9), &test_keypair(8))
        .expect("sign")
        .public_key;
    assert!(other_key.verify(4).is_err());
    assert!(signed.verify(384).unwrap_err().to_string().contains("384"));
    let mut bad = sample_update(9);
    bad.ttl_secs = 0;
    let s = SignedRouteUpdate::sign(&bad, &test_keypair(7)).expect("sign");
    assert!(s.verify(4).unwrap_err().to_string().contains("ttl"));
    let mut dup = sample_update(9);
    if let RouteBody::Full(caps) = &mut dup.body {
        caps.push(caps[0].clone());
    }
    let s = SignedRouteUpdate::sign(&dup, &test_keypair(7)).expect("sign");
    assert!(s.verify(4).unwrap_err().to_string().contains("twice"));
    for reference in [f32::NAN, 1.5, -2.0] {
        let mut bad = sample_update(9);
        if let RouteBody::Full(caps) = &mut bad.body {
            caps[0].reference = Some(reference);
        }
        let s = SignedRouteUpdate::sign(&bad, &test_keypair(7)).expect("sign");
        assert!(s.verify(4).unwrap_err().to_string().contains("reference"));
    }
    for examples in [vec!["x".repeat(257)], vec!["x".to_owned(); 17]] {
        let mut bad = sample_update(9);
        if let RouteBody::Full(caps) = &mut bad.body {
            caps[0].examples = examples;
        }
        let s = SignedRouteUpdate::sign(&bad, &test_keypair(7)).expect("sign");
        assert!(s.verify(4).unwrap_err().to_string().contains("example"));
    }
    let mut future = sample_update(9);
    future.version = VERSION + 1;
    let s = SignedRouteUpdate::sign(&future, &test_keypair(7)).expect("sign");
    assert!(s.verify(4).is_err());
    assert!(SignedRouteUpdate::decode(b"\x01garbage").is_err());
}

#[test]
fn quantised_vectors_keep_their_direction() {
    let mut v: Vec<f32> = (0..384)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
        .collect();
    crate::embed::normalize(&mut v);
    let back = WireVector::quantize(&v).dequantize();
    let cos: f32 = v.iter().zip(&back).map(|(a, b)| a * b).sum();
    assert!(cos > 0.9999, "{cos}");
    assert_eq!(WireVector::quantize(&[0.0; 3]).dequantize(), vec![0.0; 3]);
}

/// Provider keys are hashes, so only their bytes are pinned (one file, one key
/// per line: `<text> <hex>`), for implementers in other languages.
#[test]
fn kad_provider_keys() {
    let texts = ["kind:llm/chat", "kind:vision/classify", "domain:camelids"];
    let lines: Vec<String> = texts
        .iter()
        .map(|t| {
            let hex: String = super::kad::key_bytes(t)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            format!("{t} {hex}")
        })
        .collect();
    let path = vectors_dir().join("kad-provider-keys.txt");
    let want = lines.join("\n") + "\n";
    if std::env::var_os("ATMOSPHERE_BLESS").is_some() {
        std::fs::write(&path, want).expect("write vector");
        return;
    }
    let got = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(got, want, "provider keys differ from {}", path.display());
}
