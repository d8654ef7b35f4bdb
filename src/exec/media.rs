//! The images and audio a chat carries, checked before it goes anywhere: a
//! `data:` image must be an image (PNG, JPEG, GIF or WebP, by its bytes)
//! within the size limit; audio must be WAV or MP3 and be what it says.
//! Every link a content part carries (any field whose name ends in `url`:
//! `image_url`, `video_url`, `audio_url`, `file.url`, `input_image`'s
//! `image_url`...) must be `http(s)` and, unless the operator allows it, not
//! reach a private, loopback or link-local address (the model's server
//! would fetch it: a client must not make it reach into the operator's
//! network). An address is judged by any IPv4 address it carries (mapped,
//! compatible, NAT64, 6to4, Teredo); a name by every address it resolves to
//! here, and refused when it resolves to none. Run for the node's own
//! clients and for peers' requests alike.
//!
//! Not closed here: a name that resolves to a public address for this node
//! and to a private one for the model's server (DNS rebinding, or a split
//! resolver) is fetched by that server all the same.

use serde_json::{Map, Value};

use super::ApiError;
use super::links::{Named, invalid_image, judge_link, links};
use crate::lean::Spans;

/// What a chat's media may be (`[http]` in the config).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest image or audio clip, decoded.
    pub max_bytes: usize,
    /// Whether image links may name private, loopback or link-local hosts.
    pub private_links: bool,
}

/// Image formats taken, by their first bytes.
const IMAGES: &[(&str, &[u8])] = &[
    ("png", b"\x89PNG\r\n\x1a\n"),
    ("jpeg", b"\xff\xd8\xff"),
    ("gif", b"GIF8"),
    ("webp", b"RIFF"),
];

/// Checks every image and audio part of `messages` and every link any part
/// carries (`spans`: where the long strings are, when the body was parsed
/// by [`crate::lean`]).
pub async fn check(
    body: &Map<String, Value>,
    spans: &Spans,
    limits: Limits,
) -> Result<(), ApiError> {
    for link in check_parts(body, spans, limits)? {
        link.resolve().await?;
    }
    Ok(())
}

/// The checks that need no lookup; the links whose names are to be
/// resolved.
fn check_parts(
    body: &Map<String, Value>,
    spans: &Spans,
    limits: Limits,
) -> Result<Vec<Named>, ApiError> {
    let Some(Value::Array(messages)) = body.get("messages") else {
        return Ok(Vec::new());
    };
    let mut named = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let Some(Value::Array(parts)) = m.get("content") else {
            continue;
        };
        for (j, part) in parts.iter().enumerate() {
            let at = format!("messages[{i}].content[{j}]");
            match part.get("type").and_then(Value::as_str) {
                Some("image_url") => image(part, spans, &at, limits)?,
                Some("input_audio") => audio(part, spans, &at, limits)?,
                _ => {}
            }
            if limits.private_links {
                continue;
            }
            let mut found = Vec::new();
            links(part, &at, 0, &mut found);
            for (param, url) in found {
                if let Some(n) = judge_link(&param, spans.get(url))? {
                    named.push(n);
                }
            }
        }
    }
    Ok(named)
}

fn image(part: &Value, spans: &Spans, at: &str, limits: Limits) -> Result<(), ApiError> {
    let param = format!("{at}.image_url.url");
    let Some(url) = part.pointer("/image_url/url").and_then(Value::as_str) else {
        return Err(ApiError::invalid(
            &param,
            "An image_url part needs image_url.url: a link or a data: URL.",
        ));
    };
    let url = spans.get(url);
    if let Some(data) = url.strip_prefix("data:") {
        let Some((mime, encoded)) = data.split_once(";base64,") else {
            return Err(invalid_image(
                &param,
                "a data: URL of an image must be base64",
            ));
        };
        if !mime.starts_with("image/") {
            return Err(invalid_image(&param, &format!("its type is {mime:?}")));
        }
        let bytes = decode(encoded, &param, limits)?;
        if !IMAGES.iter().any(|(_, magic)| bytes.starts_with(magic))
            || (bytes.starts_with(b"RIFF") && bytes.get(8..12) != Some(b"WEBP"))
        {
            return Err(invalid_image(
                &param,
                "its bytes are not PNG, JPEG, GIF or WebP",
            ));
        }
        return Ok(());
    }
    // A link: judged with every other link of the part.
    Ok(())
}

fn audio(part: &Value, spans: &Spans, at: &str, limits: Limits) -> Result<(), ApiError> {
    let param = format!("{at}.input_audio");
    let format = part.pointer("/input_audio/format").and_then(Value::as_str);
    let Some(encoded) = part.pointer("/input_audio/data").and_then(Value::as_str) else {
        return Err(ApiError::invalid(
            &format!("{param}.data"),
            "An input_audio part needs input_audio.data (base64) and input_audio.format.",
        ));
    };
    let encoded = spans.get(encoded);
    let bytes = decode(encoded, &format!("{param}.data"), limits)?;
    let fits = match format {
        Some("wav") => bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(b"WAVE"),
        Some("mp3") => {
            bytes.starts_with(b"ID3") || (bytes.len() > 1 && bytes[0] == 0xff && bytes[1] >= 0xe0)
        }
        other => {
            return Err(ApiError::invalid(
                &format!("{param}.format"),
                format!("Audio format {other:?} is not taken; send wav or mp3."),
            )
            .code("unsupported_audio_format"));
        }
    };
    if !fits {
        return Err(ApiError::invalid(
            &format!("{param}.data"),
            format!(
                "The audio is not {}: its bytes do not begin as that format's do.",
                format.unwrap_or("")
            ),
        )
        .code("invalid_audio"));
    }
    Ok(())
}

/// The audio file formats a transcription takes, by their first bytes:
/// its name, or none.
pub fn audio_file_format(head: &[u8]) -> Option<&'static str> {
    let at = |i: usize, magic: &[u8]| head.get(i..i + magic.len()) == Some(magic);
    if at(0, b"RIFF") && at(8, b"WAVE") {
        Some("wav")
    } else if at(0, b"ID3") || (head.len() > 1 && head[0] == 0xff && head[1] >= 0xe0) {
        Some("mp3")
    } else if at(0, b"fLaC") {
        Some("flac")
    } else if at(0, b"OggS") {
        Some("ogg")
    } else if at(0, &[0x1a, 0x45, 0xdf, 0xa3]) {
        Some("webm")
    } else if at(4, b"ftyp") {
        Some("mp4")
    } else {
        None
    }
}

/// Checks a transcription's file, `body.file` as the request core carries
/// it (`{"filename", "content_type", "data"}`, data in base64): within the
/// size limit, and audio of a format transcription takes by its bytes.
/// Errors name `param`, where the client put the file.
pub fn check_transcription(
    body: &Map<String, Value>,
    param: &str,
    limits: Limits,
) -> Result<(), ApiError> {
    let data = body
        .get("file")
        .and_then(|f| f.get("data"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ApiError::invalid(
                "file",
                "A transcription needs the audio as the form's `file` field.",
            )
        })?;
    audio_file(&decode(data, param, limits)?, param)
}

/// Checks an audio file as a client uploaded it (raw bytes): within the
/// size limit, and audio of a format transcription takes.
pub fn check_audio_file(bytes: &[u8], limits: Limits) -> Result<(), ApiError> {
    if bytes.len() > limits.max_bytes {
        return Err(too_large("file", limits));
    }
    audio_file(&bytes[..bytes.len().min(HEAD)], "file")
}

/// Judges a file by its first bytes.
fn audio_file(head: &[u8], param: &str) -> Result<(), ApiError> {
    if head.is_empty() {
        return Err(ApiError::invalid(param, "The file is empty.").code("invalid_audio"));
    }
    if audio_file_format(head).is_none() {
        return Err(ApiError::invalid(
            param,
            "The file is not audio in a format transcription takes (flac, mp3, mp4/m4a, ogg, wav, webm): its bytes begin as none of them do.",
        )
        .code("unsupported_audio_format"));
    }
    Ok(())
}

fn too_large(param: &str, limits: Limits) -> ApiError {
    ApiError::new(
        ::http::StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request_error",
        format!(
            "The media at {param} is larger than this node takes ({} bytes).",
            limits.max_bytes
        ),
    )
    .param(param)
    .code("media_too_large")
}

/// How many decoded bytes a format check looks at.
const HEAD: usize = 16;

/// The first [`HEAD`] bytes of base64 within the size limit (judged before
/// decoding). The rest is decoded too, to check it is base64, but into
/// nothing: an image is not copied to be checked.
fn decode(encoded: &str, param: &str, limits: Limits) -> Result<Vec<u8>, ApiError> {
    use std::io::Read;
    if encoded.len() / 4 * 3 > limits.max_bytes {
        return Err(too_large(param, limits));
    }
    let bad = |e: std::io::Error| {
        ApiError::invalid(param, format!("The media is not valid base64: {e}."))
            .code("invalid_base64")
    };
    let engine = base64::engine::general_purpose::STANDARD;
    let mut reader = base64::read::DecoderReader::new(encoded.trim().as_bytes(), &engine);
    let mut head = Vec::with_capacity(HEAD);
    (&mut reader)
        .take(HEAD as u64)
        .read_to_end(&mut head)
        .map_err(bad)?;
    std::io::copy(&mut reader, &mut std::io::sink()).map_err(bad)?;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const LIMITS: Limits = Limits {
        max_bytes: 1024,
        private_links: false,
    };

    fn with_image(url: &str) -> Map<String, Value> {
        let body = json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": url}}
        ]}]});
        body.as_object().cloned().expect("object")
    }

    fn b64(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn images_are_images_within_the_limit() {
        let check = |body: &Map<String, Value>, spans: &Spans, limits: Limits| {
            check_parts(body, spans, limits).map(|_| ())
        };
        let png = format!("data:image/png;base64,{}", b64(b"\x89PNG\r\n\x1a\n0000"));
        assert!(check(&with_image(&png), &Spans::default(), LIMITS).is_ok());
        let webp = format!("data:image/webp;base64,{}", b64(b"RIFF\0\0\0\0WEBPVP8 "));
        assert!(check(&with_image(&webp), &Spans::default(), LIMITS).is_ok());
        let text = format!("data:image/png;base64,{}", b64(b"just some text"));
        let e = check(&with_image(&text), &Spans::default(), LIMITS).expect_err("not an image");
        assert_eq!(e.code, Some("invalid_image"));
        assert_eq!(
            e.param.as_deref(),
            Some("messages[0].content[1].image_url.url")
        );
        let wav_as_image = format!("data:image/webp;base64,{}", b64(b"RIFF\0\0\0\0WAVEfmt "));
        assert!(check(&with_image(&wav_as_image), &Spans::default(), LIMITS).is_err());
        let pdf = format!("data:application/pdf;base64,{}", b64(b"%PDF"));
        assert!(check(&with_image(&pdf), &Spans::default(), LIMITS).is_err());
        let big = format!("data:image/png;base64,{}", b64(&[0x89; 2048]));
        let e = check(&with_image(&big), &Spans::default(), LIMITS).expect_err("too large");
        assert_eq!(e.code, Some("media_too_large"));
        let e = check(
            &with_image("data:image/png;base64,@@@@"),
            &Spans::default(),
            LIMITS,
        )
        .expect_err("bad");
        assert_eq!(e.code, Some("invalid_base64"));
        // Past the bytes the format is judged by, too.
        let tail = format!(
            "{}@@@@",
            b64(&[b"\x89PNG\r\n\x1a\n".as_slice(), &[0; 40]].concat())
        );
        let e = check(
            &with_image(&format!("data:image/png;base64,{tail}")),
            &Spans::default(),
            LIMITS,
        )
        .expect_err("bad tail");
        assert_eq!(e.code, Some("invalid_base64"));
    }

    fn with_part(part: Value) -> Map<String, Value> {
        let body = json!({"messages": [{"role": "user", "content": [part]}]});
        body.as_object().cloned().expect("object")
    }

    #[tokio::test]
    async fn links_into_private_networks_are_refused_unless_allowed() {
        for ok in ["http://203.0.113.9/cam.png", "https://[2001:db8::1]/x.png"] {
            assert!(
                check(&with_image(ok), &Spans::default(), LIMITS)
                    .await
                    .is_ok(),
                "{ok}"
            );
        }
        // A public-looking name is looked up before it is let through.
        let named = check_parts(
            &with_image("https://example.org/llama.jpg"),
            &Spans::default(),
            LIMITS,
        )
        .expect("nothing refused without a lookup");
        assert_eq!(named.len(), 1);
        assert_eq!(
            (named[0].host.as_str(), named[0].port),
            ("example.org", 443)
        );
        for private in [
            "http://127.0.0.1:8000/v1/models",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://localhost/x.png",
            "http://localhost./x.png",
            "http://10.1.2.3/x.png",
            "http://192.168.1.20/snapshot.jpg",
            "http://169.254.169.254/latest/meta-data/",
            "http://100.64.0.1/x.png",
            "http://[::1]/x.png",
            "http://[fd00::5]/x.png",
            "http://[::ffff:10.0.0.1]/x.png",
            "http://[::127.0.0.1]/x.png",
            "http://[64:ff9b::7f00:1]/x.png",
            "http://[2002:7f00:1::]/x.png",
            "http://[2002:c0a8:0114::1]/x.png",
            "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/x.png",
            "http://camera.local/x.png",
            "http://nas/x.png",
            "http://0.0.0.0/x.png",
            // Names that resolve to loopback, or (offline) to nothing.
            "http://localtest.me/x.png",
            "http://127.0.0.1.nip.io/x.png",
        ] {
            let e = check(&with_image(private), &Spans::default(), LIMITS)
                .await
                .expect_err(private);
            assert_eq!(e.code, Some("image_link_not_allowed"), "{private}");
            let open = Limits {
                private_links: true,
                ..LIMITS
            };
            assert!(
                check(&with_image(private), &Spans::default(), open)
                    .await
                    .is_ok(),
                "{private}"
            );
        }
        for bad in ["file:///etc/passwd", "ftp://example.org/x.png", "not a url"] {
            let e = check(&with_image(bad), &Spans::default(), LIMITS)
                .await
                .expect_err(bad);
            assert_eq!(e.code, Some("invalid_image"), "{bad}");
        }
    }

    #[tokio::test]
    async fn every_part_that_carries_a_link_is_judged_like_an_image() {
        let inside = "http://127.0.0.1:9000/x";
        for (part, param) in [
            (
                json!({"type": "video_url", "video_url": {"url": inside}}),
                "video_url.url",
            ),
            (
                json!({"type": "audio_url", "audio_url": {"url": inside}}),
                "audio_url.url",
            ),
            (json!({"type": "file", "file": {"url": inside}}), "file.url"),
            (
                json!({"type": "input_image", "image_url": inside}),
                "image_url",
            ),
            (
                json!({"type": "input_file", "file_url": inside}),
                "file_url",
            ),
            (
                json!({"type": "something_new", "x": {"y": {"source_url": inside}}}),
                "x.y.source_url",
            ),
        ] {
            let e = check(&with_part(part.clone()), &Spans::default(), LIMITS)
                .await
                .expect_err(&part.to_string());
            assert_eq!(e.code, Some("media_link_not_allowed"), "{part}");
            assert_eq!(
                e.param.as_deref(),
                Some(format!("messages[0].content[0].{param}").as_str())
            );
        }
        let e = check(
            &with_part(json!({"type": "video_url", "video_url": {"url": "gopher://x.org/1"}})),
            &Spans::default(),
            LIMITS,
        )
        .await
        .expect_err("gopher");
        assert_eq!(e.code, Some("invalid_link"));
        let public =
            json!({"type": "video_url", "video_url": {"url": "https://203.0.113.7/v.mp4"}});
        assert!(
            check(&with_part(public), &Spans::default(), LIMITS)
                .await
                .is_ok()
        );
    }

    #[test]
    fn audio_is_wav_or_mp3_and_says_so() {
        let clip = |data: &[u8], format: &str| {
            let body = json!({"messages": [{"role": "user", "content": [
                {"type": "input_audio", "input_audio": {"data": b64(data), "format": format}}
            ]}]});
            check_parts(body.as_object().expect("object"), &Spans::default(), LIMITS).map(|_| ())
        };
        assert!(clip(b"RIFF\0\0\0\0WAVEfmt ", "wav").is_ok());
        assert!(clip(b"ID3\x04\0\0", "mp3").is_ok());
        assert_eq!(
            clip(b"ID3\x04\0\0", "wav").expect_err("not wav").code,
            Some("invalid_audio")
        );
        assert_eq!(
            clip(b"OggS", "ogg").expect_err("ogg").code,
            Some("unsupported_audio_format")
        );
    }
}
