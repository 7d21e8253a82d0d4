#!/usr/bin/env bash
# Builds every Rust plugin under plugins/ (crates listed in plugins/Cargo.toml) as a wasm32-wasip2
# component, copies each to target/plugins/<name>.wasm at the repository root, checks that it is a
# component (not a core module) and prints its size. rustc's wasm32-wasip2 target links through
# wasm-component-ld, so `cargo build` already produces components: no extra tool is needed.
set -euo pipefail
cd "$(dirname "$0")/.."

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
for manifest in plugins/*/Cargo.toml; do
  name=$(basename "$(dirname "$manifest")")
  built="plugins/target/$target/release/${name//-/_}.wasm"
  if [[ ! -f "$built" ]]; then
    echo "error: $name: no $built (is it a cdylib member of plugins/Cargo.toml?)" >&2
    status=1
    continue
  fi
  if [[ "$(head -c 8 "$built" | od -An -tx1 | tr -d ' \n')" != "$component_header" ]]; then
    echo "error: $name: $built is not a WebAssembly component" >&2
    status=1
    continue
  fi
  cp "$built" "$out/$name.wasm"
  printf '%-16s %9d bytes  %s\n' "$name" "$(wc -c <"$out/$name.wasm")" "$out/$name.wasm"
done
exit "$status"
