//! payment-check: a scheduler plugin for "check the payment 30 minutes after the order". Each
//! record is held back `delay-ms` (30 minutes by default); with `at-field`, it is due `delay-ms`
//! after the order time its JSON value carries instead, so a late or replayed order is not held for
//! the full delay again. With `only-field`/`only-value`, only the matching records wait; the others
//! are delivered at once. Never fails a batch.
//!
//! Config: `delay-ms=1800000` (default 30 minutes), `at-field=placed_at` (optional: a top-level
//! numeric field, milliseconds since the Unix epoch), `only-field=type` and `only-value=order`
//! (optional, together: a top-level string field and the value it must equal).

use quiver_sdk_guest::{debug, info, now_ms, scheduler_plugin, Config, Record, SdkError};
use serde_json::{Map, Value};

/// 30 minutes.
pub const DEFAULT_DELAY_MS: u64 = 30 * 60 * 1000;

/// The settings `init` accepts; anything else is refused, so a misspelt key (`delay_ms=`) cannot
/// silently leave the default in force.
const KEYS: [&str; 4] = ["delay-ms", "at-field", "only-field", "only-value"];

/// Which records are delayed: a top-level JSON string field and the value it must equal.
#[derive(Debug)]
struct Only {
    field: String,
    value: String,
}

/// The validated configuration of one attachment.
#[derive(Debug)]
pub struct PaymentCheck {
    delay_ms: u64,
    at_field: Option<String>,
    only: Option<Only>,
    /// Milliseconds since the Unix epoch: the broker's clock in a plugin, a fixed one in tests.
    now: fn() -> i64,
}

impl PaymentCheck {
    /// Reads the settings, with the broker's clock.
    pub fn from_config(config: &Config) -> Result<PaymentCheck, String> {
        PaymentCheck::with_clock(config, now_ms)
    }

    /// Reads the settings, with `now` as the clock; refuses unknown keys, a `delay-ms` that is not
    /// a whole number of milliseconds, empty field names and half of the `only-` pair.
    pub fn with_clock(config: &Config, now: fn() -> i64) -> Result<PaymentCheck, String> {
        if let Some((key, _)) = config.iter().find(|(key, _)| !KEYS.contains(key)) {
            return Err(format!(
                "unknown config `{key}` (payment-check takes {})",
                KEYS.join(", ")
            ));
        }
        let delay_ms = match config.get("delay-ms") {
            None => DEFAULT_DELAY_MS,
            Some(text) => text.trim().parse().map_err(|_| SdkError::InvalidConfig {
                key: "delay-ms".into(),
                value: text.into(),
                expected: "a whole number of milliseconds, e.g. 1800000 for 30 minutes".into(),
            })?,
        };
        let at_field = config
            .get("at-field")
            .map(|_| non_empty(config, "at-field"))
            .transpose()?;
        let only = match (config.get("only-field"), config.get("only-value")) {
            (None, None) => None,
            (Some(_), Some(value)) => Some(Only {
                field: non_empty(config, "only-field")?,
                value: value.to_owned(),
            }),
            (Some(_), None) => return Err(pair_error("only-field", "only-value")),
            (None, Some(_)) => return Err(pair_error("only-value", "only-field")),
        };
        info!(
            "payment-check: delaying by {delay_ms} ms from {}{}",
            at_field
                .as_ref()
                .map_or("arrival".to_owned(), |f| format!("`{f}`")),
            only.as_ref().map_or(String::new(), |o| format!(
                ", only records with `{}` = {:?}",
                o.field, o.value
            )),
        );
        Ok(PaymentCheck {
            delay_ms,
            at_field,
            only,
            now,
        })
    }

    /// The delay of one record, in milliseconds (0 = deliver now).
    pub fn delay(&self, record: &Record) -> u64 {
        if self.at_field.is_none() && self.only.is_none() {
            // Nothing to read in the value: no parse at all.
            return self.delay_ms;
        }
        // A full parse keeps this simple; it is cheap next to what a delayed record costs the
        // broker (a timer and a second append).
        let json = serde_json::from_slice::<Value>(record.value).ok();
        let object = json.as_ref().and_then(Value::as_object);
        if let Some(only) = &self.only {
            let matches = object
                .and_then(|o| o.get(&only.field))
                .and_then(Value::as_str)
                .is_some_and(|v| v == only.value);
            if !matches {
                return 0;
            }
        }
        let Some(at_field) = &self.at_field else {
            return self.delay_ms;
        };
        match order_time(object, at_field) {
            Ok(at) => due_in(at, self.delay_ms, (self.now)()),
            Err(why) => {
                // The record's arrival is the best estimate left of when the order was placed.
                debug!(
                    "payment-check: record at offset {}: {why}; delayed {} ms from now",
                    record.offset, self.delay_ms
                );
                self.delay_ms
            }
        }
    }
}

scheduler_plugin!(
    init = PaymentCheck::from_config,
    schedule = PaymentCheck::delay
);

/// The order time in `object`'s `field`, in milliseconds since the epoch, or why there is none.
/// A fractional or out-of-range number is truncated or saturated rather than refused: it still
/// says roughly when the order was placed.
fn order_time(object: Option<&Map<String, Value>>, field: &str) -> Result<i64, String> {
    let object = object.ok_or("value is not a JSON object")?;
    let value = object
        .get(field)
        .ok_or_else(|| format!("no `{field}` field"))?;
    let number = value
        .as_number()
        .ok_or_else(|| format!("`{field}` is not a number"))?;
    if let Some(ms) = number.as_i64() {
        return Ok(ms);
    }
    match number.as_f64() {
        // `as` saturates at the i64 bounds.
        Some(ms) if ms.is_finite() => Ok(ms as i64),
        _ => Err(format!("`{field}` is not a usable number")),
    }
}

/// How long until `at + delay`, seen at `now`: 0 once it has passed. Computed in i128, so no
/// combination of inputs overflows.
fn due_in(at: i64, delay: u64, now: i64) -> u64 {
    let due = i128::from(at) + i128::from(delay) - i128::from(now);
    u64::try_from(due.max(0)).unwrap_or(u64::MAX)
}

/// The value of `key`, which is set, or an error when it is empty.
fn non_empty(config: &Config, key: &str) -> Result<String, String> {
    match config.get(key) {
        Some(value) if !value.is_empty() => Ok(value.to_owned()),
        _ => Err(SdkError::EmptyConfig { key: key.into() }.into()),
    }
}

fn pair_error(set: &str, missing: &str) -> String {
    format!("config `{set}` needs `{missing}` too (attach with --config {missing}=...)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_sdk_guest::testing::encode;
    use quiver_sdk_guest::{schedule_batch, OwnedRecord};

    /// The fixed "now" of these tests.
    const NOW: i64 = 1_700_000_000_000;

    fn batch(values: &[&str]) -> Vec<u8> {
        let records: Vec<OwnedRecord> = values
            .iter()
            .map(|v| OwnedRecord::new(*v).with_timestamp(NOW))
            .collect();
        encode(&records).unwrap()
    }

    /// The delays of `values` with `config`, at `NOW`: the SDK's batch loop over `delay`, which is
    /// what the component's `schedule` export runs, with a fixed clock.
    fn delays(config: &[(&str, &str)], values: &[&str]) -> Vec<u64> {
        let config = Config::from_pairs(config.iter().copied());
        let check = PaymentCheck::with_clock(&config, || NOW).unwrap();
        schedule_batch(batch(values), |r| check.delay(r)).unwrap()
    }

    #[test]
    fn every_record_waits_30_minutes_by_default() {
        QuiverPlugin::init(Vec::<(String, String)>::new()).unwrap();
        let out = QuiverPlugin::schedule(batch(&["a", "{}", ""])).unwrap();
        assert_eq!(out, [1_800_000; 3]);
        QuiverPlugin::init([("delay-ms", "250")]).unwrap();
        assert_eq!(QuiverPlugin::schedule(batch(&["a"])), Ok(vec![250]));
    }

    #[test]
    fn at_field_makes_records_due_after_the_order_time() {
        let minute = 60_000;
        let values = [
            format!(r#"{{"id":1,"placed_at":{}}}"#, NOW - 10 * minute),
            format!(r#"{{"placed_at":{}}}"#, NOW),
            format!(r#"{{"placed_at":{}}}"#, NOW - 45 * minute),
            format!(r#"{{"placed_at":{}.75}}"#, NOW - 29 * minute),
            format!(r#"{{"placed_at":{}}}"#, NOW + minute),
            r#"{"placed_at":-5}"#.to_owned(),
            r#"{"placed_at":99999999999999999999999}"#.to_owned(),
            r#"{"placed_at":-1e400}"#.to_owned(),
        ];
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        let out = delays(&[("at-field", "placed_at")], &values);
        assert_eq!(
            out,
            [
                20 * minute as u64,
                30 * minute as u64,
                0,
                minute as u64,
                31 * minute as u64,
                0,
                // Saturated at i64::MAX ms: far in the future, no overflow.
                (i64::MAX - NOW) as u64 + 1_800_000,
                // Not a finite number: no order time, so the delay runs from now.
                1_800_000,
            ]
        );
        // Only the delay after the order time is configurable: 0 delivers at the order time.
        let at = format!(r#"{{"t":{}}}"#, NOW + 5);
        assert_eq!(delays(&[("at-field", "t"), ("delay-ms", "0")], &[&at]), [5]);
    }

    #[test]
    fn records_without_a_usable_order_time_wait_the_delay_from_now() {
        let values = [
            "not json",
            "[1]",
            "{}",
            r#"{"placed_at":"1700000000000"}"#,
            r#"{"placed_at":null}"#,
        ];
        let out = delays(&[("at-field", "placed_at"), ("delay-ms", "1000")], &values);
        assert_eq!(out, [1000; 5]);
        let lines = quiver_sdk_guest::log::take_captured();
        let debug: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).skip(1).collect();
        assert_eq!(
            debug,
            [
                "payment-check: record at offset 0: value is not a JSON object; delayed 1000 ms from now",
                "payment-check: record at offset 1: value is not a JSON object; delayed 1000 ms from now",
                "payment-check: record at offset 2: no `placed_at` field; delayed 1000 ms from now",
                "payment-check: record at offset 3: `placed_at` is not a number; delayed 1000 ms from now",
                "payment-check: record at offset 4: `placed_at` is not a number; delayed 1000 ms from now",
            ]
        );
    }

    #[test]
    fn only_matching_records_are_delayed() {
        let values = [
            r#"{"type":"order","placed_at":1}"#,
            r#"{"type":"refund"}"#,
            r#"{"type":["order"]}"#,
            r#"{"kind":"order"}"#,
            "order",
            r#"{"type":"order"}"#,
        ];
        let only = [("only-field", "type"), ("only-value", "order")];
        assert_eq!(delays(&only, &values), [1_800_000, 0, 0, 0, 0, 1_800_000]);
        // Together with at-field: the order time applies to the matching records only.
        let with_at = [only[0], only[1], ("at-field", "placed_at")];
        assert_eq!(delays(&with_at, &values), [0, 0, 0, 0, 0, 1_800_000]);
    }

    #[test]
    fn the_broker_clock_is_used_by_default() {
        let at = now_ms() - 10 * 60_000;
        QuiverPlugin::init([("at-field", "at")]).unwrap();
        let value = format!(r#"{{"at":{at}}}"#);
        let out = QuiverPlugin::schedule(batch(&[&value])).unwrap();
        // 20 minutes, less the time this test took to get here.
        assert!((1_190_000..=1_200_000).contains(&out[0]), "{out:?}");
    }

    #[test]
    fn init_refuses_bad_settings() {
        let err = |config: &[(&str, &str)]| QuiverPlugin::init(config.iter().copied()).unwrap_err();
        assert!(err(&[("delay_ms", "1")]).contains("unknown config `delay_ms`"));
        for bad in ["", "30m", "-1", "1.5", "99999999999999999999"] {
            let message = err(&[("delay-ms", bad)]);
            assert!(
                message.starts_with("config `delay-ms` has invalid value"),
                "{message}"
            );
        }
        assert!(err(&[("at-field", "")]).contains("`at-field` is empty"));
        assert_eq!(
            err(&[("only-field", "type")]),
            "config `only-field` needs `only-value` too (attach with --config only-value=...)"
        );
        assert!(err(&[("only-value", "order")]).contains("needs `only-field`"));
        assert!(err(&[("only-field", ""), ("only-value", "x")]).contains("`only-field` is empty"));
        // A refused init leaves no previous configuration running.
        assert!(QuiverPlugin::schedule(batch(&["a"])).is_err());
        // An empty only-value is a value like any other.
        QuiverPlugin::init([("only-field", "type"), ("only-value", "")]).unwrap();
        assert_eq!(
            QuiverPlugin::schedule(batch(&[r#"{"type":""}"#, r#"{"type":"x"}"#])),
            Ok(vec![1_800_000, 0])
        );
    }

    #[test]
    fn a_malformed_batch_is_an_error() {
        QuiverPlugin::init(Vec::<(String, String)>::new()).unwrap();
        let err = QuiverPlugin::schedule(b"QVRB\x01".to_vec()).unwrap_err();
        assert!(err.starts_with("input batch rejected"), "{err}");
    }

    #[test]
    fn due_in_never_overflows() {
        assert_eq!(due_in(i64::MIN, u64::MAX, i64::MAX), 0);
        assert_eq!(due_in(i64::MAX, u64::MAX, i64::MIN), u64::MAX);
        assert_eq!(due_in(100, 50, 120), 30);
        assert_eq!(due_in(100, 50, 150), 0);
    }
}
