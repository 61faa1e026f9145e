#!/usr/bin/env python3
"""Draws bench/longrun.png from bench/longrun.py's raw figures; runs in bench/.venv-peers, where matplotlib is.

    bench/.venv-peers/bin/python bench/longrun_chart.py bench/RESULTS.longrun.json bench/longrun.png

One column per rate; rows: pickup p50/p99 (log scale), accepted and finished per second, table sizes, dead rows;
the phases shaded, the kill marked.
"""
from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SHADES = {"clean": "#ffffff", "idle": "#fde0dd", "recovery": "#e5f5e0", "kill": "#deebf7"}
TITLES = {"clean": "clean", "idle": "idle in tx", "recovery": "recovery", "kill": "kill -9"}


def main() -> int:
    raw = json.loads(open(sys.argv[1]).read())
    results = raw["results"]
    fig, axes = plt.subplots(4, len(results), figsize=(7 * len(results), 12), squeeze=False, sharex="col")
    for col, result in enumerate(results):
        series = result["series"]
        minutes = [point["t"] / 60 for point in series]
        column = [axes[row][col] for row in range(4)]
        for ax in column:
            for name, start, end in result["phase_bounds"]:
                ax.axvspan(start / 60, end / 60, color=SHADES.get(name, "#ffffff"), zorder=0)
            if result.get("killed_at_s") is not None:
                ax.axvline(result["killed_at_s"] / 60, color="black", linestyle=":", linewidth=1)
            ax.grid(True, alpha=0.3)
        ax = column[0]
        for key, label, color in (("pickup_p50_ms", "p50", "#1f77b4"), ("pickup_p99_ms", "p99", "#d62728")):
            ax.plot(minutes, [p[key] for p in series], label=label, color=color, linewidth=1)
        if result["rate"] == 200:
            ax.axhline(10, color="#d62728", linestyle="--", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_ylabel("pickup (ms, per 5 s)")
        ax.set_title(f"{result['rate']:,} events/s", fontsize=11, pad=16)
        ax.legend(fontsize=8, loc="lower left")
        for name, start, end in result["phase_bounds"]:
            ax.text((start + end) / 120, 0.97, TITLES.get(name, name), transform=ax.get_xaxis_transform(),
                    ha="center", va="top", fontsize=8)
        ax = column[1]
        ax.plot(minutes, [p["accepted_per_s"] for p in series], label="accepted/s", color="#7f7f7f", linewidth=1)
        ax.plot(minutes, [p["finished_per_s"] for p in series], label="finished/s", color="#2ca02c", linewidth=1)
        ax.plot(minutes, [p["backlog"] for p in series], label="due backlog", color="#ff7f0e", linewidth=1)
        ax.set_ylabel("events/s; backlog")
        ax.legend(fontsize=8, loc="upper left")
        ax = column[2]
        ax.plot(minutes, [p["events_mb"] for p in series], label="events", color="#1f77b4")
        ax.plot(minutes, [p["event_history_mb"] for p in series], label="event_history", color="#9467bd")
        ax.set_ylabel("table + indexes (MB)")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8, loc="upper left")
        ax = column[3]
        ax.plot(minutes, [p["events_dead"] or 0 for p in series], label="events", color="#1f77b4")
        ax.plot(minutes, [p["event_history_dead"] or 0 for p in series], label="event_history", color="#9467bd")
        ax.set_ylabel("dead rows (n_dead_tup)")
        ax.set_xlabel("minutes")
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("Punctual long run: pickup, throughput, table size, dead rows (shaded: phases; dotted: kill -9)",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=90)
    return 0


if __name__ == "__main__":
    sys.exit(main())
