//! fan-router: a TEST FIXTURE, not an example. A router plugin that sends every record to many
//! topics at once, so the broker's tests can check fan-out: one batch appended to up to 64 topics
//! (plus, with `keep`, the router's own topic).
//!
//! Config: `prefix=fan.` (required, may be empty) and `count=3` (required, 1 to 64) route every
//! record to `fan.0`, `fan.1`, `fan.2`; `keep=orders` (optional) adds `orders` as a destination of
//! every record too. Topic names are not checked here: the broker checks them when it appends,
//! which is what a test of a bad destination wants to see.

use quiver_sdk_guest::{info, router_plugin, Config, Destinations, Record, SdkError};

/// The largest `count`: enough fan-out for any test, small enough to stay cheap.
pub const MAX_COUNT: usize = 64;

/// Every record's destinations, named once at init so routing a record allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fan {
    topics: Vec<String>,
}

impl Fan {
    /// Reads `prefix`, `count` and `keep`.
    pub fn from_config(config: &Config) -> Result<Fan, String> {
        let prefix = config.require("prefix")?;
        let count = count(config)?;
        let mut topics: Vec<String> = (0..count).map(|i| format!("{prefix}{i}")).collect();
        if let Some(keep) = config.get("keep") {
            topics.push(keep.to_owned());
        }
        info!("fan-router: every record to {}", topics.join(", "));
        Ok(Fan { topics })
    }

    /// The topics every record goes to, in order.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }
}

fn count(config: &Config) -> Result<usize, String> {
    let raw = config.require("count")?;
    match raw.trim().parse::<usize>() {
        Ok(n @ 1..=MAX_COUNT) => Ok(n),
        _ => Err(SdkError::InvalidConfig {
            key: "count".to_owned(),
            value: raw.to_owned(),
            expected: format!("a whole number from 1 to {MAX_COUNT}"),
        }
        .into()),
    }
}

/// Sends the record to every topic of the fan (a name given twice is sent to once).
pub fn route(fan: &Fan, _record: &Record, dest: &mut Destinations) {
    for topic in &fan.topics {
        dest.to(topic);
    }
}

router_plugin!(init = Fan::from_config, route = route);

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_sdk_guest::testing::encode;
    use quiver_sdk_guest::OwnedRecord;

    fn batch() -> Vec<u8> {
        encode(&[
            OwnedRecord::new("one").with_tag("t"),
            OwnedRecord::new("two"),
        ])
        .unwrap()
    }

    #[test]
    fn every_record_goes_to_every_numbered_topic() {
        QuiverPlugin::init([("prefix", "fan."), ("count", "3")]).unwrap();
        let routes = QuiverPlugin::route(batch()).unwrap();
        assert_eq!(routes.topics, ["fan.0", "fan.1", "fan.2"]);
        let all = vec!["fan.0", "fan.1", "fan.2"];
        assert_eq!(routes.per_record().unwrap(), vec![all.clone(), all]);
        let lines = quiver_sdk_guest::log::take_captured();
        assert!(lines[0].1.contains("fan.0, fan.1, fan.2"), "{lines:?}");
    }

    #[test]
    fn keep_adds_one_more_destination() {
        QuiverPlugin::init([("prefix", "out-"), ("count", "2"), ("keep", "in")]).unwrap();
        let routes = QuiverPlugin::route(batch()).unwrap();
        assert_eq!(routes.topics, ["out-0", "out-1", "in"]);
        assert_eq!(routes.counts, [3, 3]);

        // A kept topic that is also a numbered one is sent to once.
        QuiverPlugin::init([("prefix", "t"), ("count", "2"), ("keep", "t1")]).unwrap();
        assert_eq!(QuiverPlugin::route(batch()).unwrap().counts, [2, 2]);
    }

    #[test]
    fn the_full_fan_and_an_empty_prefix_are_accepted() {
        let config = Config::from_pairs([("prefix", ""), ("count", "64")]);
        let fan = Fan::from_config(&config).unwrap();
        assert_eq!(fan.topics().len(), MAX_COUNT);
        assert_eq!(
            (fan.topics()[0].as_str(), fan.topics()[63].as_str()),
            ("0", "63")
        );
    }

    #[test]
    fn init_refuses_a_missing_or_bad_setting() {
        let no_prefix = QuiverPlugin::init([("count", "1")]).unwrap_err();
        assert!(
            no_prefix.contains("missing required config `prefix`"),
            "{no_prefix}"
        );
        let no_count = QuiverPlugin::init([("prefix", "p")]).unwrap_err();
        assert!(
            no_count.contains("missing required config `count`"),
            "{no_count}"
        );
        for bad in ["0", "65", "many", "-1"] {
            let err = QuiverPlugin::init([("prefix", "p"), ("count", bad)]).unwrap_err();
            assert!(err.contains("config `count` has invalid value"), "{err}");
        }
        // A refused init leaves nothing routing.
        assert!(QuiverPlugin::route(batch())
            .unwrap_err()
            .contains("before a successful init"));
    }
}
