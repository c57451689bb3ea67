#!/usr/bin/env bash
# Run every benchmark against a real etcd and a real PostgreSQL, each with its
# default durability (fsync on),
# and write the Markdown report to stdout and target/bench-report.md (or
# $COORD_BENCH_REPORT).
#
# Installs what is missing (as scripts/test.sh does), starts etcd on a free loopback
# port with a temporary data dir, starts PostgreSQL 15 likewise, runs `cargo bench
# -p coordkit-bench`, stops both.
# COORD_BENCH_ONLY=locks,recipes,config,watch,reads,scale limits the groups
# (semaphores: the recipes' semaphore rows alone);
# COORD_BENCH_CONTENDERS=4,64 the numbers of contenders.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/etcd-lib.sh
. scripts/postgres-lib.sh

ensure_packages
ensure_postgres
# Any explicit flag replaces etcd-lib's --unsafe-no-fsync: durability stays default.
start_etcd --snapshot-count=100000
export COORD_ETCD_ENDPOINTS="$ETCD_ENDPOINT"
export COORD_REQUIRE_ETCD=1
# The CPU columns count etcd's CPU too.
export COORD_BENCH_ETCD_PID="$ETCD_PID"
# PostgreSQL with its default durability (fsync and synchronous_commit on): any
# explicit setting replaces postgres-lib's fsync=off.
start_postgres -c synchronous_commit=on
export COORD_POSTGRES_URL="$POSTGRES_URL"
export COORD_REQUIRE_POSTGRES=1

export COORD_BENCH_REPORT="${COORD_BENCH_REPORT:-${CARGO_TARGET_DIR:-$PWD/target}/bench-report.md}"
cargo bench -p coordkit-bench
echo "report written to $COORD_BENCH_REPORT"
