#!/usr/bin/env bash
# Hardening in release builds. The debug run of `cargo test` already covers every hardening
# test; this step adds what only an optimized build shows:
#   - leaked requests whose completions are dropped, as a cancelled task drops them (debug
#     builds panic on that drop, so there the tests forget the completions instead);
#   - the property tests with eight times the cases, from another fixed seed.
# The full-disk test mounts a 64 KiB tmpfs; where mounting is not allowed it says so and
# skips, and the portable file-size-limit test still covers a write that fails midway.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "$(id -u)" -ne 0 ]; then
  echo "note: not root, so the full-disk test will skip its tmpfs"
fi

cargo test --release \
  --test hardening_bounded_bookkeeping \
  --test hardening_cancellation \
  --test hardening_panics \
  --test hardening_sink_faults \
  -- --nocapture

PROPTEST_CASES="${PROPTEST_CASES:-2048}" PROPTEST_RNG_SEED="${PROPTEST_RNG_SEED:-20261203}" \
  cargo test --release --test prop_api_sequences
