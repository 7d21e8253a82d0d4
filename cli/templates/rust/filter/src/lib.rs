//! {{name}}: a Quiver filter plugin. Keeps the records that carry one tag (config `tag`, default
//! `vip`) and drops the rest. Change `keep` to filter on anything else a record has: its key,
//! value, tags, headers or timestamp.

use quiver_sdk_guest::{filter_plugin, info, Config, Record};

/// The settings of one attachment (`quiver topic attach … --config tag=gold`), checked once at init.
pub struct Settings {
    tag: String,
}

/// Reads the config. Unknown keys are refused, so a typo fails the attach instead of being ignored.
pub fn setup(config: &Config) -> Result<Settings, String> {
    if let Some((key, _)) = config.iter().find(|(key, _)| *key != "tag") {
        return Err(format!("unknown config `{key}` ({{name}} takes: tag)"));
    }
    let tag = config.get_or("tag", "vip").to_owned();
    info!("{{name}}: keeping records tagged {tag:?}");
    Ok(Settings { tag })
}

/// The verdict for one record: `true` keeps it.
pub fn keep(settings: &Settings, record: &Record) -> bool {
    record.has_tag(&settings.tag)
}

filter_plugin!(init = setup, filter = keep);

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_sdk_guest::{testing, OwnedRecord};

    #[test]
    fn keeps_only_records_with_the_tag() {
        QuiverPlugin::init([("tag", "gold")]).unwrap();
        let batch = testing::encode(&[
            OwnedRecord::new("a").with_tag("gold"),
            OwnedRecord::new("b").with_tag("silver"),
            OwnedRecord::new("c"),
        ])
        .unwrap();
        assert_eq!(QuiverPlugin::filter(batch), Ok(vec![true, false, false]));
    }

    #[test]
    fn the_default_tag_is_vip() {
        QuiverPlugin::init(Vec::<(String, String)>::new()).unwrap();
        let batch = testing::encode(&[OwnedRecord::new("a").with_tag("vip")]).unwrap();
        assert_eq!(QuiverPlugin::filter(batch), Ok(vec![true]));
    }

    #[test]
    fn unknown_config_is_refused() {
        let err = QuiverPlugin::init([("tags", "x")]).unwrap_err();
        assert!(err.contains("unknown config `tags`"), "{err}");
    }

    #[test]
    fn a_malformed_batch_is_an_error_not_a_crash() {
        QuiverPlugin::init([("tag", "gold")]).unwrap();
        let err = QuiverPlugin::filter(b"not a batch".to_vec()).unwrap_err();
        assert!(err.starts_with("input batch rejected"), "{err}");
    }
}
