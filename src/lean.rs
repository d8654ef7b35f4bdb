//! A chat body parsed without copying its media. A 5 MB image in a chat is
//! about 6.7 MB of base64 in the JSON; parsed as usual, the node would hold
//! it twice (the bytes the client sent and the string in the tree) and
//! again in every body it writes. Here long strings under `url` or `data`
//! (an `image_url`'s data URL, an `input_audio`'s base64) stay where they
//! are in the received bytes: the tree holds a short stand-in, [`Spans`]
//! says where each one is, and a body written for a backend is the tree's
//! JSON with those strings spliced back in as slices of the same bytes.
//! Only strings the parser could borrow (no JSON escapes) are kept this way.

use std::cell::RefCell;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Strings shorter than this are copied into the tree as usual.
pub const LONG: usize = 64 * 1024;

/// Where the long strings of a parsed body are, in the bytes it came from.
#[derive(Clone, Default)]
pub struct Spans {
    raw: Bytes,
    /// Every stand-in starts with this: a word and a random number drawn for
    /// this body, so no string a client wrote is taken for one.
    tag: String,
    ranges: Arc<[Range<usize>]>,
}

impl fmt::Debug for Spans {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spans")
            .field("strings", &self.ranges.len())
            .finish()
    }
}

/// Parses `raw` as JSON, leaving long media strings in `raw`.
pub fn parse(raw: &Bytes) -> serde_json::Result<(Value, Spans)> {
    let tag = format!("atmosphere-span:{:016x}:", rand::random::<u64>());
    let ranges = RefCell::new(Vec::new());
    let mut de = serde_json::Deserializer::from_slice(raw);
    let value = Seed {
        raw,
        tag: &tag,
        ranges: &ranges,
        media: false,
    }
    .deserialize(&mut de)?;
    de.end()?;
    let ranges = ranges.into_inner();
    let spans = if ranges.is_empty() {
        Spans::default()
    } else {
        Spans {
            raw: raw.clone(),
            tag,
            ranges: ranges.into(),
        }
    };
    Ok((value, spans))
}

impl Spans {
    /// Whether the body kept no string in place.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The string `s` stands for, or `s` itself when it stands for none.
    pub fn get<'a>(&'a self, s: &'a str) -> &'a str {
        match self.range_of(s) {
            // Borrowed by the parser from valid UTF-8 without escapes.
            Some(r) => std::str::from_utf8(&self.raw[r]).unwrap_or_default(),
            None => s,
        }
    }

    fn range_of(&self, s: &str) -> Option<Range<usize>> {
        let i: usize = s.strip_prefix(self.tag.as_str())?.parse().ok()?;
        self.ranges.get(i).cloned()
    }

    /// Puts every long string back into `value` (a copy of each), for a
    /// consumer that reads or rewrites them.
    pub fn restore(&self, value: &mut Value) {
        if self.is_empty() {
            return;
        }
        match value {
            Value::String(s) if self.range_of(s).is_some() => *s = self.get(s).to_owned(),
            Value::Array(items) => items.iter_mut().for_each(|v| self.restore(v)),
            Value::Object(map) => map.values_mut().for_each(|v| self.restore(v)),
            _ => {}
        }
    }

    /// [`Spans::restore`] for a body.
    pub fn restore_map(&self, map: &mut Map<String, Value>) {
        map.values_mut().for_each(|v| self.restore(v));
    }

    /// `value` as JSON, in pieces: the long strings are slices of the bytes
    /// they were parsed from, not copies.
    pub fn write(&self, value: &Value) -> serde_json::Result<Vec<Bytes>> {
        let json = Bytes::from(serde_json::to_vec(value)?);
        if self.is_empty() {
            return Ok(vec![json]);
        }
        let quoted = format!("\"{}", self.tag);
        let mut pieces = Vec::new();
        let mut from = 0;
        let mut at = 0;
        while let Some(found) = find(&json[at..], quoted.as_bytes()) {
            let open = at + found + 1;
            let close = json[open..]
                .iter()
                .position(|&b| b == b'"')
                .map_or(json.len(), |p| open + p);
            let range = std::str::from_utf8(&json[open..close])
                .ok()
                .and_then(|s| self.range_of(s));
            if let Some(range) = range {
                pieces.push(json.slice(from..open));
                pieces.push(self.raw.slice(range));
                from = close;
            }
            at = close;
        }
        pieces.push(json.slice(from..));
        Ok(pieces)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Builds a [`Value`] like serde_json's own, but leaves long media strings
/// in the received bytes.
struct Seed<'s> {
    raw: &'s [u8],
    tag: &'s str,
    ranges: &'s RefCell<Vec<Range<usize>>>,
    /// Whether the value is under a `url` or `data` key.
    media: bool,
}

impl Seed<'_> {
    fn under(&self, key: &str) -> Self {
        Seed {
            raw: self.raw,
            tag: self.tag,
            ranges: self.ranges,
            media: key == "url" || key == "data",
        }
    }
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Value, E> {
        let start = (v.as_ptr() as usize).wrapping_sub(self.raw.as_ptr() as usize);
        if !self.media || v.len() < LONG || start.saturating_add(v.len()) > self.raw.len() {
            return Ok(Value::String(v.to_owned()));
        }
        let mut ranges = self.ranges.borrow_mut();
        let stand_in = format!("{}{}", self.tag, ranges.len());
        ranges.push(start..start + v.len());
        Ok(Value::String(stand_in))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(v) = seq.next_element_seed(self.under(""))? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(self.under(&key))?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(image: &str, text: &str) -> Bytes {
        Bytes::from(
            serde_json::to_vec(&serde_json::json!({
                "model": "auto",
                "messages": [{"role": "user", "content": [
                    {"type": "text", "text": text},
                    {"type": "image_url", "image_url": {"url": image}},
                ]}],
                "temperature": 0.5,
            }))
            .unwrap(),
        )
    }

    fn joined(pieces: &[Bytes]) -> Vec<u8> {
        pieces.iter().flat_map(|p| p.iter().copied()).collect()
    }

    #[test]
    fn long_media_stays_in_the_bytes_and_comes_back_whole() {
        let image = format!("data:image/png;base64,{}", "A".repeat(200_000));
        let long_text = "word ".repeat(20_000);
        let raw = chat(&image, &long_text);
        let (mut value, spans) = parse(&raw).expect("parses");
        let url = value
            .pointer("/messages/0/content/1/image_url/url")
            .unwrap();
        let url = url.as_str().unwrap().to_owned();
        assert!(url.len() < 100, "the tree holds a stand-in, not the image");
        assert_eq!(spans.get(&url), image, "the stand-in reads as the image");
        // Text is routed by: never replaced, however long.
        assert_eq!(
            value.pointer("/messages/0/content/0/text").unwrap(),
            &Value::String(long_text)
        );
        // Written out, the body is the same JSON, the image a slice of `raw`.
        value["model"] = "served-model".into();
        let pieces = spans.write(&value).expect("writes");
        assert!(pieces.iter().any(|p| p.len() == image.len()));
        let written: Value = serde_json::from_slice(&joined(&pieces)).unwrap();
        let mut expected: Value = serde_json::from_slice(&raw).unwrap();
        expected["model"] = "served-model".into();
        assert_eq!(written, expected);
        spans.restore(&mut value);
        assert_eq!(value, expected);
    }

    #[test]
    fn short_escaped_or_client_written_strings_are_left_alone() {
        let short = "data:image/png;base64,AAAA";
        let (value, spans) = parse(&chat(short, "hi")).unwrap();
        assert!(spans.is_empty());
        assert_eq!(spans.write(&value).unwrap().len(), 1);
        // A long string with an escape cannot be borrowed: it is copied.
        let escaped = format!("data:image/png;base64,{}\n", "A".repeat(LONG));
        let (value, spans) = parse(&chat(&escaped, "hi")).unwrap();
        assert!(spans.is_empty());
        assert_eq!(
            value
                .pointer("/messages/0/content/1/image_url/url")
                .unwrap(),
            &Value::String(escaped)
        );
        // A client's string that looks like a stand-in stands for nothing.
        let image = format!("data:image/png;base64,{}", "B".repeat(LONG));
        let (value, spans) = parse(&chat(&image, "atmosphere-span:0000000000000000:0")).unwrap();
        let text = value.pointer("/messages/0/content/0/text").unwrap();
        assert_eq!(
            spans.get(text.as_str().unwrap()),
            "atmosphere-span:0000000000000000:0"
        );
        let written: Value =
            serde_json::from_slice(&joined(&spans.write(&value).unwrap())).unwrap();
        assert_eq!(
            written,
            serde_json::from_slice::<Value>(&chat(&image, "atmosphere-span:0000000000000000:0"))
                .unwrap()
        );
    }

    #[test]
    fn numbers_and_bad_json_parse_as_serde_json_does() {
        let raw = Bytes::from_static(br#"{"a": [1, -2, 3.5, 1e400, null, true], "b": {}}"#);
        let ours = parse(&raw);
        let theirs = serde_json::from_slice::<Value>(&raw);
        assert_eq!(ours.is_ok(), theirs.is_ok());
        let raw = Bytes::from_static(br#"{"a": [1, -2, 3.5, null, true], "b": {"c": "d"}}"#);
        assert_eq!(
            parse(&raw).unwrap().0,
            serde_json::from_slice::<Value>(&raw).unwrap()
        );
        for bad in [&b"{"[..], b"{} x", b"", b"{\"a\": }"] {
            assert!(parse(&Bytes::copy_from_slice(bad)).is_err());
        }
    }
}
