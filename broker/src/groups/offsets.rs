//! Committed offsets of consumer groups, in the metadata store (`group-offsets` tree, key
//! `<group>/<topic>/<partition>`). Commits are flushed before they are acknowledged: an offset the
//! client was told is committed survives a crash.

use quiver_proto::groups::{PartitionOffset, TopicPartition};
use serde::{Deserialize, Serialize};

use crate::meta::{MetaError, MetaStore, Namespace};

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Stored {
    offset: u64,
    committed_ms: i64,
}

#[derive(Debug, Clone)]
pub struct OffsetStore {
    meta: MetaStore,
}

fn key(group: &str, topic: &str, partition: u32) -> String {
    format!("{group}/{topic}/{partition}")
}

impl OffsetStore {
    pub fn new(meta: MetaStore) -> OffsetStore {
        OffsetStore { meta }
    }

    /// Stores every offset, then flushes once.
    pub fn commit(&self, group: &str, offsets: &[PartitionOffset]) -> Result<(), MetaError> {
        let now = crate::util::now_ms();
        for o in offsets {
            let v = Stored {
                offset: o.offset,
                committed_ms: now,
            };
            self.meta.put(
                Namespace::GroupOffsets,
                &key(group, &o.topic, o.partition),
                &v,
            )?;
        }
        self.meta.flush()
    }

    pub fn get(&self, group: &str, tp: &TopicPartition) -> Result<Option<u64>, MetaError> {
        let v: Option<Stored> = self.meta.get(
            Namespace::GroupOffsets,
            &key(group, &tp.topic, tp.partition),
        )?;
        Ok(v.map(|s| s.offset))
    }

    /// Every committed offset of `group`.
    pub fn all(&self, group: &str) -> Result<Vec<PartitionOffset>, MetaError> {
        let entries: Vec<(String, Stored)> = self
            .meta
            .scan(Namespace::GroupOffsets, &format!("{group}/"))?;
        Ok(entries
            .into_iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix(group)?.strip_prefix('/')?;
                let (topic, partition) = rest.rsplit_once('/')?;
                Some(PartitionOffset {
                    topic: topic.to_owned(),
                    partition: partition.parse().ok()?,
                    offset: v.offset,
                })
            })
            .collect())
    }

    /// Group names with at least one committed offset, with how many partitions they committed.
    pub fn groups(&self) -> Result<Vec<(String, u32)>, MetaError> {
        let entries: Vec<(String, Stored)> = self.meta.scan(Namespace::GroupOffsets, "")?;
        let mut out: Vec<(String, u32)> = Vec::new();
        for (k, _) in entries {
            let Some((group, _)) = k.split_once('/') else {
                continue;
            };
            match out.last_mut() {
                Some((g, n)) if g == group => *n += 1,
                _ => out.push((group.to_owned(), 1)),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_survive_reopen_and_list_by_group() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = OffsetStore::new(MetaStore::open(dir.path()).unwrap());
            let o = |t: &str, p, offset| PartitionOffset {
                topic: t.into(),
                partition: p,
                offset,
            };
            s.commit("g1", &[o("a.b", 0, 5), o("a.b", 1, 7)]).unwrap();
            s.commit("g2", &[o("x", 3, 1)]).unwrap();
            s.commit("g1", &[o("a.b", 0, 9)]).unwrap();
        }
        let s = OffsetStore::new(MetaStore::open(dir.path()).unwrap());
        assert_eq!(
            s.get("g1", &TopicPartition::new("a.b", 0)).unwrap(),
            Some(9)
        );
        assert_eq!(s.get("g1", &TopicPartition::new("a.b", 2)).unwrap(), None);
        assert_eq!(s.all("g1").unwrap().len(), 2);
        assert_eq!(
            s.groups().unwrap(),
            vec![("g1".to_string(), 2), ("g2".to_string(), 1)]
        );
    }
}
