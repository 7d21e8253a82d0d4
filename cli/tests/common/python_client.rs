//! The Python client (`clients/python`, package `quiver`) in its own virtualenv,
//! `target/python-client-venv`: created on first use with the client's dependencies, pytest and a
//! C CRC32C (`pip install ./clients/python[test]`), then the package reinstalled from the tree on
//! every run (no build isolation, so only the first run needs PyPI).

use std::path::PathBuf;
use std::process::Command;

use super::outside::root;

/// The venv's bin directory, with the current `clients/python` installed.
pub fn venv_bin() -> PathBuf {
    let venv = root().join("target/python-client-venv");
    let bin = venv.join("bin");
    let package = root().join("clients/python");
    let ready = bin.join("pytest").exists()
        && Command::new(bin.join("python"))
            .args(["-c", "import aioquic, msgpack, crc32c, pytest, setuptools"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !ready {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 is needed for the Python client tests (scripts/test.sh installs it)");
        assert!(made.success(), "python3 -m venv {} failed", venv.display());
        let pip = |args: &[&str]| {
            let status = Command::new(bin.join("python"))
                .args(["-m", "pip", "install", "-q"])
                .args(args)
                .status()
                .unwrap();
            assert!(status.success(), "pip install {args:?} failed");
        };
        pip(&["setuptools>=61", "wheel"]);
        pip(&[&format!("{}[test]", package.display())]);
    }
    let status = Command::new(bin.join("python"))
        .args([
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--force-reinstall",
        ])
        .arg(&package)
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .status()
        .unwrap();
    assert!(status.success(), "pip install {} failed", package.display());
    bin
}
