//! Quotas per principal (Kafka's model): produce and fetch bytes per second, and open
//! connections. Bytes over quota are not refused: the broker holds the answer back for as long
//! as the principal's debt takes to pay off at its rate, and says so in the answer
//! (`throttle_ms`). A client that waits for its answers (every Quiver client keeps a bounded
//! window) is slowed to the quota; other principals are not, each has its own buckets.
//!
//! Quotas come from the config file (`[quotas]`) and from `quota set` at runtime (stored in sled,
//! winning over the file's). A principal's own quota replaces the default, it does not add to it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use quiver_proto::auth::PrincipalQuota;
pub use quiver_proto::auth::Quota;
use serde::{Deserialize, Serialize};

use super::users::check_name;
use super::AuthError;
use crate::meta::{MetaStore, Namespace};

/// The longest a single answer is held back (a larger debt is paid over later answers).
const MAX_THROTTLE: Duration = Duration::from_secs(30);

/// `[quotas]` in the config file: a default for every principal, and per-principal overrides
/// (a principal listed here gets its own quota in place of the default, not on top of it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaConfig {
    pub default: Quota,
    pub principals: BTreeMap<String, Quota>,
}

/// The principal name that stands for every principal without a quota of its own.
pub const DEFAULT_PRINCIPAL: &str = "*";

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

    /// How long until the bucket is out of debt, without charging it.
    fn debt(&self) -> Duration {
        let refill = self.last.elapsed().as_secs_f64() * self.rate;
        let tokens = self.tokens + refill;
        if tokens >= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(-tokens / self.rate).min(MAX_THROTTLE)
    }
}

#[derive(Debug)]
pub struct Quotas {
    meta: MetaStore,
    config: QuotaConfig,
    /// Set at runtime, by principal (`*` for the default).
    set: RwLock<BTreeMap<String, Quota>>,
    buckets: Mutex<HashMap<(Arc<str>, Direction), Bucket>>,
}

impl Quotas {
    pub fn open(meta: MetaStore, config: QuotaConfig) -> Result<Quotas, AuthError> {
        let set = meta
            .scan::<Quota>(Namespace::Quotas, "")?
            .into_iter()
            .collect();
        Ok(Quotas {
            meta,
            config,
            set: RwLock::new(set),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// The quota in force for `principal`: its own (runtime, then file), else the default
    /// (runtime, then file).
    pub fn of(&self, principal: &str) -> Quota {
        let set = self.set.read();
        set.get(principal)
            .or_else(|| self.config.principals.get(principal))
            .or_else(|| set.get(DEFAULT_PRINCIPAL))
            .copied()
            .unwrap_or(self.config.default)
    }

    /// Sets `principal`'s quota at runtime (durably); applies to its next request.
    pub fn set(&self, principal: &str, quota: Quota) -> Result<(), AuthError> {
        if principal != DEFAULT_PRINCIPAL {
            check_name(principal)?;
        }
        self.meta
            .put_durable(Namespace::Quotas, principal, &quota)?;
        self.set.write().insert(principal.to_owned(), quota);
        Ok(())
    }

    pub fn remove(&self, principal: &str) -> Result<(), AuthError> {
        if self.set.write().remove(principal).is_none() {
            return Err(AuthError::NoQuota(principal.to_owned()));
        }
        self.meta.remove_durable(Namespace::Quotas, principal)?;
        Ok(())
    }

    /// Every quota in force: the file's, overlaid with the runtime ones (`*` is the default).
    pub fn list(&self) -> Vec<PrincipalQuota> {
        let mut all: BTreeMap<String, Quota> = self.config.principals.clone();
        all.insert(DEFAULT_PRINCIPAL.to_owned(), self.config.default);
        all.extend(self.set.read().iter().map(|(k, v)| (k.clone(), *v)));
        all.into_iter()
            .map(|(principal, quota)| PrincipalQuota { principal, quota })
            .collect()
    }

    /// `principal`'s byte rate in `direction`, if it has one.
    fn rate(&self, principal: &str, direction: Direction) -> Option<u64> {
        let quota = self.of(principal);
        let rate = match direction {
            Direction::Produce => quota.produce_bytes_per_sec,
            Direction::Fetch => quota.fetch_bytes_per_sec,
        };
        rate.filter(|r| *r > 0)
    }

    /// Counts `bytes` of `principal` in `direction`; returns how long to hold the answer back.
    pub fn charge(&self, principal: &str, direction: Direction, bytes: u64) -> Duration {
        let Some(rate) = self.rate(principal, direction) else {
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
        // A quota changed at runtime applies from now on.
        bucket.rate = rate as f64;
        bucket.charge(bytes)
    }

    /// How long `principal` is still in debt in `direction` (what earlier answers charged and
    /// the rate has not yet paid off); charges nothing. A queue poll waits this long before it
    /// leases anything, so a lease's time is never spent waiting out a quota.
    pub fn debt(&self, principal: &str, direction: Direction) -> Duration {
        if self.rate(principal, direction).is_none() {
            return Duration::ZERO; // the quota was removed: its debt with it
        }
        let key: (Arc<str>, Direction) = (principal.into(), direction);
        self.buckets
            .lock()
            .get(&key)
            .map_or(Duration::ZERO, Bucket::debt)
    }

    /// How many connections `principal` may hold open.
    pub fn connections(&self, principal: &str) -> Option<u32> {
        self.of(principal).connections
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
        let dir = tempfile::tempdir().unwrap();
        let q = Quotas::open(MetaStore::open(dir.path()).unwrap(), config).unwrap();
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
        let debt = q.debt("slow", Direction::Produce);
        assert!(
            debt <= wait && debt > Duration::from_millis(300),
            "{debt:?}"
        );
        assert!(
            q.debt("slow", Direction::Produce) <= debt,
            "asking charges nothing"
        );
        assert_eq!(q.debt("other", Direction::Produce), Duration::ZERO);
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
        let limited = Quota {
            connections: Some(3),
            ..Quota::default()
        };
        q.set("*", limited).unwrap();
        assert_eq!(q.of("other"), limited, "a runtime default");
        assert_eq!(
            q.of("slow").connections,
            None,
            "its own quota replaces the default"
        );
        q.remove("*").unwrap();
        assert_eq!(q.of("other"), Quota::default());
        assert!(matches!(q.remove("*"), Err(AuthError::NoQuota(_))));
    }
}
