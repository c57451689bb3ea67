#!/usr/bin/env bash
# Many seeded random runs of the ambiguous-answers invariants on the memory
# backend (conformance cases ambiguous_random_runs_keep_every_invariant and
# ambiguous_random_runs_under_partitions_compaction_and_expiry): CI runs six
# seeds of each; this runs COORD_SEEDS (default 0-4999). A failing seed is named in
# the failure, and `COORD_SEEDS=<n> ./scripts/seeds.sh` replays it exactly (the
# paused clock and one seeded thread make a run deterministic).
set -euo pipefail
cd "$(dirname "$0")/.."
export COORD_SEEDS="${COORD_SEEDS:-0-4999}"
echo "== seeds $COORD_SEEDS on the memory backend"
cargo test -q -p coordkit-memory --all-features --test conformance ambiguous_random_runs
