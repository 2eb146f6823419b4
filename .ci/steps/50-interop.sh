#!/usr/bin/env bash
# Interop with the published tools: run the checkout service example in a small
# configuration for each scenario, analyse its artifact with the published
# `tailtriage-cli` 0.2.0, and check that
#   - the CLI accepts the artifact and its JSON report parses,
#   - each scenario gets the verdict it is built to produce,
#   - the example's own report (from the published `tailtriage-analyzer`) is the
#     same document the CLI prints.
# The CLI is installed once under the target folder and reused by later runs.
set -euo pipefail
cd "$(dirname "$0")/../.."

target_dir="${CARGO_TARGET_DIR:-target}"
tools="$target_dir/ci-tools"
work="$target_dir/ci-interop"
mkdir -p "$work"

if [ -x "$tools/bin/tailtriage" ] && "$tools/bin/tailtriage" --version | grep -q ' 0\.2\.0$'; then
  echo "tailtriage-cli 0.2.0 already installed in $tools"
else
  cargo install --locked --version 0.2.0 tailtriage-cli --root "$tools"
fi
cli="$tools/bin/tailtriage"

cargo build --example checkout_service --features tokio,tower

check_scenario() {
  local scenario="$1" expected="$2"
  local artifact="$work/$scenario.json"
  local ours="$work/$scenario-example-report.json"
  local theirs="$work/$scenario-cli-report.json"
  rm -f "$artifact" "$ours" "$theirs"

  echo "--- $scenario: example run"
  cargo run --quiet --example checkout_service --features tokio,tower -- \
    --scenario "$scenario" --requests 600 --concurrency 32 \
    --output "$artifact" --report "$ours"

  echo "--- $scenario: tailtriage analyze --format json"
  "$cli" analyze "$artifact" --format json >"$theirs"

  python3 - "$theirs" "$ours" "$expected" <<'PY'
import json
import sys

cli_path, example_path, expected = sys.argv[1:4]
with open(cli_path) as f:
    cli = json.load(f)
with open(example_path) as f:
    example = json.load(f)

kind = cli["primary_suspect"]["kind"]
print(f"CLI verdict: {kind} ({cli['primary_suspect']['confidence']} confidence, "
      f"score {cli['primary_suspect']['score']}), {cli['request_count']} requests")
if cli["request_count"] != 600:
    sys.exit(f"the CLI analysed {cli['request_count']} requests, expected 600")
if kind != expected:
    sys.exit(f"expected primary suspect {expected}, the CLI says {kind}")
if cli != example:
    sys.exit("the example's analyzer report differs from the CLI's report")
print("the example's report matches the CLI's")
PY
}

check_scenario queue-bound application_queue_saturation
check_scenario downstream-bound downstream_stage_dominates
