//! Request-response codec for Atmosphere's wire messages: one message per
//! stream direction, written whole and closed; the reader stops at the
//! message's size limit (it never buffers more) and decodes with the wire codec.
//! The request timeout of the behaviour bounds how long a read may take.

use std::io;
use std::marker::PhantomData;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

use crate::wire::{self, Message};

/// A request as read from a peer: decoded and checked, or refused with the
/// reason, so that the node can answer a refusal instead of closing the
/// stream without a word. (A request over its size limit is not read at all.)
#[derive(Debug)]
pub enum Decoded<M> {
    Valid(M),
    Refused(wire::Error),
}

/// Codec for a request type and a response type.
pub struct Codec<Req, Resp>(PhantomData<fn() -> (Req, Resp)>);

impl<Req, Resp> Clone for Codec<Req, Resp> {
    fn clone(&self) -> Self {
        Self(PhantomData)
    }
}

impl<Req, Resp> Default for Codec<Req, Resp> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

async fn read_limited<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    limit: usize,
) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    io.take(limit as u64 + 1).read_to_end(&mut buf).await?;
    if buf.len() > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "message over its size limit",
        ));
    }
    Ok(buf)
}

fn invalid(e: wire::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl<Req: Message + Send + 'static, Resp: Message + Send + 'static> libp2p::request_response::Codec
    for Codec<Req, Resp>
{
    type Protocol = StreamProtocol;
    type Request = Decoded<Req>;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Decoded<Req>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let bytes = read_limited(io, Req::MAX_BYTES).await?;
        Ok(match Req::decode(&bytes) {
            Ok(m) => Decoded::Valid(m),
            Err(e) => Decoded::Refused(e),
        })
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        let bytes = read_limited(io, Resp::MAX_BYTES).await?;
        Resp::decode(&bytes).map_err(invalid)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Decoded<Req>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let req = match req {
            Decoded::Valid(m) => m,
            Decoded::Refused(e) => return Err(invalid(e)),
        };
        io.write_all(&req.encode().map_err(invalid)?).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        resp: Resp,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&resp.encode().map_err(invalid)?).await?;
        io.close().await
    }
}
