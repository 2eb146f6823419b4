#!/usr/bin/env bash
# Builds every benchmark without timing it, so a comparison that stops
# compiling fails here rather than on the day someone wants the numbers.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo bench --no-run
