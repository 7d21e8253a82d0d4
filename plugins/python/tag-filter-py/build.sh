#!/usr/bin/env bash
# Builds tag_filter.py into a WebAssembly component for the `filter` world of wit/quiver-plugin.wit
# and writes it to the path given as the only argument:
#
#   bash build.sh ../../../target/plugins/tag-filter-py.wasm
#
# componentize-py (pinned in ../requirements.txt; installed into ../.venv on first use, or taken
# from $COMPONENTIZE_PY) bundles CPython, imports the module once at build time and snapshots the
# interpreter, so the component starts without parsing Python. Every module the plugin needs must be
# imported at module level: there is no file system at run time to import from.
#
# The component is ~18 MB (CPython and the snapshot of its memory); deploys may carry up to the
# broker's plugins.max_component_mb (64 by default).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
venv="$here/../.venv"
requirements="$here/../requirements.txt"

if [[ $# -ne 1 ]]; then
  echo "usage: bash build.sh OUTPUT.wasm" >&2
  exit 2
fi
out=$1
started=$(date +%s%N)

componentize_py=${COMPONENTIZE_PY:-}
if [[ -z "$componentize_py" ]]; then
  # (Re)install into the venv when it is missing or older than the pinned requirements.
  stamp="$venv/.requirements-installed"
  if [[ ! -x "$venv/bin/componentize-py" || "$requirements" -nt "$stamp" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    touch "$stamp"
  fi
  componentize_py="$venv/bin/componentize-py"
fi

mkdir -p "$(dirname "$out")"
# -p: the plugin's sources (tag_filter.py imports batch.py); only what is imported is bundled.
"$componentize_py" -d "$root/wit/quiver-plugin.wit" -w filter \
  componentize -p "$here" tag_filter -o "$out" >/dev/null
size=$(wc -c <"$out")
ms=$((($(date +%s%N) - started) / 1000000))
printf 'tag-filter-py: %d bytes in %d.%ds -> %s\n' \
  "$size" $((ms / 1000)) $((ms % 1000 / 100)) "$out"
