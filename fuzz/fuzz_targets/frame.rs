//! Fuzz target: frame reading. The same peer bytes go through the sans-IO decoder
//! (`Frame::check` / `Frame::parse`, proto/src/frame.rs) and through quiver-wire's async
//! `FrameReader`, fed in chunks whose sizes the input picks; both must agree frame by frame.
//!
//! Input: byte 0 picks the frame limit, byte 1 the `Admin` frame limit, byte 2 the chunk sizes;
//! the rest is the stream. Limits are small (at most 64 KiB) so a claimed length is cheap to
//! buffer and the fuzzer reaches the limit checks from both sides.

#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use quiver_proto::frame::{Frame, FrameError, FrameKind, PREFIX_LEN};
use quiver_wire::{FrameReader, WireError};
use tokio::io::{AsyncRead, ReadBuf};

fuzz_target!(|data: &[u8]| {
    let [a, b, c, stream @ ..] = data else {
        return;
    };
    let max_frame = limit(*a);
    let max_admin = limit(*b).max(max_frame);
    let want = sans_io(stream, max_frame, max_admin);
    let got = with_reader(stream, max_frame, max_admin, *c);
    assert_eq!(want.0, got.0, "frames differ");
    match (&want.1, &got.1) {
        (End::Clean, End::Clean) | (End::Truncated, End::Truncated) => {}
        // Both refuse the stream. Which error they name may differ: before the kind byte has
        // arrived the reader can only apply the looser of its two limits, so a length that is
        // both over the exact limit and malformed is reported as one or the other depending on
        // how the bytes were chunked.
        (End::Error(x), End::Error(y)) => {
            // Either maps to the code the broker answers with.
            let _ = (x.code(), y.code());
        }
        (x, y) => panic!("sans-IO ended with {x:?}, the reader with {y:?}"),
    }
});

/// Frame limits from 0 (every frame too large) to 64 KiB, most of them small.
fn limit(b: u8) -> usize {
    match b >> 6 {
        0 => (b & 0x3f) as usize,
        1 => PREFIX_LEN + (b & 0x3f) as usize * 4,
        2 => (b & 0x3f) as usize * 1024,
        _ => 64 << 10,
    }
}

#[derive(Debug)]
enum End {
    Clean,
    Truncated,
    Error(FrameError),
}

/// The limit for the frame at the front of `buf`, as the reader applies it: per kind once the
/// kind byte is there, the looser one before.
fn limit_for(buf: &[u8], max_frame: usize, max_admin: usize) -> usize {
    match buf.get(4) {
        Some(&k) if k == FrameKind::Admin.as_u8() => max_admin,
        Some(_) => max_frame,
        None => max_frame.max(max_admin),
    }
}

/// The frames in `stream` and how it ends, by the sans-IO decoder with the whole stream buffered.
fn sans_io(stream: &[u8], max_frame: usize, max_admin: usize) -> (Vec<Frame>, End) {
    let mut buf = BytesMut::from(stream);
    let mut frames = Vec::new();
    loop {
        let max = limit_for(&buf, max_frame, max_admin);
        let checked = Frame::check(&buf, max);
        let before = buf.len();
        match Frame::parse(&mut buf, max) {
            Ok(Some(frame)) => {
                let n = before - buf.len();
                assert_eq!(checked, Ok(Some(n)));
                assert!(n >= PREFIX_LEN && n <= max + 4, "frame of {n} bytes");
                assert_eq!(frame.encoded_len(), n);
                // Encoding the frame again gives back exactly the bytes it was read from.
                let start = stream.len() - before;
                let mut again = BytesMut::new();
                frame.encode(&mut again);
                assert_eq!(&again[..], &stream[start..start + n]);
                // Every cut of a whole frame is "need more bytes", never an error.
                for cut in [0, 3, 4, 5, 8, PREFIX_LEN, n - 1] {
                    let cut = cut.min(n - 1);
                    let part = &stream[start..start + cut];
                    let part_max = limit_for(part, max_frame, max_admin).max(max);
                    assert_eq!(Frame::check(part, part_max), Ok(None), "cut at {cut}");
                }
                frames.push(frame);
            }
            Ok(None) => {
                assert_eq!(checked, Ok(None));
                assert_eq!(buf.len(), before, "a partial frame must stay buffered");
                let end = if buf.is_empty() {
                    End::Clean
                } else {
                    End::Truncated
                };
                return (frames, end);
            }
            Err(e) => {
                assert_eq!(checked, Err(e.clone()));
                assert_eq!(buf.len(), before, "a failed parse must not consume bytes");
                return (frames, End::Error(e));
            }
        }
    }
}

/// The frames in `stream` and how it ends, by `FrameReader` over a reader that hands out the
/// stream in chunks of 1 to 256 bytes (sizes cycling from `pattern`).
fn with_reader(
    stream: &[u8],
    max_frame: usize,
    max_admin: usize,
    pattern: u8,
) -> (Vec<Frame>, End) {
    let reader = Chunked {
        data: stream,
        pattern,
        turn: 0,
    };
    let mut reader = FrameReader::new(reader, max_frame).with_admin_limit(max_admin);
    let mut frames = Vec::new();
    loop {
        match block_on(reader.next()) {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => return (frames, End::Clean),
            Err(WireError::Truncated) => return (frames, End::Truncated),
            Err(WireError::Frame(e)) => return (frames, End::Error(e)),
            Err(e) => panic!("unexpected reader error {e}"),
        }
    }
}

/// An in-memory stream that returns short reads.
struct Chunked<'a> {
    data: &'a [u8],
    pattern: u8,
    turn: u32,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.turn = self.turn.wrapping_add(1);
        let size = match self.pattern {
            0 => 1,
            p => 1 + (p as u32).wrapping_mul(self.turn) % 256,
        } as usize;
        let n = size.min(self.data.len()).min(buf.remaining());
        buf.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(()))
    }
}

/// Runs a future that never waits (its reader is always ready) to completion.
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("an in-memory read never waits"),
    }
}
