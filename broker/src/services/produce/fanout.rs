//! Fan-out of the produce service: a batch routed through an exchange (its router plugin, or else
//! its bindings), and records a router stage of an ingest pipeline sends on to other topics. Each
//! destination's records are split by key hash over its partitions (a key keeps its order) and go
//! through that topic's own pipeline; hop and fan-out limits stop routing loops.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use quiver_proto::Batch;

use super::{ProduceService, Produced};
use crate::error::BrokerError;
use crate::plugins::pipeline::ExchangeRouting;
use crate::storage::Durability;

/// How many router stages records may pass on their way (a router sending records to a topic
/// whose router sends them back would otherwise loop).
const MAX_ROUTER_HOPS: u8 = 8;

/// Most batches router stages may send on, over all hops, for one produce (fan-out at every hop
/// would otherwise grow geometrically).
const MAX_FORWARDED: u32 = 10_000;

/// How far routed records have travelled within one produce.
#[derive(Clone, Copy)]
pub(super) struct Hops<'a> {
    /// Router stages passed.
    depth: u8,
    /// Batches forwarded so far by every router stage of this produce.
    forwarded: &'a Cell<u32>,
}

impl<'a> Hops<'a> {
    pub(super) fn new(forwarded: &'a Cell<u32>) -> Hops<'a> {
        Hops {
            depth: 0,
            forwarded,
        }
    }
}

/// What appending routed records did, over all destinations.
#[derive(Debug, Default)]
struct Routed {
    appended: u32,
    delayed: u32,
    /// (topic, partition, log end) of every append, for `acks=all`.
    synced: Vec<(String, u32, u64)>,
}

impl Routed {
    fn sync(self, service: &ProduceService, acks: Durability) -> Result<(), BrokerError> {
        if acks == Durability::All {
            for (topic, partition, end) in self.synced {
                service.sync(&topic, partition, end)?;
            }
        }
        Ok(())
    }
}

impl ProduceService {
    /// Routes one batch through an exchange and appends each destination's records; answers once
    /// every append is done (and, for `acks=all`, fsync'd). Runs plugins: off the async workers.
    pub fn produce_to_exchange(
        &self,
        exchange: &str,
        batch: Bytes,
        acks: Durability,
    ) -> Result<Produced, BrokerError> {
        let batch = Batch::parse(batch)?;
        let ex = self.exchanges.get(exchange)?;
        let exists = |t: &str| self.topics.get(t).is_ok();
        let plan = match self.pipelines.route_exchange(exchange, &batch, &exists) {
            None => ex.route(&batch)?.into_iter().collect(),
            Some(Ok(ExchangeRouting::Plan(plan))) => plan,
            Some(Ok(ExchangeRouting::Failed(settled))) => {
                for dead in settled.dead_letters {
                    self.dead_letters.bury(exchange, dead, acks)?;
                }
                return Ok(Produced::nothing(0, 0));
            }
            Some(Err(e)) => return Err(e.into()),
        };
        let mut out = Routed::default();
        let forwarded = Cell::new(0);
        for (topic, indexes) in plan {
            let hops = Hops::new(&forwarded);
            self.append_routed(&topic, &batch, &indexes, acks, hops, &mut out)?;
        }
        let (appended, delayed) = (out.appended, out.delayed);
        out.sync(self, acks)?;
        Ok(Produced {
            appended,
            delayed,
            transformed: delayed > 0,
            ..Produced::nothing(0, 0)
        })
    }

    /// Appends records `indexes` of `batch` to `topic`, split over its partitions by key hash,
    /// through each partition's ingest pipeline (`hops`: how far routers already sent them).
    fn append_routed(
        &self,
        topic: &str,
        batch: &Batch,
        indexes: &[usize],
        acks: Durability,
        hops: Hops<'_>,
        out: &mut Routed,
    ) -> Result<(), BrokerError> {
        let t = self.topics.get(topic)?;
        let n = t.partitions().len().max(1) as u64;
        for (partition, idx) in split_by_key(batch, indexes, n, &self.round_robin) {
            let Some(part) = crate::plugins::pipeline::select(batch, &idx)? else {
                continue;
            };
            let log = t.partition(partition)?;
            // Appended without waiting for the fsync: all destinations are synced together.
            let p = self.append_batch(topic, partition, log, part, acks, true, hops)?;
            out.appended += p.appended;
            out.delayed += p.delayed;
            out.synced.push((topic.to_owned(), p.partition, p.log_end));
        }
        Ok(())
    }

    /// Appends what a router stage of `topic` sent to other topics.
    pub(super) fn forward(
        &self,
        topic: &str,
        routed: Vec<(String, Batch)>,
        acks: Durability,
        hops: Hops<'_>,
    ) -> Result<(), BrokerError> {
        if hops.depth >= MAX_ROUTER_HOPS {
            return Err(BrokerError::InvalidRequest(format!(
                "routing loop: records routed from {topic} passed {MAX_ROUTER_HOPS} router stages"
            )));
        }
        let total = hops.forwarded.get().saturating_add(routed.len() as u32);
        if total > MAX_FORWARDED {
            return Err(BrokerError::InvalidRequest(format!(
                "router stages sent one produce to more than {MAX_FORWARDED} topics"
            )));
        }
        hops.forwarded.set(total);
        let next = Hops {
            depth: hops.depth + 1,
            ..hops
        };
        let mut out = Routed::default();
        for (dest, b) in routed {
            let all: Vec<usize> = (0..b.record_count() as usize).collect();
            self.append_routed(&dest, &b, &all, acks, next, &mut out)?;
        }
        out.sync(self, acks)
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
