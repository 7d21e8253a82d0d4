//! Reads one top-level field of a JSON object value without building the rest of the document:
//! the other fields are skipped by the parser (no allocation for their strings, maps or numbers),
//! and only the routing field becomes a `serde_json::Value`. A router reads every record of every
//! batch, and order documents carry far more than the one field it needs.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

/// The value of the top-level field `name` of the JSON object in `json`: `Ok(None)` when the object
/// has no such field, an error when `json` is not a single, well-formed JSON object. A field given
/// twice keeps its last value, as `serde_json::Value` would. The skipped values are checked for
/// syntax only: an invalid UTF-8 byte or a lone surrogate escape in a string the router does not
/// read is not an error (it would be for a full parse).
pub fn field(json: &[u8], name: &str) -> Result<Option<Value>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let found = (&mut de).deserialize_map(FindField { name })?;
    // The whole value must be one object: trailing bytes make it "not JSON", as a full parse would.
    de.end()?;
    Ok(found)
}

/// Walks the top-level object, keeping the value of `name` only.
struct FindField<'n> {
    name: &'n str,
}

impl<'de> Visitor<'de> for FindField<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(wanted) = map.next_key_seed(KeyIs(self.name))? {
            if wanted {
                found = Some(map.next_value()?);
            } else {
                // serde_json skips a value in a loop, not by recursion, so hostile nesting here
                // costs no stack; the wanted field's own value is built under the parser's
                // 128-level recursion limit.
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Compares an object key with the wanted name, after unescaping (`"reg\u0069on"` is `region`),
/// without keeping the key.
struct KeyIs<'n>(&'n str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn get(json: &str) -> Result<Option<Value>, String> {
        field(json.as_bytes(), "region").map_err(|e| e.to_string())
    }

    #[test]
    fn finds_top_level_fields_only() {
        let doc = r#"{"id":7,"n":1.5e300,"x":{"region":"no"},"region":"eu","y":[{"region":"no"}]}"#;
        assert_eq!(get(doc), Ok(Some(json!("eu"))));
        assert_eq!(
            get(r#"{"region":["eu","us",3]}"#),
            Ok(Some(json!(["eu", "us", 3])))
        );
        assert_eq!(get(r#"{"regions":"eu","x":{"region":"eu"}}"#), Ok(None));
        assert_eq!(get("{}"), Ok(None));
        assert_eq!(get(r#" { "region" : null } "#), Ok(Some(Value::Null)));
    }

    #[test]
    fn keys_are_compared_unescaped_and_the_last_duplicate_wins() {
        assert_eq!(get(r#"{"reg\u0069on":"eu"}"#), Ok(Some(json!("eu"))));
        assert_eq!(
            get(r#"{"region":"eu","region":"us"}"#),
            Ok(Some(json!("us")))
        );
        assert_eq!(get(r#"{"region":"e\u0075"}"#), Ok(Some(json!("eu"))));
    }

    #[test]
    fn anything_but_one_object_is_an_error() {
        for bad in [
            "",
            "not json",
            "42",
            "\"eu\"",
            "[{\"region\":\"eu\"}]",
            "null",
            "{\"region\":\"eu\"",
            "{\"region\":\"eu\"} {}",
            "{\"region\":\"eu\",}",
            "{\"region\":\"\\ud800\"}",
        ] {
            assert!(get(bad).is_err(), "{bad:?}");
        }
        // Skipped strings are checked for syntax only (what routing needs), not for valid UTF-8 or
        // paired surrogates: a full parse would refuse these, the router still reads `region`.
        assert_eq!(
            field(b"{\"a\":\"\\ud800 \xff\",\"region\":\"eu\"}", "region")
                .map_err(|e| e.to_string()),
            Ok(Some(json!("eu")))
        );
        // Hostile nesting: skipped without recursion in another field, and stopped by serde_json's
        // recursion limit (an error, not a stack overflow) in the wanted one.
        let nest = |key: &str| {
            let (open, close) = ("[".repeat(100_000), "]".repeat(100_000));
            format!("{{\"{key}\":{open}{close},\"region\":\"eu\"}}")
        };
        assert_eq!(get(&nest("a")), Ok(Some(json!("eu"))));
        assert!(get(&nest("region")).is_err());
    }
}
