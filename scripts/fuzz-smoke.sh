#!/usr/bin/env bash
# Smoke run of the cargo-fuzz targets in fuzz/ (docs/security.md, "Fuzzing"): builds every target and
# runs each for a few seconds from its committed corpus (fuzz/corpus/<target>/), so that the targets
# keep building and the corpora keep passing. Exits non-zero on any crash, panic, leak or timeout;
# libFuzzer then leaves the input in fuzz/artifacts/<target>/ and prints how to reproduce it
# (`cargo +nightly fuzz run <target> <file>`). Long runs are not this script's job (see the doc).
#
# Installs what it needs on a fresh machine: the nightly toolchain (rustup) and cargo-fuzz.
#
# Usage: scripts/fuzz-smoke.sh [SECONDS_PER_TARGET]   (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-5}"

if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

# Build flags. The long runs (docs/security.md, "Fuzzing") use cargo-fuzz's default: release with
# debug assertions, AddressSanitizer, one codegen unit per crate. From a cold fuzz/target that takes
# ~21 min here (2 cores shared with other work; ~25 CPU-min), far over the test command's budget,
# because the broker-dependent targets compile wasmtime/cranelift instrumented. Measured cold, same
# conditions: --dev with ASAN 14.7 min (10.3 CPU-min), --dev --sanitizer none 13.9 min (8.6 CPU-min).
# -O / --release would still be optimised with one codegen unit per crate (no faster to build).
# So the smoke run builds unoptimised without ASAN: a few seconds per target need no speed, debug
# assertions and overflow checks stay on (our code is safe Rust: its bugs are panics), and ASAN is
# left to the long runs. It builds into fuzz/target/x86_64-unknown-linux-gnu/debug, beside the long
# runs' release build, so neither invalidates the other.
FLAGS=(--dev --sanitizer none)

cd fuzz
cargo +nightly fuzz build "${FLAGS[@]}"

# A scratch corpus per target: libFuzzer writes what it finds into its first corpus directory,
# and the committed one (read second) must not change under a test run.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

status=0
for target in $(cargo +nightly fuzz list); do
  mkdir -p "$scratch/$target" "corpus/$target"
  echo "fuzz-smoke: $target for ${seconds}s"
  # -timeout: an input that takes seconds is a denial of service, reported like a crash.
  if ! cargo +nightly fuzz run "${FLAGS[@]}" "$target" "$scratch/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$scratch/$target.log" 2>&1; then
    tail -n 60 "$scratch/$target.log" >&2
    echo "fuzz-smoke: $target FAILED (input saved in fuzz/artifacts/$target/)" >&2
    status=1
  else
    grep -E '^stat::number_of_executed_units' "$scratch/$target.log" | sed "s/^/  /" || true
  fi
done
exit "$status"
