"""Medians and spreads of several `bench run` rounds (their latest.json), as markdown tables.

usage: rounds.py <round1/latest.json> <round2/latest.json> ...

On shared cores a single round's tail is noise; what BENCHMARKS.md quotes is the median of
the rounds with the spread (min–max) beside it. Tables: each scenario on the single broker
beside its `@cluster` twin; the goals' ratios on each; the partition leader killed under
load (raw Kafka, ours, Kafka Streams); restart to first output against log length; the
matching engine's racing figures.
"""
import json
import re
import statistics
import sys

CLUSTER = "@cluster"
# How many rounds were given: a figure from fewer says how many it is from.
ROUNDS = 0


def load(paths):
    runs = []
    for path in paths:
        with open(path) as f:
            runs.append(json.load(f))
    return runs


def scenario(run, name):
    for s in run["scenarios"]:
        if s["name"] == name and not s.get("error"):
            return s
    return None


def spread(values, fmt="{:.2f}"):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    median = fmt.format(statistics.median(values))
    if len(values) == 1:
        return f"{median} (1 round)"
    fewer = f", {len(values)} rounds" if len(values) < ROUNDS else ""
    return f"**{median}** ({fmt.format(min(values))}–{fmt.format(max(values))}{fewer})"


def ratio(a, b):
    return a / b if a is not None and b else None


def figure(run, name, key):
    s = scenario(run, name)
    if s is None:
        return None
    if key == "p50":
        return s["latency"]["p50_ms"]
    if key == "p99":
        return s["latency"]["p99_ms"]
    if key == "gap":
        return s["gap_max_ms"]
    if key == "eps":
        return s["throughput_eps"]
    if key == "ampl":
        return (s.get("amplification") or {}).get("by_bytes")
    raise KeyError(key)


def side_by_side(runs, names):
    print("| scenario | broker | throughput ev/s | p50 ms | p99 ms | largest gap ms | ampl. bytes |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        for broker, full in (("single", name), ("cluster RF 3", name + CLUSTER)):
            if all(scenario(r, full) is None for r in runs):
                continue
            cells = [
                spread([figure(r, full, "eps") for r in runs], "{:.0f}"),
                spread([figure(r, full, "p50") for r in runs]),
                spread([figure(r, full, "p99") for r in runs], "{:.1f}"),
                spread([figure(r, full, "gap") for r in runs], "{:.0f}"),
                spread([figure(r, full, "ampl") for r in runs]),
            ]
            print(f"| {name} | {broker} | " + " | ".join(cells) + " |")


def goals(runs):
    rows = [
        ("identity-1-flat ÷ raw-idempotent-flat", "≥ 0.7 (issue 6)", lambda r, c: ratio(figure(r, "identity-1-flat" + c, "eps"), figure(r, "raw-idempotent-flat" + c, "eps"))),
        ("identity-1-flat ÷ raw-relay-flat", "≥ 0.9 (issue 15)", lambda r, c: ratio(figure(r, "identity-1-flat" + c, "eps"), figure(r, "raw-relay-flat" + c, "eps"))),
        ("write amplification, identity-3", "≤ 1.2", lambda r, c: figure(r, "identity-3" + c, "ampl")),
        ("stalled p99 ÷ unstalled p99", "≤ 1.5", lambda r, c: ratio(figure(r, "identity-3-stall" + c, "p99"), figure(r, "identity-3" + c, "p99"))),
        ("killed gap ÷ normal gap", "≤ 2", lambda r, c: ratio(figure(r, "identity-3-kill" + c, "gap"), figure(r, "identity-3" + c, "gap"))),
        ("stalled p99 ÷ Kafka Streams' p99", "< 0.5", lambda r, c: ratio(figure(r, "identity-3-stall" + c, "p99"), figure(r, "streams-identity" + c, "p99"))),
        ("Kafka Streams' killed-instance gap ms", "", lambda r, c: figure(r, "streams-identity-kill" + c, "gap")),
    ]
    print("| figure | goal | single broker | cluster RF 3 |")
    print("|---|---|---|---|")
    for label, goal, get in rows:
        fmt = "{:.0f}" if label.endswith("ms") else "{:.2f}"
        single = spread([get(r, "") for r in runs], fmt)
        cluster = spread([get(r, CLUSTER) for r in runs], fmt)
        print(f"| {label} | {goal} | {single} | {cluster} |")


def leader_kill(runs):
    print("| system | largest gap ms | new leader after ms | p99 ms | normal gap ms (no fault, cluster) |")
    print("|---|---|---|---|---|")
    for label, name, normal in (
        ("raw rdkafka produce → consume", "raw-idempotent-leader-kill", None),
        ("identity × 3 replicas", "identity-3-leader-kill", "identity-3"),
        ("Kafka Streams identity, EOS v2", "streams-identity-leader-kill", "streams-identity"),
    ):
        full = name + CLUSTER
        elected = []
        for r in runs:
            s = scenario(r, full)
            notes = " ".join(s["notes"]) if s else ""
            m = re.search(r"leads \S+ (\d+) ms after the kill", notes)
            elected.append(float(m.group(1)) if m else None)
        cells = [
            spread([figure(r, full, "gap") for r in runs], "{:.0f}"),
            spread(elected, "{:.0f}"),
            spread([figure(r, full, "p99") for r in runs], "{:.0f}"),
            spread([figure(r, normal + CLUSTER, "gap") for r in runs], "{:.0f}") if normal else "",
        ]
        print(f"| {label} | " + " | ".join(cells) + " |")


def restarts(runs):
    keys = []
    for r in runs:
        for x in r.get("restarts", []):
            key = (x["scenario"], x["events"], x["snapshots"])
            if key not in keys:
                keys.append(key)
    print("| scenario | log inputs | snapshots | first output ms | peak RSS MB |")
    print("|---|---|---|---|---|")
    for name, events, snapshots in keys:
        got = [
            x
            for r in runs
            for x in r.get("restarts", [])
            if (x["scenario"], x["events"], x["snapshots"]) == (name, events, snapshots) and not x.get("error")
        ]
        broker = "cluster RF 3" if name.endswith(CLUSTER) else "single"
        print(
            f"| {name.removesuffix(CLUSTER)} ({broker}) | {events:,} | {'on' if snapshots else 'off (replay)'} | "
            f"{spread([x['first_output_ms'] for x in got], '{:.0f}')} | {spread([x['peak_rss_mb'] for x in got], '{:.0f}')} |"
        )


def matching(runs):
    print("| figure | goal | median (spread) | per round |")
    print("|---|---|---|---|")
    rows = [
        ("write amplification", "≤ 1.2", lambda r: figure(r, "matching-3", "ampl")),
        ("stalled p99 ÷ unstalled p99", "≤ 1.5", lambda r: ratio(figure(r, "matching-3-stall", "p99"), figure(r, "matching-3", "p99"))),
        ("killed gap ÷ normal gap", "≤ 2", lambda r: ratio(figure(r, "matching-3-kill", "gap"), figure(r, "matching-3", "gap"))),
        ("p99 ms, no fault", "", lambda r: figure(r, "matching-3", "p99")),
        ("p99 ms, stalled", "", lambda r: figure(r, "matching-3-stall", "p99")),
        ("largest gap ms, no fault", "", lambda r: figure(r, "matching-3", "gap")),
        ("largest gap ms, killed", "", lambda r: figure(r, "matching-3-kill", "gap")),
        ("all at once: write amplification", "", lambda r: figure(r, "matching-3-all", "ampl")),
        ("all at once: stalled p99 ÷ unstalled p99", "≤ 1.5", lambda r: ratio(figure(r, "matching-3-all-stall", "p99"), figure(r, "matching-3-all", "p99"))),
        ("all at once: killed gap ÷ normal gap", "≤ 2", lambda r: ratio(figure(r, "matching-3-all-kill", "gap"), figure(r, "matching-3-all", "gap"))),
        ("all at once: p99 ms, no fault", "", lambda r: figure(r, "matching-3-all", "p99")),
        ("all at once: p99 ms, stalled", "", lambda r: figure(r, "matching-3-all-stall", "p99")),
    ]
    for label, goal, get in rows:
        values = [get(r) for r in runs]
        if all(v is None for v in values):
            continue
        per = ", ".join("n/a" if v is None else f"{v:.2f}" for v in values)
        print(f"| {label} | {goal} | {spread(values)} | {per} |")


def main(paths):
    global ROUNDS
    runs = load(paths)
    ROUNDS = len(runs)
    print(f"{len(runs)} rounds: " + ", ".join(paths) + "\n")
    side_by_side(runs, ["raw-idempotent", "identity-1", "raw-idempotent-flat", "identity-1-flat", "raw-relay-flat", "identity-3", "identity-3-stall", "identity-3-kill", "streams-identity", "streams-identity-stall", "streams-identity-kill"])
    print()
    goals(runs)
    print()
    leader_kill(runs)
    print()
    restarts(runs)
    print()
    matching(runs)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
