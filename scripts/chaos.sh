#!/usr/bin/env bash
# Long fault runs with figures, not asserts: each scenario of
# backends/etcd/tests/chaos.rs on a fresh 3-member etcd cluster behind fault
# proxies (baseline, each member paused, each proxy blackholed, leader killed,
# quorum lost, every member cut off past the TTL), then 10,000 watches with one
# consumer that stops reading for a minute. Writes the Markdown report to
# stdout and target/chaos-report.md. Takes about 8 minutes on 2 cores.
#
# Installs what is missing (as scripts/test.sh does). COORD_CHAOS_ETCD=3.5 runs
# against etcd 3.5.1 instead of Debian's 3.4.23. Knobs: COORD_CHAOS_SICK_SECS
# (10), COORD_CHAOS_STALL_SECS (60), COORD_CHAOS_WATCHES (10000).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/etcd-lib.sh

ensure_packages
if [ "${COORD_CHAOS_ETCD:-3.4}" = "3.5" ]; then
  etcd35_dir=$(ensure_etcd35)
  PATH="$etcd35_dir:$PATH"
  export PATH
fi
export COORD_REQUIRE_ETCD=1
export COORD_CHAOS_REPORT="${COORD_CHAOS_REPORT:-$PWD/target/chaos-report.md}"
mkdir -p "$(dirname "$COORD_CHAOS_REPORT")"
cargo test --release -p coordkit-etcd --test chaos -- --ignored --nocapture chaos_report
echo "report written to $COORD_CHAOS_REPORT"
