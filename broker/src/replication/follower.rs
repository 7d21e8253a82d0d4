//! A partition this node follows: first cut whatever its log holds past the point where its
//! last leader epoch ended on the current leader (KIP-101), then fetch from the leader in a
//! loop, appending the leader's batches as they are (offsets included), fsync'd before the
//! next fetch tells the leader how far this copy is.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use quiver_proto::batch::Batches;
use tokio_util::sync::CancellationToken;

use super::epochs::EpochCache;
use super::messages::{decode, encode, ReplicaRequest, ReplicaResponse};
use crate::cluster::{Cluster, NodeId};
use crate::storage::{Durability, PartitionLog};

/// Largest answer a follower asks for.
const FETCH_BYTES: u32 = 4 << 20;
/// A fetch waits at most half a second at the leader: this leaves room for the link.
const FETCH_TTL: Duration = Duration::from_secs(5);
/// Pause after a refusal or a failed call before asking again.
const RETRY: Duration = Duration::from_millis(200);

/// How many rounds a reconciliation may take (each one drops at least one epoch).
const MAX_ROUNDS: usize = 64;

/// What a follower task copies, from whom, in which epoch.
pub struct Following {
    pub me: NodeId,
    pub topic: String,
    pub partition: u32,
    pub leader: NodeId,
    pub epoch: u64,
    pub log: Arc<PartitionLog>,
    pub epochs: Arc<Mutex<EpochCache>>,
    /// Held by whoever writes this replica's log (across its blocking work): a task replaced by
    /// the next epoch's finishes its last append before the new one reconciles.
    pub writing: Arc<tokio::sync::Mutex<()>>,
    pub stop: CancellationToken,
}

impl Following {
    /// Follows until stopped (a new leader or epoch, or the node stopping).
    pub async fn run(self, cluster: Arc<Cluster>) {
        let this = Arc::new(self);
        let stop = this.stop.clone();
        loop {
            let step = async {
                this.reconcile(&cluster).await?;
                this.copy(&cluster).await
            };
            tokio::select! {
                () = stop.cancelled() => return,
                result = step => if let Err(why) = result {
                    tracing::debug!(topic = %this.topic, partition = this.partition, leader = this.leader, %why, "replica fetch failed; retrying");
                },
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(RETRY) => {}
            }
        }
    }

    async fn call(
        &self,
        cluster: &Cluster,
        req: &ReplicaRequest,
    ) -> Result<ReplicaResponse, String> {
        let answer = cluster
            .call_replica(self.leader, encode(req), FETCH_TTL)
            .await
            .map_err(|e| e.to_string())?;
        decode(&answer)
    }

    /// Cuts this copy's tail that the leader does not have: asks where this copy's latest epoch
    /// ends on the leader and truncates there. When the leader only knows an earlier epoch,
    /// the cut is also no later than where this copy's next epoch began (the records after
    /// it were written by a leader the current one never followed, KIP-279), and it asks again
    /// about that earlier epoch, until both agree.
    async fn reconcile(&self, cluster: &Cluster) -> Result<(), String> {
        for _ in 0..MAX_ROUNDS {
            let log_end = self.log.stats().log_end;
            let latest = self.epochs.lock().latest();
            if log_end == 0 && latest.is_none() {
                return Ok(());
            }
            let last_epoch = latest.map_or(0, |(e, _)| e);
            let req = ReplicaRequest::EpochEnd {
                topic: self.topic.clone(),
                partition: self.partition,
                epoch: self.epoch,
                last_epoch,
            };
            let (epoch, end) = match self.call(cluster, &req).await? {
                ReplicaResponse::EpochEnd { epoch, end } => (epoch, end),
                other => return Err(format!("epoch end refused: {other:?}")),
            };
            let next_mine = {
                let cache = self.epochs.lock();
                let after = cache.entries().iter().find(|&&(e, _)| e > epoch);
                after.map_or(log_end, |&(_, s)| s)
            };
            let cut = end.min(next_mine).min(log_end);
            let guard = self.writing.clone().lock_owned().await;
            if self.stop.is_cancelled() {
                return Err("stopped".into());
            }
            let (log, epochs) = (self.log.clone(), self.epochs.clone());
            tokio::task::spawn_blocking(move || -> Result<(), String> {
                let _guard = guard;
                if cut < log_end {
                    log.truncate_to(cut).map_err(|e| e.to_string())?;
                }
                let mut epochs = epochs.lock();
                epochs.truncate_from(cut).map_err(|e| e.to_string())?;
                if epoch < last_epoch {
                    epochs.forget_after(epoch).map_err(|e| e.to_string())?;
                }
                Ok(())
            })
            .await
            .map_err(|e| e.to_string())??;
            if epoch >= last_epoch || cut == 0 {
                return Ok(());
            }
        }
        Err("the epochs did not agree after many rounds".into())
    }

    /// Fetches and appends until something goes wrong.
    async fn copy(&self, cluster: &Cluster) -> Result<(), String> {
        loop {
            let offset = self.log.stats().log_end;
            let req = ReplicaRequest::Fetch {
                topic: self.topic.clone(),
                partition: self.partition,
                epoch: self.epoch,
                offset,
                replica: self.me,
                max_bytes: FETCH_BYTES,
            };
            match self.call(cluster, &req).await? {
                ReplicaResponse::Records {
                    bytes,
                    high_watermark,
                    epochs,
                    log_start,
                    ..
                } => {
                    let marks = (high_watermark, log_start);
                    self.append(offset, bytes, marks, epochs).await?
                }
                ReplicaResponse::OutOfRange { log_start } => {
                    let guard = self.writing.clone().lock_owned().await;
                    let log = self.log.clone();
                    tokio::task::spawn_blocking(move || {
                        let _guard = guard;
                        log.restart_at(log_start)
                    })
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                }
                other => return Err(format!("fetch refused: {other:?}")),
            }
        }
    }

    /// Appends the leader's batches (which must start at this copy's log end), fsyncs them and
    /// takes the leader's epochs and high watermark. Stops between batches once this task is
    /// replaced.
    async fn append(
        &self,
        offset: u64,
        bytes: Vec<u8>,
        (high_watermark, log_start): (u64, u64),
        leader_epochs: Vec<(u64, u64)>,
    ) -> Result<(), String> {
        let guard = self.writing.clone().lock_owned().await;
        let (log, epochs, stop) = (self.log.clone(), self.epochs.clone(), self.stop.clone());
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            let _guard = guard;
            let mut end = offset;
            for batch in Batches::new(Bytes::from(bytes)) {
                if stop.is_cancelled() {
                    return Err("stopped".into());
                }
                let batch = batch.map_err(|e| format!("the leader sent a bad batch: {e}"))?;
                if batch.base_offset() != end {
                    return Err(format!(
                        "the leader sent offset {} where this copy ends at {end}",
                        batch.base_offset()
                    ));
                }
                end = log
                    .append_as_replica(&batch, end, Durability::Leader)
                    .map_err(|e| e.to_string())?
                    .log_end;
            }
            if end > offset {
                log.sync_through(end).map_err(|e| e.to_string())?;
            }
            let mut cache = epochs.lock();
            for (epoch, start) in leader_epochs.into_iter().filter(|&(_, s)| s < end) {
                cache.assign(epoch, start).map_err(|e| e.to_string())?;
            }
            log.set_high_watermark(Some(high_watermark.min(end)));
            // Whole segments below the leader's log start only (never past this copy's end).
            if log_start > log.stats().log_start {
                log.delete_before(log_start.min(end))
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())?
    }
}
