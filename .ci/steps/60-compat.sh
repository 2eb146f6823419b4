#!/usr/bin/env bash
# Drop-in check: build the published tailtriage 0.2.0 crates (umbrella with tokio,
# axum and controller, the analyzer, the CLI's loader) on top of this repository's
# tailtriage-core through [patch.crates-io], and run their documented flows end to
# end (compat/tests/).
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"

target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in
  /*) ;;
  *) target_dir="$root/$target_dir" ;;
esac
export CARGO_TARGET_DIR="$target_dir/compat"

cd compat

# The patch must be in effect: the only tailtriage-core in the dependency graph is
# this repository's, not the published one.
cargo metadata --format-version 1 | python3 -c '
import json, sys
cores = [p for p in json.load(sys.stdin)["packages"] if p["name"] == "tailtriage-core"]
found = [(p["version"], p["source"] or "path") for p in cores]
print("tailtriage-core in the graph:", found)
if len(cores) != 1 or cores[0]["source"] is not None:
    sys.exit("expected exactly one tailtriage-core, the patched path one")
'

cargo test
