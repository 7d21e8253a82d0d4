//! Quotas per principal (Kafka's model): produce and fetch bytes per second, and open
//! connections. Bytes over quota are not refused: the broker holds the answer back for as long
//! as the principal's debt takes to pay off at its rate, and says so in the answer
//! (`throttle_ms`). A client that waits for its answers (every Quiver client keeps a bounded
//! window) is slowed to the quota; other principals are not, each has its own buckets.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// The longest a single answer is held back (a larger debt is paid over later answers).
const MAX_THROTTLE: Duration = Duration::from_secs(30);

/// Limits of one principal; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quota {
    pub produce_bytes_per_sec: Option<u64>,
    pub fetch_bytes_per_sec: Option<u64>,
    pub connections: Option<u32>,
}

/// `[quotas]` in the config file: a default for every principal, and per-principal overrides
/// (a principal listed here gets its own quota in place of the default, not on top of it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaConfig {
    pub default: Quota,
    pub principals: BTreeMap<String, Quota>,
}

impl QuotaConfig {
    pub fn of(&self, principal: &str) -> Quota {
        self.principals
            .get(principal)
            .copied()
            .unwrap_or(self.default)
    }
}

/// Which byte rate a charge counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Produce,
    Fetch,
}

/// A token bucket holding up to one second of its rate; it may go into debt.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn charge(&mut self, bytes: u64) -> Duration {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate);
        self.last = now;
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(-self.tokens / self.rate).min(MAX_THROTTLE)
    }
}

#[derive(Debug, Default)]
pub struct Quotas {
    config: QuotaConfig,
    buckets: Mutex<HashMap<(Arc<str>, Direction), Bucket>>,
}

impl Quotas {
    pub fn new(config: QuotaConfig) -> Quotas {
        Quotas {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Counts `bytes` of `principal` in `direction`; returns how long to hold the answer back.
    pub fn charge(&self, principal: &str, direction: Direction, bytes: u64) -> Duration {
        let quota = self.config.of(principal);
        let rate = match direction {
            Direction::Produce => quota.produce_bytes_per_sec,
            Direction::Fetch => quota.fetch_bytes_per_sec,
        };
        let Some(rate) = rate.filter(|r| *r > 0) else {
            return Duration::ZERO;
        };
        let mut buckets = self.buckets.lock();
        let bucket = buckets
            .entry((principal.into(), direction))
            .or_insert_with(|| Bucket {
                rate: rate as f64,
                tokens: rate as f64,
                last: Instant::now(),
            });
        bucket.charge(bytes)
    }

    /// How many connections `principal` may hold open.
    pub fn connections(&self, principal: &str) -> Option<u32> {
        self.config.of(principal).connections
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debt_is_paid_at_the_rate_and_principals_do_not_share_buckets() {
        let mut config = QuotaConfig::default();
        config.principals.insert(
            "slow".into(),
            Quota {
                produce_bytes_per_sec: Some(1000),
                ..Quota::default()
            },
        );
        let q = Quotas::new(config);
        assert_eq!(
            q.charge("slow", Direction::Produce, 1000),
            Duration::ZERO,
            "a second of burst"
        );
        let wait = q.charge("slow", Direction::Produce, 500);
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert_eq!(
            q.charge("slow", Direction::Fetch, 1 << 30),
            Duration::ZERO,
            "no fetch quota"
        );
        assert_eq!(
            q.charge("other", Direction::Produce, 1 << 30),
            Duration::ZERO,
            "default: none"
        );
        assert_eq!(q.charge("slow", Direction::Produce, 1 << 40), MAX_THROTTLE);
    }
}
