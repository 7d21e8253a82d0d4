//! Delayed records on a cluster (docs/replication.md "Delayed delivery"): held in delay shards,
//! the partitions of the internal topic [`DELAY_TOPIC`] (one per member), each replicated like
//! any partition. A destination partition's delayed records all go to one shard, picked from its
//! topic name and number; the shard's leader holds them in a [`DelayStore`] over the shard's log
//! and delivers them when due. A node that does not lead the shard hands the hold (or a cancel)
//! to the node that does over the peer link. When a shard's leader changes, the new one opens a
//! store over its copy, which has every acknowledged hold, within a keeper tick.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use parking_lot::Mutex;
use prometheus_client::metrics::histogram::Histogram;
use quiver_proto::batch::{self, Batch};
use quiver_proto::ErrorCode;
use serde::{Deserialize, Serialize};

use super::{DelayError, DelayStore, Held};
use crate::cluster::PeerHandler;
use crate::replication::{Replication, DELAY_TOPIC};
use crate::storage::{Durability, PartitionLog, TopicStore};

/// Ids of records held in shard `k` are `(k + 1) << ID_SHIFT | offset in the shard`, so they
/// never meet the ids of a node's own delay store (plain offsets) and name their shard.
const ID_SHIFT: u32 = 48;
/// How long a forwarded hold or cancel waits for the shard's leader (longer than an `acks=all`
/// wait for its in-sync replicas, which the leader does before it answers).
const FORWARD_WAIT: Duration = Duration::from_secs(35);
/// How long a count of pending records waits for each shard's leader.
const COUNT_WAIT: Duration = Duration::from_secs(2);

/// The shard holding the delayed records bound for `topic`/`partition`.
pub fn shard_of(topic: &str, partition: u32, shards: u32) -> u32 {
    let h = crc32c::crc32c(topic.as_bytes()) as u64 + partition as u64;
    (h % shards.max(1) as u64) as u32
}

/// The cluster-wide id of the record at `local` in shard `k`.
fn global_id(k: u32, local: u64) -> u64 {
    ((k as u64 + 1) << ID_SHIFT) | local
}

/// The shard and local id of a cluster-wide id (`None`: an id of a node's own store).
pub fn split_id(id: u64) -> Option<(u32, u64)> {
    let hi = id >> ID_SHIFT;
    (hi > 0).then(|| ((hi - 1) as u32, id & ((1 << ID_SHIFT) - 1)))
}

/// A request to a shard's leader.
#[derive(Debug, Serialize, Deserialize)]
enum ShardRequest {
    Hold {
        topic: String,
        partition: u32,
        batch: serde_bytes::ByteBuf,
        acks_all: bool,
    },
    /// Cluster-wide ids.
    Topic {
        id: u64,
    },
    /// `topic`: the one the canceller was authorized for (the record must be bound for it).
    Cancel {
        id: u64,
        topic: String,
    },
    Pending {
        shard: u32,
        topic: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
enum ShardResponse {
    Held { count: u32, first_id: u64 },
    Topic(Option<String>),
    Cancelled(String),
    Pending(u64),
    Failed { code: u16, message: String },
}

/// A shard this node leads, with the store over its log.
#[derive(Clone)]
struct Led {
    epoch: u64,
    store: Arc<DelayStore>,
}

pub struct Shards {
    me: Weak<Shards>,
    replication: Arc<Replication>,
    logs: Vec<Arc<PartitionLog>>,
    topics: Weak<TopicStore>,
    lateness: Histogram,
    /// The store of each shard this node leads, by shard.
    led: Mutex<Vec<Option<Led>>>,
    /// Set by a graceful stop: stores close and no more open.
    leaving: AtomicBool,
}

impl std::fmt::Debug for Shards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shards")
            .field("count", &self.logs.len())
            .finish_non_exhaustive()
    }
}

/// A request the shard could not take (here or at its leader): retriable, the client asks for
/// fresh metadata first.
fn moved(k: u32, why: impl std::fmt::Display) -> DelayError {
    DelayError::Shard {
        code: ErrorCode::NotLeader,
        message: format!("delay shard {k}: {why}; retry"),
    }
}

impl Shards {
    /// `logs`: the shards' logs, by number (the same ones replication copies).
    pub fn new(
        replication: Arc<Replication>,
        logs: Vec<Arc<PartitionLog>>,
        topics: Weak<TopicStore>,
        lateness: Histogram,
    ) -> Arc<Shards> {
        let count = logs.len();
        Arc::new_cyclic(|me| Shards {
            me: me.clone(),
            replication,
            logs,
            topics,
            lateness,
            led: Mutex::new(vec![None; count]),
            leaving: AtomicBool::new(false),
        })
    }

    /// Whether delayed records bound for `topic` go to the shards (a replicated topic).
    pub fn covers(&self, topic: &str) -> bool {
        !self.logs.is_empty() && self.replication.is_replicated(topic)
    }

    fn count(&self) -> u32 {
        self.logs.len() as u32
    }

    /// Opens a store for each shard this node has come to lead and stops those of shards it
    /// no longer leads (every keeper tick, on the blocking pool).
    pub fn keep(&self) {
        for k in 0..self.count() {
            let epoch = match self.leaving.load(Ordering::Acquire) {
                true => None,
                false => self.replication.led_epoch(DELAY_TOPIC, k),
            };
            let current = self.led.lock()[k as usize].clone();
            if current.as_ref().map(|l| l.epoch) == epoch {
                continue;
            }
            if let Some(old) = current {
                // Not waited for: a round blocked on a destination would hold up the other
                // shards. It stops before its next destination (it checks it still leads).
                old.store.halt();
                self.led.lock()[k as usize] = None;
                tracing::info!(shard = k, "delay shard closed here");
            }
            let Some(epoch) = epoch else { continue };
            match self.open_store(k, epoch) {
                Ok(store) => {
                    tracing::info!(
                        shard = k,
                        epoch,
                        pending = store.pending_total(),
                        "delay shard opened here"
                    );
                    self.led.lock()[k as usize] = Some(Led { epoch, store });
                }
                Err(e) => tracing::error!(shard = k, error = %e, "cannot open a delay shard"),
            }
        }
    }

    fn open_store(&self, k: u32, epoch: u64) -> Result<Arc<DelayStore>, DelayError> {
        let log = self.logs[k as usize].clone();
        let replication = Arc::downgrade(&self.replication);
        let leads: super::LeadsHook = Box::new(move || {
            replication
                .upgrade()
                .is_some_and(|r| r.led_epoch(DELAY_TOPIC, k) == Some(epoch))
        });
        let shard = (global_id(k, 0), leads);
        let store = Arc::new(DelayStore::over(log, self.lateness.clone(), shard)?);
        let replication = Arc::downgrade(&self.replication);
        store.on_deliver(Box::new(move |topic, p, batches| {
            let r = replication.upgrade().ok_or("the broker is stopping")?;
            r.deliver_blocking(topic, p, batches)
                .map_err(|e| e.to_string())
        }));
        store
            .start(self.topics.clone())
            .map_err(|e| moved(k, format!("cannot start its delivery: {e}")))?;
        Ok(store)
    }

    /// Stops every store and opens no more (a graceful stop, before the hand-over): a round in
    /// progress gets up to `wait` to finish while this node still leads, so the next leader
    /// does not repeat it.
    pub fn leave(&self, wait: Duration) {
        let led = self.take_all();
        for l in &led {
            l.store.halt();
        }
        let deadline = std::time::Instant::now() + wait;
        for l in led {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if !l.store.stop_within(left) {
                tracing::warn!(
                    "a delay shard's delivery round did not finish before the hand-over"
                );
            }
        }
    }

    /// Takes every open store out and opens no more.
    fn take_all(&self) -> Vec<Led> {
        self.leaving.store(true, Ordering::Release);
        let mut led = self.led.lock();
        led.iter_mut().filter_map(Option::take).collect()
    }

    /// The store of shard `k` if this node leads it in the epoch the store was opened for.
    fn led(&self, k: u32) -> Option<Led> {
        let epoch = self.replication.led_epoch(DELAY_TOPIC, k)?;
        let led = self.led.lock().get(k as usize)?.clone()?;
        (led.epoch == epoch).then_some(led)
    }

    /// Holds the delayed records of `batch` in their shard, here or at its leader; for
    /// `acks=all` once the shard's in-sync replicas have them. Blocking.
    pub fn hold(
        &self,
        topic: &str,
        partition: u32,
        batch: Batch,
        acks: Durability,
    ) -> Result<Held, DelayError> {
        if batch.header().flags & batch::FLAG_DELAYED == 0 {
            return Ok(Held {
                immediate: Some(batch),
                count: 0,
                first_id: 0,
                end: 0,
            });
        }
        let k = shard_of(topic, partition, self.count());
        if self.led(k).is_some() {
            return self.hold_here(k, topic, partition, batch, acks);
        }
        let immediate = DelayStore::immediate_of(&batch)?;
        let request = ShardRequest::Hold {
            topic: topic.to_owned(),
            partition,
            batch: serde_bytes::ByteBuf::from(batch.bytes().to_vec()),
            acks_all: acks == Durability::All,
        };
        match self.ask_blocking(k, &request, FORWARD_WAIT)? {
            ShardResponse::Held { count, first_id } => Ok(Held {
                immediate,
                count,
                first_id,
                end: 0,
            }),
            other => Err(refused(k, other)),
        }
    }

    /// Holds at this node, the shard's leader.
    fn hold_here(
        &self,
        k: u32,
        topic: &str,
        partition: u32,
        batch: Batch,
        acks: Durability,
    ) -> Result<Held, DelayError> {
        let led = self.led(k).ok_or_else(|| moved(k, "not led here"))?;
        let held = led.store.hold(topic, partition, batch, acks)?;
        if acks == Durability::All && held.count > 0 {
            self.replicated(k, held.end, led.epoch)?;
        }
        Ok(held)
    }

    /// Waits until shard `k`'s in-sync replicas have its log below `end` (written in `epoch`).
    fn replicated(&self, k: u32, end: u64, epoch: u64) -> Result<(), DelayError> {
        let handle = self
            .replication
            .runtime()
            .ok_or_else(|| moved(k, "the cluster has not started"))?;
        let wait = self
            .replication
            .replicated(DELAY_TOPIC, k, end, Some(epoch));
        handle.block_on(wait).map_err(|e| DelayError::Shard {
            code: e.code(),
            message: format!("delay shard {k}: {e}"),
        })
    }

    /// The destination topic of pending record `id`, if its shard is led here (the ACL check
    /// of a cancel; [`Shards::topic_of`] asks the leader).
    pub fn pending_topic_here(&self, id: u64) -> Option<String> {
        let (k, _) = split_id(id)?;
        self.led(k)?.store.pending_topic(id)
    }

    /// The destination topic of pending record `id`, asked of its shard's leader.
    pub async fn topic_of(&self, id: u64) -> Result<Option<String>, DelayError> {
        let Some((k, _)) = split_id(id) else {
            return Ok(None);
        };
        if let Some(led) = self.led(k) {
            return Ok(led.store.pending_topic(id));
        }
        match self
            .ask(k, &ShardRequest::Topic { id }, FORWARD_WAIT)
            .await?
        {
            ShardResponse::Topic(topic) => Ok(topic),
            other => Err(refused(k, other)),
        }
    }

    /// Cancels pending record `id`, bound for `topic` (the one the caller was authorized
    /// for), at its shard's leader. Blocking.
    pub fn cancel(&self, id: u64, topic: &str) -> Result<String, DelayError> {
        let k = match split_id(id) {
            Some((k, _)) if k < self.count() => k,
            _ => return Err(DelayError::UnknownId(id)),
        };
        if self.led(k).is_some() {
            return self.cancel_here(k, id, topic);
        }
        let request = ShardRequest::Cancel {
            id,
            topic: topic.to_owned(),
        };
        match self.ask_blocking(k, &request, FORWARD_WAIT)? {
            ShardResponse::Cancelled(topic) => Ok(topic),
            other => Err(refused(k, other)),
        }
    }

    /// Cancels at this node, the shard's leader, once the shard's in-sync replicas have the
    /// cancel (a failover after it must not deliver the record). A record bound for another
    /// topic than `topic` is not the one the caller was authorized for: unknown to it.
    fn cancel_here(&self, k: u32, id: u64, topic: &str) -> Result<String, DelayError> {
        let led = self.led(k).ok_or_else(|| moved(k, "not led here"))?;
        if led.store.pending_topic(id).as_deref() != Some(topic) {
            return Err(DelayError::UnknownId(id));
        }
        let (topic, end) = led.store.cancel_with_end(id)?;
        self.replicated(k, end, led.epoch)?;
        Ok(topic)
    }

    /// Records held for `topic` in the shards this node leads.
    pub fn pending_here(&self, topic: Option<&str>) -> u64 {
        let led: Vec<Led> = self.led.lock().iter().flatten().cloned().collect();
        led.iter()
            .map(|l| match topic {
                Some(t) => l.store.pending_for(t),
                None => l.store.pending_total(),
            })
            .sum()
    }

    /// Records held for `topic` in every shard, each counted by its leader, all asked at once
    /// (a shard whose leader does not answer within a moment counts nothing). Blocking.
    pub fn pending_everywhere(&self, topic: &str) -> u64 {
        let Some(handle) = self.replication.runtime() else {
            return self.pending_here(Some(topic));
        };
        let counts = (0..self.count()).map(|k| {
            let request = ShardRequest::Pending {
                shard: k,
                topic: topic.to_owned(),
            };
            async move {
                if let Some(led) = self.led(k) {
                    return led.store.pending_for(topic);
                }
                match self.ask(k, &request, COUNT_WAIT).await {
                    Ok(ShardResponse::Pending(n)) => n,
                    Ok(other) => {
                        tracing::debug!(shard = k, answer = ?other, "no pending count");
                        0
                    }
                    Err(e) => {
                        tracing::debug!(shard = k, error = %e, "no pending count");
                        0
                    }
                }
            }
        });
        handle
            .block_on(futures_util::future::join_all(counts))
            .into_iter()
            .sum()
    }

    /// Drops the records held for a deleted topic in the shards this node leads (every node
    /// applies the delete).
    pub fn purge_topic(&self, topic: &str) -> Result<u64, DelayError> {
        let led: Vec<Led> = self.led.lock().iter().flatten().cloned().collect();
        let mut dropped = 0;
        for l in led {
            dropped += l.store.purge_topic(topic)?;
        }
        Ok(dropped)
    }

    /// Stops every store and opens no more (shutdown).
    pub fn stop(&self) {
        for l in self.take_all() {
            l.store.stop();
        }
    }

    /// Fsyncs the shards' logs (after [`Shards::stop`]).
    pub fn close_logs(&self) -> Result<(), DelayError> {
        for log in &self.logs {
            log.close()?;
        }
        Ok(())
    }

    /// [`Shards::ask`], from a blocking thread.
    fn ask_blocking(
        &self,
        k: u32,
        request: &ShardRequest,
        wait: Duration,
    ) -> Result<ShardResponse, DelayError> {
        let handle = self
            .replication
            .runtime()
            .ok_or_else(|| moved(k, "the cluster has not started"))?;
        handle.block_on(self.ask(k, request, wait))
    }

    /// Sends a request to shard `k`'s leader, another node.
    async fn ask(
        &self,
        k: u32,
        request: &ShardRequest,
        wait: Duration,
    ) -> Result<ShardResponse, DelayError> {
        if self.replication.led_epoch(DELAY_TOPIC, k).is_some() {
            return Err(moved(k, "its store is opening here"));
        }
        let leader = self
            .replication
            .leader_node(DELAY_TOPIC, k)
            .ok_or_else(|| moved(k, "no in-sync replica leads it yet"))?;
        let cluster = self
            .replication
            .cluster()
            .ok_or_else(|| moved(k, "the cluster has not started"))?;
        let bytes =
            rmp_serde::to_vec_named(request).map_err(|e| DelayError::Encode(e.to_string()))?;
        let answer = cluster
            .call_delay(leader, bytes, wait)
            .await
            .map_err(|e| moved(k, format!("its leader, node {leader}, did not answer: {e}")))?;
        rmp_serde::from_slice(&answer)
            .map_err(|e| moved(k, format!("cannot read node {leader}'s answer: {e}")))
    }

    /// A request another node handed to this one, the shard's leader (on the blocking pool).
    fn serve(&self, request: ShardRequest) -> ShardResponse {
        let answer = match request {
            ShardRequest::Hold {
                topic,
                partition,
                batch,
                acks_all,
            } => Batch::parse(batch.into_vec().into())
                .map_err(DelayError::from)
                .and_then(|b| {
                    let k = shard_of(&topic, partition, self.count());
                    let acks = match acks_all {
                        true => Durability::All,
                        false => Durability::Leader,
                    };
                    self.hold_here(k, &topic, partition, b, acks)
                })
                .map(|h| ShardResponse::Held {
                    count: h.count,
                    first_id: h.first_id,
                }),
            // Not led here (a failover in between): "moved", never "no such record", which
            // would let the cancel's ACL check pass.
            ShardRequest::Topic { id } => match split_id(id).and_then(|(k, _)| self.led(k)) {
                Some(led) => Ok(ShardResponse::Topic(led.store.pending_topic(id))),
                None => Err(moved(split_id(id).map_or(0, |(k, _)| k), "not led here")),
            },
            ShardRequest::Cancel { id, topic } => match split_id(id) {
                Some((k, _)) => self
                    .cancel_here(k, id, &topic)
                    .map(ShardResponse::Cancelled),
                None => Err(DelayError::UnknownId(id)),
            },
            ShardRequest::Pending { shard, topic } => match self.led(shard) {
                Some(led) => Ok(ShardResponse::Pending(led.store.pending_for(&topic))),
                None => Err(moved(shard, "not led here")),
            },
        };
        answer.unwrap_or_else(|e| ShardResponse::Failed {
            code: e.code().as_u16(),
            message: e.to_string(),
        })
    }
}

/// An answer that is not the one asked for: the leader's error, or a bug.
fn refused(k: u32, answer: ShardResponse) -> DelayError {
    match answer {
        ShardResponse::Failed { code, message } => DelayError::Shard {
            code: ErrorCode::from(code),
            message,
        },
        other => moved(k, format!("unexpected answer {other:?}")),
    }
}

impl PeerHandler for Shards {
    fn handle(&self, request: Vec<u8>) -> BoxFuture<'static, Vec<u8>> {
        let me = self.me.clone();
        async move {
            let answer = match rmp_serde::from_slice::<ShardRequest>(&request) {
                Ok(req) => {
                    let served = tokio::task::spawn_blocking(move || match me.upgrade() {
                        Some(shards) => shards.serve(req),
                        None => ShardResponse::Failed {
                            code: ErrorCode::ShuttingDown.as_u16(),
                            message: "the node is stopping".into(),
                        },
                    });
                    served.await.unwrap_or_else(|e| ShardResponse::Failed {
                        code: ErrorCode::Internal.as_u16(),
                        message: format!("a delay-shard request failed: {e}"),
                    })
                }
                Err(e) => ShardResponse::Failed {
                    code: ErrorCode::InvalidRequest.as_u16(),
                    message: format!("cannot read a delay-shard request: {e}"),
                },
            };
            rmp_serde::to_vec_named(&answer).unwrap_or_default()
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_their_shard_and_never_meet_local_ones() {
        for (k, local) in [(0, 0), (2, 17), (4, (1 << ID_SHIFT) - 1)] {
            assert_eq!(split_id(global_id(k, local)), Some((k, local)));
        }
        assert_eq!(split_id(12345), None, "a node's own store's id");
    }

    #[test]
    fn a_topic_spreads_over_the_shards() {
        let mut used: Vec<u32> = (0..6).map(|p| shard_of("orders", p, 3)).collect();
        assert!(used.iter().all(|&k| k < 3));
        used.sort_unstable();
        used.dedup();
        assert_eq!(used.len(), 3);
        assert_eq!(shard_of("orders", 1, 3), shard_of("orders", 1, 3));
    }
}
