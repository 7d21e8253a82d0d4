#!/usr/bin/env bash
# The project's one test command (README.md): installs what the tests need on a fresh machine, then
# runs every test, clippy and the format check.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each phase prints its start time since the script began, so a slow CI run shows where time went.
phase() { echo "== test.sh +$((SECONDS / 60))m$((SECONDS % 60))s: $*" >&2; }

# Toolchain pieces (no-ops when present). wasm32-wasip2 builds the plugins in plugins/.
rustup component add clippy rustfmt >/dev/null 2>&1 || true
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true

# The crate split first, in seconds: the client package `quiver` must not build the broker, wasmtime,
# cranelift or sled, and the broker must not depend on the client (scripts/check-deps.sh).
bash scripts/check-deps.sh

# openssl verifies the generated dev certificates like a non-rustls TLS stack would.
if ! command -v openssl >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq openssl
fi

# node and npm build the JavaScript plugins in plugins/js/ (componentize-js) and run their tests
# (node >= 18.19). Without root or sudo they are skipped, with a warning from build-plugins.sh.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [[ "$(id -u)" -eq 0 ]]; then
    apt-get update -qq && apt-get install -y -qq nodejs npm
  elif command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq && sudo apt-get install -y -qq nodejs npm
  fi
fi

# python3 with its venv module builds the Python plugins in plugins/python/ (componentize-py, pip
# installed into plugins/python/.venv) and runs their tests; the integration tests' outside clients
# (aioquic, the reference Prometheus parser: cli/tests/outside/) get a venv in target/outside-venv. Without root or sudo they are skipped,
# with a warning from build-plugins.sh.
# (Debian's python3 imports `venv` without python3-venv but cannot create one, hence dpkg.)
if ! command -v python3 >/dev/null 2>&1 ||
  { command -v dpkg >/dev/null 2>&1 && ! dpkg -s python3-venv >/dev/null 2>&1; }; then
  if [[ "$(id -u)" -eq 0 ]]; then
    apt-get update -qq && apt-get install -y -qq python3 python3-venv
  elif command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq && sudo apt-get install -y -qq python3 python3-venv
  fi
fi

# The benchmark harness (bench/) starts NATS JetStream and Redis itself for its peer comparison.
if ! command -v nats-server >/dev/null 2>&1 || ! command -v redis-server >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq nats-server redis-server
fi

# Debian's chromium for the web console's browser test (cli/tests/console.rs, driven by playwright
# from the outside venv; no browser download). Without root or sudo that test skips, saying why.
if ! command -v chromium >/dev/null 2>&1; then
  if [[ "$(id -u)" -eq 0 ]]; then
    apt-get update -qq && apt-get install -y -qq chromium
  elif command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq && sudo apt-get install -y -qq chromium
  fi
fi

# The plugin components first: the broker's integration tests and benchmarks load them from
# target/plugins/. Rust plugins build for wasm32-wasip2, JavaScript ones with componentize-js,
# Python ones with componentize-py.
phase "plugins"
bash scripts/build-plugins.sh

phase "fmt and clippy"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
phase "workspace tests"
cargo test --workspace --all-targets --no-fail-fast

# The cargo-fuzz targets (fuzz/, docs/security.md "Fuzzing"): each runs a few seconds from its
# committed corpus, so the targets keep building and known crashes stay fixed. Installs the nightly
# toolchain and cargo-fuzz when missing; a cold build of the targets takes ~10-14 min here.
phase "fuzz smoke"
bash scripts/fuzz-smoke.sh

# Guest side of the plugins: the SDK and the example plugins are unit-tested natively, and the
# JavaScript plugins with node, the Python ones with python3's unittest. (sdk-guest/ and plugins/
# are separate cargo workspaces.)
phase "guest SDK and plugin unit tests"
(cd sdk-guest && cargo fmt -- --check && cargo clippy --all-targets -- -D warnings && cargo test)
(cd plugins && cargo fmt -- --check && cargo clippy --all-targets -- -D warnings && cargo test)
if command -v node >/dev/null 2>&1; then
  for dir in plugins/js/*/; do
    (cd "$dir" && node --test-reporter=dot test.mjs)
  done
fi
if command -v python3 >/dev/null 2>&1; then
  for build in plugins/python/*/build.sh; do
    (cd "$(dirname "$build")" && python3 -m unittest)
  done
fi

phase "bench smoke"
# Smoke run of the benchmark harness so it does not rot: tiny sizes, seconds; numbers not asserted.
# Built first, outside the time bound, with the same targets (so the same dependency features) as
# the workspace tests above: nothing is compiled again. (`-p quiver-bench` alone unified features
# differently and rebuilt much of the dependency tree, minutes of the test command's time.)
cargo build -q --workspace --all-targets
timeout 300 target/debug/quiver-bench all --smoke
timeout 120 target/debug/quiver-bench mirror --smoke
timeout 120 target/debug/quiver-bench startup --smoke
timeout 180 target/debug/quiver-bench cluster --smoke
timeout 180 target/debug/quiver-bench scale --smoke
phase "done"
