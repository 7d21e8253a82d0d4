//! The mirror service: `mirror add / list / describe / remove` on an edge broker. A description
//! joins the definition, each forwarded partition's committed position and live counters, and the
//! local log (its end, and the age of the oldest record not yet forwarded).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use quiver_proto::messages::{AdminRequest, AdminResponse};
use quiver_proto::mirror::{MirrorDirection, MirrorInfo, MirrorPartition, MirrorStart};
use quiver_proto::Batches;

use crate::error::BrokerError;
use crate::mirrors::{LivePartition, MirrorDef, MirrorError, MirrorStatus, MirrorStore, Position};
use crate::storage::{PartitionLog, TopicStore};

#[derive(Debug)]
pub struct MirrorService {
    store: Arc<MirrorStore>,
    topics: Arc<TopicStore>,
}

impl MirrorService {
    pub fn new(store: Arc<MirrorStore>, topics: Arc<TopicStore>) -> MirrorService {
        MirrorService { store, topics }
    }

    pub fn handle(&self, req: AdminRequest) -> Result<AdminResponse, BrokerError> {
        use AdminRequest as R;
        match req {
            R::AddMirror { spec } => {
                let def = self.store.add(spec, |def| self.seed(def))?;
                tracing::info!(mirror = %def.name, to = %def.to, topics = %def.topics, "mirror added");
                Ok(AdminResponse::Mirror(self.describe(&def)?))
            }
            R::ListMirrors => Ok(AdminResponse::Mirrors {
                mirrors: self.describe_all()?,
            }),
            R::DescribeMirror { name } => Ok(AdminResponse::Mirror(
                self.describe(&self.store.get(&name)?)?,
            )),
            R::RemoveMirror { name } => {
                self.store.remove(&name)?;
                tracing::info!(mirror = %name, "mirror removed");
                Ok(AdminResponse::MirrorRemoved { name })
            }
            other => Err(BrokerError::Internal(format!(
                "not a mirror request: {other:?}"
            ))),
        }
    }

    /// A new `--from latest` mirror starts every partition that exists now at its end (recorded
    /// here, so records produced before the first contact with the core are forwarded); any
    /// other partition, and every partition of a `--from earliest` mirror, starts at its log start.
    pub fn seed(&self, def: &MirrorDef) -> Result<(), MirrorError> {
        if def.from != MirrorStart::Latest || def.direction == MirrorDirection::Pull {
            return Ok(());
        }
        let existing = self.topics.list();
        let existing = existing
            .iter()
            .filter(|t| t.config.created_ms <= def.created_ms);
        for topic in existing.filter(|t| def.forwards(&t.name)) {
            for (p, log) in topic.partitions().iter().enumerate() {
                let at = Position::fresh(def, topic.config.created_ms, log.stats().log_end);
                self.store.commit(&def.name, &topic.name, p as u32, &at)?;
            }
        }
        self.store.flush()
    }

    /// Seeds the config file's mirrors that are new at this start.
    pub fn seed_configured(&self) -> Result<(), BrokerError> {
        for name in self.store.take_new_configured() {
            self.seed(&self.store.get(&name)?)?;
        }
        Ok(())
    }

    /// Every mirror with its state (for `mirror list` and `/metrics`).
    pub fn describe_all(&self) -> Result<Vec<MirrorInfo>, BrokerError> {
        self.store
            .definitions()?
            .iter()
            .map(|d| self.describe(d))
            .collect()
    }

    fn describe(&self, def: &MirrorDef) -> Result<MirrorInfo, BrokerError> {
        let status = self.store.status(&def.name);
        let mut partitions = Vec::new();
        if def.direction == MirrorDirection::Pull {
            partitions = self.describe_pulled(def, &status)?;
        }
        let pushed = self.topics.list();
        let pushed = pushed
            .iter()
            .filter(|_| def.direction == MirrorDirection::Push);
        for topic in pushed.filter(|t| def.forwards(&t.name)) {
            for (p, log) in topic.partitions().iter().enumerate() {
                let position = self
                    .store
                    .position(&def.name, &topic.name, p as u32)?
                    .filter(|at| at.belongs(def, topic.config.created_ms));
                partitions.push(describe_partition(
                    def,
                    &status,
                    &topic.name,
                    p as u32,
                    log,
                    position,
                ));
            }
        }
        Ok(MirrorInfo {
            name: def.name.clone(),
            to: def.to.clone(),
            topics: def.topics.clone(),
            prefix: def.prefix.clone(),
            from: def.from,
            direction: def.direction,
            source_id: def.source_id.clone(),
            auth: def.auth_kind().to_owned(),
            from_config: def.from_config,
            state: status.state(),
            sessions: status.sessions(),
            records_per_sec: status.rate().round() as u64,
            partitions,
        })
    }
}

impl MirrorService {
    /// A pulling mirror's partitions: the core partitions it has positions in, with the core's
    /// end as its link last saw it (this broker cannot read the core itself).
    fn describe_pulled(
        &self,
        def: &MirrorDef,
        status: &MirrorStatus,
    ) -> Result<Vec<MirrorPartition>, BrokerError> {
        let mut out = Vec::new();
        for (topic, partition, at) in self.store.positions(&def.name)? {
            if at.mirror_created_ms != def.created_ms {
                continue;
            }
            let live = status.get(&topic, partition);
            let load = |f: fn(&LivePartition) -> &AtomicU64| {
                live.as_deref().map_or(0, |l| f(l).load(Ordering::Relaxed))
            };
            let next = load(|l| &l.next).max(at.next);
            let end = load(|l| &l.source_end).max(next);
            out.push(MirrorPartition {
                target_topic: def.target_topic(&topic),
                target_partition: at.target_partition.unwrap_or(partition),
                topic,
                partition,
                next_offset: next,
                log_end: end,
                lag_records: end - next,
                lag_ms: 0,
                forwarded_records: load(|l| &l.forwarded_records),
                forwarded_bytes: load(|l| &l.forwarded_bytes),
                dropped_by_retention: at.dropped,
                error: live.as_ref().and_then(|l| l.error.lock().clone()),
            });
        }
        Ok(out)
    }
}

fn describe_partition(
    def: &MirrorDef,
    status: &MirrorStatus,
    topic: &str,
    partition: u32,
    log: &PartitionLog,
    position: Option<Position>,
) -> MirrorPartition {
    let stats = log.stats();
    let live = status.get(topic, partition);
    let committed = position.map_or(stats.log_start, |p| p.next);
    let next = live
        .as_ref()
        .map_or(committed, |l| l.next.load(Ordering::Relaxed).max(committed));
    let load = |f: fn(&crate::mirrors::LivePartition) -> u64| live.as_deref().map_or(0, f);
    MirrorPartition {
        topic: topic.to_owned(),
        partition,
        target_topic: live
            .as_ref()
            .map(|l| l.target_topic.lock().clone())
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| def.target_topic(topic)),
        target_partition: position
            .and_then(|p| p.target_partition)
            .unwrap_or(partition),
        next_offset: next,
        log_end: stats.log_end,
        lag_records: stats.log_end.saturating_sub(next.max(stats.log_start)),
        lag_ms: oldest_age_ms(log, next.max(stats.log_start), stats.log_end),
        forwarded_records: load(|l| l.forwarded_records.load(Ordering::Relaxed)),
        forwarded_bytes: load(|l| l.forwarded_bytes.load(Ordering::Relaxed)),
        dropped_by_retention: position.map_or(0, |p| p.dropped)
            + stats.log_start.saturating_sub(committed),
        error: live.as_ref().and_then(|l| l.error.lock().clone()),
    }
}

/// How old the record at `offset` is (0 at the end of the log): how far behind the mirror runs.
fn oldest_age_ms(log: &PartitionLog, offset: u64, end: u64) -> u64 {
    if offset >= end {
        return 0;
    }
    let Ok(read) = log.read(offset, 1) else {
        return 0;
    };
    let first = Batches::new(read.bytes)
        .filter_map(Result::ok)
        .find_map(|b| {
            b.records()
                .find(|r| r.offset >= offset)
                .map(|r| r.timestamp)
        });
    first.map_or(0, |ts| {
        crate::util::now_ms().saturating_sub(ts).max(0) as u64
    })
}
