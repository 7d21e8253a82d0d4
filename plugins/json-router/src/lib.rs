//! json-router: a router plugin that sends each record to the topic named by a field of its JSON
//! value: with the defaults, `{"region":"eu"}` goes to `orders.eu`, and `{"region":["eu","us"]}`
//! fans out to `orders.eu` and `orders.us`. A record whose value gives no usable topic (not a JSON
//! object, no such field, not a string, not a valid topic name) goes to the `default` topic, or is
//! dropped when there is none; it never fails the batch. The `also` topics get every record.
//!
//! Config: `field=region` (default `region`, a top-level key), `prefix=orders.` (default
//! `orders.`), `default=orders.unrouted` (optional), `also=audit,archive` (optional).

mod lookup;

use quiver_sdk_guest::{debug, info, router_plugin, Config, Destinations, Record, SdkError};
use serde_json::Value;

/// The longest topic name this plugin produces (the broker's limit).
pub const MAX_TOPIC_LEN: usize = 200;

/// The settings `init` accepts; anything else is refused, so a misspelt key (`defualt=`) cannot
/// silently drop the records it was meant to catch.
const KEYS: [&str; 4] = ["field", "prefix", "default", "also"];

/// What a byte of a topic name may be: ASCII letters, digits, `.`, `_` and `-`.
fn topic_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// Whether `name` is a topic name this plugin may produce (the broker's rule): 1 to
/// [`MAX_TOPIC_LEN`] characters, each an ASCII letter, digit, `.`, `_` or `-`, not starting with `.`.
pub fn is_valid_topic(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TOPIC_LEN
        && !name.starts_with('.')
        && name.bytes().all(topic_byte)
}

/// The validated configuration of one attachment.
#[derive(Debug)]
pub struct JsonRouter {
    field: String,
    prefix: String,
    default: Option<String>,
    also: Vec<String>,
}

impl JsonRouter {
    /// Reads `field`, `prefix`, `default` and `also`; refuses unknown keys, an empty `field`, and a
    /// prefix or topic that cannot make valid topic names, so mistakes show at attach time rather
    /// than as records going nowhere.
    pub fn from_config(config: &Config) -> Result<JsonRouter, String> {
        if let Some((key, _)) = config.iter().find(|(key, _)| !KEYS.contains(key)) {
            return Err(format!(
                "unknown config `{key}` (json-router takes {})",
                KEYS.join(", ")
            ));
        }
        let field = config.get_or("field", "region");
        if field.is_empty() {
            return Err(SdkError::EmptyConfig {
                key: "field".into(),
            }
            .into());
        }
        let prefix = config.get_or("prefix", "orders.");
        // Shorter than the limit, so that at least a one-character value fits after it.
        if prefix.len() >= MAX_TOPIC_LEN
            || prefix.starts_with('.')
            || !prefix.bytes().all(topic_byte)
        {
            return Err(invalid(
                "prefix",
                prefix,
                "ASCII letters, digits, '.', '_' and '-' only, at most 248 characters",
            ));
        }
        let default = config
            .get("default")
            .map(checked_topic("default"))
            .transpose()?;
        let also = match config.get("also") {
            Some(_) => config
                .require_list("also")?
                .into_iter()
                .map(checked_topic("also"))
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        info!(
            "json-router: routing by `{field}` to {prefix}<value>, default {default:?}, also {also:?}"
        );
        Ok(JsonRouter {
            field: field.to_owned(),
            prefix: prefix.to_owned(),
            default,
            also,
        })
    }

    /// Adds the destinations of one record. Never fails: a value that names no usable topic is
    /// logged at debug and the record goes to `default` (or only to `also`, or nowhere).
    pub fn route(&self, record: &Record, dest: &mut Destinations) {
        if let Err(why) = self.route_by_field(record, dest) {
            let outcome = match (&self.default, self.also.is_empty()) {
                (Some(default), _) => format!("sent to `{default}`"),
                (None, false) => "sent to the `also` topics only".to_owned(),
                (None, true) => "dropped".to_owned(),
            };
            debug!(
                "json-router: record at offset {}: {why}; {outcome}",
                record.offset
            );
        }
        if dest.is_empty() {
            if let Some(default) = &self.default {
                dest.to(default);
            }
        }
        for topic in &self.also {
            dest.to(topic);
        }
    }

    /// Adds the topics the field names; an error says why it names none.
    fn route_by_field(&self, record: &Record, dest: &mut Destinations) -> Result<(), String> {
        let value = match lookup::field(record.value, &self.field) {
            Ok(Some(value)) => value,
            Ok(None) => return Err(format!("no `{}` field", self.field)),
            Err(err) => return Err(format!("value is not a JSON object ({err})")),
        };
        match value {
            Value::String(name) => self.add(&name, dest),
            Value::Array(items) => {
                for item in &items {
                    let added = match item {
                        Value::String(name) => self.add(name, dest),
                        other => Err(format!("an item of `{}` is {}", self.field, kind(other))),
                    };
                    // A bad item does not spoil the good ones: it is skipped, and logged here
                    // because `route` only reports records that end up with no field topic.
                    if let Err(err) = added {
                        debug!(
                            "json-router: record at offset {}: {err}; item skipped",
                            record.offset
                        );
                    }
                }
                match (items.is_empty(), dest.is_empty()) {
                    (true, _) => Err(format!("`{}` is an empty array", self.field)),
                    (false, true) => Err(format!("no item of `{}` is usable", self.field)),
                    (false, false) => Ok(()),
                }
            }
            other => Err(format!("`{}` is {}", self.field, kind(&other))),
        }
    }

    /// Sends the record to `<prefix><name>` when that is a valid topic name.
    fn add(&self, name: &str, dest: &mut Destinations) -> Result<(), String> {
        // Checked before building the name, so an overlong hostile value is never copied. The
        // prefix was checked in `init`, so only the value's bytes and the total length remain.
        let fits = !name.is_empty()
            && self.prefix.len() + name.len() <= MAX_TOPIC_LEN
            && !(self.prefix.is_empty() && name.starts_with('.'));
        if !fits || !name.bytes().all(topic_byte) {
            return Err(format!(
                "value {} of `{}` does not make a valid topic name",
                preview(name),
                self.field
            ));
        }
        let mut topic = String::with_capacity(self.prefix.len() + name.len());
        topic.push_str(&self.prefix);
        topic.push_str(name);
        dest.to(&topic);
        Ok(())
    }
}

router_plugin!(init = JsonRouter::from_config, route = JsonRouter::route);

/// `checked_topic(key)(value)`: `value` when it is a valid topic name, else an error naming `key`.
fn checked_topic(key: &'static str) -> impl Fn(&str) -> Result<String, String> {
    move |topic| {
        if is_valid_topic(topic) {
            Ok(topic.to_owned())
        } else {
            Err(invalid(
                key,
                topic,
                "a topic name: 1 to 249 ASCII letters, digits, '.', '_' or '-'",
            ))
        }
    }
}

fn invalid(key: &str, value: &str, expected: &str) -> String {
    SdkError::InvalidConfig {
        key: key.to_owned(),
        value: value.to_owned(),
        expected: expected.to_owned(),
    }
    .into()
}

/// What kind of JSON value `value` is, for log lines.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `value` quoted, cut to 64 characters: a log line should not carry a whole hostile value.
fn preview(value: &str) -> String {
    match value.char_indices().nth(64) {
        Some((end, _)) => format!("{:?}…", &value[..end]),
        None => format!("{value:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_sdk_guest::testing::encode;
    use quiver_sdk_guest::{Level, OwnedRecord};

    /// Each value's topics, after `init` with `config`.
    fn route(config: &[(&str, &str)], values: &[&str]) -> Vec<Vec<String>> {
        QuiverPlugin::init(config.iter().copied()).unwrap();
        let records: Vec<OwnedRecord> = values
            .iter()
            .map(|v| OwnedRecord::new(*v).with_timestamp(100))
            .collect();
        let routes = QuiverPlugin::route(encode(&records).unwrap()).unwrap();
        routes
            .per_record()
            .unwrap()
            .into_iter()
            .map(|topics| topics.into_iter().map(str::to_owned).collect())
            .collect()
    }

    #[test]
    fn routes_by_the_region_field_by_default() {
        let out = route(
            &[],
            &[
                r#"{"id":1,"region":"eu"}"#,
                r#"{"region":"us","n":1.50}"#,
                r#"{"id":3}"#,
                r#"{"region":"eu"}"#,
            ],
        );
        assert_eq!(
            out,
            vec![
                vec!["orders.eu"],
                vec!["orders.us"],
                vec![],
                vec!["orders.eu"]
            ]
        );
        // Each topic is named once in the routes returned to the broker.
        QuiverPlugin::init(Vec::<(String, String)>::new()).unwrap();
        let batch = encode(&[
            OwnedRecord::new(r#"{"region":"eu"}"#),
            OwnedRecord::new(r#"{"region":"eu"}"#),
        ])
        .unwrap();
        let routes = QuiverPlugin::route(batch).unwrap();
        assert_eq!(routes.topics, ["orders.eu"]);
        assert_eq!((routes.counts, routes.targets), (vec![1, 1], vec![0, 0]));
    }

    #[test]
    fn arrays_fan_out_once_per_topic() {
        let out = route(
            &[("field", "to"), ("prefix", "")],
            &[
                r#"{"to":["eu","us"]}"#,
                r#"{"to":["eu","eu","apac"]}"#,
                r#"{"to":["eu",7,"bad name",null]}"#,
            ],
        );
        assert_eq!(out, vec![vec!["eu", "us"], vec!["eu", "apac"], vec!["eu"]]);
        let lines = quiver_sdk_guest::log::take_captured();
        let skipped: Vec<_> = lines
            .iter()
            .filter(|(_, l)| l.contains("item skipped"))
            .collect();
        assert_eq!(skipped.len(), 3, "{lines:?}");
        assert!(
            skipped[0].1.contains("an item of `to` is a number"),
            "{lines:?}"
        );
        assert!(skipped[1].1.contains("\"bad name\""), "{lines:?}");
    }

    #[test]
    fn unusable_values_go_to_the_default_topic() {
        let long = format!(r#"{{"region":"{}"}}"#, "x".repeat(MAX_TOPIC_LEN));
        let values = [
            "not json",
            "",
            r#"["eu"]"#,
            r#"{"region":null}"#,
            r#"{"region":42}"#,
            r#"{"region":{"name":"eu"}}"#,
            r#"{"region":""}"#,
            r#"{"region":"eu/west"}"#,
            r#"{"region":"é"}"#,
            r#"{"region":[]}"#,
            r#"{"region":[1,"a b"]}"#,
            long.as_str(),
            r#"{"region":"eu"}"#,
        ];
        let out = route(&[("default", "orders.unrouted")], &values);
        let mut expected = vec![vec!["orders.unrouted"]; values.len() - 1];
        expected.push(vec!["orders.eu"]);
        assert_eq!(out, expected);
        // Without a default they are dropped; never a batch error.
        let out = route(&[], &values);
        let mut expected = vec![Vec::<String>::new(); values.len() - 1];
        expected.push(vec!["orders.eu".to_owned()]);
        assert_eq!(out, expected);
    }

    #[test]
    fn the_longest_topic_name_is_allowed() {
        let value = "x".repeat(MAX_TOPIC_LEN - "orders.".len());
        let out = route(&[], &[&format!(r#"{{"region":"{value}"}}"#)]);
        assert_eq!(out, vec![vec![format!("orders.{value}")]]);
    }

    #[test]
    fn also_topics_get_every_record() {
        let out = route(
            &[("also", "audit, orders.eu"), ("default", "orders.unrouted")],
            &[r#"{"region":"eu"}"#, r#"{"region":"us"}"#, "{}"],
        );
        assert_eq!(
            out,
            vec![
                vec!["orders.eu", "audit"],
                vec!["orders.us", "audit", "orders.eu"],
                vec!["orders.unrouted", "audit", "orders.eu"],
            ]
        );
        // With `also` and no default, an unroutable record still reaches the `also` topics.
        let out = route(&[("also", "audit")], &["{}"]);
        assert_eq!(out, vec![vec!["audit"]]);
    }

    #[test]
    fn unroutable_records_are_logged_with_their_fate() {
        route(&[], &["{}", r#"{"region":1}"#, "[]"]);
        let lines = quiver_sdk_guest::log::take_captured();
        let debug: Vec<&str> = lines
            .iter()
            .filter(|(level, _)| *level == Level::Debug)
            .map(|(_, line)| line.as_str())
            .collect();
        assert_eq!(
            debug[..2],
            [
                "json-router: record at offset 0: no `region` field; dropped",
                "json-router: record at offset 1: `region` is a number; dropped",
            ]
        );
        assert!(
            debug[2].starts_with("json-router: record at offset 2: value is not a JSON object"),
            "{debug:?}"
        );
        let long = format!(r#"{{"region":"{}"}}"#, "y".repeat(10_000));
        route(&[("default", "d")], &[&long]);
        let lines = quiver_sdk_guest::log::take_captured();
        let line = &lines.last().unwrap().1;
        assert!(line.len() < 200 && line.ends_with("sent to `d`"), "{line}");
    }

    #[test]
    fn init_refuses_bad_settings() {
        let err = |config: &[(&str, &str)]| QuiverPlugin::init(config.iter().copied()).unwrap_err();
        assert!(err(&[("feild", "x")]).contains("unknown config `feild`"));
        assert!(err(&[("field", "")]).contains("`field` is empty"));
        assert!(err(&[("prefix", "orders/")]).contains("config `prefix` has invalid value"));
        let long = "p".repeat(MAX_TOPIC_LEN);
        assert!(err(&[("prefix", &long)]).contains("`prefix`"));
        assert!(err(&[("default", "")]).contains("config `default` has invalid value \"\""));
        assert!(err(&[("default", "a b")]).contains("`default`"));
        assert!(err(&[("also", " , ")]).contains("`also` is empty"));
        assert!(err(&[("also", "ok,no way")]).contains("\"no way\""));
        // A refused init leaves no previous configuration running.
        let batch = encode(&[OwnedRecord::new("{}")]).unwrap();
        assert!(QuiverPlugin::route(batch).is_err());
        // An empty prefix is allowed: the value is the whole topic name.
        QuiverPlugin::init([("prefix", "")]).unwrap();
    }

    #[test]
    fn a_malformed_batch_is_an_error() {
        QuiverPlugin::init(Vec::<(String, String)>::new()).unwrap();
        let err = QuiverPlugin::route(b"QVRB\x01".to_vec()).unwrap_err();
        assert!(err.starts_with("input batch rejected"), "{err}");
        assert!(QuiverPlugin::route(Vec::new()).is_err());
    }

    #[test]
    fn is_valid_topic_follows_the_name_rules() {
        assert!(is_valid_topic("orders.eu-west_1"));
        assert!(is_valid_topic(&"a".repeat(MAX_TOPIC_LEN)));
        for bad in [
            "",
            ".a",
            "a b",
            "a/b",
            "é",
            "a*",
            &"a".repeat(MAX_TOPIC_LEN + 1),
        ] {
            assert!(!is_valid_topic(bad), "{bad:?}");
        }
    }
}
