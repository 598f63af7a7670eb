#!/usr/bin/env bash
# Runs a local PostgreSQL server for the ledger projection's tests, from Debian's packages.
usage() {
  cat <<'EOF'
Usage: scripts/postgres.sh COMMAND

  fetch     Install PostgreSQL from Debian's packages (apt-get) if initdb/pg_ctl are missing.
  start     Create the cluster (once; its data is kept across restarts) and start the server
            on 127.0.0.1, wait until it accepts connections. It offers TLS with a certificate
            for 127.0.0.1 signed by a CA made on the first start (RUN_DIR/tls/ca.pem).
            stdout, one line (eval "export $(scripts/postgres.sh start)"):
              DATABASE_URL=postgres://postgres@127.0.0.1:<port>/postgres PGSSLROOTCERT=<RUN_DIR>/tls/ca.pem
  stop      Stop the server (fast shutdown: open transactions are rolled back).
  status    Say whether the server runs (exit 0) or not (exit 3).

The server runs as a non-root user: as root, the `postgres` system user of Debian's package
(created if missing); otherwise the current user. Authentication is `trust` on 127.0.0.1
only: a test server, never a production one.

Environment (defaults):
  PG_PORT        55432   TCP port on 127.0.0.1
  PG_RUN_DIR     $HOME/.cache/competing-transformers/run/postgres  (data/, postgres.log, socket)
  PG_BIN         the newest /usr/lib/postgresql/<version>/bin, else initdb's directory on PATH
  PG_START_TIMEOUT  60  seconds to wait for the server
EOF
}
set -euo pipefail

PORT=${PG_PORT:-55432}
RUN_DIR=${PG_RUN_DIR:-$HOME/.cache/competing-transformers/run/postgres}
DATA=$RUN_DIR/data
LOG=$RUN_DIR/postgres.log
START_TIMEOUT=${PG_START_TIMEOUT:-60}
URL="postgres://postgres@127.0.0.1:$PORT/postgres"

NAME=postgres
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

find_bin() {
  if [ -n "${PG_BIN:-}" ]; then echo "$PG_BIN"; return; fi
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -n "$dir" ] && [ -x "$dir/pg_ctl" ]; then echo "$dir"; return; fi
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return; fi
  return 1
}

cmd_fetch() {
  if find_bin >/dev/null; then return 0; fi
  [ "$(id -u)" = 0 ] || die "PostgreSQL is not installed and installing it needs root; run 'sudo apt-get install -y postgresql' (or set PG_BIN to a directory holding initdb and pg_ctl)."
  log "installing PostgreSQL from Debian's packages"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } >"${TMPDIR:-/tmp}/postgres-apt.log" 2>&1 \
    || die "apt-get could not install postgresql (see ${TMPDIR:-/tmp}/postgres-apt.log); check that Debian's package mirror is reachable."
  find_bin >/dev/null || die "postgresql was installed but no initdb/pg_ctl was found under /usr/lib/postgresql/*/bin; set PG_BIN."
}

# The server's user: PostgreSQL refuses to run as root.
server_user() {
  if [ "$(id -u)" != 0 ]; then id -un; return; fi
  if ! id postgres >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres >/dev/null 2>&1 \
      || die "cannot create the 'postgres' system user to run the server as; create a non-root user and run this script as it."
  fi
  echo postgres
}

as_server() {
  if [ "$(id -u)" = 0 ]; then runuser -u "$(server_user)" -- "$@"; else "$@"; fi
}

# As root, the server's user must be able to reach RUN_DIR through $HOME (often mode 700):
# grant traversal only (o+x, no listing) on each of our ancestors it cannot pass.
grant_traversal() {
  [ "$(id -u)" = 0 ] || return 0
  local user dir ancestors=()
  user=$(server_user)
  dir=$(dirname "$RUN_DIR")
  while [ "$dir" != / ]; do ancestors=("$dir" "${ancestors[@]}"); dir=$(dirname "$dir"); done
  # Top down: a directory is reachable only once its parents are.
  for dir in "${ancestors[@]}"; do
    if ! runuser -u "$user" -- test -x "$dir"; then
      log "granting $user traversal of $dir (chmod o+x) to reach $RUN_DIR"
      chmod o+x "$dir"
    fi
  done
}


# A CA and a server certificate for 127.0.0.1 and localhost, made once: the projection's
# TLS test (sslmode=require, verified against this CA) needs a server that offers TLS.
make_tls() {
  local dir=$RUN_DIR/tls user
  user=$(server_user)
  [ -f "$dir/server.pem" ] && [ -f "$dir/server.key" ] && [ -f "$dir/ca.pem" ] && return 0
  mkdir -p "$dir"
  command -v openssl >/dev/null 2>&1 || die "openssl is missing; install it (apt-get install -y openssl) to give the test server a TLS certificate."
  {
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=competing-transformers test PostgreSQL CA" \
      -keyout "$dir/ca.key" -out "$dir/ca.pem" &&
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$dir/server.key" -out "$dir/server.csr" &&
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$dir/server.ext" &&
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -days 3650 \
      -extfile "$dir/server.ext" -out "$dir/server.pem"
  } >"$dir/openssl.log" 2>&1 || die "openssl could not make the test server's certificate; see $dir/openssl.log."
  # PostgreSQL refuses a key that others can read.
  chmod 600 "$dir/server.key" "$dir/ca.key"
  [ "$(id -u)" = 0 ] && chown "$user" "$dir/server.key" "$dir/server.pem"
  return 0
}

# Whether the postmaster of $DATA lives: its pid file's first line, readable by us.
running() {
  local pid
  pid=$(head -n 1 "$DATA/postmaster.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

cmd_start() {
  cmd_fetch
  local bin user
  bin=$(find_bin)
  user=$(server_user)
  if running; then
    die "a server from $DATA is already running; stop it with 'scripts/postgres.sh stop'."
  fi
  if port_open "$PORT"; then
    die "port $PORT on 127.0.0.1 is already in use; free it or set PG_PORT ('ss -ltnp | grep :$PORT' shows who holds it)."
  fi
  mkdir -p "$RUN_DIR"
  [ "$(id -u)" = 0 ] && chown "$user" "$RUN_DIR"
  grant_traversal
  if [ ! -f "$DATA/PG_VERSION" ]; then
    as_server "$bin/initdb" -D "$DATA" -U postgres --auth=trust --encoding=UTF8 --no-locale >"$RUN_DIR/initdb.log" 2>&1 \
      || die "initdb failed; see $RUN_DIR/initdb.log."
  fi
  make_tls
  [ -f "$LOG" ] && mv -f "$LOG" "$LOG.prev"
  [ "$(id -u)" = 0 ] && { touch "$LOG"; chown "$user" "$LOG"; }
  if ! as_server "$bin/pg_ctl" -D "$DATA" -l "$LOG" -w -t "$START_TIMEOUT" \
      -o "-c listen_addresses=127.0.0.1 -p $PORT -k $RUN_DIR -c fsync=off -c ssl=on -c ssl_cert_file=$RUN_DIR/tls/server.pem -c ssl_key_file=$RUN_DIR/tls/server.key" start >/dev/null 2>&1; then
    tail -n 20 "$LOG" >&2 2>/dev/null || true
    die "the server did not start within ${START_TIMEOUT}s; see $LOG (last lines above)."
  fi
  log "running on 127.0.0.1:$PORT as $user, data in $DATA, log $LOG"
  echo "DATABASE_URL=$URL PGSSLROOTCERT=$RUN_DIR/tls/ca.pem"
}

cmd_stop() {
  local bin
  bin=$(find_bin) || die "PostgreSQL is not installed; nothing to stop."
  if ! running; then log "not running"; return 0; fi
  grant_traversal
  as_server "$bin/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null 2>&1 \
    || die "the server of $DATA did not stop within 60 s; see $LOG."
  log "stopped"
}

cmd_status() {
  if running; then
    echo "postgres: running on 127.0.0.1:$PORT, data $DATA, log $LOG; DATABASE_URL=$URL PGSSLROOTCERT=$RUN_DIR/tls/ca.pem"
  else
    echo "postgres: not running"
    exit 3
  fi
}

case "${1:-}" in
  fetch) cmd_fetch ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
