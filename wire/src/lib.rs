//! quiver-wire: async frame I/O over QUIC streams, shared by the client (`quiver`) and the broker's
//! server: a buffered frame reader that checks each frame's length before buffering it, a writer that
//! sends a frame's header and its batch payload without copying the payload, and [`WireError`].

pub mod packets;

use bytes::{Bytes, BytesMut};
use quiver_proto::frame::{Frame, FrameError, FrameKind};
use quiver_proto::messages::{decode_header, encode_header, ErrorBody};
use quiver_proto::ErrorCode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Errors of reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("stream read failed: {0}")]
    Read(#[from] std::io::Error),
    #[error("stream write failed: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("stream ended in the middle of a frame")]
    Truncated,
    #[error("stream closed: {0}")]
    Closed(#[from] quinn::ClosedStream),
    #[error("expected a {expected:?} frame, got {got:?}")]
    Unexpected { expected: FrameKind, got: FrameKind },
    #[error("{code}: {message}")]
    Remote { code: ErrorCode, message: String },
}

impl WireError {
    /// The server's error code, when the peer answered with an error frame.
    pub fn remote_code(&self) -> Option<ErrorCode> {
        match self {
            WireError::Remote { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// A lost connection, met while opening or using a stream, reads as a failed read.
impl From<quinn::ConnectionError> for WireError {
    fn from(e: quinn::ConnectionError) -> Self {
        WireError::Read(std::io::Error::other(e))
    }
}

/// Reads whole frames from a stream.
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    max_frame: usize,
    /// The limit for `Admin` frames, which may carry a plugin component larger than any batch.
    max_admin_frame: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, max_frame: usize) -> Self {
        FrameReader {
            inner,
            buf: BytesMut::with_capacity(64 << 10),
            max_frame,
            max_admin_frame: max_frame,
        }
    }

    /// Allows `Admin` frames up to `max` bytes (at least the general limit).
    pub fn with_admin_limit(mut self, max: usize) -> Self {
        self.max_admin_frame = max.max(self.max_frame);
        self
    }

    /// The limit for the frame at the front of the buffer, and whether it is exact: until its
    /// kind byte has arrived, only the loosest limit can be applied (a hostile length is still
    /// refused as soon as its four bytes are in).
    fn limit(&self) -> (usize, bool) {
        match self.buf.get(4) {
            Some(&kind) if kind == FrameKind::Admin.as_u8() => (self.max_admin_frame, true),
            Some(_) => (self.max_frame, true),
            None => (self.max_admin_frame.max(self.max_frame), false),
        }
    }

    /// The next frame; `None` when the peer finished the stream cleanly between frames.
    pub async fn next(&mut self) -> Result<Option<Frame>, WireError> {
        loop {
            let (max, exact) = self.limit();
            if let Some(total) = Frame::check(&self.buf, max)? {
                return Ok(Frame::parse(&mut self.buf, max)?.filter(|f| f.encoded_len() == total));
            }
            // Once checked against its exact limit, the length prefix bounds what is reserved.
            let checked = if exact { peek_len(&self.buf) } else { None }.unwrap_or(0);
            let want = checked.max(64 << 10);
            self.buf.reserve(want.saturating_sub(self.buf.len()));
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(WireError::Truncated)
                };
            }
        }
    }

    /// The next frame, which must be `kind` (an error frame becomes `WireError::Remote`), decoded.
    pub async fn expect<T: DeserializeOwned>(
        &mut self,
        kind: FrameKind,
    ) -> Result<(T, Bytes), WireError> {
        let frame = self.next().await?.ok_or(WireError::Truncated)?;
        decode_frame(frame, kind)
    }
}

/// Decodes `frame` as `kind`, turning an error frame into `WireError::Remote`.
pub fn decode_frame<T: DeserializeOwned>(
    frame: Frame,
    kind: FrameKind,
) -> Result<(T, Bytes), WireError> {
    if frame.kind == FrameKind::Error {
        let body: ErrorBody = decode_header(&frame.header)?;
        return Err(WireError::Remote {
            code: ErrorCode::from(body.code),
            message: body.message,
        });
    }
    if frame.kind != kind {
        return Err(WireError::Unexpected {
            expected: kind,
            got: frame.kind,
        });
    }
    Ok((decode_header(&frame.header)?, frame.payload))
}

fn peek_len(buf: &[u8]) -> Option<usize> {
    let b: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    Some(u32::from_le_bytes(b) as usize + 4)
}

/// Writes one frame: prefix and header in one write, then the payload as a zero-copy chunk.
pub async fn write_frame<H: Serialize>(
    send: &mut quinn::SendStream,
    kind: FrameKind,
    header: &H,
    payload: Bytes,
) -> Result<(), WireError> {
    let header = encode_header(header)?;
    let prefix = Frame::encoded_header(kind, header.len(), payload.len());
    let mut head = BytesMut::with_capacity(prefix.len() + header.len());
    head.extend_from_slice(&prefix);
    head.extend_from_slice(&header);
    send.write_chunk(head.freeze()).await?;
    if !payload.is_empty() {
        send.write_chunk(payload).await?;
    }
    Ok(())
}

/// Writes an error frame with a stable code and human text.
pub async fn write_error(
    send: &mut quinn::SendStream,
    code: ErrorCode,
    message: String,
) -> Result<(), WireError> {
    write_frame(
        send,
        FrameKind::Error,
        &ErrorBody::new(code, message),
        Bytes::new(),
    )
    .await
}

/// Writes the error frame that answers pipelined request `request_id`.
pub async fn write_request_error(
    send: &mut quinn::SendStream,
    code: ErrorCode,
    message: String,
    request_id: u64,
) -> Result<(), WireError> {
    let body = ErrorBody::new(code, message).for_request(request_id);
    write_frame(send, FrameKind::Error, &body, Bytes::new()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(kind: FrameKind, payload: usize) -> Vec<u8> {
        let frame = Frame::from_parts(kind, Bytes::from_static(b"\x80"), vec![7u8; payload].into())
            .unwrap();
        let mut buf = BytesMut::new();
        frame.encode(&mut buf);
        buf.to_vec()
    }

    async fn read(bytes: Vec<u8>) -> Result<Option<Frame>, WireError> {
        FrameReader::new(&bytes[..], 1000)
            .with_admin_limit(100_000)
            .next()
            .await
    }

    #[tokio::test]
    async fn admin_frames_get_their_own_limit() {
        let admin = read(encoded(FrameKind::Admin, 50_000))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(admin.payload.len(), 50_000);
        let produce = read(encoded(FrameKind::Produce, 50_000)).await.unwrap_err();
        assert!(
            matches!(produce, WireError::Frame(FrameError::TooLarge { .. })),
            "{produce}"
        );
        let admin = read(encoded(FrameKind::Admin, 200_000)).await.unwrap_err();
        assert!(
            matches!(admin, WireError::Frame(FrameError::TooLarge { .. })),
            "{admin}"
        );
    }

    #[tokio::test]
    async fn a_hostile_length_is_refused_before_the_kind_arrives() {
        let err = read(u32::MAX.to_le_bytes().to_vec()).await.unwrap_err();
        assert!(
            matches!(err, WireError::Frame(FrameError::TooLarge { .. })),
            "{err}"
        );
    }
}
