//! Outside clients for the tests: Python programs in `cli/tests/outside/` (aioquic, the reference
//! Prometheus parser, playwright), run in a virtualenv made in `target/outside-venv` on first use from the
//! pinned `cli/tests/outside/requirements.txt` (python3 with venv and pip needed: scripts/test.sh
//! installs them).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root (this is cli/).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// The venv's python, with the pinned requirements installed (once per checkout).
pub fn python() -> PathBuf {
    static SETUP: std::sync::Once = std::sync::Once::new();
    let venv = root().join("target/outside-venv");
    let python = venv.join("bin/python");
    SETUP.call_once(|| {
        let requirements = root().join("cli/tests/outside/requirements.txt");
        let ready = python.exists()
            && Command::new(&python)
                .args([
                    "-c",
                    "import aioquic, cryptography, prometheus_client, playwright",
                ])
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        if ready {
            return;
        }
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 is needed for the outside clients (scripts/test.sh installs it)");
        assert!(made.success(), "python3 -m venv {} failed", venv.display());
        let installed = Command::new(&python)
            .args(["-m", "pip", "install", "-q", "-r"])
            .arg(&requirements)
            .status()
            .unwrap();
        assert!(
            installed.success(),
            "pip install -r {} failed",
            requirements.display()
        );
    });
    python
}
