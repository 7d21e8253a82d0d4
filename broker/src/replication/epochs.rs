//! The leader-epoch cache of one partition replica (Kafka's KIP-101): for every leader epoch
//! the offset its first record got. A replica that comes back asks the current leader where its
//! own last epoch ended on the leader and cuts its log there, so a tail written by a deposed
//! leader (never acknowledged to `acks=all`) is removed instead of kept or copied. Kept in the
//! partition's folder as `leader-epochs`, one `EPOCH START` line each, replaced atomically.

use std::io::Write;
use std::path::{Path, PathBuf};

/// File name of the cache in a partition's folder.
const FILE: &str = "leader-epochs";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochCache {
    path: PathBuf,
    /// `(epoch, start offset)`, both strictly increasing.
    entries: Vec<(u64, u64)>,
}

impl EpochCache {
    /// Loads the cache of the partition in `dir` (empty when there is none; lines that do not
    /// parse, or break the order, end what is read: the cache then starts over from there).
    pub fn load(dir: &Path) -> EpochCache {
        let path = dir.join(FILE);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut entries: Vec<(u64, u64)> = Vec::new();
        for line in text.lines() {
            let mut words = line.split_whitespace().map(str::parse::<u64>);
            let (Some(Ok(epoch)), Some(Ok(start))) = (words.next(), words.next()) else {
                break;
            };
            if entries
                .last()
                .is_some_and(|&(e, s)| e >= epoch || s > start)
            {
                break;
            }
            entries.push((epoch, start));
        }
        EpochCache { path, entries }
    }

    pub fn entries(&self) -> &[(u64, u64)] {
        &self.entries
    }

    /// The latest epoch this replica has records (or leadership) of.
    pub fn latest(&self) -> Option<(u64, u64)> {
        self.entries.last().copied()
    }

    /// Records that `epoch` starts at `start` (a new leader at its log end, or a follower
    /// copying its leader's entries). Older or equal epochs are ignored; an entry of a later
    /// start is not possible unless the log was cut, which [`truncate_from`] cleans up first.
    ///
    /// [`truncate_from`]: EpochCache::truncate_from
    pub fn assign(&mut self, epoch: u64, start: u64) -> std::io::Result<()> {
        if self.entries.last().is_some_and(|&(e, _)| e >= epoch) {
            return Ok(());
        }
        self.entries.retain(|&(_, s)| s <= start);
        // Two epochs starting at the same offset: the earlier one holds no record.
        if self.entries.last().is_some_and(|&(_, s)| s == start) {
            self.entries.pop();
        }
        self.entries.push((epoch, start));
        self.save()
    }

    /// Where `epoch` ends in this (leader's) log: the largest epoch at or below it and the
    /// start of the next one (or `log_end` if it is the latest). `None` when every epoch here
    /// is later: then nothing the asking replica has is known to be shared.
    pub fn end_of(&self, epoch: u64, log_end: u64) -> Option<(u64, u64)> {
        let i = self.entries.partition_point(|&(e, _)| e <= epoch);
        let (found, _) = *self.entries.get(i.checked_sub(1)?)?;
        let end = self.entries.get(i).map_or(log_end, |&(_, s)| s);
        Some((found, end))
    }

    /// Forgets the epochs that start at or after `offset` (the log was cut there).
    pub fn truncate_from(&mut self, offset: u64) -> std::io::Result<()> {
        let before = self.entries.len();
        self.entries.retain(|&(_, s)| s < offset);
        if self.entries.len() == before {
            return Ok(());
        }
        self.save()
    }

    /// Forgets the epochs after `epoch` (the leader never had them).
    pub fn forget_after(&mut self, epoch: u64) -> std::io::Result<()> {
        let before = self.entries.len();
        self.entries.retain(|&(e, _)| e <= epoch);
        if self.entries.len() == before {
            return Ok(());
        }
        self.save()
    }

    fn save(&self) -> std::io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp)?;
        for (e, s) in &self.entries {
            writeln!(file, "{e} {s}")?;
        }
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_end_where_the_next_starts_and_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = EpochCache::load(dir.path());
        assert_eq!(c.end_of(0, 10), None);
        c.assign(0, 0).unwrap();
        c.assign(2, 40).unwrap();
        c.assign(1, 20).unwrap(); // older than the latest: ignored
        c.assign(5, 70).unwrap();
        assert_eq!(c.end_of(0, 100), Some((0, 40)));
        assert_eq!(c.end_of(1, 100), Some((0, 40)));
        assert_eq!(c.end_of(3, 100), Some((2, 70)));
        assert_eq!(c.end_of(9, 100), Some((5, 100)));
        let reloaded = EpochCache::load(dir.path());
        assert_eq!(reloaded.entries(), &[(0, 0), (2, 40), (5, 70)]);
    }

    #[test]
    fn a_cut_log_forgets_its_later_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = EpochCache::load(dir.path());
        for (e, s) in [(0, 0), (1, 10), (3, 30)] {
            c.assign(e, s).unwrap();
        }
        c.truncate_from(30).unwrap();
        assert_eq!(c.latest(), Some((1, 10)));
        c.forget_after(0).unwrap();
        assert_eq!(c.latest(), Some((0, 0)));
        // An epoch with no records is replaced by the next one at the same start.
        c.assign(4, 0).unwrap();
        assert_eq!(EpochCache::load(dir.path()).entries(), &[(4, 0)]);
    }

    #[test]
    fn a_damaged_file_is_read_up_to_the_damage() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "0 0\n2 5\nnot a line\n3 9\n").unwrap();
        assert_eq!(EpochCache::load(dir.path()).entries(), &[(0, 0), (2, 5)]);
    }
}
