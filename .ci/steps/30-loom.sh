#!/usr/bin/env bash
# Model-checks the recording protocol: the loom models in loom-tests/, with the crate built
# against loom's primitives (RUSTFLAGS="--cfg loom"). The preemption bound keeps the suite
# within a few minutes; see the README for deeper runs. The cfg change rebuilds every crate,
# so the models keep their own target folder and leave the ordinary build cache alone.
set -euo pipefail
cd "$(dirname "$0")/../.."

export CARGO_TARGET_DIR="${LOOM_TARGET_DIR:-${CARGO_TARGET_DIR:-target}/loom}"
export RUSTFLAGS="${RUSTFLAGS:-} --cfg loom"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}"

# The loom build compiles code the ordinary lints never see (the stand-ins, the loom-only
# hooks, the models themselves), so it is linted too.
cargo clippy --release -p tailtriage-loom-tests --tests -- -D warnings
cargo clippy --release --lib -- -D warnings

cargo test --release -p tailtriage-loom-tests -- --nocapture
