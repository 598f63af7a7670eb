#!/usr/bin/env bash
# Runs real Apache Kafka brokers (KRaft) for tests, from jars fetched off Maven Central.
# No Docker and no Kafka tarball: this machine reaches Maven Central only.
usage() {
  cat <<'EOF'
Usage: scripts/kafka.sh COMMAND

  fetch [--quiet]         Download the Kafka jars into the cache (once; later calls reuse it).
  start [--fresh]         Start a single-node broker+controller, wait until it is ready. Its
                          data (topics, records) is kept across stop/start; --fresh wipes it
                          first (new storage, new cluster id).
                          stdout: KAFKA_BOOTSTRAP=127.0.0.1:<port>  (eval/export it)
  stop                    Stop the single-node broker (SIGTERM, SIGKILL after 30 s).
  restart [--fresh]       stop, then start (data kept unless --fresh).
  status                  Say whether the single node runs (exit 0) or not (exit 3).
  cluster-start           Start a 3-node cluster (each node broker+controller), wait for all.
                          stdout: KAFKA_CLUSTER_BOOTSTRAP=127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094
  cluster-stop            Stop all cluster nodes.
  cluster-status          One line per node; exit 0 if all three run, 3 otherwise.
  cluster-kill-node N     SIGKILL node N (1..3) and wait until it is gone (failover tests).
  cluster-stop-node N     Stop node N gracefully (controlled shutdown).
  cluster-restart-node N  Start node N again on its existing data (after kill/stop-node).

The single node keeps its data unless started with --fresh (scripts/test.sh and the demo pass
it). Every cluster-start formats fresh storage (data wiped, new random cluster id);
cluster-restart-node keeps it.

Environment (defaults):
  KAFKA_CACHE_DIR        $HOME/.cache/competing-transformers/kafka-<version>  (jars in libs/)
  KAFKA_PORT             9092   single node PLAINTEXT listener on 127.0.0.1
  KAFKA_CONTROLLER_PORT  9093   single node KRaft controller listener
  KAFKA_RUN_DIR          $HOME/.cache/competing-transformers/run/single
  KAFKA_CLUSTER_DIR      $HOME/.cache/competing-transformers/run/cluster   (node-1..node-3)
  KAFKA_CLUSTER_PORT     19092  node N listens on KAFKA_CLUSTER_PORT+N-1 (19092..19094)
  KAFKA_CLUSTER_CONTROLLER_PORT  19192  node N's controller: +N-1 (19192..19194)
  KAFKA_START_TIMEOUT    60     seconds to wait for a broker to be ready
  JAVA_HOME              optional; otherwise java from PATH (Java 17+ needed)

Files (per node; single node: DIR=$KAFKA_RUN_DIR, cluster: DIR=$KAFKA_CLUSTER_DIR/node-N):
  DIR/broker.pid         pid of the broker JVM (kill -9 $(cat DIR/broker.pid) to crash it)
  DIR/broker.log         broker log (log4j2; the previous run's is DIR/broker.log.prev)
  DIR/stdout.log         JVM stdout/stderr;    DIR/format.log  storage formatting output
  DIR/server.properties  generated config;     DIR/data  the log/metadata dir
EOF
}
set -euo pipefail

SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
POM=$SCRIPTS_DIR/kafka/pom.xml
# The POM is the single place the version is pinned; the cache dir is named after it.
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")
BASE=$HOME/.cache/competing-transformers
CACHE=${KAFKA_CACHE_DIR:-$BASE/kafka-$KAFKA_VERSION}
LIBS=$CACHE/libs
MARKER=$CACHE/libs.complete   # holds the POM's hash, written only after a complete copy

PORT=${KAFKA_PORT:-9092}
CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
RUN_DIR=${KAFKA_RUN_DIR:-$BASE/run/single}
CLUSTER_DIR=${KAFKA_CLUSTER_DIR:-$BASE/run/cluster}
CLUSTER_PORT=${KAFKA_CLUSTER_PORT:-19092}
CLUSTER_CONTROLLER_PORT=${KAFKA_CLUSTER_CONTROLLER_PORT:-19192}
NODES=(1 2 3)
START_TIMEOUT=${KAFKA_START_TIMEOUT:-60}
JAVA=${JAVA_HOME:+$JAVA_HOME/bin/}java

NAME=kafka
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"


cmd_fetch() {
  mkdir -p "$CACHE"
  # Parallel test binaries may all call fetch: one downloads, the others wait for it.
  exec 8>"$CACHE/.lock"
  flock 8
  local want
  want=$(sha256sum <"$POM" | cut -d' ' -f1)
  if [[ -f $MARKER && $(<"$MARKER") == "$want" ]]; then
    [[ ${1:-} == --quiet ]] || log "Kafka $KAFKA_VERSION jars already cached in $LIBS"
  else
    command -v mvn >/dev/null ||
      die "mvn not found and the Kafka jars are not cached in $LIBS; install Maven ('apt-get install -y maven') and rerun scripts/kafka.sh fetch."
    log "fetching Kafka $KAFKA_VERSION jars from Maven Central into $LIBS (first run only)"
    rm -rf "$LIBS" "$LIBS.tmp"
    # Maven 3.8's default dependency plugin is too old for this: name a modern one.
    # Output goes to a file: Maven 3.8 -q still prints stray colour codes on success.
    if ! mvn -q -B -f "$POM" org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$LIBS.tmp" >"$CACHE/fetch.log" 2>&1; then
      tail -n 30 "$CACHE/fetch.log" >&2
      die "Maven could not fetch the Kafka jars (see above and $CACHE/fetch.log); check that Maven Central is reachable and rerun scripts/kafka.sh fetch."
    fi
    mv "$LIBS.tmp" "$LIBS"
    echo "$want" >"$MARKER"
    # shellcheck disable=SC2012  # jar names are plain
    log "cached $(ls "$LIBS" | wc -l) jars ($(du -sh "$LIBS" | cut -f1)) in $LIBS"
  fi
  exec 8>&-
}

# True if something accepts TCP connections on 127.0.0.1:$1.

# Prints the pid of the broker running from dir $1, or fails. Checks the command line so a
# stale pid file whose pid was reused by another process is not mistaken for the broker.
broker_pid() {
  local dir=$1 pid
  [[ -f $dir/broker.pid ]] || return 1
  pid=$(<"$dir/broker.pid")
  [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "kafka.Kafka $dir/server.properties" || return 1
  echo "$pid"
}

# $1 port, $2 the command that stops whatever of ours holds it.
ensure_port_free() {
  if port_open "$1"; then
    die "port $1 on 127.0.0.1 is already in use (a broker still running? stop it with 'scripts/kafka.sh $2'; 'ss -ltnp | grep :$1' shows who holds it)."
  fi
}

# Serialise start/stop on one run dir (fd 9; brokers are launched with it closed).
lock_dir() { mkdir -p "$1"; exec 9>"$1/.lock"; flock 9; }

# A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (22 chars).
# Kafka avoids ids starting with '-' (they read as CLI options), so do we.
new_cluster_id() {
  local id
  while :; do
    id=$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    [[ $id == -* ]] || break
  done
  echo "$id"
}

# write_config DIR NODE_ID PORT CONTROLLER_PORT VOTERS RF MIN_ISR
write_config() {
  local dir=$1 id=$2 port=$3 cport=$4 voters=$5 rf=$6 min_isr=$7
  cat >"$dir/server.properties" <<EOF
# Generated by scripts/kafka.sh at each start: change the script, not this file.
process.roles=broker,controller
node.id=$id
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data

# Internal topics default to replication factor 3: on fewer nodes they are never
# created and init_transactions / consumer groups hang.
offsets.topic.replication.factor=$rf
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$min_isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$min_isr
# The default 50 partitions each make the first group / transaction slow on 2 cores.
offsets.topic.num.partitions=3
transaction.state.log.num.partitions=3
share.coordinator.state.topic.num.partitions=3

# Tests: no 3 s wait before a new group's first rebalance.
group.initial.rebalance.delay.ms=0
# Lets tests pick a short session.timeout.ms (classic groups) for fast failover;
# only lowers the floor (default 6000), clients keep their own defaults.
group.min.session.timeout.ms=1000
# A crashed transactional producer's open transaction (which holds back read_committed
# readers) is aborted ~1 s after its transaction.timeout.ms, not up to 10 s later.
transaction.abort.timed.out.transaction.cleanup.interval.ms=1000
# Tests create their topics explicitly; a misspelt topic must fail, not appear.
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=$rf
min.insync.replicas=$min_isr
EOF
}

# format_node DIR CLUSTER_ID: wipe DIR/data and format it for this cluster id.
format_node() {
  local dir=$1 cid=$2
  rm -rf "$dir/data"
  "$JAVA" -cp "$LIBS/*" -Dlog4j2.configurationFile="$SCRIPTS_DIR/kafka/tools-log4j2.properties" \
    kafka.tools.StorageTool format -t "$cid" -c "$dir/server.properties" >"$dir/format.log" 2>&1
}

# launch DIR HEAP_OPTS...: start the broker of DIR in the background and record its pid.
launch() {
  local dir=$1
  shift
  rm -f "$dir/broker.pid"
  # Keep the previous run's log (e.g. of a node killed by a test) next to the new one.
  if [[ -s $dir/broker.log ]]; then mv "$dir/broker.log" "$dir/broker.log.prev"; fi
  # setsid: own session, so Ctrl-C or the end of the calling shell/test harness does not
  # take the broker down with it. The inner bash writes its own pid, then execs java
  # (same pid), so the pid file names the JVM itself.
  # shellcheck disable=SC2016  # $$, $0 and $@ belong to the inner bash
  setsid bash -c 'echo $$ >"$0/broker.pid"; exec "$@"' "$dir" \
    "$JAVA" "$@" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$SCRIPTS_DIR/kafka/broker-log4j2.properties" \
    -Dkafka.broker.log="$dir/broker.log" \
    -cp "$LIBS/*" kafka.Kafka "$dir/server.properties" \
    </dev/null >"$dir/stdout.log" 2>&1 9>&- &
  local i
  for ((i = 0; i < 50; i++)); do [[ -s $dir/broker.pid ]] && return 0; sleep 0.1; done
  die "the broker of $dir did not start (no pid file); see $dir/stdout.log."
}

show_tail() {
  local dir=$1
  echo "----- last 20 lines of $dir/broker.log -----" >&2
  tail -n 20 "$dir/broker.log" >&2 || true
  if [[ -s $dir/stdout.log ]]; then
    echo "----- last 20 lines of $dir/stdout.log -----" >&2
    tail -n 20 "$dir/stdout.log" >&2
  fi
}

# wait_ready DIR PORT: until the log says started AND the port takes connections.
# On failure: print the log tail, stop the broker(s) of $STOP_ON_FAIL, exit.
wait_ready() {
  local dir=$1 port=$2 deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    if ! broker_pid "$dir" >/dev/null; then
      show_tail "$dir"
      stop_dirs "${STOP_ON_FAIL[@]}"
      die "the broker in $dir exited during startup; see $dir/broker.log (last lines above)."
    fi
    if grep -qs 'Kafka Server started' "$dir/broker.log" && port_open "$port"; then
      return 0
    fi
    sleep 0.5
  done
  show_tail "$dir"
  stop_dirs "${STOP_ON_FAIL[@]}"
  die "the broker in $dir was not ready within ${START_TIMEOUT}s and was stopped; see $dir/broker.log (last lines above), or raise KAFKA_START_TIMEOUT."
}

# stop_dirs [--kill] DIR...: SIGTERM (or SIGKILL) the brokers of all DIRs at once, then wait;
# SIGKILL whatever is still alive after 30 s. Cluster nodes are stopped together because a
# node that outlives the controller quorum waits long for a controlled shutdown.
stop_dirs() {
  local sig=TERM dir pid stopped=0 deadline=$((SECONDS + 30))
  if [[ ${1:-} == --kill ]]; then sig=KILL; shift; fi
  for dir in "$@"; do
    pid=$(broker_pid "$dir") || { rm -f "$dir/broker.pid"; continue; }
    kill -"$sig" "$pid" 2>/dev/null || true
    stopped=$((stopped + 1))
  done
  for dir in "$@"; do
    while pid=$(broker_pid "$dir"); do
      if ((SECONDS >= deadline)); then
        log "broker $pid ($dir) ignored SIGTERM for 30 s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
      fi
      sleep 0.2
    done
    rm -f "$dir/broker.pid"
  done
  STOPPED=$stopped
}

# cmd_start [--fresh]: on the data of the last run unless --fresh (or there is none).
cmd_start() {
  local fresh=no
  case ${1:-} in
    --fresh) fresh=yes ;;
    "") ;;
    *) die "unknown option '$1' for start; the only one is --fresh (wipe the broker's data first)." ;;
  esac
  need_java "Kafka $KAFKA_VERSION"
  cmd_fetch --quiet
  lock_dir "$RUN_DIR"
  ensure_port_free "$PORT" stop
  ensure_port_free "$CONTROLLER_PORT" stop
  if pid=$(broker_pid "$RUN_DIR"); then
    die "a broker from $RUN_DIR is already running (pid $pid); stop it with 'scripts/kafka.sh stop'."
  fi
  write_config "$RUN_DIR" 1 "$PORT" "$CONTROLLER_PORT" "1@127.0.0.1:$CONTROLLER_PORT" 1 1
  if [[ $fresh == yes || ! -f $RUN_DIR/data/meta.properties ]]; then
    format_node "$RUN_DIR" "$(new_cluster_id)" ||
      die "formatting $RUN_DIR/data failed; see $RUN_DIR/format.log."
    log "fresh storage in $RUN_DIR/data"
  else
    log "keeping the data in $RUN_DIR/data (its topics and records); 'start --fresh' wipes it"
  fi
  launch "$RUN_DIR" -Xmx512m -Xms256m
  STOP_ON_FAIL=("$RUN_DIR")
  wait_ready "$RUN_DIR" "$PORT"
  log "ready on 127.0.0.1:$PORT (pid $(<"$RUN_DIR/broker.pid"), log: $RUN_DIR/broker.log)"
  echo "KAFKA_BOOTSTRAP=127.0.0.1:$PORT"
}

cmd_stop() {
  lock_dir "$RUN_DIR"
  stop_dirs "$RUN_DIR"
  if ((STOPPED)); then log "stopped the broker in $RUN_DIR"; else log "not running"; fi
}

cmd_status() {
  local pid
  if pid=$(broker_pid "$RUN_DIR"); then
    log "running (pid $pid) on 127.0.0.1:$PORT, log: $RUN_DIR/broker.log"
  else
    log "not running"
    exit 3
  fi
}

node_dir() { echo "$CLUSTER_DIR/node-$1"; }
node_port() { echo $((CLUSTER_PORT + $1 - 1)); }
node_controller_port() { echo $((CLUSTER_CONTROLLER_PORT + $1 - 1)); }
cluster_bootstrap() {
  local n out=()
  for n in "${NODES[@]}"; do out+=("127.0.0.1:$(node_port "$n")"); done
  (IFS=,; echo "${out[*]}")
}
all_node_dirs() { local n; for n in "${NODES[@]}"; do node_dir "$n"; done; }

check_node_arg() {
  [[ ${1:-} =~ ^[123]$ ]] || die "give a node number 1, 2 or 3 (e.g. 'scripts/kafka.sh cluster-kill-node 2')."
}

cmd_cluster_start() {
  need_java "Kafka $KAFKA_VERSION"
  cmd_fetch --quiet
  lock_dir "$CLUSTER_DIR"
  local n dir voters=() cid pids=()
  for n in "${NODES[@]}"; do
    ensure_port_free "$(node_port "$n")" cluster-stop
    ensure_port_free "$(node_controller_port "$n")" cluster-stop
    voters+=("$n@127.0.0.1:$(node_controller_port "$n")")
  done
  cid=$(new_cluster_id)
  for n in "${NODES[@]}"; do
    dir=$(node_dir "$n")
    mkdir -p "$dir"
    ! broker_pid "$dir" >/dev/null ||
      die "node $n of the cluster is already running; stop it with 'scripts/kafka.sh cluster-stop'."
    write_config "$dir" "$n" "$(node_port "$n")" "$(node_controller_port "$n")" \
      "$(IFS=,; echo "${voters[*]}")" 3 2
    cat >>"$dir/server.properties" <<'EOF'

# Fast failure detection for failover tests (defaults 9000 / 2000 / 30000 ms).
broker.session.timeout.ms=6000
broker.heartbeat.interval.ms=1000
replica.lag.time.max.ms=5000
EOF
    format_node "$dir" "$cid" & pids+=($!)   # three JVMs at once: formatting is CPU-light
  done
  for n in "${!pids[@]}"; do
    wait "${pids[$n]}" || die "formatting $(node_dir "${NODES[$n]}")/data failed; see its format.log."
  done
  # All nodes start together: none is ready before the controller quorum has a majority.
  for n in "${NODES[@]}"; do launch "$(node_dir "$n")" -Xmx384m -Xms256m; done
  mapfile -t STOP_ON_FAIL < <(all_node_dirs)
  for n in "${NODES[@]}"; do wait_ready "$(node_dir "$n")" "$(node_port "$n")"; done
  log "cluster ready on $(cluster_bootstrap) (logs: $CLUSTER_DIR/node-{1,2,3}/broker.log)"
  echo "KAFKA_CLUSTER_BOOTSTRAP=$(cluster_bootstrap)"
}

cmd_cluster_stop() {
  lock_dir "$CLUSTER_DIR"
  local dirs
  mapfile -t dirs < <(all_node_dirs)
  stop_dirs "${dirs[@]}"
  if ((STOPPED)); then log "stopped $STOPPED cluster node(s)"; else log "cluster not running"; fi
}

cmd_cluster_status() {
  local n pid down=0
  for n in "${NODES[@]}"; do
    if pid=$(broker_pid "$(node_dir "$n")"); then
      log "node $n running (pid $pid) on 127.0.0.1:$(node_port "$n")"
    else
      log "node $n not running"
      down=1
    fi
  done
  ((down == 0)) || exit 3
}

cmd_cluster_kill_node() {
  check_node_arg "${1:-}"
  lock_dir "$CLUSTER_DIR"
  local dir pid
  dir=$(node_dir "$1")
  pid=$(broker_pid "$dir") || die "node $1 is not running (no live pid in $dir/broker.pid)."
  stop_dirs --kill "$dir"
  log "killed node $1 (pid $pid) with SIGKILL"
}

cmd_cluster_stop_node() {
  check_node_arg "${1:-}"
  lock_dir "$CLUSTER_DIR"
  local dir
  dir=$(node_dir "$1")
  broker_pid "$dir" >/dev/null || die "node $1 is not running (no live pid in $dir/broker.pid)."
  stop_dirs "$dir"
  log "stopped node $1"
}

cmd_cluster_restart_node() {
  check_node_arg "${1:-}"
  need_java "Kafka $KAFKA_VERSION"
  cmd_fetch --quiet
  lock_dir "$CLUSTER_DIR"
  local dir
  dir=$(node_dir "$1")
  [[ -f $dir/server.properties && -d $dir/data ]] ||
    die "node $1 has no data in $dir; start the cluster with 'scripts/kafka.sh cluster-start'."
  ! broker_pid "$dir" >/dev/null ||
    die "node $1 is still running; kill it first with 'scripts/kafka.sh cluster-kill-node $1'."
  ensure_port_free "$(node_port "$1")" "cluster-kill-node $1"
  ensure_port_free "$(node_controller_port "$1")" "cluster-kill-node $1"
  launch "$dir" -Xmx384m -Xms256m
  STOP_ON_FAIL=("$dir")
  wait_ready "$dir" "$(node_port "$1")"
  log "node $1 back on 127.0.0.1:$(node_port "$1") (log: $dir/broker.log)"
}

case ${1:-} in
  fetch) cmd_fetch "${2:-}" ;;
  start) cmd_start "${2:-}" ;;
  stop) cmd_stop ;;
  restart) cmd_stop; cmd_start "${2:-}" ;;
  status) cmd_status ;;
  cluster-start) cmd_cluster_start ;;
  cluster-stop) cmd_cluster_stop ;;
  cluster-status) cmd_cluster_status ;;
  cluster-kill-node) cmd_cluster_kill_node "${2:-}" ;;
  cluster-stop-node) cmd_cluster_stop_node "${2:-}" ;;
  cluster-restart-node) cmd_cluster_restart_node "${2:-}" ;;
  -h | --help | help) usage ;;
  *) usage >&2; exit 2 ;;
esac
