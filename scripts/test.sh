#!/usr/bin/env bash
# Checks formatting and lints, then runs every test against real Kafka: unit, simulation and
# doc tests, the EventLog conformance suite on a single broker in both write modes, the replica
# race tests, the failover test on a 3-broker cluster, every role on a secured broker (SASL_SSL
# and mTLS with ACLs: scripts/kafka-secure.sh), the ledger's projection into PostgreSQL, and
# a real Prometheus scraping a launcher (scripts/prometheus.sh); then a smoke run of the
# benchmark harness (tiny load, debug build: it fails if a scenario fails or an input goes
# unanswered, and asserts no timing) and the demo. Starts the servers it needs and stops what
# it started.
#
# Usage: scripts/test.sh [extra cargo test args]   (with args, the smoke run and the demo are skipped)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

started_single=0
started_cluster=0
started_postgres=0
started_registry=0
started_secure=0
started_prometheus=0
cleanup() {
  if [ "$started_prometheus" = 1 ]; then scripts/prometheus.sh stop >/dev/null 2>&1 || true; fi
  if [ "$started_secure" = 1 ]; then scripts/kafka-secure.sh stop >/dev/null 2>&1 || true; fi
  if [ "$started_registry" = 1 ]; then scripts/registry.sh stop >/dev/null 2>&1 || true; fi
  if [ "$started_postgres" = 1 ]; then scripts/postgres.sh stop >/dev/null 2>&1 || true; fi
  if [ "$started_cluster" = 1 ]; then scripts/kafka.sh cluster-stop >/dev/null 2>&1 || true; fi
  if [ "$started_single" = 1 ]; then scripts/kafka.sh stop >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

# The gate: one formatting, no clippy warning (workspace lints, clippy.toml), the lockfile as
# committed. Cheapest first, so a formatting slip fails in seconds.
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The layers: what a DET author depends on has no Kafka client, runtime, CLI or HTTP client,
# with or without its Avro codec.
for features in --no-default-features --all-features; do
  if cargo tree -p competing-transformers -e normal --prefix none --locked $features | grep -E '^(rdkafka|tokio|clap|reqwest|hyper) '; then
    echo "test: crates/core ($features) must not depend on the crates above; move that code to crates/kafka or crates/launcher" >&2
    exit 1
  fi
done

# Compile first, while the two cores are not shared with brokers.
cargo test --workspace --locked --no-run

scripts/kafka.sh fetch --quiet
if [ -z "${KAFKA_BOOTSTRAP:-}" ]; then
  if scripts/kafka.sh status >/dev/null 2>&1; then
    export KAFKA_BOOTSTRAP=127.0.0.1:${KAFKA_PORT:-9092}
  else
    eval "export $(scripts/kafka.sh start --fresh)"
    started_single=1
  fi
fi
if [ -z "${KAFKA_CLUSTER_BOOTSTRAP:-}" ]; then
  if scripts/kafka.sh cluster-status >/dev/null 2>&1; then
    p=${KAFKA_CLUSTER_PORT:-19092}
    export KAFKA_CLUSTER_BOOTSTRAP=127.0.0.1:$p,127.0.0.1:$((p + 1)),127.0.0.1:$((p + 2))
  else
    eval "export $(scripts/kafka.sh cluster-start)"
    started_cluster=1
  fi
fi
if [ -z "${DATABASE_URL:-}" ]; then
  if scripts/postgres.sh status >/dev/null 2>&1; then
    export DATABASE_URL=postgres://postgres@127.0.0.1:${PG_PORT:-55432}/postgres
    export PGSSLROOTCERT=${PG_RUN_DIR:-$HOME/.cache/competing-transformers/run/postgres}/tls/ca.pem
  else
    eval "export $(scripts/postgres.sh start)"
    started_postgres=1
  fi
fi
# The Avro tests need a real schema registry (Apicurio, Confluent-compatible API).
scripts/registry.sh fetch --quiet
if [ -z "${SCHEMA_REGISTRY_URL:-}" ]; then
  if scripts/registry.sh status >/dev/null 2>&1; then
    export SCHEMA_REGISTRY_URL=http://127.0.0.1:${REGISTRY_PORT:-8081}/apis/ccompat/v7
  else
    eval "export $(scripts/registry.sh start)"
    started_registry=1
  fi
fi
# The secured broker (SASL_SSL and mTLS, ACLs per role) of tests/secured_kafka.rs.
if [ -z "${KAFKA_SECURE_BOOTSTRAP_SASL:-}" ]; then
  if scripts/kafka-secure.sh status >/dev/null 2>&1 && [ -s "$HOME/.cache/competing-transformers/run/secure/ca.pem" ]; then
    export KAFKA_SECURE_BOOTSTRAP_SASL=127.0.0.1:${KAFKA_SECURE_SASL_PORT:-29092}
    export KAFKA_SECURE_BOOTSTRAP_MTLS=127.0.0.1:${KAFKA_SECURE_MTLS_PORT:-29093}
    export KAFKA_SECURE_DIR=${KAFKA_SECURE_RUN_DIR:-$HOME/.cache/competing-transformers/run/secure}
  else
    eval "export $(scripts/kafka-secure.sh start)"
    started_secure=1
  fi
fi
# A real Prometheus scraping a launcher (transformers/bundled/tests/prometheus.rs).
if [ -z "${PROMETHEUS_URL:-}" ]; then
  if scripts/prometheus.sh status >/dev/null 2>&1; then
    export PROMETHEUS_URL=http://127.0.0.1:${PROMETHEUS_PORT:-9090}
    export PROMETHEUS_TARGETS_DIR=${PROMETHEUS_RUN_DIR:-$HOME/.cache/competing-transformers/run/prometheus}/targets
  else
    eval "export $(scripts/prometheus.sh start | tr '\n' ' ')"
    started_prometheus=1
  fi
fi
echo "test: schema registry $SCHEMA_REGISTRY_URL" >&2
echo "test: Prometheus $PROMETHEUS_URL, targets in $PROMETHEUS_TARGETS_DIR" >&2
echo "test: secured broker SASL_SSL $KAFKA_SECURE_BOOTSTRAP_SASL, mTLS $KAFKA_SECURE_BOOTSTRAP_MTLS" >&2
echo "test: single broker $KAFKA_BOOTSTRAP, cluster $KAFKA_CLUSTER_BOOTSTRAP, PostgreSQL $DATABASE_URL" >&2

cargo test --workspace "$@" -- --nocapture

# The benchmark harness end to end, so it cannot rot between full runs (BENCHMARKS.md), and
# the README's first command, the demo, on the debug build the tests made; both skipped when
# cargo test was given arguments (a filtered run).
if [ $# -eq 0 ]; then
  benches/run.sh --quick --debug
  scripts/demo.sh --debug
fi
