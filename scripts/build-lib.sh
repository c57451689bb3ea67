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
