#!/usr/bin/env bash
# Profiles one identity replica flat out: runs the `identity-1-flat` scenario and, while it
# loads, `perf record`s the replica process for 8 s. Writes benches/results/profile.txt (the
# top of `perf report`, by self time) and the per-step costs of `bench micro`.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { echo "profile: perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
out=benches/results/profile.txt
data=$(mktemp -d)/perf.data
"${CARGO_TARGET_DIR:-target}/release/bench" run --only identity-1-flat --streams false --out "$(dirname "$data")" >/dev/null 2>"$data.log" &
bench=$!
pid=""
# `bench run` times the hot path (bench micro) first: wait up to 60 s for the replica.
for _ in $(seq 600); do
  pid=$(pgrep -P "$bench" -f bench-launcher || true)
  [[ -n $pid ]] && break
  sleep 0.1
done
[[ -n $pid ]] || { echo "profile: no replica process appeared" >&2; kill "$bench"; exit 1; }
sleep 3   # past the warm-up, into the flat-out load
perf record -F 499 --call-graph dwarf,16384 -p "$pid" -o "$data" -- sleep 4 2>/dev/null >/dev/null || true
wait "$bench" || true
{
  echo "# perf report of one identity replica (bench-launcher), flat out, by self time"
  perf report -i "$data" --stdio --no-children --percent-limit 0.7 --sort dso,symbol 2>/dev/null | grep -v '^$' | grep -E '^ +[0-9]' | head -45
  echo
  echo "# by thread"
  perf report -i "$data" --stdio --no-children --sort comm 2>/dev/null | grep -E '^ +[0-9]' | head -10
  echo
  echo "# bench micro: ns per event of each step, no Kafka"
  "${CARGO_TARGET_DIR:-target}/release/bench" micro
} > "$out"
echo "profile: wrote $out" >&2
