#!/usr/bin/env bash
# The one command to see competing transformers work: builds the launcher, starts a local
# Kafka broker if none is running (and stops it again afterwards), and runs the demo: three
# racing replicas of the matching engine, one of them SIGKILLed mid-way, outputs unbroken.
#
# Usage: scripts/demo.sh [demo options, e.g. --orders 500]
# Uses the broker at $KAFKA_BOOTSTRAP when set; otherwise the single node of scripts/kafka.sh.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
command -v cargo >/dev/null || { echo "demo: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }

# Build before touching the broker, so a build failure leaves nothing running.
cargo build --release -p bundled-transformers --bin transformer-launcher

started_broker=no
stop_broker() {
  if [[ $started_broker == yes ]]; then
    echo "demo: stopping the broker this script started (its topics go with it; run scripts/kafka.sh start yourself to keep one to explore)" >&2
    scripts/kafka.sh stop || true
  fi
}
trap stop_broker EXIT

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

cargo run --quiet --release -p bundled-transformers --bin transformer-launcher -- demo --bootstrap "$KAFKA_BOOTSTRAP" "$@"
