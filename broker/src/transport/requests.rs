//! Reading a stream's requests: the frames of one stream, ending early when shutdown starts, and
//! the error answer for input that cannot be read. Shared by every stream handler.

use quiver_proto::frame::Frame;
use quiver_proto::ErrorCode;
use quiver_wire::{write_error, FrameReader, WireError};
use tokio_util::sync::CancellationToken;

use crate::config::BrokerConfig;

/// The request frames of one stream; ends (like a finished stream) once shutdown starts, so idle
/// streams do not hold up a graceful shutdown while in-flight requests still complete.
pub(super) struct Requests {
    reader: FrameReader<quinn::RecvStream>,
    pub(super) shutdown: CancellationToken,
}

impl Requests {
    /// Frames up to the broker's frame limit; admin frames (a component to deploy) up to the
    /// component limit.
    pub(super) fn new(
        recv: quinn::RecvStream,
        config: &BrokerConfig,
        shutdown: CancellationToken,
    ) -> Requests {
        let admin_limit = (config.plugins.max_component_mb as usize) << 20;
        Requests {
            reader: FrameReader::new(recv, config.max_frame_bytes).with_admin_limit(admin_limit),
            shutdown,
        }
    }

    pub(super) async fn next(&mut self) -> Result<Option<Frame>, WireError> {
        tokio::select! {
            _ = self.shutdown.cancelled() => Ok(None),
            f = self.reader.next() => f,
        }
    }
}

/// Answers unreadable input with an error frame and closes the stream.
pub(super) async fn reject(mut send: quinn::SendStream, e: &WireError) -> Result<(), WireError> {
    tracing::info!(error = %e, "rejecting a malformed stream");
    write_error(&mut send, wire_code(e), e.to_string()).await?;
    finish(send)
}

/// The code a stream that could not be read is answered with.
pub(super) fn wire_code(e: &WireError) -> ErrorCode {
    match e {
        WireError::Frame(f) => f.code(),
        WireError::Remote { code, .. } => *code,
        _ => ErrorCode::MalformedFrame,
    }
}

pub(super) fn finish(mut send: quinn::SendStream) -> Result<(), WireError> {
    send.finish()?;
    Ok(())
}
