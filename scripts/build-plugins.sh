#!/usr/bin/env bash
# Builds every plugin under plugins/ into target/plugins/<name>.wasm at the repository root, checks
# that each is a component (not a core module) and prints its size:
#
# - Rust: the crates listed in plugins/Cargo.toml, examples (plugins/*/) and test fixtures
#   (plugins/testing/*/), built for wasm32-wasip2. rustc's wasm32-wasip2 target links through
#   wasm-component-ld, so `cargo build` already produces components: no extra tool is needed.
# - JavaScript: plugins/js/*/, each built by its build.mjs with componentize-js (npm ci, then
#   `node build.mjs OUTPUT`). Skipped with a warning when node or npm is missing
#   (scripts/test.sh installs them).
# - Python: plugins/python/*/, each built by its build.sh with componentize-py (pinned in
#   plugins/python/requirements.txt, installed into the venv plugins/python/.venv on first use).
#   Skipped with a warning when python3 or its
#   venv module is missing (scripts/test.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

target=wasm32-wasip2
if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx "$target"; then
  rustup target add "$target"
fi

cargo build --manifest-path plugins/Cargo.toml --target "$target" --release

out=target/plugins
mkdir -p "$out"
# A component starts with "\0asm" then version 0x0d, layer 0x01; a core module has 01 00 00 00.
component_header='0061736d0d000100'
status=0

is_component() {
  [[ "$(head -c 8 "$1" | od -An -tx1 | tr -d ' \n')" == "$component_header" ]]
}

report() {
  printf '%-16s %9d bytes  %s\n' "$1" "$(wc -c <"$2")" "$2"
}

# Reports a component built by a language toolchain (name, absolute path), or removes what is not
# a component and fails.
accept() {
  if ! is_component "$2"; then
    echo "error: $1: $2 is not a WebAssembly component" >&2
    rm -f "$2"
    return 1
  fi
  report "$1" "$out/$1.wasm"
}

for manifest in plugins/*/Cargo.toml plugins/testing/*/Cargo.toml; do
  [[ -f "$manifest" ]] || continue
  name=$(basename "$(dirname "$manifest")")
  built="plugins/target/$target/release/${name//-/_}.wasm"
  if [[ ! -f "$built" ]]; then
    echo "error: $name: no $built (is it a cdylib member of plugins/Cargo.toml?)" >&2
    status=1
    continue
  fi
  if ! is_component "$built"; then
    echo "error: $name: $built is not a WebAssembly component" >&2
    status=1
    continue
  fi
  cp "$built" "$out/$name.wasm"
  report "$name" "$out/$name.wasm"
done

for package in plugins/js/*/package.json; do
  [[ -f "$package" ]] || continue
  dir=$(dirname "$package")
  name=$(basename "$dir")
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "warning: $name: skipped, node and npm are not installed (scripts/test.sh installs them)" >&2
    continue
  fi
  wasm="$root/$out/$name.wasm"
  rm -f "$wasm"
  # (`set -e` does not apply inside a tested subshell, hence the explicit `|| exit`.)
  if ! (
    cd "$dir" || exit
    # npm ci reinstalls from scratch; skip it while node_modules matches the lock file.
    if [[ ! -f package-lock.json ]]; then
      npm install --no-audit --no-fund || exit
    elif [[ ! node_modules/.package-lock.json -nt package-lock.json ]]; then
      npm ci --no-audit --no-fund || exit
    fi
    node build.mjs "$wasm"
  ); then
    echo "error: $name: the JavaScript build failed" >&2
    status=1
    continue
  fi
  accept "$name" "$wasm" || status=1
done

for build in plugins/python/*/build.sh; do
  [[ -f "$build" ]] || continue
  dir=$(dirname "$build")
  name=$(basename "$dir")
  if ! command -v python3 >/dev/null 2>&1; then
    echo "warning: $name: skipped, python3 is not installed (scripts/test.sh installs it)" >&2
    continue
  fi
  # build.sh installs componentize-py into plugins/python/.venv. Creating a venv needs the venv
  # module and ensurepip, which Debian ships separately (python3-venv): without them, skip.
  venv=plugins/python/.venv
  if [[ -z "${COMPONENTIZE_PY:-}" && ! -x "$venv/bin/pip" ]] &&
    ! python3 -m venv "$venv" >/dev/null 2>&1; then
    rm -rf "$venv"
    echo "warning: $name: skipped, python3 cannot create a venv (install python3-venv;" \
      "scripts/test.sh does)" >&2
    continue
  fi
  wasm="$root/$out/$name.wasm"
  rm -f "$wasm"
  if ! bash "$build" "$wasm"; then
    echo "error: $name: the Python build failed" >&2
    status=1
    continue
  fi
  accept "$name" "$wasm" || status=1
done
exit "$status"
