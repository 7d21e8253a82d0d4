//! Rust guest SDK for Quiver plugins: an author writes one function over a [`Record`] (plus an
//! optional `init` over a [`Config`]) and one macro line; the SDK provides the component glue for
//! the `quiver:plugin@0.1.0` worlds (wit-bindgen, wasm builds only), decodes the batch bytes the
//! broker passes zero-copy, and encodes the verdicts, the replacement batch, the routes or the
//! delays.
//!
//! ```
//! use quiver_sdk_guest::{filter_plugin, Record};
//!
//! fn keep(record: &Record) -> bool {
//!     record.has_tag("important")
//! }
//!
//! filter_plugin!(filter = keep);
//! ```
//!
//! One macro per world: [`filter_plugin!`], [`transform_plugin!`], [`router_plugin!`] (records to
//! topics, through [`Destinations`]) and [`scheduler_plugin!`] (a delivery delay per record).
//!
//! The batch loops ([`filter_batch`], [`transform_batch`], [`route_batch`], [`schedule_batch`]),
//! [`Config`] and the [`testing`] helpers are plain Rust and run natively, so plugins are
//! unit-tested with a normal `cargo test`.
//! See docs/plugins.md for the walk-through and docs/batch-format.md for the bytes.

// The wit-bindgen export macros name this crate by path (`quiver_sdk_guest::bindings::...`); this
// makes that path resolve inside the crate too.
extern crate self as quiver_sdk_guest;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod bindings;
mod config;
mod error;
pub mod log;
mod macros;
mod output;
mod record;
mod routes;
mod run;
mod state;
pub mod testing;

pub use config::Config;
pub use error::SdkError;
pub use log::{now_ms, Level};
pub use output::Output;
pub use quiver_proto::{BatchError, RecordData};
pub use record::{OwnedRecord, Record};
pub use routes::{Destinations, Routes};
pub use run::{
    filter_batch, route_batch, schedule_batch, transform_batch, FilterVerdict, RouteOutcome,
    ScheduleDelay, TransformOutcome,
};

/// The batch codec itself, for plugins that need more than the views (e.g. the batch header).
pub use quiver_proto as proto;

/// What the plugin macros expand to; not part of the API and may change without notice.
#[doc(hidden)]
pub mod __private {
    #[cfg(target_arch = "wasm32")]
    pub use crate::bindings::{filter_world, router_world, scheduler_world, transform_world};
    pub use crate::state::init_state;

    use crate::state::with_state;
    use crate::{
        filter_batch, route_batch, schedule_batch, transform_batch, Destinations, FilterVerdict,
        Output, Record, RouteOutcome, Routes, ScheduleDelay, TransformOutcome,
    };

    /// `filter_batch` with the state stored by `init` passed to every call.
    pub fn filter_with_state<S, F, V>(batch: Vec<u8>, keep: F) -> Result<Vec<bool>, String>
    where
        S: 'static,
        F: Fn(&S, &Record<'_>) -> V,
        V: FilterVerdict,
    {
        with_state(|state: &S| filter_batch(batch, |r| keep(state, r)))
            .and_then(|verdicts| verdicts)
            .map_err(String::from)
    }

    /// `transform_batch` with the state stored by `init` passed to every call.
    pub fn transform_with_state<S, F, R>(batch: Vec<u8>, transform: F) -> Result<Vec<u8>, String>
    where
        S: 'static,
        F: Fn(&S, &Record<'_>, &mut Output) -> R,
        R: TransformOutcome,
    {
        with_state(|state: &S| transform_batch(batch, |r, out| transform(state, r, out)))
            .and_then(|batch| batch)
            .map_err(String::from)
    }

    /// `route_batch` with the state stored by `init` passed to every call.
    pub fn route_with_state<S, F, R>(batch: Vec<u8>, route: F) -> Result<Routes, String>
    where
        S: 'static,
        F: Fn(&S, &Record<'_>, &mut Destinations) -> R,
        R: RouteOutcome,
    {
        with_state(|state: &S| route_batch(batch, |r, dest| route(state, r, dest)))
            .and_then(|routes| routes)
            .map_err(String::from)
    }

    /// `schedule_batch` with the state stored by `init` passed to every call.
    pub fn schedule_with_state<S, F, D>(batch: Vec<u8>, delay: F) -> Result<Vec<u64>, String>
    where
        S: 'static,
        F: Fn(&S, &Record<'_>) -> D,
        D: ScheduleDelay,
    {
        with_state(|state: &S| schedule_batch(batch, |r| delay(state, r)))
            .and_then(|delays| delays)
            .map_err(String::from)
    }
}
