//! The attachment's configuration (`--config K=V`), as handed to `init`: a string map with helpers
//! that turn a missing or malformed setting into a message the operator can act on.

use std::collections::BTreeMap;

use crate::SdkError;

/// `key=value` settings of one attachment. A key set twice keeps its last value, as a command line
/// would.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    entries: BTreeMap<String, String>,
}

impl Config {
    /// Builds a config from `(key, value)` pairs (the WIT `list<config-entry>`, or a test's literals).
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Config
    where
        K: Into<String>,
        V: Into<String>,
    {
        let entries = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Config { entries }
    }

    /// The value of `key`, if set (possibly empty).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    /// The value of `key`, or `default` when it is not set.
    pub fn get_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.get(key).unwrap_or(default)
    }

    /// `key` split on `,`, items trimmed, empty items dropped; empty when the key is not set.
    pub fn get_list(&self, key: &str) -> Vec<&str> {
        self.get(key).map(split_list).unwrap_or_default()
    }

    /// The value of `key`, or an error naming the missing key.
    pub fn require(&self, key: &str) -> Result<&str, SdkError> {
        self.get(key).ok_or_else(|| SdkError::MissingConfig {
            key: key.to_owned(),
        })
    }

    /// Like [`Config::get_list`], but a missing key or an empty list is an error.
    pub fn require_list(&self, key: &str) -> Result<Vec<&str>, SdkError> {
        let list = split_list(self.require(key)?);
        if list.is_empty() {
            return Err(SdkError::EmptyConfig {
                key: key.to_owned(),
            });
        }
        Ok(list)
    }

    /// The value of `key` parsed as one of `choices` (default when unset), or an error listing them.
    pub fn choice<'a>(
        &'a self,
        key: &str,
        choices: &[&str],
        default: &'a str,
    ) -> Result<&'a str, SdkError> {
        let value = self.get_or(key, default);
        if choices.contains(&value) {
            return Ok(value);
        }
        Err(SdkError::InvalidConfig {
            key: key.to_owned(),
            value: value.to_owned(),
            expected: format!("one of {}", choices.join(", ")),
        })
    }

    /// All settings, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn split_list(value: &str) -> Vec<&str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Config {
        Config::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn get_and_last_value_wins() {
        let c = cfg(&[("a", "1"), ("b", ""), ("a", "2")]);
        assert_eq!(c.get("a"), Some("2"));
        assert_eq!(c.get("b"), Some(""));
        assert_eq!(c.get("c"), None);
        assert_eq!(c.get_or("c", "d"), "d");
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn lists_split_on_commas_and_trim() {
        let c = cfg(&[("tags", " a, b ,,c ,"), ("none", " , ")]);
        assert_eq!(c.get_list("tags"), vec!["a", "b", "c"]);
        assert!(c.get_list("none").is_empty());
        assert!(c.get_list("missing").is_empty());
        assert_eq!(c.require_list("tags").unwrap(), vec!["a", "b", "c"]);
    }

    #[test]
    fn errors_name_the_key() {
        let c = cfg(&[("none", ","), ("mode", "some")]);
        let missing = c.require("tags").unwrap_err().to_string();
        assert_eq!(
            missing,
            "missing required config `tags` (attach with --config tags=...)"
        );
        let empty = c.require_list("none").unwrap_err();
        assert_eq!(empty, SdkError::EmptyConfig { key: "none".into() });
        let bad = c.choice("mode", &["any", "all"], "any").unwrap_err();
        assert_eq!(
            bad.to_string(),
            "config `mode` has invalid value \"some\": expected one of any, all"
        );
        assert_eq!(c.choice("other", &["any", "all"], "any"), Ok("any"));
        let as_string: String = bad.into();
        assert!(as_string.contains("mode"));
    }
}
