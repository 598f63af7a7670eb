#!/usr/bin/env bash
# CPU time per process over 5 s in the middle of one scenario, in µs per answered event:
# where the cycles of a run go (orchestrator = load generator + observer; broker; the
# transforming process). Needs a release build (benches/run.sh makes one) and the broker.
#
#   benches/cpu-split.sh identity-1-flat
set -euo pipefail
cd "$(dirname "$0")/.."
scenario=${1:?usage: benches/cpu-split.sh <scenario>}
out=$(mktemp -d)
bin=${CARGO_TARGET_DIR:-target}/release/bench
"$bin" run --only "$scenario" --streams false --out "$out" >"$out/run.log" 2>&1 &
bench=$!
# `bench run` times the hot path (bench micro) first, ~10 s: wait for the scenario's child
# process (a replica or the relay; a raw scenario has none, so at most 15 s), then past the
# warm-up.
for _ in $(seq 150); do
  pgrep -P "$bench" >/dev/null && break
  sleep 0.1
done
sleep 4.5
ticks() { for pid in $(pgrep -f 'release/bench|kafka.Kafka'); do echo "$pid $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)"; done | sort; }
ticks >"$out/a"
for pid in $(cut -d' ' -f1 "$out/a"); do
  name=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
  case $name in
    *kafka.Kafka*) name="broker" ;;
    *"bench run"*) name="orchestrator (load generator + observer)" ;;
    *bench-launcher*) name="replica (bench-launcher)" ;;
    *"bench relay"*) name="relay" ;;
  esac
  echo "$pid $name"
done >"$out/names"
sleep 5; ticks >"$out/b"
wait "$bench" || { cat "$out/run.log" >&2; exit 1; }
eps=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['scenarios'][0]['throughput_eps'])" "$out/latest.json")
hz=$(getconf CLK_TCK)
echo "$scenario: $(printf %.0f "$eps") events/s; CPU per answered event:"
join "$out/a" "$out/b" | join - "$out/names" | while read -r pid before after name; do
  python3 -c "import sys; t=(int(sys.argv[2])-int(sys.argv[1]))/int(sys.argv[3]); print(f'  {t/5/float(sys.argv[4])*1e6:6.2f} µs  {t/5*100:5.0f}% of a core  {sys.argv[5]}')" "$before" "$after" "$hz" "$eps" "$name"
done
