//! The durability classes a produce or e2e case runs at (a value of `--durability`).

use clap::ValueEnum;

/// What an acknowledgement promises: in the page cache only, or on disk (fsync before the reply).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Durability {
    NoneFsync,
    FsyncPerBatch,
}

impl Durability {
    pub fn name(self) -> &'static str {
        match self {
            Durability::NoneFsync => "none-fsync",
            Durability::FsyncPerBatch => "fsync-per-batch",
        }
    }
}
