#!/usr/bin/env bash
# Runs a real Confluent-compatible schema registry for tests: Apicurio Registry, from its
# distribution on Maven Central, serving the Confluent API under /apis/ccompat/v7.
# No Docker: this machine reaches Maven Central only.
usage() {
  cat <<'EOF'
Usage: scripts/registry.sh COMMAND

  fetch [--quiet]   Download and unpack Apicurio Registry into the cache (once; later calls reuse it).
  start             Start the registry (in-memory storage), wait until it answers.
                    stdout: SCHEMA_REGISTRY_URL=http://127.0.0.1:<port>/apis/ccompat/v7  (eval/export it)
  stop              Stop the registry (SIGTERM, SIGKILL after 30 s).
  status            Say whether the registry runs (exit 0) or not (exit 3).

Every start begins empty (in-memory H2 storage): schemas do not survive a stop.
The global compatibility rule is BACKWARD, as in Confluent Schema Registry (Apicurio's own
default is none).

Environment (defaults):
  REGISTRY_CACHE_DIR      $HOME/.cache/competing-transformers/apicurio-registry-<version>
  REGISTRY_PORT           8081   HTTP port on 127.0.0.1
  REGISTRY_RUN_DIR        $HOME/.cache/competing-transformers/run/registry
  REGISTRY_START_TIMEOUT  60     seconds to wait for the registry to answer
  JAVA_HOME               optional; otherwise java from PATH (Java 17+ needed)

Files: RUN_DIR/registry.pid (pid of the JVM), RUN_DIR/registry.log (its output; the previous
run's is RUN_DIR/registry.log.prev).
EOF
}
set -euo pipefail

SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
POM=$SCRIPTS_DIR/registry/pom.xml
# The POM is the single place the version is pinned; the cache dir is named after it.
VERSION=$(sed -n 's:.*<apicurio.version>\(.*\)</apicurio.version>.*:\1:p' "$POM")
BASE=$HOME/.cache/competing-transformers
CACHE=${REGISTRY_CACHE_DIR:-$BASE/apicurio-registry-$VERSION}
APP=$CACHE/app
MARKER=$CACHE/app.complete   # holds the POM's hash, written only after a complete unpack

PORT=${REGISTRY_PORT:-8081}
RUN_DIR=${REGISTRY_RUN_DIR:-$BASE/run/registry}
START_TIMEOUT=${REGISTRY_START_TIMEOUT:-60}
JAVA=${JAVA_HOME:+$JAVA_HOME/bin/}java
API=/apis/ccompat/v7

NAME=registry
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"


cmd_fetch() {
  mkdir -p "$CACHE"
  # Parallel callers: one downloads, the others wait for it.
  exec 8>"$CACHE/.lock"
  flock 8
  local want
  want=$(sha256sum <"$POM" | cut -d' ' -f1)
  if [[ -f $MARKER && $(<"$MARKER") == "$want" ]]; then
    [[ ${1:-} == --quiet ]] || log "Apicurio Registry $VERSION already cached in $APP"
  else
    command -v mvn >/dev/null ||
      die "mvn not found and Apicurio Registry is not cached in $APP; install Maven ('apt-get install -y maven') and rerun scripts/registry.sh fetch."
    log "fetching Apicurio Registry $VERSION (~140 MB) from Maven Central into $CACHE (first run only)"
    rm -rf "$APP" "$APP.tmp" "$CACHE/download"
    # Maven 3.8's default dependency plugin is too old for this: name a modern one.
    if ! mvn -q -B -f "$POM" org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies \
      -DexcludeTransitive=true -DoutputDirectory="$CACHE/download" >"$CACHE/fetch.log" 2>&1; then
      tail -n 30 "$CACHE/fetch.log" >&2
      die "Maven could not fetch Apicurio Registry (see above and $CACHE/fetch.log); check that Maven Central is reachable and rerun scripts/registry.sh fetch."
    fi
    mkdir -p "$APP.tmp"
    tar xzf "$CACHE"/download/apicurio-registry-app-*.tar.gz -C "$APP.tmp" ||
      die "unpacking $CACHE/download failed; delete $CACHE and rerun scripts/registry.sh fetch."
    rm -rf "$CACHE/download"
    mv "$APP.tmp" "$APP"
    echo "$want" >"$MARKER"
    log "cached Apicurio Registry $VERSION ($(du -sh "$APP" | cut -f1)) in $APP"
  fi
  exec 8>&-
}

# True if something accepts TCP connections on 127.0.0.1:$1.

# Prints the HTTP status line's code of GET $1 on 127.0.0.1:$PORT (no curl needed).
http_status() {
  timeout 2 bash -c '
    exec 3<>/dev/tcp/127.0.0.1/$0 || exit 1
    printf "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" "$1" >&3
    read -r _ code _ <&3 && echo "$code"' "$PORT" "$1" 2>/dev/null
}

# Prints the pid of our registry, or fails. Checks the command line so a stale pid file
# whose pid was reused by another process is not mistaken for the registry.
registry_pid() {
  local pid
  [[ -f $RUN_DIR/registry.pid ]] || return 1
  pid=$(<"$RUN_DIR/registry.pid")
  [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "-Dct.registry.dir=$RUN_DIR " || return 1
  echo "$pid"
}

lock_dir() { mkdir -p "$RUN_DIR"; exec 9>"$RUN_DIR/.lock"; flock 9; }

stop_registry() {
  local pid deadline=$((SECONDS + 30))
  STOPPED=0
  pid=$(registry_pid) || { rm -f "$RUN_DIR/registry.pid"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  STOPPED=1
  while registry_pid >/dev/null; do
    if ((SECONDS >= deadline)); then
      log "registry $pid ignored SIGTERM for 30 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    sleep 0.2
  done
  rm -f "$RUN_DIR/registry.pid"
}

cmd_start() {
  need_java "Apicurio Registry $VERSION"
  cmd_fetch --quiet
  lock_dir
  if pid=$(registry_pid); then
    die "a registry from $RUN_DIR is already running (pid $pid); stop it with 'scripts/registry.sh stop'."
  fi
  if port_open "$PORT"; then
    die "port $PORT on 127.0.0.1 is already in use (a registry still running? stop it with 'scripts/registry.sh stop', or pick another REGISTRY_PORT; 'ss -ltnp | grep :$PORT' shows who holds it)."
  fi
  local jar
  jar=$(ls "$APP"/apicurio-registry-app-*-runner.jar 2>/dev/null | head -n1) ||
    true
  [[ -n $jar ]] || die "no runner jar in $APP; delete $CACHE and rerun scripts/registry.sh fetch."
  rm -f "$RUN_DIR/registry.pid"
  if [[ -s $RUN_DIR/registry.log ]]; then mv "$RUN_DIR/registry.log" "$RUN_DIR/registry.log.prev"; fi
  # setsid: own session, so the end of the calling shell or test harness does not take the
  # registry down. The inner bash writes its pid, then execs java (same pid).
  # -Dct.registry.dir marks the JVM as ours (registry_pid checks it).
  # shellcheck disable=SC2016  # $$, $0 and $@ belong to the inner bash
  setsid bash -c 'echo $$ >"$0/registry.pid"; exec "$@"' "$RUN_DIR" \
    "$JAVA" -Xmx384m -Xms64m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    "-Dct.registry.dir=$RUN_DIR" \
    -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$PORT" \
    -Dregistry.rules.global.compatibility=BACKWARD \
    -jar "$jar" </dev/null >"$RUN_DIR/registry.log" 2>&1 9>&- &
  local i
  for ((i = 0; i < 50; i++)); do [[ -s $RUN_DIR/registry.pid ]] && break; sleep 0.1; done
  local deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    if ! registry_pid >/dev/null; then
      echo "----- last 20 lines of $RUN_DIR/registry.log -----" >&2
      tail -n 20 "$RUN_DIR/registry.log" >&2 || true
      die "the registry exited during startup; see $RUN_DIR/registry.log (last lines above)."
    fi
    if [[ $(http_status "$API/subjects") == 200 ]]; then
      log "ready on http://127.0.0.1:$PORT$API (Apicurio Registry $VERSION, pid $(<"$RUN_DIR/registry.pid"), log: $RUN_DIR/registry.log)"
      echo "SCHEMA_REGISTRY_URL=http://127.0.0.1:$PORT$API"
      return 0
    fi
    sleep 0.5
  done
  echo "----- last 20 lines of $RUN_DIR/registry.log -----" >&2
  tail -n 20 "$RUN_DIR/registry.log" >&2 || true
  stop_registry
  die "the registry did not answer within ${START_TIMEOUT}s and was stopped; see $RUN_DIR/registry.log (last lines above), or raise REGISTRY_START_TIMEOUT."
}

cmd_stop() {
  lock_dir
  stop_registry
  if ((STOPPED)); then log "stopped the registry in $RUN_DIR"; else log "not running"; fi
}

cmd_status() {
  local pid
  if pid=$(registry_pid); then
    log "running (pid $pid) on http://127.0.0.1:$PORT$API, log: $RUN_DIR/registry.log"
  else
    log "not running"
    exit 3
  fi
}

case ${1:-} in
  fetch) cmd_fetch "${2:-}" ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  -h | --help | help) usage ;;
  *) usage >&2; exit 2 ;;
esac
