"""Plots the latency distributions of a benchmark run (benches/results/latest.json).

usage: plot.py <results.json> <out.png>

One curve per scenario: latency (ms, log scale) against percentile, on an axis stretched
towards the tail (x = 1 / (1 - percentile)), the usual HDR histogram view. Flat-out
scenarios are left out (their latency is queueing by construction); so are failed ones.
"""
import json
import sys

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


if __name__ == "__main__":
    main(*sys.argv[1:3])
