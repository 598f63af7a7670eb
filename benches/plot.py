"""Plots the latency distributions of a benchmark run (benches/results/latest.json).

usage: plot.py <results.json> <out.png> [<degree.png>]

One curve per scenario: latency (ms, log scale) against percentile, on an axis stretched
towards the tail (x = 1 / (1 - percentile)), the usual HDR histogram view. Flat-out
scenarios are left out (their latency is queueing by construction); so are failed ones.

With a third path, and `identity-N` / `identity-N-all` scenarios in the results (N = 1 to 5
replicas), also the degree of competition: p50, p99 and write amplification against the
number of replicas, adaptive racing beside all at once.
"""
import json
import sys
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(results_path, out_path):
    with open(results_path) as f:
        run = json.load(f)
    panels = [
        ("Framework vs the limit (no faults)", lambda s: s["fault"] == "none"),
        ("Under faults (stall: SIGSTOP 300 ms / 2 s; kill)", lambda s: s["fault"] != "none"),
    ]
    fig, axes = plt.subplots(1, 2, figsize=(16, 7), sharey=True)
    for ax, (title, keep) in zip(axes, panels):
        for s in run["scenarios"]:
            # Flat-out and backlog runs measure throughput; their latency is queueing.
            if s.get("error") or s["load"] == "flat out" or s["load"].startswith("backlog") or not keep(s):
                continue
            curve = s["latency"]["curve"]
            xs = [1.0 / max(1.0 - p / 100.0, 1e-5) for p, _ in curve]
            ys = [max(ms, 0.01) for _, ms in curve]
            style = "--" if s["name"].startswith(("raw", "streams")) else "-"
            ax.plot(xs, ys, style, label=f'{s["name"]} (p99 {s["latency"]["p99_ms"]:.1f} ms)')
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = [1, 2, 10, 100, 1000, 10000, 100000]
        ax.set_xticks(ticks)
        ax.set_xticklabels(["0%", "50%", "90%", "99%", "99.9%", "99.99%", "max"])
        ax.set_xlabel("percentile")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    axes[0].set_ylabel("input → first canonical output (ms)")
    m = run.get("machine", {})
    fig.suptitle(f'End-to-end latency, one broker, {m.get("cpus", "?")} CPUs ({m.get("cpu", "")}); {run.get("command", "")}', fontsize=10)
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    print(f"plot: wrote {out_path}", file=sys.stderr)


def degree(results_path, out_path):
    with open(results_path) as f:
        run = json.load(f)
    by_name = {s["name"]: s for s in run["scenarios"] if not s.get("error")}
    fig, (latency, amplification) = plt.subplots(1, 2, figsize=(13, 5))
    for label, suffix, style in [("adaptive (default)", "", "-o"), ("all at once", "-all", "--s")]:
        points = [(n, by_name.get(f"identity-{n}{suffix}")) for n in range(1, 6)]
        points = [(n, s) for n, s in points if s and s.get("amplification")]
        if not points:
            continue
        ns = [n for n, _ in points]
        latency.plot(ns, [s["latency"]["p50_ms"] for _, s in points], style, label=f"p50, {label}")
        latency.plot(ns, [s["latency"]["p99_ms"] for _, s in points], style, alpha=0.5, label=f"p99, {label}")
        amplification.plot(ns, [s["amplification"]["by_bytes"] for _, s in points], style, label=label)
    latency.set_yscale("log")
    latency.set_ylabel("input → first canonical output (ms)")
    amplification.set_ylabel("write amplification (bytes)")
    for ax in (latency, amplification):
        ax.set_xlabel("replicas")
        ax.set_xticks(range(1, 6))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    command = "\n".join(textwrap.wrap(run.get("command", ""), 160))
    fig.suptitle(f"Degree of competition, identity at 1,000 events/s\n{command}", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    print(f"plot: wrote {out_path}", file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:3])
    if len(sys.argv) > 3:
        degree(sys.argv[1], sys.argv[3])
