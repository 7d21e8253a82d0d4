//! One produce's appends, planned before any is made: the batch runs through its topic's ingest
//! pipeline, router stages' records through their destinations' pipelines (`fanout.rs`), and
//! every resulting append and dead letter is collected and checked first. Only a plan that holds
//! as a whole is carried out, so a produce refused for any reason (a rejecting stage, a fan-out
//! limit, an invalid delay, a batch too large for its destination) appends nothing.

use bytes::Bytes;
use quiver_proto::batch::FLAG_DELAYED;
use quiver_proto::Batch;

use super::{ProduceService, Produced};
use crate::error::BrokerError;
use crate::storage::{Durability, StorageError};

/// One planned append: `batch` into `topic`/`partition` (its delayed records held instead).
#[derive(Debug)]
pub(super) struct Append {
    pub topic: String,
    pub partition: u32,
    pub batch: Batch,
    /// The records are not the ones sent, one for one.
    pub transformed: bool,
}

/// Everything one produce will write, in order: dead letters first, then the appends (records
/// routed elsewhere before the batch's own remainder).
#[derive(Debug, Default)]
pub(super) struct Plan {
    /// (topic whose stage failed, dead-letter batch for `<topic>.dlq`).
    pub dead: Vec<(String, Bytes)>,
    pub appends: Vec<Append>,
    /// Batches router stages sent on so far (bounded by the fan-out limit).
    pub forwarded: u32,
    /// Record bytes copied for routed selections so far (bounded too).
    pub copied_bytes: usize,
}

impl ProduceService {
    /// Plans `batch` into `topic`/`partition`: through the topic's pipeline when `run_plugins`,
    /// its routed records through theirs (`depth`: router stages already passed). Returns the
    /// index of the batch's own append in the plan, `None` when nothing of it stays on `topic`.
    pub(super) fn plan_batch(
        &self,
        topic: &str,
        partition: u32,
        batch: Batch,
        run_plugins: bool,
        depth: u8,
        plan: &mut Plan,
    ) -> Result<Option<usize>, BrokerError> {
        if !run_plugins || !self.pipelines.has_pipeline(topic) {
            return self
                .plan_append(topic, partition, batch, false, plan)
                .map(Some);
        }
        let exists = |t: &str| self.topics.get(t).is_ok();
        let ingested = self.pipelines.run(topic, batch, &exists)?;
        plan.dead.extend(
            ingested
                .dead_letters
                .into_iter()
                .map(|d| (topic.to_owned(), d)),
        );
        if !ingested.routed.is_empty() {
            self.plan_forward(topic, ingested.routed, depth, plan)?;
        }
        match ingested.batch {
            Some(b) => self
                .plan_append(topic, partition, b, ingested.transformed, plan)
                .map(Some),
            None => Ok(None),
        }
    }

    /// Adds one append after checking what the append itself would refuse: the destination
    /// exists, the batch fits its batches, its due times are valid.
    fn plan_append(
        &self,
        topic: &str,
        partition: u32,
        batch: Batch,
        transformed: bool,
        plan: &mut Plan,
    ) -> Result<usize, BrokerError> {
        let log = self.topics.partition(topic, partition)?;
        let (len, max) = (batch.bytes().len(), log.config().max_batch_bytes as usize);
        if len > max {
            return Err(StorageError::BatchTooLarge { len, max }.into());
        }
        if batch.header().flags & FLAG_DELAYED != 0 {
            crate::delay::records::due_times(&batch, crate::util::now_ms())?;
        }
        plan.appends.push(Append {
            topic: topic.to_owned(),
            partition,
            batch,
            transformed,
        });
        Ok(plan.appends.len() - 1)
    }

    /// Carries out a plan: buries its dead letters, then appends in order. With `acks=all`, every
    /// append but `own` (which the caller syncs, sharing the partition's group commit) is synced
    /// before this returns. Returns what each append did, in plan order.
    pub(super) fn execute(
        &self,
        plan: Plan,
        acks: Durability,
        own: Option<usize>,
    ) -> Result<Vec<Produced>, BrokerError> {
        for (topic, dead) in plan.dead {
            self.dead_letters.bury(&topic, dead, acks)?;
        }
        let mut done = Vec::with_capacity(plan.appends.len());
        let all = acks == Durability::All;
        for a in plan.appends {
            let log = self.topics.partition(&a.topic, a.partition)?;
            let epoch = self.replication.check_produce(&a.topic, a.partition, all)?;
            let produced =
                self.append_or_hold(&a.topic, a.partition, &log, a.batch, acks, a.transformed)?;
            let produced = Produced {
                leader_epoch: epoch,
                ..produced
            };
            done.push((a.topic, produced));
        }
        if all {
            for (i, (topic, p)) in done.iter().enumerate() {
                if Some(i) != own {
                    self.sync(topic, p.partition, p.log_end)?;
                    self.wait_replicated(topic, p)?;
                }
            }
        }
        Ok(done.into_iter().map(|(_, p)| p).collect())
    }
}
