//! A plugin project's manifest, `quiver-plugin.toml`: written by `quiver plugin new`, read by
//! `quiver plugin build` to know the plugin's name, language and world.

use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// The manifest's file name, at the root of a project.
pub const MANIFEST: &str = "quiver-plugin.toml";

/// The languages `plugin new` has templates for.
#[derive(clap::ValueEnum, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    Rust,
    Js,
    Python,
}

/// The plugin worlds of wit/quiver-plugin.wit.
#[derive(clap::ValueEnum, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Filter,
    Transform,
    Router,
    Scheduler,
}

impl Lang {
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Js => "js",
            Lang::Python => "python",
        }
    }
}

impl Kind {
    /// The world's name in the WIT (also the template directory's).
    pub fn world(self) -> &'static str {
        match self {
            Kind::Filter => "filter",
            Kind::Transform => "transform",
            Kind::Router => "router",
            Kind::Scheduler => "scheduler",
        }
    }
}

/// What `quiver-plugin.toml` holds.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The plugin's name: the component is built to `NAME.wasm` and deployed under it.
    pub name: String,
    pub lang: Lang,
    pub kind: Kind,
}

impl Manifest {
    /// The manifest text, with a comment for whoever opens it.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        let body = toml::to_string(self).context("writing the manifest")?;
        Ok(format!(
            "# Written by `quiver plugin new`; `quiver plugin build` reads it.\n{body}"
        ))
    }

    /// Reads `DIR/quiver-plugin.toml`, saying what to do when the directory is not a project.
    pub fn read(dir: &Path) -> anyhow::Result<Manifest> {
        let path = dir.join(MANIFEST);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "{} has no {MANIFEST}: `quiver plugin build` builds a project made by \
                 `quiver plugin new NAME --lang rust|js|python --kind ...`",
                dir.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let manifest: Manifest =
            toml::from_str(&text).with_context(|| format!("{} is not valid", path.display()))?;
        check_name(&manifest.name)?;
        Ok(manifest)
    }
}

/// A plugin name that is also a file, package, crate and module name in every language: lowercase
/// letters, digits and `-`, starting with a letter (the broker itself accepts more).
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !ok {
        bail!(
            "invalid plugin name {name:?}: use 1 to 64 characters of a-z, 0-9 and '-', starting \
             with a letter and not ending with '-' (it names the package and the module too)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_round_trips() {
        let m = Manifest {
            name: "vip-only".into(),
            lang: Lang::Python,
            kind: Kind::Filter,
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANIFEST), m.to_toml().unwrap()).unwrap();
        assert_eq!(Manifest::read(dir.path()).unwrap(), m);
    }

    #[test]
    fn a_directory_without_a_manifest_says_what_it_needs() {
        let dir = tempfile::tempdir().unwrap();
        let err = Manifest::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("quiver plugin new"), "{err}");
    }

    #[test]
    fn names_are_checked() {
        for good in ["a", "vip-only", "filter2"] {
            check_name(good).unwrap();
        }
        for bad in ["", "Vip", "2x", "a_b", "a-", "a.b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
