//! The Python client (`clients/python`) against real brokers: its pytest suite
//! (`clients/python/tests`) starts `quiver serve` processes of this build and covers connect
//! (CA, token, mTLS), admin, producer (key partitioning equal to the Rust client's, acks levels,
//! idempotent resend), consumer (seeks, native filter, read-filter plugin), group consumer, queue
//! consumer and request/reply. Any failing Python test fails this one, with pytest's report.

mod common;

use std::process::Command;

use common::outside::root;
use common::python_client::venv_bin;

#[test]
fn python_client_pytest_suite_passes_against_a_real_broker() {
    // The read-filter test deploys this component; build it if the tree has not yet.
    common::plugin_wasm("tag-filter");
    let bin = venv_bin();
    // pytest from the venv, run from the repository root: `quiver` is the installed package,
    // not the source directory.
    let out = Command::new(bin.join("pytest"))
        .arg(root().join("clients/python/tests"))
        .args(["-q", "-p", "no:cacheprovider", "-rfE"])
        .current_dir(root())
        .env("QUIVER_BIN", env!("CARGO_BIN_EXE_quiver"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("QUIVER_SERVER")
        .env_remove("QUIVER_CA")
        .env_remove("QUIVER_TOKEN")
        .output()
        .expect("running pytest");
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Python client's tests failed:\n{report}"
    );
    assert!(report.contains(" passed"), "{report}");
    assert!(
        !report.contains(" skipped"),
        "a Python client test was skipped:\n{report}"
    );
}
