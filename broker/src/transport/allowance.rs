//! How many streams a client connection may have open: a small allowance that doubles as the
//! client uses it, up to the configured `max_streams_per_connection`.
//!
//! Why not grant the maximum at once: quinn keeps state for every stream a peer is allowed to open,
//! allocated up front (an entry in each of two hash maps per stream id). Granting 1,024 streams made
//! every connection cost ~110 KiB of broker memory even while idle (BENCHMARKS.md, "Scaling": 1,000
//! idle connections took the broker from 21 to 133 MiB). A connection starts with
//! [`INITIAL_STREAMS`]; whenever half of its allowance is in use the broker doubles it (one
//! MAX_STREAMS frame), so a client opening hundreds of fetch streams waits a round trip per
//! doubling, and an idle one costs ~10 KiB of stream state.
//!
//! The count is of streams being served. A one-request stream (admin, group, queue) is served in
//! well under a millisecond but holds its slot in quinn until the client has read the answer, so
//! the initial allowance also bounds how many such calls one connection has in flight per round
//! trip: 128, not 32, so that pipelined queue acks over a slow link are not held to a trickle.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Streams a new connection may open before it has used any.
pub const INITIAL_STREAMS: u32 = 128;

/// One connection's allowance and its streams being served.
pub struct StreamAllowance {
    open: Arc<AtomicU32>,
    limit: u32,
    max: u32,
}

/// Held while a stream is served; dropping it counts the stream as closed.
pub struct OpenStream(Arc<AtomicU32>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl StreamAllowance {
    /// The allowance a connection starts with (the transport parameter), given the maximum.
    pub fn initial(max: u32) -> u32 {
        INITIAL_STREAMS.min(max).max(1)
    }

    pub fn new(max: u32) -> StreamAllowance {
        StreamAllowance {
            open: Arc::default(),
            limit: Self::initial(max),
            max: max.max(1),
        }
    }

    /// Counts an accepted stream. Answers the new allowance when this one should grow (the caller
    /// grants it on the connection), and the guard to hold while the stream is served.
    pub fn opened(&mut self) -> (Option<u32>, OpenStream) {
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        let grow = open.saturating_mul(2) >= self.limit && self.limit < self.max;
        let grant = grow.then(|| {
            self.limit = self.limit.saturating_mul(2).min(self.max);
            self.limit
        });
        (grant, OpenStream(self.open.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_at_half_use_up_to_the_maximum_and_counts_closes() {
        let mut a = StreamAllowance::new(1000);
        let mut held = Vec::new();
        let mut grants = Vec::new();
        for _ in 0..1000 {
            let (grant, guard) = a.opened();
            grants.extend(grant);
            held.push(guard);
        }
        assert_eq!(grants, vec![256, 512, 1000]);
        held.clear();
        // All closed: reopening does not grow a limit already at the maximum.
        assert_eq!(a.opened().0, None);
        assert_eq!(StreamAllowance::initial(8), 8);
        assert_eq!(StreamAllowance::initial(0), 1);
    }

    #[test]
    fn streams_opened_and_closed_one_at_a_time_keep_the_initial_allowance() {
        let mut a = StreamAllowance::new(1024);
        for _ in 0..1000 {
            let (grant, _guard) = a.opened();
            assert_eq!(grant, None);
        }
    }
}
