# Helpers shared by the scripts: install PostgreSQL 15, start and stop a
# throwaway server. Source it after scripts/etcd-lib.sh; it defines functions only.

PG_BIN=/usr/lib/postgresql/15/bin

# Install Debian's postgresql-15 if its server is missing.
ensure_postgres() {
  if [ ! -x "$PG_BIN/postgres" ]; then
    echo "== installing postgresql-15"
    apt_install postgresql-15
  fi
  [ -x "$PG_BIN/postgres" ] || { echo "postgresql-15 is still missing after install" >&2; exit 1; }
}

# Run a PostgreSQL binary as the postgres user (initdb and the server refuse root).
as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# Start a server on a free loopback port with a temporary data dir (its socket
# in that dir too); sets POSTGRES_URL, PG_DIR and PG_PORT, and a trap that stops
# it (and etcd, if started) and removes the dir on exit. Extra arguments are
# server settings (`-c name=value`); the default turns fsync off for tests.
start_postgres() {
  local settings=("$@")
  [ ${#settings[@]} -gt 0 ] || settings=(-c fsync=off -c synchronous_commit=off -c full_page_writes=off)
  PG_DIR=$(mktemp -d /tmp/coordkit-pg.XXXXXX)
  chmod 755 "$PG_DIR"
  [ "$(id -u)" -ne 0 ] || chown postgres "$PG_DIR"
  PG_PORT=$(free_port)
  as_postgres "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres -A trust --no-sync >"$PG_DIR/initdb.log" 2>&1 \
    || { echo "initdb failed:" >&2; cat "$PG_DIR/initdb.log" >&2; exit 1; }
  trap 'declare -F stop_beside >/dev/null && stop_beside; stop_postgres; declare -F stop_etcd >/dev/null && stop_etcd; true' EXIT INT TERM
  as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 30 \
    -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=400 ${settings[*]}" start >/dev/null \
    || { echo "postgres did not start:" >&2; cat "$PG_DIR/server.log" >&2; exit 1; }
  POSTGRES_URL="postgres://postgres@127.0.0.1:${PG_PORT}/postgres"
  echo "== postgres $("$PG_BIN/postgres" --version | awk '{print $3}') up at 127.0.0.1:$PG_PORT"
}

stop_postgres() {
  if [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR/data" ]; then
    as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
  fi
  if [ -n "${PG_DIR:-}" ]; then
    rm -rf "$PG_DIR"
    PG_DIR=""
  fi
}
