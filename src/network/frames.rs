//! Length-prefixed frames on a libp2p stream: an unsigned varint (LEB128)
//! length, then that many bytes. A length over the limit is refused before
//! anything is read or allocated.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes of a frame allocated before any of it arrived.
const FIRST_ALLOCATION: usize = 64 * 1024;

/// Writes one frame and flushes it (each frame is a token on its way).
pub async fn write<T: AsyncWrite + Unpin>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    let mut buf = unsigned_varint::encode::usize_buffer();
    io.write_all(unsigned_varint::encode::usize(bytes.len(), &mut buf))
        .await?;
    io.write_all(bytes).await?;
    io.flush().await
}

/// Reads one frame of at most `limit` bytes; `Ok(None)` at a clean end of stream.
pub async fn read<T: AsyncRead + Unpin>(io: &mut T, limit: usize) -> io::Result<Option<Vec<u8>>> {
    let len = match unsigned_varint::aio::read_usize(&mut *io).await {
        Ok(len) => len,
        Err(unsigned_varint::io::ReadError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Ok(None);
        }
        // As it came (a reader's deadline says `TimedOut`).
        Err(unsigned_varint::io::ReadError::Io(e)) => return Err(e),
        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
    };
    if len > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes over the limit of {limit}"),
        ));
    }
    // Grown as the bytes arrive, never allocated by what the prefix
    // declares: a peer that announces 5 MiB and sends a byte holds a byte.
    let mut buf = Vec::with_capacity(len.min(FIRST_ALLOCATION));
    (&mut *io).take(len as u64).read_to_end(&mut buf).await?;
    if buf.len() < len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_limits() {
        let mut out = Vec::new();
        write(&mut out, b"hello").await.expect("write");
        write(&mut out, &[7u8; 300]).await.expect("write");
        let mut input = futures::io::Cursor::new(out.clone());
        assert_eq!(
            read(&mut input, 1024).await.expect("read"),
            Some(b"hello".to_vec())
        );
        assert_eq!(
            read(&mut input, 1024).await.expect("read").map(|v| v.len()),
            Some(300)
        );
        assert_eq!(read(&mut input, 1024).await.expect("eof"), None);
        let mut input = futures::io::Cursor::new(out);
        read(&mut input, 1024).await.expect("first");
        assert!(read(&mut input, 100).await.is_err(), "over the limit");
        // A hostile length prefix claims 2^60 bytes: refused, nothing allocated.
        let mut buf = unsigned_varint::encode::usize_buffer();
        let hostile = unsigned_varint::encode::usize(1 << 60, &mut buf).to_vec();
        assert!(
            read(&mut futures::io::Cursor::new(hostile), 1024)
                .await
                .is_err()
        );
    }
}
