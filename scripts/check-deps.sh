#!/usr/bin/env bash
# Guards the crate split (README.md, Layout): the client package `quiver` must not pull in the
# broker or its heavy dependencies (wasmtime, cranelift, sled), and the broker must not depend on the
# client package (it shares only the frame I/O, quiver-wire). Normal dependencies only: dev- and
# build-dependencies are not what an application that adds `quiver` compiles.
set -euo pipefail
cd "$(dirname "$0")/.."

status=0

# `cargo tree --prefix none` prints one `name vX.Y.Z [(path)] [(*)]` per line; keep `name vX.Y.Z`.
tree() {
  cargo tree -p "$1" -e normal --prefix none | sed 's/ (.*//' | sort -u
}

client=$(tree quiver)
bad=$(grep -E '^(wasmtime(-[A-Za-z0-9_-]+)?|cranelift-[A-Za-z0-9_-]+|sled|quiver-broker) v' <<<"$client" || true)
if [[ -n "$bad" ]]; then
  echo "error: the client package quiver depends on what belongs to the broker:" >&2
  sed 's/^/  /' <<<"$bad" >&2
  echo "  (see which path pulls it in: cargo tree -p quiver -e normal -i NAME)" >&2
  status=1
fi

broker=$(tree quiver-broker)
# Exactly the package `quiver`, not quiver-proto or quiver-wire.
bad=$(grep -E '^quiver v' <<<"$broker" || true)
if [[ -n "$bad" ]]; then
  echo "error: the broker quiver-broker depends on the client package quiver:" >&2
  sed 's/^/  /' <<<"$bad" >&2
  echo "  (the broker shares only the frame I/O with the client: use quiver-wire)" >&2
  status=1
fi

if [[ "$status" -eq 0 ]]; then
  echo "check-deps: ok (the client package quiver: $(wc -l <<<"$client") crates in its tree, none of the" \
    "broker's; the broker does not depend on it)"
fi
exit "$status"
