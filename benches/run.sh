#!/usr/bin/env bash
# The benchmark, in one command: builds the harness and the Kafka Streams peer, runs every
# scenario against the broker at $KAFKA_BOOTSTRAP (default 127.0.0.1:9092), and writes
# benches/results/latest.json, latest.md and latency.png.
#
#   benches/run.sh            the full run (~10 minutes; run it on a quiet machine)
#   benches/run.sh --quick    a smoke run for CI: tiny load, no Kafka Streams, no plot, < 60 s;
#                             writes results/quick.json and quick.md; asserts no timing
#   benches/run.sh --profile  the full run, then `perf record` of one replica flat out
#                             into results/profile.txt
#   benches/run.sh --quick --debug   the smoke run on a debug build (what scripts/test.sh runs:
#                             the test build already compiled most of it)
#   benches/run.sh --cluster 127.0.0.1:39092,127.0.0.1:39093,127.0.0.1:39094   (with
#                             KAFKA_CLUSTER_DIR exported: the cluster's nodes, for the leader kill)
#                             the main scenarios also on a 3-broker cluster (`scripts/kafka.sh
#                             cluster-start`), as `<name>@cluster`, and a partition leader killed
#                             under load; without --cluster no cluster is needed
# Every run (--quick too) ends with `restart-identity`: every replica restarted at once on a log
# of 100,000 and 1,000,000 inputs (2,000 with --quick), with and without snapshots.
# Other arguments go to `bench run` (`--only identity-3`, `--streams false`, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
quick=false profile=false profile_dir=release args=()
for arg in "$@"; do
  case $arg in
    --quick) quick=true; args+=(--quick) ;;
    --profile) profile=true ;;
    --debug) profile_dir=debug ;;
    *) args+=("$arg") ;;
  esac
done
log() { echo "bench: $*" >&2; }

scripts/kafka.sh status >/dev/null 2>&1 || { log "no broker at ${KAFKA_BOOTSTRAP:-127.0.0.1:9092}; start one: scripts/kafka.sh start"; exit 1; }
log "building the harness ($profile_dir)"
if [[ $profile_dir == release ]]; then cargo build --release --quiet -p bench-harness; else cargo build --quiet -p bench-harness; fi
if ! $quick || [[ " ${args[*]} " == *" --streams true "* ]]; then
  log "building the Kafka Streams peer (Maven, jars cached in ~/.m2)"
  mvn -q -B -Dstyle.color=never -f benches/kafka-streams/pom.xml package -DskipTests
fi
"${CARGO_TARGET_DIR:-target}/$profile_dir/bench" run "${args[@]}"

if $profile; then
  log "profiling one identity replica flat out (perf record, 10 s)"
  benches/profile.sh
fi
if ! $quick; then
  VENV=${BENCH_VENV:-$HOME/.cache/competing-transformers/venv-bench}
  if ! "$VENV/bin/python" -c "import matplotlib" >/dev/null 2>&1; then
    log "installing matplotlib into $VENV (first run only)"
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install --quiet "matplotlib==3.9.*" >&2
  fi
  "$VENV/bin/python" benches/plot.py benches/results/latest.json benches/results/latency.png benches/results/degree.png
fi
