# One build for every stage of scripts/test.sh that runs tests: the whole
# workspace, every target, every feature (the examples' etcd switch, the memory
# backend's planted bugs — inert unless COORD_PLANTED_BUG names one —, TLS,
# metrics, the config formats). Cargo resolves features per selection, so a stage
# that selected one package or other features would rebuild much of the
# dependency tree; stages run the binaries of this build instead.
# Source it; it defines variables and functions only.

TEST_BUILD=(--workspace --all-targets --all-features)

# Print "<package> <kind> <name> <executable>" for every executable that cargo
# reports in its JSON messages on stdin.
executables() {
  python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    pkg = m["package_id"].rsplit("#", 1)[-1].split("@")[0].rsplit("/", 1)[-1]
    print(pkg, m["target"]["kind"][0], m["target"]["name"], m["executable"])
'
}

# Build (if needed) and list every test executable of the build, one per line
# (see `executables`). Examples are listed too, but as `cargo test` builds them:
# test harnesses, which run no example; see `built_examples`.
built_targets() {
  cargo test "${TEST_BUILD[@]}" --no-run --message-format=json 2>/dev/null | executables
}

# Build (if needed) the examples as programs, with every feature (the etcd
# switch included), and list them as `built_targets` does.
built_examples() {
  cargo build --workspace --examples --all-features --message-format=json 2>/dev/null | executables
}

# The executable of one target: built_target PACKAGE KIND NAME.
built_target() {
  built_targets | awk -v p="$1" -v k="$2" -v n="$3" '!found && $1 == p && $2 == k && $3 == n {print $4; found = 1}'
}

# Run one test executable beside the stages that follow, in DIR, in its own
# process group (so that whatever it starts, etcd members included, stops with
# it), its output kept until `finish_beside`: start_beside DIR EXE [ARGS...].
# Only for tests that use no shared server and wait far more than they compute:
# the 3-member cluster tests start their own members. One at a time.
start_beside() {
  local dir="$1"
  shift
  BESIDE_LOG=$(mktemp /tmp/coordkit-beside.XXXXXX)
  BESIDE_NAME="$*"
  (cd "$dir" && exec setsid "$@") >"$BESIDE_LOG" 2>&1 </dev/null &
  BESIDE_PID=$!
  echo "-- beside the next stages: $BESIDE_NAME (pid $BESIDE_PID)"
}

# Wait for the executable `start_beside` started, print its output, and fail
# (exit) if it failed.
finish_beside() {
  local status=0
  wait "$BESIDE_PID" || status=$?
  BESIDE_PID=""
  echo "-- ran beside: $BESIDE_NAME"
  cat "$BESIDE_LOG"
  rm -f "$BESIDE_LOG"
  [ "$status" -eq 0 ] || { echo "$BESIDE_NAME failed (exit $status)" >&2; exit 1; }
}

# Stop what `start_beside` started, with everything it started (the exit traps
# of scripts/etcd-lib.sh and scripts/postgres-lib.sh call this).
stop_beside() {
  if [ -n "${BESIDE_PID:-}" ]; then
    kill -- -"$BESIDE_PID" 2>/dev/null || true
    sleep 0.5
    kill -KILL -- -"$BESIDE_PID" 2>/dev/null || true
    wait "$BESIDE_PID" 2>/dev/null || true
    BESIDE_PID=""
    rm -f "$BESIDE_LOG"
  fi
}
