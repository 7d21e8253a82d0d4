//! {{name}}: a Quiver scheduler plugin. Delays each record by `delay-ms` (default 1000) before the
//! broker appends it, except records that carry the tag `urgent-tag` (default `urgent`), which are
//! delivered at once. Change `delay` to compute the delay from anything a record has.

use quiver_sdk_guest::{info, scheduler_plugin, Config, Record};

/// The settings of one attachment (`quiver topic attach … --config delay-ms=60000`), checked at init.
pub struct Settings {
    delay_ms: u64,
    urgent_tag: String,
}

/// Reads the config. A `delay-ms` that is not a whole number and unknown keys are refused, so a
/// typo fails the attach instead of being ignored.
pub fn setup(config: &Config) -> Result<Settings, String> {
    let known = ["delay-ms", "urgent-tag"];
    if let Some((key, _)) = config.iter().find(|(key, _)| !known.contains(key)) {
        return Err(format!("unknown config `{key}` ({{name}} takes: delay-ms, urgent-tag)"));
    }
    let delay = config.get_or("delay-ms", "1000");
    let delay_ms = delay.parse::<u64>().map_err(|_| {
        format!("config `delay-ms`: {delay:?} is not a whole number of milliseconds")
    })?;
    let urgent_tag = config.get_or("urgent-tag", "urgent").to_owned();
    info!("{{name}}: delaying records by {delay_ms} ms, except those tagged {urgent_tag:?}");
    Ok(Settings { delay_ms, urgent_tag })
}

/// The delay of one record in milliseconds (0 delivers it now).
pub fn delay(settings: &Settings, record: &Record) -> u64 {
    if record.has_tag(&settings.urgent_tag) {
        0
    } else {
        settings.delay_ms
    }
}

scheduler_plugin!(init = setup, schedule = delay);

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_sdk_guest::{testing, OwnedRecord};

    #[test]
    fn delays_all_but_urgent_records() {
        QuiverPlugin::init([("delay-ms", "250")]).unwrap();
        let batch = testing::encode(&[
            OwnedRecord::new("later"),
            OwnedRecord::new("now").with_tag("urgent"),
        ])
        .unwrap();
        assert_eq!(QuiverPlugin::schedule(batch), Ok(vec![250, 0]));
    }

    #[test]
    fn bad_config_is_refused() {
        let bad = QuiverPlugin::init([("delay-ms", "soon")]).unwrap_err();
        assert!(bad.contains("not a whole number"), "{bad}");
        let unknown = QuiverPlugin::init([("delay", "1")]).unwrap_err();
        assert!(unknown.contains("unknown config `delay`"), "{unknown}");
    }
}
