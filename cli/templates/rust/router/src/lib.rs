//! {{name}}: a Quiver router plugin. Records that carry a tag (config `tag`, default `vip`) go to
//! the topic `to`; the others go to `rest`, or are dropped when `rest` is not set. Change `route`
//! to pick topics from anything a record has; a record may go to several topics or to none.

use quiver_sdk_guest::{info, router_plugin, Config, Destinations, Record};

/// The settings of one attachment (`quiver topic attach … --config to=vip-orders`), checked at init.
pub struct Settings {
    tag: String,
    to: String,
    rest: Option<String>,
}

/// Reads the config: `to` is required, and topic names are checked here so that a typo fails the
/// attach instead of every batch. Unknown keys are refused.
pub fn setup(config: &Config) -> Result<Settings, String> {
    if let Some((key, _)) = config.iter().find(|(key, _)| !["to", "tag", "rest"].contains(key)) {
        return Err(format!("unknown config `{key}` ({{name}} takes: to, tag, rest)"));
    }
    let to = topic_name("to", config.require("to").map_err(|e| e.to_string())?)?;
    let rest = config.get("rest").map(|t| topic_name("rest", t)).transpose()?;
    let tag = config.get_or("tag", "vip").to_owned();
    let others = rest.as_deref().unwrap_or("(dropped)");
    info!("{{name}}: records tagged {tag:?} -> {to}, others -> {others}");
    Ok(Settings { tag, to, rest })
}

/// A valid topic name (1-249 characters of `A-Za-z0-9._-`, as the broker requires) or an error.
fn topic_name(key: &str, name: &str) -> Result<String, String> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > 249 || !name.chars().all(valid_char) {
        return Err(format!(
            "config `{key}`: {name:?} is not a topic name (1-249 characters of A-Za-z0-9._-)"
        ));
    }
    Ok(name.to_owned())
}

/// Adds the destinations of one record to `dest` (none drops it).
pub fn route(settings: &Settings, record: &Record, dest: &mut Destinations) {
    if record.has_tag(&settings.tag) {
        dest.to(&settings.to);
    } else if let Some(rest) = &settings.rest {
        dest.to(rest);
    }
}

router_plugin!(init = setup, route = route);

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_sdk_guest::{testing, OwnedRecord};

    fn batch() -> Vec<u8> {
        testing::encode(&[OwnedRecord::new("a").with_tag("vip"), OwnedRecord::new("b")]).unwrap()
    }

    #[test]
    fn tagged_records_go_to_the_topic_and_the_rest_is_dropped() {
        QuiverPlugin::init([("to", "vip-orders")]).unwrap();
        let routes = QuiverPlugin::route(batch()).unwrap();
        let empty: Vec<&str> = Vec::new();
        assert_eq!(routes.per_record().unwrap(), [vec!["vip-orders"], empty]);
    }

    #[test]
    fn the_rest_goes_to_rest_when_set() {
        QuiverPlugin::init([("to", "vip-orders"), ("rest", "other")]).unwrap();
        let routes = QuiverPlugin::route(batch()).unwrap();
        assert_eq!(routes.per_record().unwrap(), [["vip-orders"], ["other"]]);
    }

    #[test]
    fn bad_config_is_refused() {
        let missing = QuiverPlugin::init(Vec::<(String, String)>::new()).unwrap_err();
        assert!(missing.contains("`to`"), "{missing}");
        let bad = QuiverPlugin::init([("to", "no spaces")]).unwrap_err();
        assert!(bad.contains("not a topic name"), "{bad}");
        let unknown = QuiverPlugin::init([("to", "t"), ("too", "t")]).unwrap_err();
        assert!(unknown.contains("unknown config `too`"), "{unknown}");
    }
}
