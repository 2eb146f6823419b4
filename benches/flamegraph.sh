#!/usr/bin/env bash
# Flamegraphs of the lifecycle_1t and threads scenarios of benches/compare.rs.
#
# The comparison binary runs one system in a loop (BENCH_PROFILE), perf samples
# it on the cpu-clock software event with DWARF call stacks (no hardware
# counters needed), and inferno folds the stacks and draws the SVG. Only the
# stacks under the recording loop (`Recorder::record_requests`), or under
# `shutdown` for the shutdown scenario, are drawn.
#
# Needs: perf (Debian package linux-perf) and inferno (`cargo install inferno`).
# Usage: benches/flamegraph.sh [system] [output folder]
#   system: ours (default), published_0_2_0, published_0_3_0, fastrace, floor
#   FLAMEGRAPH_SCENARIOS (default "lifecycle_1t threads"; shutdown_100k also
#   works for the tailtriage systems), BENCH_PROFILE_SECS (default 10) and
#   BENCH_PROFILE_THREADS (default 8) apply.
set -euo pipefail
cd "$(dirname "$0")/.."

system="${1:-ours}"
out="${2:-docs}"
mkdir -p "$out"
# The folded stacks stay in the target folder for text analysis.
folded="${CARGO_TARGET_DIR:-target}"
mkdir -p "$folded"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Line tables and symbols for the unwinder, without touching Cargo.toml.
export CARGO_PROFILE_BENCH_DEBUG=true
export CARGO_PROFILE_BENCH_STRIP=none
exe="$(cargo bench --bench compare --no-run 2>&1 |
  sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -n 1)"
[ -x "$exe" ] || { echo "could not find the compare benchmark binary" >&2; exit 1; }

for scenario in ${FLAMEGRAPH_SCENARIOS:-lifecycle_1t threads}; do
  BENCH_PROFILE="$scenario" BENCH_PROFILE_SYSTEM="$system" \
    perf record -F 499 -e cpu-clock --call-graph dwarf,32768 -o "$work/perf.data" \
    -- "$exe" 2>&1 | grep -v '^\[ perf record'
  # Keep the stacks of the profiled operation: recording, or shutdown. Building,
  # filling and dropping recorders between chunks is not the cost being profiled.
  keep='Recorder>::record_requests'
  [ "$scenario" = shutdown_100k ] && keep='Tailtriage>::shutdown\|Tailtriage::shutdown'
  perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf |
    grep "$keep" > "$folded/flamegraph-$scenario-$system.folded"
  title="$system, $scenario"
  [ "$scenario" = threads ] && title="$title (${BENCH_PROFILE_THREADS:-8} threads)"
  inferno-flamegraph --title "$title" --width 1600 < "$folded/flamegraph-$scenario-$system.folded" \
    > "$out/flamegraph-$scenario-$system.svg"
  echo "wrote $out/flamegraph-$scenario-$system.svg (stacks: $folded/flamegraph-$scenario-$system.folded)"
done
