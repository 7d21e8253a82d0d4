//! json-mask: a transform plugin that replaces the values of named JSON fields with a mask string,
//! wherever they appear in the record value (top level, nested objects, objects inside arrays).
//! Keys, headers, tags and timestamps pass through; a value that is not JSON passes unchanged.
//!
//! Config: `fields=card,ssn` (required, non-empty), `mask=***` (optional, default `***`).

use quiver_sdk_guest::{debug, info, transform_plugin, Config, Output, Record, SdkError};
use serde_json::Value;

/// The validated configuration of one attachment.
#[derive(Debug)]
pub struct JsonMask {
    fields: Vec<String>,
    mask: Value,
}

impl JsonMask {
    /// Reads `fields` and `mask`; refuses the attachment when `fields` is missing or empty, since a
    /// masking stage that masks nothing is almost certainly a configuration mistake.
    pub fn from_config(config: &Config) -> Result<JsonMask, String> {
        let fields: Vec<String> = config
            .require_list("fields")?
            .into_iter()
            .map(str::to_owned)
            .collect();
        let mask = config.get_or("mask", "***");
        info!("json-mask: masking fields {fields:?} with {mask:?}");
        Ok(JsonMask {
            fields,
            mask: Value::String(mask.to_owned()),
        })
    }

    /// Emits `record` with its masked value, or unchanged when there is nothing to mask.
    pub fn transform(&self, record: &Record, out: &mut Output) -> Result<(), SdkError> {
        match self.mask_value(record.value) {
            Ok(Some(masked)) => out.keep_with_value(record, &masked),
            Ok(None) => out.keep(record),
            Err(err) => {
                debug!(
                    "json-mask: value at offset {} is not JSON ({err}); passed through",
                    record.offset
                );
                out.keep(record)
            }
        }
    }

    /// The re-encoded value if any field was masked; `None` when the value is JSON without any of
    /// the fields, so untouched records keep their exact bytes (formatting included).
    pub fn mask_value(&self, value: &[u8]) -> Result<Option<Vec<u8>>, serde_json::Error> {
        let mut json: Value = serde_json::from_slice(value)?;
        if !self.mask_in_place(&mut json) {
            return Ok(None);
        }
        serde_json::to_vec(&json).map(Some)
    }

    /// Masks matching keys at any depth; returns whether anything changed. Recursion depth is
    /// bounded by serde_json's parser limit (128 levels), so hostile nesting cannot overflow here.
    fn mask_in_place(&self, value: &mut Value) -> bool {
        match value {
            Value::Object(map) => {
                let mut changed = false;
                for (key, field) in map.iter_mut() {
                    if self.fields.iter().any(|f| f == key) {
                        *field = self.mask.clone();
                        changed = true;
                    } else {
                        changed |= self.mask_in_place(field);
                    }
                }
                changed
            }
            Value::Array(items) => items
                .iter_mut()
                .fold(false, |changed, item| self.mask_in_place(item) | changed),
            _ => false,
        }
    }
}

transform_plugin!(
    init = JsonMask::from_config,
    transform = JsonMask::transform
);

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_sdk_guest::testing::{decode, encode};
    use quiver_sdk_guest::{Level, OwnedRecord};

    fn run(config: &[(&str, &str)], values: &[&str]) -> Vec<String> {
        QuiverPlugin::init(config.iter().copied()).unwrap();
        let records: Vec<OwnedRecord> = values
            .iter()
            .map(|v| OwnedRecord::new(*v).with_timestamp(100))
            .collect();
        let out = QuiverPlugin::transform(encode(&records).unwrap()).unwrap();
        decode(&out)
            .unwrap()
            .into_iter()
            .map(|r| String::from_utf8(r.value).unwrap())
            .collect()
    }

    #[test]
    fn masks_top_level_fields_with_the_default_mask() {
        let out = run(
            &[("fields", "card,ssn")],
            &[r#"{"name":"ann","card":"4111 1111","ssn":123,"n":1.50}"#],
        );
        // Key order and number spelling survive re-encoding.
        assert_eq!(out, [r#"{"name":"ann","card":"***","ssn":"***","n":1.50}"#]);
    }

    #[test]
    fn masks_nested_objects_and_arrays_with_a_custom_mask() {
        let value = r#"{"user":{"card":{"no":1}},"items":[{"ssn":"x"},{"ok":true}],"card":null}"#;
        let out = run(&[("fields", "card, ssn"), ("mask", "#")], &[value]);
        assert_eq!(
            out,
            [r##"{"user":{"card":"#"},"items":[{"ssn":"#"},{"ok":true}],"card":"#"}"##]
        );
    }

    #[test]
    fn untouched_values_keep_their_exact_bytes() {
        let values = [
            "{ \"name\" : \"ann\" }",
            "[1, 2]",
            "42",
            "\"card\"",
            "not json {",
            "",
        ];
        let out = run(&[("fields", "card")], &values);
        assert_eq!(out, values);
        let lines = quiver_sdk_guest::log::take_captured();
        let debug: Vec<_> = lines.iter().filter(|(l, _)| *l == Level::Debug).collect();
        // "not json {" and the empty value are the two that fail to parse.
        assert_eq!(debug.len(), 2, "{lines:?}");
        assert!(debug[0].1.contains("offset 4 is not JSON"), "{lines:?}");
    }

    #[test]
    fn keeps_key_headers_tags_and_timestamp() {
        QuiverPlugin::init([("fields", "card")]).unwrap();
        let rec = OwnedRecord::new(r#"{"card":"1"}"#)
            .with_timestamp(7)
            .with_key("k")
            .with_tag("pay")
            .with_header("trace", "t1");
        let out = QuiverPlugin::transform(encode(std::slice::from_ref(&rec)).unwrap()).unwrap();
        let got = decode(&out).unwrap();
        assert_eq!(got, vec![rec.with_value(r#"{"card":"***"}"#)]);
    }

    #[test]
    fn init_requires_fields() {
        let err = QuiverPlugin::init([("mask", "x")]).unwrap_err();
        assert!(err.contains("missing required config `fields`"), "{err}");
        let err = QuiverPlugin::init([("fields", "")]).unwrap_err();
        assert!(err.contains("`fields` is empty"), "{err}");
    }

    #[test]
    fn a_malformed_batch_is_an_error() {
        QuiverPlugin::init([("fields", "card")]).unwrap();
        let err = QuiverPlugin::transform(b"QVRB\x01".to_vec()).unwrap_err();
        assert!(err.starts_with("input batch rejected"), "{err}");
    }
}
