//! Frames: the unit of every Quiver stream. Sans-IO decoding in two steps, `check` (is a whole frame
//! buffered?) then `parse` (split it off without copying); see docs/protocol.md for the byte layout.
//!
//! Wire layout, little-endian: `u32 length` (bytes after this field) | `u8 kind` | `u32 header_len` |
//! header (MessagePack map) | payload (raw bytes, the rest; record batches for produce and fetch).
//!
//! Invariants: the length prefix is checked against the caller's limit as soon as its 4 bytes are
//! buffered, before anything is allocated for the frame; "need more bytes" is `Ok(None)`, never an
//! error; an error means framing is lost and the stream must be closed; nothing here panics on
//! peer-controlled bytes.

use bytes::{BufMut, Bytes, BytesMut};

use crate::bytes_le::{u32_at, u8_at};
use crate::codes::ErrorCode;

/// Size of the length prefix.
pub const LENGTH_LEN: usize = 4;
/// Bytes in front of the header: length, kind and header length.
pub const PREFIX_LEN: usize = 9;
/// Bytes counted by the length field before the header: kind and header length.
const KIND_AND_HEADER_LEN: usize = PREFIX_LEN - LENGTH_LEN;
/// Room kept above the largest batch for the frame's own header, so a batch accepted under a limit
/// always fits in a fetch response under the same limit.
pub const FRAME_HEADROOM: usize = 64 << 10;
/// Default limit on the length field: a 16 MiB batch plus headroom for the header.
pub const DEFAULT_MAX_FRAME: usize = (16 << 20) + FRAME_HEADROOM;
/// Hard limit on the header of any frame, whatever the frame limit.
pub const MAX_HEADER: usize = 1 << 20;

/// What a frame carries. The discriminant is the byte on the wire. Numbers are grouped by area, with
/// gaps kept for later kinds: groups 0x40.., queues 0x50.., plugins 0x60...
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    Hello = 0x01,
    HelloOk = 0x02,
    Produce = 0x10,
    ProduceOk = 0x11,
    Fetch = 0x20,
    FetchOk = 0x21,
    Admin = 0x30,
    AdminOk = 0x31,
    Group = 0x40,
    GroupOk = 0x41,
    Queue = 0x50,
    QueueOk = 0x51,
    Error = 0x7F,
}

impl FrameKind {
    /// Every kind this build knows.
    pub const ALL: [FrameKind; 13] = [
        FrameKind::Hello,
        FrameKind::HelloOk,
        FrameKind::Produce,
        FrameKind::ProduceOk,
        FrameKind::Fetch,
        FrameKind::FetchOk,
        FrameKind::Admin,
        FrameKind::AdminOk,
        FrameKind::Group,
        FrameKind::GroupOk,
        FrameKind::Queue,
        FrameKind::QueueOk,
        FrameKind::Error,
    ];

    /// The byte sent on the wire.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

impl TryFrom<u8> for FrameKind {
    type Error = FrameError;

    fn try_from(b: u8) -> Result<Self, FrameError> {
        FrameKind::ALL
            .into_iter()
            .find(|k| k.as_u8() == b)
            .ok_or(FrameError::UnknownKind(b))
    }
}

/// Why bytes are not a valid frame, or why a header does not encode or decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("frame header of {len} bytes exceeds the limit of {max} bytes")]
    HeaderTooLarge { len: usize, max: usize },
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("invalid frame header: {0}")]
    Header(String),
    #[error("expected a {expected:?} frame, got {got:?}")]
    UnexpectedKind { expected: FrameKind, got: FrameKind },
}

impl FrameError {
    /// The code to send back in an `Error` frame when a peer's frame fails this way.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge { .. } | FrameError::HeaderTooLarge { .. } => {
                ErrorCode::FrameTooLarge
            }
            FrameError::UnknownKind(_) | FrameError::Malformed(_) => ErrorCode::MalformedFrame,
            // The framing was fine; the request inside it is not one we understand.
            FrameError::Header(_) | FrameError::UnexpectedKind { .. } => ErrorCode::InvalidRequest,
        }
    }
}

/// One decoded frame. `header` and `payload` share the receive buffer (no copies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    /// MessagePack-encoded header (see [`crate::messages`]).
    pub header: Bytes,
    /// Raw payload: zero or more record batches for produce and fetch, empty otherwise.
    pub payload: Bytes,
}

impl Frame {
    /// A frame from already-encoded parts, checked so that [`Frame::encode`] is exact.
    pub fn from_parts(kind: FrameKind, header: Bytes, payload: Bytes) -> Result<Frame, FrameError> {
        if header.len() > MAX_HEADER {
            return Err(FrameError::HeaderTooLarge {
                len: header.len(),
                max: MAX_HEADER,
            });
        }
        let frame = Frame {
            kind,
            header,
            payload,
        };
        let len = frame.body_len();
        if len > u32::MAX as usize {
            return Err(FrameError::TooLarge {
                len,
                max: u32::MAX as usize,
            });
        }
        Ok(frame)
    }

    /// The value of the length field: what to compare with the peer's `max_frame` before sending.
    pub fn body_len(&self) -> usize {
        KIND_AND_HEADER_LEN
            .saturating_add(self.header.len())
            .saturating_add(self.payload.len())
    }

    /// Bytes the whole frame takes on the wire.
    pub fn encoded_len(&self) -> usize {
        self.body_len().saturating_add(LENGTH_LEN)
    }

    /// Checks whether `buf` starts with a whole frame of at most `max_frame` bytes (length field
    /// value). `Ok(Some(n))`: the first `n` bytes are one frame. `Ok(None)`: need more bytes.
    /// Errors are reported as soon as the bytes that show them are buffered.
    pub fn check(buf: &[u8], max_frame: usize) -> Result<Option<usize>, FrameError> {
        let Some(len) = u32_at(buf, 0) else {
            return Ok(None);
        };
        let len = len as usize;
        // Before anything else, so a hostile length never makes the caller reserve memory for it.
        if len > max_frame {
            return Err(FrameError::TooLarge {
                len,
                max: max_frame,
            });
        }
        if len < KIND_AND_HEADER_LEN {
            return Err(FrameError::Malformed(format!(
                "length {len} is shorter than the fixed fields"
            )));
        }
        let Some(kind) = u8_at(buf, LENGTH_LEN) else {
            return Ok(None);
        };
        FrameKind::try_from(kind)?;
        let Some(header_len) = u32_at(buf, LENGTH_LEN + 1) else {
            return Ok(None);
        };
        check_header_len(header_len as usize, len)?;
        let total = LENGTH_LEN + len;
        Ok((buf.len() >= total).then_some(total))
    }

    /// Splits the first frame off `buf` without copying. On `Ok(None)` and on errors `buf` is left
    /// as it was; after an error the stream is out of sync and must be closed.
    pub fn parse(buf: &mut BytesMut, max_frame: usize) -> Result<Option<Frame>, FrameError> {
        let Some(total) = Self::check(buf, max_frame)? else {
            return Ok(None);
        };
        let frame = buf.split_to(total).freeze();
        Self::split(frame).map(Some)
    }

    /// Cuts one checked frame (`frame` holds exactly it) into kind, header and payload.
    fn split(mut frame: Bytes) -> Result<Frame, FrameError> {
        let kind = u8_at(&frame, LENGTH_LEN).ok_or_else(|| truncated("kind"))?;
        let kind = FrameKind::try_from(kind)?;
        let header_len =
            u32_at(&frame, LENGTH_LEN + 1).ok_or_else(|| truncated("header length"))?;
        // `check` proved these bounds; re-checking keeps this function panic-free on its own.
        let header_end = PREFIX_LEN
            .checked_add(header_len as usize)
            .filter(|&end| end <= frame.len())
            .ok_or_else(|| truncated("header"))?;
        let payload = frame.split_off(header_end);
        let header = frame.split_off(PREFIX_LEN);
        Ok(Frame {
            kind,
            header,
            payload,
        })
    }

    /// Appends the whole frame to `dst` (copies the payload; see [`Frame::encoded_header`] to avoid that).
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(self.encoded_len());
        dst.put_slice(&Self::encoded_header(
            self.kind,
            self.header.len(),
            self.payload.len(),
        ));
        dst.put_slice(&self.header);
        dst.put_slice(&self.payload);
    }

    /// The 9 bytes in front of the header, so a writer can send prefix, header and payload as
    /// separate chunks (vectored write) without copying the payload.
    ///
    /// Lengths that do not fit in `u32` are written as `u32::MAX`: the peer then rejects the frame as
    /// too large instead of misreading the stream. [`Frame::from_parts`] refuses such frames up front.
    pub fn encoded_header(
        kind: FrameKind,
        header_len: usize,
        payload_len: usize,
    ) -> [u8; PREFIX_LEN] {
        let len = KIND_AND_HEADER_LEN
            .saturating_add(header_len)
            .saturating_add(payload_len);
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        let header_len = u32::try_from(header_len).unwrap_or(u32::MAX);
        let mut out = [0u8; PREFIX_LEN];
        out[..4].copy_from_slice(&len.to_le_bytes());
        out[4] = kind.as_u8();
        out[5..].copy_from_slice(&header_len.to_le_bytes());
        out
    }
}

/// The header must fit both the hard header limit and the frame that contains it.
fn check_header_len(header_len: usize, len: usize) -> Result<(), FrameError> {
    if header_len > MAX_HEADER {
        return Err(FrameError::HeaderTooLarge {
            len: header_len,
            max: MAX_HEADER,
        });
    }
    if header_len > len - KIND_AND_HEADER_LEN {
        return Err(FrameError::Malformed(format!(
            "header length {header_len} runs past the frame length {len}"
        )));
    }
    Ok(())
}

fn truncated(what: &str) -> FrameError {
    FrameError::Malformed(format!("frame truncated in its {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kind_strategy() -> impl Strategy<Value = FrameKind> {
        proptest::sample::select(FrameKind::ALL.to_vec())
    }

    fn encoded(frame: &Frame) -> Vec<u8> {
        let mut buf = BytesMut::new();
        frame.encode(&mut buf);
        buf.to_vec()
    }

    fn raw_prefix(len: u32, kind: u8, header_len: u32) -> Vec<u8> {
        let mut v = len.to_le_bytes().to_vec();
        v.push(kind);
        v.extend_from_slice(&header_len.to_le_bytes());
        v
    }

    proptest! {
        #[test]
        fn round_trip_and_every_split_point(
            kind in kind_strategy(),
            header in proptest::collection::vec(any::<u8>(), 0..64),
            payload in proptest::collection::vec(any::<u8>(), 0..256),
            trailing in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let frame = Frame::from_parts(kind, header.into(), payload.into()).unwrap();
            let bytes = encoded(&frame);
            prop_assert_eq!(bytes.len(), frame.encoded_len());
            for cut in 0..bytes.len() {
                prop_assert_eq!(Frame::check(&bytes[..cut], DEFAULT_MAX_FRAME), Ok(None));
                let mut partial = BytesMut::from(&bytes[..cut]);
                prop_assert_eq!(Frame::parse(&mut partial, DEFAULT_MAX_FRAME), Ok(None));
                prop_assert_eq!(partial.len(), cut);
            }
            let mut buf = BytesMut::from(&bytes[..]);
            buf.extend_from_slice(&trailing);
            prop_assert_eq!(Frame::check(&buf, DEFAULT_MAX_FRAME), Ok(Some(bytes.len())));
            let parsed = Frame::parse(&mut buf, DEFAULT_MAX_FRAME).unwrap().unwrap();
            prop_assert_eq!(parsed, frame);
            prop_assert_eq!(&buf[..], &trailing[..]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512), max in 0usize..1024) {
            let _ = Frame::check(&data, max);
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(_)) = Frame::parse(&mut buf, max) {}
        }

        #[test]
        fn plausible_prefixes_never_panic(
            len in 0u32..64, kind in any::<u8>(), header_len in any::<u32>(),
            rest in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut data = raw_prefix(len, kind, header_len);
            data.extend_from_slice(&rest);
            let mut buf = BytesMut::from(&data[..]);
            let _ = Frame::parse(&mut buf, DEFAULT_MAX_FRAME);
        }
    }

    #[test]
    fn oversized_length_is_rejected_after_four_bytes() {
        let claimed = (DEFAULT_MAX_FRAME as u32) + 1;
        let mut buf = BytesMut::from(&claimed.to_le_bytes()[..]);
        let err = Frame::parse(&mut buf, DEFAULT_MAX_FRAME).unwrap_err();
        assert_eq!(
            err,
            FrameError::TooLarge {
                len: claimed as usize,
                max: DEFAULT_MAX_FRAME
            }
        );
        assert_eq!(err.code(), ErrorCode::FrameTooLarge);
        // Nothing was reserved for the claimed size.
        assert!(buf.capacity() < 1024);
        assert_eq!(
            Frame::check(&u32::MAX.to_le_bytes(), 100),
            Err(FrameError::TooLarge {
                len: u32::MAX as usize,
                max: 100
            })
        );
    }

    #[test]
    fn bad_prefixes_are_errors() {
        let short = raw_prefix(4, 0x01, 0);
        assert!(matches!(
            Frame::check(&short, 1024),
            Err(FrameError::Malformed(_))
        ));
        let unknown = raw_prefix(5, 0x03, 0);
        assert_eq!(
            Frame::check(&unknown[..5], 1024),
            Err(FrameError::UnknownKind(0x03))
        );
        let past_end = raw_prefix(10, 0x01, 6);
        assert!(matches!(
            Frame::check(&past_end, 1024),
            Err(FrameError::Malformed(_))
        ));
        let huge_header = raw_prefix(1 << 22, 0x10, (MAX_HEADER + 1) as u32);
        assert!(matches!(
            Frame::check(&huge_header, 1 << 23),
            Err(FrameError::HeaderTooLarge { .. })
        ));
    }

    #[test]
    fn empty_frame_and_kinds() {
        let frame = Frame::from_parts(FrameKind::Error, Bytes::new(), Bytes::new()).unwrap();
        assert_eq!(encoded(&frame), raw_prefix(5, 0x7F, 0));
        for b in 0..=u8::MAX {
            match FrameKind::try_from(b) {
                Ok(k) => assert_eq!(k.as_u8(), b),
                Err(e) => assert_eq!(e, FrameError::UnknownKind(b)),
            }
        }
        assert_eq!(FrameKind::try_from(0x21), Ok(FrameKind::FetchOk));
    }

    #[test]
    fn encoded_header_matches_encode() {
        let frame = Frame::from_parts(
            FrameKind::Produce,
            Bytes::from_static(b"hdr"),
            Bytes::from_static(b"payload"),
        )
        .unwrap();
        let bytes = encoded(&frame);
        assert_eq!(
            &bytes[..PREFIX_LEN],
            &Frame::encoded_header(FrameKind::Produce, 3, 7)
        );
        assert_eq!(frame.body_len(), 15);
        let too_big = Frame::from_parts(
            FrameKind::Admin,
            Bytes::from(vec![0u8; MAX_HEADER + 1]),
            Bytes::new(),
        );
        assert!(matches!(too_big, Err(FrameError::HeaderTooLarge { .. })));
    }
}
