//! Entry points for the cargo-fuzz targets in fuzz/ (docs/security.md, "Fuzzing"), not an API: the
//! broker's checks of what plugins return and of exchange bindings, reachable without a wasm
//! instance, a metadata store or a running broker. Each function calls the code the broker runs,
//! never a copy of it.

use quiver_proto::Batch;

use crate::plugins::instance::{check_routes, Routes};
use crate::plugins::pipeline::{self, StageOut};
use crate::routing::{check_binding, Binding, Exchange, ExchangeDef, ExchangeKind, RoutingError};

/// What the broker made of a plugin's answer for a batch.
#[derive(Debug)]
pub enum Outcome {
    /// The batch goes on unchanged.
    Same,
    /// The batch goes on as this one.
    Replaced(Batch),
    /// Every record was dropped.
    Dropped,
    /// Router output: for each destination topic, the records sent there, as the batch appended.
    Routed(Vec<(String, Option<Batch>)>),
}

impl From<StageOut> for Outcome {
    fn from(out: StageOut) -> Outcome {
        match out {
            StageOut::Same => Outcome::Same,
            StageOut::Replaced(b) => Outcome::Replaced(b),
            StageOut::Dropped => Outcome::Dropped,
            // Only `route` below makes these, already split.
            StageOut::Routed(_) => Outcome::Routed(Vec::new()),
        }
    }
}

/// The instance's shape check: one answer per record (`PluginInstance::filter` / `schedule`).
fn check_count(what: &str, got: usize, records: usize) -> Result<(), String> {
    if got != records {
        return Err(format!(
            "returned {got} {what} for a batch of {records} records"
        ));
    }
    Ok(())
}

/// A filter plugin answered `verdicts` for `batch`.
pub fn filter(batch: &Batch, verdicts: &[bool]) -> Result<Outcome, String> {
    check_count("verdicts", verdicts.len(), batch.record_count() as usize)?;
    pipeline::filtered(batch, verdicts).map(Outcome::from)
}

/// A transform plugin returned `out` (the output size limit is checked before, on the instance).
pub fn transform(out: Vec<u8>, now: i64) -> Result<Outcome, String> {
    pipeline::transformed(out, now).map(Outcome::from)
}

/// A scheduler plugin answered `delays` (ms, one per record) for `batch`.
pub fn schedule(batch: &Batch, delays: &[u64], now: i64) -> Result<Outcome, String> {
    check_count("delays", delays.len(), batch.record_count() as usize)?;
    pipeline::scheduled(batch, delays, now).map(Outcome::from)
}

/// A router plugin answered (`topics`, `counts`, `targets`) for `batch`: the instance's shape
/// check, the plan grouped by topic, then each topic's records selected as the batch to append
/// (what a router stage and an exchange router do before anything is appended; `exists` is not
/// consulted here, every valid name is taken to exist).
pub fn route(
    batch: &Batch,
    topics: Vec<String>,
    counts: Vec<u32>,
    targets: Vec<u32>,
) -> Result<Outcome, String> {
    let routes = Routes {
        topics,
        counts,
        targets,
    };
    check_routes(&routes, batch.record_count() as usize)?;
    let mut out = Vec::new();
    for (topic, indexes) in pipeline::plan_of(&routes) {
        let part = pipeline::select(batch, &indexes)
            .map_err(|e| format!("cannot re-encode routed records: {e}"))?;
        out.push((topic, part));
    }
    Ok(Outcome::Routed(out))
}

/// An exchange of `kind` with the bindings the broker accepts (`bind` checks each one; refused
/// ones are left out and counted in the second value).
pub fn exchange(
    kind: ExchangeKind,
    alternate: Option<String>,
    bindings: Vec<Binding>,
) -> (Exchange, usize) {
    let mut refused = 0;
    let mut accepted = Vec::new();
    for b in bindings {
        match check_binding(kind, &b) {
            Ok(()) if !accepted.contains(&b) => accepted.push(b),
            Ok(()) => {}
            Err(RoutingError::InvalidBinding(_)) => refused += 1,
            Err(e) => panic!("check_binding failed with {e}"),
        }
    }
    let def = ExchangeDef {
        name: "fuzz".into(),
        kind,
        alternate,
        bindings: accepted,
        created_ms: 0,
        router: None,
    };
    (Exchange::new(def), refused)
}
