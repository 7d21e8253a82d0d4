//! Exponential back-off with jitter between sessions: 200 ms doubling to 30 s, each wait at random
//! between half the window and all of it ("equal jitter": never much shorter than the window, and
//! many edges losing one core do not reconnect in step).

use std::time::Duration;

const FIRST: Duration = Duration::from_millis(200);
const MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Default, Clone)]
pub struct Backoff {
    attempts: u32,
}

impl Backoff {
    /// The wait before the next attempt, and the number of failed attempts so far.
    pub fn next(&mut self) -> (Duration, u32) {
        self.attempts = self.attempts.saturating_add(1);
        let window = FIRST
            .saturating_mul(1 << (self.attempts - 1).min(16))
            .min(MAX);
        let ms = window.as_millis() as u64;
        (
            Duration::from_millis(ms / 2 + fastrand::u64(0..=ms / 2)),
            self.attempts,
        )
    }

    /// A session got going: the next failure starts from the first window again.
    pub fn reset(&mut self) {
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_stays_in_the_window() {
        let mut b = Backoff::default();
        let (first, n) = b.next();
        assert_eq!(n, 1);
        assert!(first >= FIRST / 2 && first <= FIRST);
        for _ in 0..30 {
            let (d, _) = b.next();
            assert!(d <= MAX && d >= Duration::from_millis(100));
        }
        assert!(b.next().0 >= MAX / 2);
        b.reset();
        assert!(b.next().0 <= FIRST);
    }
}
