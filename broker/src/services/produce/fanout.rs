//! Fan-out of the produce service: a batch routed through an exchange (its router plugin, or else
//! its bindings), and records a router stage of an ingest pipeline sends on to other topics. Each
//! destination's records are split by key hash over its partitions (a key keeps its order) and go
//! through that topic's own pipeline. All of it is planned (`plan.rs`) before anything is
//! appended; hop, batch-count and byte limits stop routing loops and geometric fan-out, and a
//! produce over a limit is refused whole.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use quiver_proto::Batch;

use super::plan::Plan;
use super::{ProduceService, Produced, Writer};
use crate::error::BrokerError;
use crate::plugins::pipeline::ExchangeRouting;
use crate::storage::Durability;

/// How many router stages records may pass on their way (a router sending records to a topic
/// whose router sends them back would otherwise loop).
const MAX_ROUTER_HOPS: u8 = 8;

/// Most batches router stages may send on, over all hops, for one produce (fan-out at every hop
/// would otherwise grow geometrically).
const MAX_FORWARDED: u32 = 10_000;

/// Most record bytes one produce's routing may copy (records selected for a destination are
/// copied; a whole batch sent on is shared). A plan is held in memory until it is carried out.
const MAX_COPIED_BYTES: usize = 256 << 20;

impl ProduceService {
    /// Routes one batch through an exchange and appends each destination's records; answers once
    /// every append is done (and, for `acks=all`, fsync'd). Runs plugins: off the async workers.
    pub fn produce_to_exchange(
        &self,
        exchange: &str,
        batch: Bytes,
        acks: Durability,
    ) -> Result<Produced, BrokerError> {
        self.produce_to_exchange_as(exchange, batch, acks, None)
    }

    /// [`ProduceService::produce_to_exchange`] for `writer`'s records: every destination must
    /// allow them `produce`.
    pub(super) fn produce_to_exchange_as(
        &self,
        exchange: &str,
        batch: Bytes,
        acks: Durability,
        writer: Option<&Writer>,
    ) -> Result<Produced, BrokerError> {
        let batch = Batch::parse(batch)?;
        crate::headers::check(&batch)?;
        let ex = self.exchanges.get(exchange)?;
        let exists = |t: &str| self.topics.get(t).is_ok();
        let mut plan = Plan::default();
        match self.pipelines.route_exchange(exchange, &batch, &exists) {
            None => {
                for (topic, indexes) in ex.route(&batch)? {
                    self.plan_routed(&topic, &batch, &indexes, 0, &mut plan)?;
                }
            }
            Some(Ok(ExchangeRouting::Plan(routes))) => {
                for (topic, indexes) in routes {
                    self.plan_routed(&topic, &batch, &indexes, 0, &mut plan)?;
                }
            }
            Some(Ok(ExchangeRouting::Failed(settled))) => {
                let dead = settled.dead_letters.into_iter();
                plan.dead.extend(dead.map(|d| (exchange.to_owned(), d)));
            }
            Some(Err(e)) => return Err(e.into()),
        }
        Writer::check(writer, &plan)?;
        let done = self.execute(plan, acks, None)?;
        let appended = done.iter().map(|p| p.appended).sum();
        let delayed = done.iter().map(|p| p.delayed).sum();
        Ok(Produced {
            appended,
            delayed,
            transformed: delayed > 0,
            ..Produced::nothing(0, 0)
        })
    }

    /// Plans records `indexes` of `batch` into `topic`, split over its partitions by key hash,
    /// each part through its partition's ingest pipeline (`depth`: router stages passed).
    fn plan_routed(
        &self,
        topic: &str,
        batch: &Batch,
        indexes: &[usize],
        depth: u8,
        plan: &mut Plan,
    ) -> Result<(), BrokerError> {
        let t = self.topics.get(topic)?;
        let n = t.partitions().len().max(1) as u64;
        for (partition, idx) in split_by_key(batch, indexes, n, &self.round_robin) {
            let Some(part) = crate::plugins::pipeline::select(batch, &idx)? else {
                continue;
            };
            if idx.len() < batch.record_count() as usize {
                plan.copied_bytes = plan.copied_bytes.saturating_add(part.bytes().len());
                if plan.copied_bytes > MAX_COPIED_BYTES {
                    return Err(BrokerError::InvalidRequest(format!(
                        "routing one produce would copy more than {} MiB of records",
                        MAX_COPIED_BYTES >> 20
                    )));
                }
            }
            self.plan_batch(topic, partition, part, true, depth, plan)?;
        }
        Ok(())
    }

    /// Plans what a router stage of `topic` sent to other topics, within the hop and fan-out
    /// limits.
    pub(super) fn plan_forward(
        &self,
        topic: &str,
        routed: Vec<(String, Batch)>,
        depth: u8,
        plan: &mut Plan,
    ) -> Result<(), BrokerError> {
        if depth >= MAX_ROUTER_HOPS {
            return Err(BrokerError::InvalidRequest(format!(
                "routing loop: records routed from {topic} passed {MAX_ROUTER_HOPS} router stages"
            )));
        }
        plan.forwarded = plan.forwarded.saturating_add(routed.len() as u32);
        if plan.forwarded > MAX_FORWARDED {
            return Err(BrokerError::InvalidRequest(format!(
                "router stages sent one produce to more than {MAX_FORWARDED} topics; nothing was appended"
            )));
        }
        for (dest, b) in routed {
            let all: Vec<usize> = (0..b.record_count() as usize).collect();
            self.plan_routed(&dest, &b, &all, depth + 1, plan)?;
        }
        Ok(())
    }
}

/// Groups record indexes (ascending) by partition: by key hash, keyless records together on the
/// next round-robin partition.
fn split_by_key(
    batch: &Batch,
    indexes: &[usize],
    partitions: u64,
    round_robin: &AtomicU32,
) -> BTreeMap<u32, Vec<usize>> {
    let keyless = (round_robin.fetch_add(1, Ordering::Relaxed) as u64 % partitions) as u32;
    let mut out: BTreeMap<u32, Vec<usize>> = Default::default();
    if partitions <= 1 {
        // One partition: no key needs hashing.
        out.insert(0, indexes.to_vec());
        return out;
    }
    let mut want = indexes.iter().peekable();
    for (i, r) in batch.records().enumerate() {
        if want.next_if(|&&j| j == i).is_none() {
            continue;
        }
        let p = match r.key {
            Some(k) => quiver_proto::routing::partition_for_key(k, partitions as u32),
            None => keyless,
        };
        out.entry(p).or_default().push(i);
    }
    out
}
