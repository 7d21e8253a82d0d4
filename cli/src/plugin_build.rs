//! `quiver plugin build [DIR]`: builds a project made by `quiver plugin new` into `DIR/NAME.wasm`
//! with its language's toolchain (cargo, componentize-js, componentize-py), installing the
//! language's build tool first when it is missing, and checks that the result is a component.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};

use super::project::{Lang, Manifest};

/// The componentize-py release Python plugins are built with (as plugins/python/requirements.txt).
const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

/// A component starts with `\0asm`, version 0x0d, layer 0x01 (a core module has 01 00 00 00).
const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    /// The project directory (default: the current one).
    #[arg(default_value = ".")]
    dir: PathBuf,
}

pub fn run(args: BuildArgs) -> anyhow::Result<()> {
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("no project directory {}", args.dir.display()))?;
    let manifest = Manifest::read(&dir)?;
    let out = dir.join(format!("{}.wasm", manifest.name));
    let started = Instant::now();
    match manifest.lang {
        Lang::Rust => build_rust(&dir, &manifest, &out)?,
        Lang::Js => build_js(&dir, &out)?,
        Lang::Python => build_python(&dir, &manifest, &out)?,
    }
    let size = check_component(&out)?;
    println!(
        "built {} ({} {}, {size} bytes) in {:.1} s\nnext: quiver plugin test {} --input {}",
        args.dir.join(format!("{}.wasm", manifest.name)).display(),
        manifest.lang.as_str(),
        manifest.kind.world(),
        started.elapsed().as_secs_f64(),
        args.dir.join(format!("{}.wasm", manifest.name)).display(),
        args.dir.join("sample.jsonl").display(),
    );
    Ok(())
}

/// `cargo build --release --target wasm32-wasip2`: rustc links that target into a component.
fn build_rust(dir: &Path, manifest: &Manifest, out: &Path) -> anyhow::Result<()> {
    const TARGET: &str = "wasm32-wasip2";
    if has("rustup")
        && !output_of(Command::new("rustup").args(["target", "list", "--installed"]))?
            .lines()
            .any(|t| t == TARGET)
    {
        step(Command::new("rustup").args(["target", "add", TARGET]))?;
    }
    // Cargo's own rule: $CARGO_TARGET_DIR when set, else the project's target/.
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("target"));
    step(
        Command::new("cargo")
            .args(["build", "--release", "--target", TARGET, "--manifest-path"])
            .arg(dir.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir),
    )?;
    let built = target_dir
        .join(TARGET)
        .join("release")
        .join(format!("{}.wasm", manifest.name.replace('-', "_")));
    std::fs::copy(&built, out).with_context(|| format!("copying {}", built.display()))?;
    Ok(())
}

/// `npm install` (when node_modules is missing or older than package.json), then the project's
/// build.mjs, which calls componentize-js.
fn build_js(dir: &Path, out: &Path) -> anyhow::Result<()> {
    if !has("node") || !has("npm") {
        bail!("JavaScript plugins need node (>= 18.19) and npm: install them (Debian: apt-get install nodejs npm)");
    }
    if is_older(
        &dir.join("node_modules/.package-lock.json"),
        &dir.join("package.json"),
    ) {
        step(
            Command::new("npm")
                .args(["install", "--no-audit", "--no-fund"])
                .current_dir(dir),
        )?;
    }
    step(
        Command::new("node")
            .arg("build.mjs")
            .arg(out)
            .current_dir(dir),
    )
}

/// componentize-py from `$COMPONENTIZE_PY`, else from a venv in the user's cache that this
/// installs once and every Python project shares.
fn build_python(dir: &Path, manifest: &Manifest, out: &Path) -> anyhow::Result<()> {
    let tool = match std::env::var_os("COMPONENTIZE_PY") {
        Some(tool) => PathBuf::from(tool),
        None => componentize_py()?,
    };
    step(
        Command::new(tool)
            .arg("-d")
            .arg(dir.join("wit/quiver-plugin.wit"))
            .args(["-w", manifest.kind.world(), "componentize", "-p"])
            .arg(dir)
            .arg(manifest.name.replace('-', "_"))
            .arg("-o")
            .arg(out),
    )
}

/// The shared componentize-py, installed with pip into `<cache>/tools/componentize-py-<version>`.
fn componentize_py() -> anyhow::Result<PathBuf> {
    let version = COMPONENTIZE_PY.trim_start_matches("componentize-py==");
    let venv = crate::cache::dir()
        .context("no home directory for the build tools: set COMPONENTIZE_PY or QUIVER_CACHE_DIR")?
        .join("tools")
        .join(format!("componentize-py-{version}"));
    let tool = venv.join("bin/componentize-py");
    // Trusted only if it runs: a Python upgrade leaves the venv's script without its interpreter.
    if tool.is_file() && has(&tool.to_string_lossy()) {
        return Ok(tool);
    }
    if !has("python3") {
        bail!("Python plugins are built with componentize-py, installed with python3's venv and pip: install python3 and python3-venv");
    }
    eprintln!(
        "installing {COMPONENTIZE_PY} into {} (once)",
        venv.display()
    );
    // A half-made venv from an interrupted install is made again, not trusted.
    let _ = std::fs::remove_dir_all(&venv);
    step(Command::new("python3").arg("-m").arg("venv").arg(&venv))
        .context("creating the venv (Debian: apt-get install python3-venv)")?;
    step(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        COMPONENTIZE_PY,
    ]))?;
    Ok(tool)
}

/// The component's size, or an error when the build left something else behind.
fn check_component(path: &Path) -> anyhow::Result<u64> {
    let bytes =
        std::fs::read(path).with_context(|| format!("the build wrote no {}", path.display()))?;
    if bytes.get(..8) != Some(&COMPONENT_HEADER[..]) {
        bail!("{} is not a WebAssembly component", path.display());
    }
    Ok(bytes.len() as u64)
}

/// Runs a build step with the user's terminal, failing with the command when it fails.
fn step(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("running {}", shown(cmd)))?;
    if !status.success() {
        bail!("{} failed ({status})", shown(cmd));
    }
    Ok(())
}

fn output_of(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("running {}", shown(cmd)))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn shown(cmd: &Command) -> String {
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    format!("`{}`", words.join(" "))
}

/// Whether a program is on the PATH.
fn has(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

/// Whether `a` is missing or was modified before `b`.
fn is_older(a: &Path, b: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (modified(a), modified(b)) {
        (Some(a), Some(b)) => a < b,
        _ => true,
    }
}
