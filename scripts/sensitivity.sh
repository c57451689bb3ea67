#!/usr/bin/env bash
# How sensitive the conformance suite is: plant each deliberate bug of
# backends/memory/src/planted.rs in the memory backend, one at a time
# (COORD_PLANTED_BUG=<n>, feature planted-bugs), run the suite (contract and
# fault cases), and report which bugs it catches. Writes the Markdown table to
# stdout and target/sensitivity-report.md, and fails if any bug is missed.
# About 90 s on 2 cores; scripts/test.sh runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
report="${CARGO_TARGET_DIR:-$PWD/target}/sensitivity-report.md"
mkdir -p "$(dirname "$report")"
run() {
  cargo test -q -p coordkit-memory --features planted-bugs --test conformance "$@" </dev/null
}
echo "== building; the suite without a planted bug must pass first"
run >/dev/null 2>&1 || { echo "the suite fails without a planted bug" >&2; exit 1; }
caught=0
total=0
{
  echo "| bug | rule it breaks | caught by |"
  echo "|---|---|---|"
} >"$report"
while IFS='|' read -r n desc; do
  total=$((total + 1))
  out=$(COORD_PLANTED_BUG="$n" COORD_CASE_TIMEOUT_SECS=30 run 2>&1 || true)
  # The names listed under the last "failures:" heading, the first three.
  failed=$(printf '%s\n' "$out" | awk '/^failures:$/ {list = ""; n = 0; next} /^    [a-z_]+$/ {if (n < 3) {list = list (n ? ", " : "") $1}; n++} END {print list}')
  # Not `printf | grep -q` under pipefail: grep stops reading at the first
  # match, printf then dies of SIGPIPE on a long output, and the pipeline fails.
  if [[ "$out" == *"test result: FAILED"* ]]; then
    caught=$((caught + 1))
    echo "| $n | $desc | ${failed:-(a failure)} |" >>"$report"
  else
    echo "| $n | $desc | **not caught** |" >>"$report"
  fi
done < <(sed -n 's/^    (\([0-9]*\), "\(.*\)"),$/\1|\2/p' backends/memory/src/planted.rs)
echo >>"$report"
echo "Caught $caught of $total planted bugs." >>"$report"
cat "$report"
# A bug the suite stops catching is a regression of the suite.
[ "$caught" -eq "$total" ] || { echo "the suite missed $((total - caught)) planted bug(s)" >&2; exit 1; }
