//! Where the value returned by the author's `init` lives between calls.
//!
//! The broker runs one instance per attachment and calls `init` once before any batch, so a single
//! slot is enough. It is type-erased (`dyn Any`) so the macros need not name the state type; the
//! downcast happens once per batch, not per record. The slot is thread-local: a wasm instance has one
//! thread, and native tests running in parallel each get their own plugin state.

use std::any::Any;
use std::cell::RefCell;
use std::fmt::Display;
use std::rc::Rc;

use crate::{Config, SdkError};

thread_local! {
    static STATE: RefCell<Option<Rc<dyn Any>>> = const { RefCell::new(None) };
}

/// Runs `init` and stores what it returns; on error the previous state is gone too, so a failed
/// re-init never leaves a stale configuration running.
pub fn init_state<S, E, F>(config: &Config, init: F) -> Result<(), String>
where
    S: 'static,
    E: Display,
    F: FnOnce(&Config) -> Result<S, E>,
{
    STATE.with(|slot| slot.borrow_mut().take());
    let state = init(config).map_err(|e| e.to_string())?;
    STATE.with(|slot| *slot.borrow_mut() = Some(Rc::new(state)));
    Ok(())
}

/// Calls `f` with the state stored by [`init_state`]. The slot is not borrowed while `f` runs.
pub fn with_state<S: 'static, R>(f: impl FnOnce(&S) -> R) -> Result<R, SdkError> {
    let state = STATE
        .with(|slot| slot.borrow().clone())
        .ok_or(SdkError::NotInitialised)?;
    let state = Rc::downcast::<S>(state).map_err(|_| SdkError::NotInitialised)?;
    Ok(f(&state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_failed_init_clears_it() {
        assert_eq!(
            with_state(|s: &u32| *s).unwrap_err(),
            SdkError::NotInitialised
        );
        let config = Config::from_pairs([("n", "7")]);
        init_state(&config, |c| {
            c.require("n")?.parse::<u32>().map_err(|e| e.to_string())
        })
        .unwrap();
        assert_eq!(with_state(|s: &u32| *s + 1), Ok(8));
        // The wrong type is reported, not a panic.
        assert!(with_state(|s: &String| s.len()).is_err());
        let err = init_state(&Config::default(), |c| c.require("n").map(str::len)).unwrap_err();
        assert!(err.contains("`n`"));
        assert!(with_state(|s: &u32| *s).is_err());
    }
}
