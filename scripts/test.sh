#!/usr/bin/env bash
# Run every test of the workspace against a real etcd.
#
# Installs what is missing (Debian: etcd-server, etcd-client, protobuf-compiler),
# starts etcd on a free loopback port with a temporary data dir, runs
# `cargo test --workspace --all-targets` and the doctests with COORD_ETCD_ENDPOINTS
# and COORD_REQUIRE_ETCD=1 (a missing etcd fails, never skips), and stops etcd on
# every exit path.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/etcd-lib.sh

ensure_packages
start_etcd
export COORD_ETCD_ENDPOINTS="$ETCD_ENDPOINT"
export COORD_REQUIRE_ETCD=1

echo "== cargo test --workspace --all-targets (etcd at $COORD_ETCD_ENDPOINTS)"
cargo test --workspace --all-targets
echo "== doctests"
cargo test --workspace --doc
echo "== examples"
for example in tour lock election config config_manager registry grpc_resolver; do
  cargo run --quiet --example "$example" >/dev/null
done
echo "all tests passed"
