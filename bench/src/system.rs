//! The systems the harness measures (a value of `--systems`): Quiver, its two peers and the no-op
//! ceiling.

use clap::ValueEnum;

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum System {
    Quiver,
    Nats,
    Redis,
    Noop,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Quiver => "quiver",
            System::Nats => "nats",
            System::Redis => "redis",
            System::Noop => "noop",
        }
    }
}
