#!/usr/bin/env bash
# The one command to see competing transformers work: builds the launcher, starts a local
# Kafka broker if none is running (and stops it again afterwards), and runs the demo: three
# racing replicas of the matching engine, one of them SIGKILLed mid-way, outputs unbroken.
#
# Usage: scripts/demo.sh [--debug] [demo options, e.g. --orders 500, or --avro for Avro reports]
# Uses the broker at $KAFKA_BOOTSTRAP when set; otherwise the single node of scripts/kafka.sh.
# --debug runs the debug build (the one scripts/test.sh has already made) instead of release.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
command -v cargo >/dev/null || { echo "demo: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }

profile=release
if [[ ${1:-} == --debug ]]; then
  profile=debug
  shift
fi
# Build before touching the broker, so a build failure leaves nothing running.
if [[ $profile == release ]]; then
  cargo build --release -p bundled-transformers --bins
else
  cargo build -p bundled-transformers --bins
fi

started_broker=no
started_registry=no
stop_broker() {
  if [[ $started_registry == yes ]]; then
    scripts/registry.sh stop || true
  fi
  if [[ $started_broker == yes ]]; then
    echo "demo: stopping the broker this script started; its data stays (scripts/kafka.sh start brings it back with the demo's topic)" >&2
    scripts/kafka.sh stop || true
  fi
}
trap stop_broker EXIT

# --avro needs a schema registry: start one the same way, unless SCHEMA_REGISTRY_URL names one.
if [[ " $* " == *" --avro "* && -z ${SCHEMA_REGISTRY_URL:-} ]]; then
  if scripts/registry.sh status >/dev/null 2>&1; then
    export SCHEMA_REGISTRY_URL=http://127.0.0.1:${REGISTRY_PORT:-8081}/apis/ccompat/v7
  else
    echo "demo: starting a schema registry for --avro (scripts/registry.sh start)" >&2
    started_registry=yes
    eval "export $(scripts/registry.sh start)"
  fi
fi

if [[ -z ${KAFKA_BOOTSTRAP:-} ]]; then
  if scripts/kafka.sh status >/dev/null 2>&1; then
    export KAFKA_BOOTSTRAP=127.0.0.1:${KAFKA_PORT:-9092}
    echo "demo: using the running broker at $KAFKA_BOOTSTRAP" >&2
  else
    echo "demo: no broker running; starting one (scripts/kafka.sh start)" >&2
    started_broker=yes
    eval "$(scripts/kafka.sh start)"
    export KAFKA_BOOTSTRAP
  fi
fi

broker_stops=()
[[ $started_broker == yes ]] && broker_stops=(--broker-stops)
"target/$profile/demo" --bootstrap "$KAFKA_BOOTSTRAP" "${broker_stops[@]}" "$@"
