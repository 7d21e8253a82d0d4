//! {{name}}: a Quiver transform plugin. Upper-cases each record's value when it is UTF-8 text
//! (other values pass unchanged) and adds a `transformed-by` header (config `by`, default
//! `{{name}}`). Key, tags, the other headers and the timestamp are kept. Change `rewrite` to emit
//! anything else: any number of records per input record, or none to drop it.

use quiver_sdk_guest::{info, transform_plugin, Config, Output, OwnedRecord, Record, SdkError};

/// The settings of one attachment (`quiver topic attach … --config by=me`), checked once at init.
pub struct Settings {
    by: String,
}

/// Reads the config. Unknown keys are refused, so a typo fails the attach instead of being ignored.
pub fn setup(config: &Config) -> Result<Settings, String> {
    if let Some((key, _)) = config.iter().find(|(key, _)| *key != "by") {
        return Err(format!("unknown config `{key}` ({{name}} takes: by)"));
    }
    let by = config.get_or("by", "{{name}}").to_owned();
    info!("{{name}}: upper-casing text values, header transformed-by={by:?}");
    Ok(Settings { by })
}

/// Writes the replacement of one record to `out`.
pub fn rewrite(settings: &Settings, record: &Record, out: &mut Output) -> Result<(), SdkError> {
    let value = match std::str::from_utf8(record.value) {
        Ok(text) => text.to_uppercase().into_bytes(),
        Err(_) => record.value.to_vec(),
    };
    let new = OwnedRecord::from_record(record)
        .with_value(value)
        .with_header("transformed-by", settings.by.as_str());
    out.push_owned(&new)
}

transform_plugin!(init = setup, transform = rewrite);

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_sdk_guest::testing;

    #[test]
    fn upper_cases_text_and_keeps_the_rest() {
        QuiverPlugin::init([("by", "test")]).unwrap();
        let input = testing::encode(&[
            OwnedRecord::new("hello")
                .with_key("k")
                .with_tag("demo")
                .with_header("trace", "abc")
                .with_timestamp(7),
            OwnedRecord::new(vec![0u8, 0xff]).with_timestamp(8),
        ])
        .unwrap();
        let output = testing::decode(&QuiverPlugin::transform(input).unwrap()).unwrap();
        assert_eq!(output.len(), 2);
        assert_eq!(output[0].value, b"HELLO");
        assert_eq!(output[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(output[0].tags, ["demo"]);
        assert_eq!(output[0].header("trace"), Some(&b"abc"[..]));
        assert_eq!(output[0].header("transformed-by"), Some(&b"test"[..]));
        assert_eq!(output[0].timestamp, 7);
        // Bytes that are not UTF-8 pass unchanged.
        assert_eq!(output[1].value, [0u8, 0xff]);
    }

    #[test]
    fn unknown_config_is_refused() {
        let err = QuiverPlugin::init([("bye", "x")]).unwrap_err();
        assert!(err.contains("unknown config `bye`"), "{err}");
    }
}
