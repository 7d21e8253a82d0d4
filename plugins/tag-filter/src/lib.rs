//! tag-filter: a filter plugin that keeps records carrying any of the configured tags (or all of
//! them with `mode=all`). The WASM counterpart of the broker's native tag filter, and the plugin the
//! filter benchmarks measure.
//!
//! Config: `tags=a,b` (required, non-empty), `mode=any|all` (default `any`).

use quiver_sdk_guest::{filter_plugin, info, Config, Record};

/// How the configured tags combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Keep a record that has at least one of the tags.
    Any,
    /// Keep a record only if it has every one of the tags.
    All,
}

/// The validated configuration of one attachment.
#[derive(Debug)]
pub struct TagFilter {
    tags: Vec<String>,
    mode: Mode,
}

impl TagFilter {
    /// Reads `tags` and `mode`; refuses the attachment when `tags` is missing or empty, so a typo
    /// cannot silently drop every record.
    pub fn from_config(config: &Config) -> Result<TagFilter, String> {
        let tags: Vec<String> = config
            .require_list("tags")?
            .into_iter()
            .map(str::to_owned)
            .collect();
        let mode = match config.choice("mode", &["any", "all"], "any")? {
            "all" => Mode::All,
            _ => Mode::Any,
        };
        info!("tag-filter: keeping records with {mode:?} of {tags:?}");
        Ok(TagFilter { tags, mode })
    }

    /// The verdict for one record. Walks the record's tags in place (no allocation).
    pub fn keep(&self, record: &Record) -> bool {
        match self.mode {
            // One pass over the record's tags: they are encoded inline, so this is the cheap side.
            Mode::Any => record.tags().any(|t| self.tags.iter().any(|w| w == t)),
            Mode::All => self.tags.iter().all(|w| record.has_tag(w)),
        }
    }
}

filter_plugin!(init = TagFilter::from_config, filter = TagFilter::keep);

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_sdk_guest::testing::encode;
    use quiver_sdk_guest::OwnedRecord;

    fn batch() -> Vec<u8> {
        let rec = |tags: &[&str]| {
            tags.iter()
                .fold(OwnedRecord::new("v").with_timestamp(1), |r, t| {
                    r.with_tag(*t)
                })
        };
        encode(&[rec(&[]), rec(&["a"]), rec(&["b", "c"]), rec(&["a", "b"])]).unwrap()
    }

    #[test]
    fn any_of_the_tags() {
        QuiverPlugin::init([("tags", "a, b")]).unwrap();
        assert_eq!(
            QuiverPlugin::filter(batch()),
            Ok(vec![false, true, true, true])
        );
        QuiverPlugin::init([("tags", "c"), ("mode", "any")]).unwrap();
        assert_eq!(
            QuiverPlugin::filter(batch()),
            Ok(vec![false, false, true, false])
        );
    }

    #[test]
    fn all_of_the_tags() {
        QuiverPlugin::init([("tags", "a,b"), ("mode", "all")]).unwrap();
        assert_eq!(
            QuiverPlugin::filter(batch()),
            Ok(vec![false, false, false, true])
        );
    }

    #[test]
    fn init_refuses_missing_empty_or_unknown_settings() {
        let missing = QuiverPlugin::init(Vec::<(String, String)>::new()).unwrap_err();
        assert!(
            missing.contains("missing required config `tags`"),
            "{missing}"
        );
        let empty = QuiverPlugin::init([("tags", " , ")]).unwrap_err();
        assert!(empty.contains("`tags` is empty"), "{empty}");
        let mode = QuiverPlugin::init([("tags", "a"), ("mode", "some")]).unwrap_err();
        assert!(mode.contains("one of any, all"), "{mode}");
        // A refused init leaves no previous configuration running.
        assert!(QuiverPlugin::filter(batch()).is_err());
    }

    #[test]
    fn init_logs_its_configuration() {
        QuiverPlugin::init([("tags", "x")]).unwrap();
        let lines = quiver_sdk_guest::log::take_captured();
        assert_eq!(lines.len(), 1);
        assert!(lines[0].1.contains("Any of [\"x\"]"), "{lines:?}");
    }

    #[test]
    fn a_malformed_batch_is_an_error() {
        QuiverPlugin::init([("tags", "a")]).unwrap();
        let mut bad = batch();
        bad.truncate(bad.len() - 1);
        let err = QuiverPlugin::filter(bad).unwrap_err();
        assert!(err.starts_with("input batch rejected"), "{err}");
        assert!(QuiverPlugin::filter(Vec::new()).is_err());
    }
}
