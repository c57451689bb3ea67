#!/usr/bin/env bash
# How sensitive the conformance suite is: plant each deliberate bug of
# backends/memory/src/planted/mod.rs, one at a time (COORD_PLANTED_BUG=<n>,
# feature planted-bugs: the memory suite's harness wraps every store handle in
# a PlantedClient that carries the bug; the store itself has none), run the suite (contract and
# fault cases), and report which case catches it. Writes the Markdown table to
# stdout and target/sensitivity-report.md, and fails if any bug is missed.
#
# A bug's run stops at its first failure: the case that caught the bug before
# (scripts/sensitivity-catchers.txt, "<bug> <case>" per line) runs first, alone;
# only when it passes does the whole suite run, and the first case it fails names
# the new catcher (listed at the end, to copy into the file). A catch is always a
# case failing with the bug planted, never a name read from the file.
# `--full` runs the whole suite for every bug and rewrites the catchers file with
# the first failing case by name; the file is then worth editing by hand to name
# the case that states the rule (a direct case fails at once, a recipe case may
# only time out). Under 10 s once built with the file current (6 min with --full);
# scripts/test.sh runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/build-lib.sh
report="${CARGO_TARGET_DIR:-$PWD/target}/sensitivity-report.md"
catchers=scripts/sensitivity-catchers.txt
full=0
[ "${1:-}" = "--full" ] && full=1
mkdir -p "$(dirname "$report")"
# The memory backend's conformance binary of scripts/test.sh's one build (its
# planted bugs are compiled in, inert until COORD_PLANTED_BUG names one).
echo "== building; the suite without a planted bug must pass first"
suite=$(built_target coordkit-memory test conformance)
[ -x "$suite" ] || { echo "the memory backend's conformance suite did not build" >&2; exit 1; }
run() {
  (cd backends/memory && "$suite" -q "$@" </dev/null)
}
run >/dev/null 2>&1 || { echo "the suite fails without a planted bug" >&2; exit 1; }
caught=0
total=0
found=()
{
  echo "| bug | rule it breaks | caught by |"
  echo "|---|---|---|"
} >"$report"
while IFS='|' read -r n desc; do
  total=$((total + 1))
  known=""
  [ "$full" -eq 1 ] || known=$(awk -v n="$n" '$1 == n {print $2; exit}' "$catchers" 2>/dev/null || true)
  if [ -n "$known" ]; then
    out=$(COORD_PLANTED_BUG="$n" COORD_CASE_TIMEOUT_SECS=30 run --exact "$known" 2>&1 || true)
    # Not `printf | grep -q` under pipefail: grep stops reading at the first
    # match, printf then dies of SIGPIPE on a long output, and the pipeline fails.
    if [[ "$out" == *"test result: FAILED"* ]]; then
      caught=$((caught + 1))
      echo "| $n | $desc | $known |" >>"$report"
      continue
    fi
  fi
  out=$(COORD_PLANTED_BUG="$n" COORD_CASE_TIMEOUT_SECS=30 run 2>&1 || true)
  # The names listed under the last "failures:" heading, the first three.
  failed=$(printf '%s\n' "$out" | awk '/^failures:$/ {list = ""; n = 0; next} /^    [a-z_]+$/ {if (n < 3) {list = list (n ? ", " : "") $1}; n++} END {print list}')
  if [[ "$out" == *"test result: FAILED"* ]]; then
    caught=$((caught + 1))
    echo "| $n | $desc | ${failed:-(a failure)} |" >>"$report"
    found+=("$n ${failed%%,*}")
  else
    echo "| $n | $desc | **not caught** |" >>"$report"
  fi
done < <(sed -n 's/^    (\([0-9]*\), "\(.*\)"),$/\1|\2/p' backends/memory/src/planted/mod.rs)
echo >>"$report"
echo "Caught $caught of $total planted bugs." >>"$report"
cat "$report"
if [ "$full" -eq 1 ]; then
  printf '%s\n' "${found[@]}" >"$catchers"
  echo "(wrote $catchers)"
elif [ ${#found[@]} -gt 0 ]; then
  echo "New catchers (the listed case no longer caught these, or none was listed): update $catchers with:"
  printf '  %s\n' "${found[@]}"
fi
# A bug the suite stops catching is a regression of the suite.
[ "$caught" -eq "$total" ] || { echo "the suite missed $((total - caught)) planted bug(s)" >&2; exit 1; }
