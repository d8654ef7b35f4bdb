//! The one place that knows the byte encoding of application messages: bincode
//! 2.0.1 (pinned; the crate is no longer developed, so the golden vectors in
//! `protocols/vectors/` pin its output) in its standard configuration
//! (little-endian, variable-length integers), with a decode size limit and no
//! trailing bytes allowed.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why bytes could not be turned into a message or back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The encoded message is larger than its protocol allows.
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    /// The bytes are not a valid encoding of the message type.
    #[error("cannot decode: {0}")]
    Decode(String),
    /// The message decoded but bytes were left over.
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    /// The value cannot be encoded (never expected for wire types).
    #[error("cannot encode: {0}")]
    Encode(String),
    /// The message carries a version this node does not speak.
    #[error("unsupported message version {0}")]
    Version(u8),
    /// The message is well-formed but breaks a rule of its protocol.
    #[error("invalid message: {0}")]
    Invalid(String),
}

/// Hard ceiling on any decoded message, whatever its protocol's own limit.
const MAX_DECODE: usize = 16 * 1024 * 1024;

/// Encodes `value`, refusing results over `limit` bytes.
pub fn encode<T: Serialize>(value: &T, limit: usize) -> Result<Vec<u8>, Error> {
    let bytes = bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map_err(|e| Error::Encode(e.to_string()))?;
    if bytes.len() > limit {
        return Err(Error::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    Ok(bytes)
}

/// Decodes exactly one `T` from `bytes` (at most `limit` long).
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, Error> {
    if bytes.len() > limit {
        return Err(Error::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    // The input is already bounded, so no allocation inside can exceed it by
    // more than the container headers claim; bincode's own limit backs this up.
    let config = bincode::config::standard().with_limit::<MAX_DECODE>();
    let (value, used) = bincode::serde::decode_from_slice(bytes, config)
        .map_err(|e| Error::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(Error::Trailing(bytes.len() - used));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Sample {
        a: u64,
        b: String,
        c: Vec<i8>,
    }

    #[test]
    fn round_trip_and_limits() {
        let s = Sample {
            a: 300,
            b: "llama".into(),
            c: vec![-1, 2],
        };
        let bytes = encode(&s, 64).expect("encodes");
        assert_eq!(decode::<Sample>(&bytes, 64).expect("decodes"), s);
        assert!(matches!(encode(&s, 4), Err(Error::TooLarge { .. })));
        assert!(matches!(
            decode::<Sample>(&bytes, 4),
            Err(Error::TooLarge { .. })
        ));
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(matches!(
            decode::<Sample>(&extra, 64),
            Err(Error::Trailing(1))
        ));
        assert!(decode::<Sample>(&bytes[..bytes.len() - 1], 64).is_err());
    }

    #[test]
    fn hostile_length_prefix_does_not_allocate_wildly() {
        // A string claiming 2^60 bytes: must fail, not try to allocate.
        let mut bytes = vec![0u8]; // a = 0
        bytes.push(253); // varint u64 marker
        bytes.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(decode::<Sample>(&bytes, 1024).is_err());
    }
}
