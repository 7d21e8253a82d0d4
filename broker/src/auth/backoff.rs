//! Slows failed authentication per source address: each failure doubles the wait before that
//! address's next attempt is answered (100 ms up to 10 s), and an address is forgotten once it
//! has been quiet for 10 minutes. The table is bounded, so a flood of addresses cannot grow it
//! without limit: when full, the stalest entries go first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

const FIRST: Duration = Duration::from_millis(100);
const MAX: Duration = Duration::from_secs(10);
const FORGET_AFTER: Duration = Duration::from_secs(600);
const MAX_ADDRESSES: usize = 16_384;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

#[derive(Debug, Default)]
pub(super) struct Backoff {
    by_addr: Mutex<HashMap<IpAddr, Failures>>,
}

impl Backoff {
    /// How long an attempt from `addr` must wait before it is answered.
    pub(super) fn delay(&self, addr: IpAddr) -> Duration {
        let map = self.by_addr.lock();
        match map.get(&addr) {
            Some(f) if f.last.elapsed() < FORGET_AFTER => wait(f.count),
            _ => Duration::ZERO,
        }
    }

    /// Records a failure from `addr`; returns how long to wait before answering it.
    pub(super) fn failed(&self, addr: IpAddr) -> Duration {
        let mut map = self.by_addr.lock();
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&addr) {
            evict(&mut map);
        }
        let now = Instant::now();
        let entry = map.entry(addr).or_insert(Failures {
            count: 0,
            last: now,
        });
        if entry.last.elapsed() >= FORGET_AFTER {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        wait(entry.count)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_addr.lock().len()
    }
}

fn wait(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST.saturating_mul(1 << doublings).min(MAX)
}

/// Drops the forgotten entries, and if that frees nothing, the stalest quarter.
fn evict(map: &mut HashMap<IpAddr, Failures>) {
    map.retain(|_, f| f.last.elapsed() < FORGET_AFTER);
    if map.len() < MAX_ADDRESSES {
        return;
    }
    let mut ages: Vec<Instant> = map.values().map(|f| f.last).collect();
    ages.sort_unstable();
    let cutoff = ages[ages.len() / 4];
    map.retain(|_, f| f.last > cutoff);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_per_failure_up_to_the_cap_and_memory_stays_bounded() {
        let b = Backoff::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(b.delay(a), Duration::ZERO);
        assert_eq!(b.failed(a), Duration::from_millis(100));
        assert_eq!(b.failed(a), Duration::from_millis(200));
        assert_eq!(b.delay(a), Duration::from_millis(200));
        for _ in 0..40 {
            b.failed(a);
        }
        assert_eq!(b.delay(a), MAX);
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(b.delay(other), Duration::ZERO, "per address");
        for i in 0..(MAX_ADDRESSES as u32 + 100) {
            b.failed(IpAddr::from(i.to_be_bytes()));
        }
        assert!(b.len() <= MAX_ADDRESSES, "{}", b.len());
    }
}
