//! `quiver plugin new`: writes a ready plugin project (sources, unit test, sample input, the WIT,
//! a README) from the templates embedded in the binary (cli/templates/).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use include_dir::{include_dir, Dir};

use super::project::{check_name, Kind, Lang, Manifest, MANIFEST};

/// `cli/templates/<lang>/common/` goes into every project of a language, `<lang>/<kind>/` into that
/// kind's only; `samples/<kind>.jsonl` becomes `sample.jsonl`.
static TEMPLATES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/templates");

/// The plugin interface, bundled so a project builds without a Quiver checkout (but Rust's SDK).
const WIT: &str = include_str!("../../wit/quiver-plugin.wit");

#[derive(clap::Args, Debug)]
pub struct NewArgs {
    /// The plugin's name (a-z, 0-9, '-'): the project directory, package and component are named
    /// after it.
    name: String,
    #[arg(long, value_enum)]
    lang: Lang,
    #[arg(long, value_enum)]
    kind: Kind,
    /// Where to create the project (default: ./NAME). Must not exist or be empty.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Rust only: the guest SDK (`sdk-guest/` of a Quiver checkout). Default: $QUIVER_SDK_DIR, else
    /// the checkout this binary was built from.
    #[arg(long)]
    sdk: Option<PathBuf>,
}

pub fn run(args: NewArgs) -> anyhow::Result<()> {
    check_name(&args.name)?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    check_empty(&dir)?;
    if args.lang == Lang::Python {
        check_python_module(&args.name)?;
    }
    let sdk = match args.lang {
        Lang::Rust => Some(rust_sdk(args.sdk.as_deref())?),
        _ => None,
    };
    let vars = Vars {
        name: &args.name,
        world: args.kind.world(),
        sdk: sdk.as_deref(),
    };
    let manifest = Manifest {
        name: args.name.clone(),
        lang: args.lang,
        kind: args.kind,
    };
    let files = project_files(&manifest, &vars)?;
    for (path, contents) in &files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "created {} ({} {} plugin, {} files)\nnext: quiver plugin build {}",
        dir.display(),
        args.lang.as_str(),
        args.kind.world(),
        files.len(),
        dir.display()
    );
    Ok(())
}

/// Placeholder values: `{{name}}`, `{{module}}` (the name with `_` for `-`), `{{world}}`, and
/// `{{sdk}}` (Rust: the SDK path as a TOML string). In file names they are `__name__`, `__module__`.
struct Vars<'a> {
    name: &'a str,
    world: &'a str,
    sdk: Option<&'a str>,
}

impl Vars<'_> {
    fn render(&self, text: &str) -> String {
        let module = self.name.replace('-', "_");
        let text = text
            .replace("{{name}}", self.name)
            .replace("{{module}}", &module)
            .replace("{{world}}", self.world);
        match self.sdk {
            Some(sdk) => text.replace("{{sdk}}", sdk),
            None => text,
        }
    }

    fn render_path(&self, path: &Path) -> PathBuf {
        let text = path.to_string_lossy();
        PathBuf::from(
            text.replace("__name__", self.name)
                .replace("__module__", &self.name.replace('-', "_")),
        )
    }
}

/// Every file of the project, as (path inside it, contents).
fn project_files(manifest: &Manifest, vars: &Vars) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let lang = manifest.lang.as_str();
    let world = manifest.kind.world();
    let mut files = Vec::new();
    for sub in [format!("{lang}/common"), format!("{lang}/{world}")] {
        let dir = TEMPLATES
            .get_dir(&sub)
            .with_context(|| format!("no templates for {sub} in this build"))?;
        collect(dir, Path::new(&sub), vars, &mut files)?;
    }
    let sample = TEMPLATES
        .get_file(format!("samples/{world}.jsonl"))
        .and_then(|f| f.contents_utf8())
        .with_context(|| format!("no sample input for {world} in this build"))?;
    files.push(("sample.jsonl".into(), sample.to_owned()));
    files.push(("wit/quiver-plugin.wit".into(), WIT.to_owned()));
    files.push((MANIFEST.into(), manifest.to_toml()?));
    files.push((".gitignore".into(), gitignore(manifest.lang).to_owned()));
    let mut paths: Vec<&PathBuf> = files.iter().map(|(path, _)| path).collect();
    paths.sort();
    if let Some(pair) = paths.windows(2).find(|pair| pair[0] == pair[1]) {
        bail!(
            "the name {:?} would make the plugin's file {} collide with the project's own: \
             choose another name",
            vars.name,
            pair[0].display()
        );
    }
    Ok(files)
}

/// Python imports the plugin as a module named after it: a keyword cannot be imported, and a
/// module the plugin or its tests import would be shadowed by it.
fn check_python_module(name: &str) -> anyhow::Result<()> {
    const KEYWORDS: &[&str] = &[
        "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del",
        "elif", "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is",
        "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while", "with",
        "yield",
    ];
    const TAKEN: &[&str] = &[
        "quiver_batch",
        "wit_world",
        "componentize_py_types",
        "json",
        "struct",
        "enum",
        "types",
        "os",
        "sys",
        "unittest",
        "dataclasses",
        "collections",
        "typing",
        "re",
        "abc",
        "io",
    ];
    let module = name.replace('-', "_");
    if KEYWORDS.contains(&module.as_str()) || TAKEN.contains(&module.as_str()) {
        bail!(
            "{name:?} cannot name a Python plugin: its module `{module}` is a Python keyword or \
             a module the plugin imports; choose another name"
        );
    }
    Ok(())
}

/// Adds the files under `dir` (recursively), rendered, with paths relative to `root`.
fn collect(
    dir: &Dir<'static>,
    root: &Path,
    vars: &Vars,
    out: &mut Vec<(PathBuf, String)>,
) -> anyhow::Result<()> {
    for file in dir.files() {
        let text = file
            .contents_utf8()
            .with_context(|| format!("template {} is not UTF-8", file.path().display()))?;
        let relative = file.path().strip_prefix(root).unwrap_or(file.path());
        out.push((vars.render_path(relative), vars.render(text)));
    }
    for sub in dir.dirs() {
        collect(sub, root, vars, out)?;
    }
    Ok(())
}

fn gitignore(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => "/target\n*.wasm\n",
        Lang::Js => "node_modules/\n*.wasm\n",
        Lang::Python => "__pycache__/\n*.wasm\n",
    }
}

/// Refuses to write over anything: the directory must not exist or be empty.
fn check_empty(dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dir).map(|mut entries| entries.next().is_some()) {
        Ok(true) => bail!(
            "{} already exists and is not empty: choose another --dir or name",
            dir.display()
        ),
        Ok(false) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}

/// The Rust SDK's path, as a TOML string for the project's Cargo.toml. Rust plugins depend on the
/// SDK crate by path (it is not on crates.io yet), so it must exist on this machine.
fn rust_sdk(flag: Option<&Path>) -> anyhow::Result<String> {
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk-guest");
    let (dir, from) = match (flag, std::env::var_os("QUIVER_SDK_DIR")) {
        (Some(dir), _) => (dir.to_path_buf(), "--sdk"),
        (None, Some(dir)) => (PathBuf::from(dir), "QUIVER_SDK_DIR"),
        (None, None) => (built_from, "the checkout quiver was built from"),
    };
    if !dir.join("Cargo.toml").is_file() {
        bail!(
            "no Rust guest SDK at {} ({from}): pass --sdk PATH/TO/quiver/sdk-guest (Rust plugins \
             build against the SDK of a Quiver checkout)",
            dir.display()
        );
    }
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    Ok(toml::Value::String(dir.to_string_lossy().into_owned()).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every language has a template for every kind, and rendering leaves no placeholder behind.
    #[test]
    fn every_language_and_kind_renders_completely() {
        let vars = Vars {
            name: "vip-only",
            world: "",
            sdk: Some("\"/sdk\""),
        };
        for lang in [Lang::Rust, Lang::Js, Lang::Python] {
            for kind in [Kind::Filter, Kind::Transform, Kind::Router, Kind::Scheduler] {
                let vars = Vars {
                    world: kind.world(),
                    ..vars
                };
                let manifest = Manifest {
                    name: "vip-only".into(),
                    lang,
                    kind,
                };
                let files = project_files(&manifest, &vars).unwrap();
                for (path, text) in &files {
                    let shown = path.display().to_string();
                    assert!(!has_placeholder(text), "{lang:?} {kind:?} {shown}");
                    assert!(!shown.contains("__name__") && !shown.contains("__module__"));
                }
                assert!(files.len() >= 6, "{lang:?} {kind:?}: {} files", files.len());
            }
        }
    }

    /// `{{word}}` left in a rendered file (code may still use `{{` for other reasons).
    fn has_placeholder(text: &str) -> bool {
        text.split("{{").skip(1).any(|rest| {
            rest.split_once("}}").is_some_and(|(word, _)| {
                !word.is_empty() && word.bytes().all(|b| b.is_ascii_lowercase())
            })
        })
    }

    #[test]
    fn names_that_collide_with_the_project_are_refused() {
        let manifest = |name: &str, lang| Manifest {
            name: name.into(),
            lang,
            kind: Kind::Filter,
        };
        let vars = |name| Vars {
            name,
            world: "filter",
            sdk: Some("\"/sdk\""),
        };
        let err = project_files(&manifest("batch", Lang::Js), &vars("batch")).unwrap_err();
        assert!(err.to_string().contains("collide"), "{err}");
        assert!(check_python_module("for").is_err());
        assert!(check_python_module("quiver-batch").is_err());
        check_python_module("vip-only").unwrap();
    }

    #[test]
    fn a_non_empty_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        check_empty(dir.path()).unwrap();
        std::fs::write(dir.path().join("x"), "").unwrap();
        let err = check_empty(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not empty"), "{err}");
    }
}
