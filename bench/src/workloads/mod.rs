//! The workloads, generic over the driver so every system runs the same loops: `produce`, `consume`
//! and `e2e`; `filter`, `group`, `rebalance` and `queue` run on Quiver alone (server-side read
//! filters, Quiver's consumer groups and queue mode; the peers are not set up comparably).
//! [`run`] hands a case to its workload; each reports a [`Measured`] (`measured.rs`).

pub mod consume;
pub mod e2e;
pub mod filter;
pub mod group;
pub mod measured;
pub mod produce;
pub mod queue;
pub mod rebalance;
pub mod values;

use std::any::Any;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::{Context, Result};

use self::measured::Measured;
use crate::case::Case;
use crate::drivers::quiver::QuiverDriver;
use crate::drivers::Driver;
use crate::plan::Plan;

/// Runs `case` against a started driver; `live` counts records as they go, for the progress bar.
pub async fn run<D: Driver>(
    driver: &D,
    case: &Case,
    plan: &Plan,
    live: Arc<AtomicU64>,
) -> Result<Vec<Measured>> {
    let one = match *case {
        Case::Produce {
            producers,
            size,
            batch,
            ..
        } => produce::run(driver, producers, size, batch, plan, live).await,
        Case::Consume {
            records,
            size,
            batch,
            consumers,
        } => consume::run(driver, records, size, batch, consumers, live).await,
        Case::E2e { rate, size, .. } => e2e::run(driver, rate, size, plan, live).await,
        Case::Filter {
            records,
            size,
            batch,
            ref wasm,
        } => {
            let quiver = quiver(driver)?;
            return filter::run(quiver, records, size, batch, wasm, live).await;
        }
        Case::Group(shape) => return group::run(quiver(driver)?, shape, live).await,
        Case::Rebalance(shape) => return rebalance::run(quiver(driver)?, shape, live).await,
        Case::Queue(shape) => queue::run(quiver(driver)?, shape, live).await,
    };
    one.map(|m| vec![m])
}

/// This driver as Quiver's, for the workloads only Quiver runs ([`Case::quiver_only`]).
fn quiver<D: Driver>(driver: &D) -> Result<&QuiverDriver> {
    let driver: &dyn Any = driver;
    driver
        .downcast_ref::<QuiverDriver>()
        .context("this workload runs on Quiver only")
}
