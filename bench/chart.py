#!/usr/bin/env python3
"""Draws bench/compare.png from compare.py's summary; runs in bench/.venv-peers, where matplotlib is.

    bench/.venv-peers/bin/python bench/chart.py SUMMARY.json OUT.png
"""
from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SYSTEMS = [("punctual", "Punctual", "#1f77b4"), ("pgqueuer", "PgQueuer", "#ff7f0e"),
           ("procrastinate", "Procrastinate", "#2ca02c")]


def stat(summary: dict, workload: str, system: str, variant: str, metric: str):
    return summary.get(workload, {}).get(system, {}).get(variant, {}).get(metric)


def bars(ax, summary: dict, workload: str, metric: str, title: str, unit: str, log: bool = False,
         target: float | None = None, metric_for: dict | None = None) -> None:
    names, values, lows, highs, colors = [], [], [], [], []
    for key, name, color in SYSTEMS:
        s = stat(summary, workload, key, "", (metric_for or {}).get(key, metric))
        if s is None:
            continue
        capped = metric == "rate" and summary.get(workload, {}).get(key, {}).get("", {}).get("capped")
        names.append(name + ("\n(capped)" if capped else ""))
        values.append(s["median"])
        lows.append(s["median"] - s["min"])
        highs.append(s["max"] - s["median"])
        colors.append(color)
    ax.bar(names, values, color=colors, yerr=[lows, highs], capsize=4)
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:,.0f}" if v >= 100 else f"{v:.1f}", ha="center", va="bottom", fontsize=8)
    if target is not None:
        ax.axhline(target, color="red", linestyle="--", linewidth=1)
        ax.text(len(names) - 0.5, target, "target", color="red", fontsize=7, va="bottom", ha="right")
    if log:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(unit, fontsize=8)
    ax.tick_params(labelsize=8)


def main() -> int:
    summary = json.loads(open(sys.argv[1]).read())
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    bars(axes[0][0], summary, "W1", "rate", "W1 throughput (20,000 due)", "events/s", target=8000)
    bars(axes[0][1], summary, "W2", "p99_ms", "W2 lateness p99 (1,000 over +5..+15 s)", "ms", log=True, target=10)
    bars(axes[0][2], summary, "W3", "p99_ms", "W3 idle latency p99 (one per 20 ms)", "ms", target=5)
    bars(axes[1][0], summary, "W4", "rate", "W4 recovery (100,000 due at start)", "events/s")
    bars(axes[1][1], summary, "W5", "future_extra_mb", "W5 extra RSS, 1M a month ahead", "MB",
         metric_for={"pgqueuer": "extra_mb", "procrastinate": "extra_mb"}, target=50)
    ax = axes[1][2]
    for key, name, color in SYSTEMS:
        points = [(k, stat(summary, "W6", key, str(k), "rate")) for k in (1, 2, 4)]
        points = [(k, s["median"]) for k, s in points if s]
        if points:
            ax.plot([k for k, _ in points], [v for _, v in points], marker="o", color=color, label=name)
    for rows, style in (("1", ":"), ("100", "--")):
        s = stat(summary, "CEIL", "pgbench", rows, "rate")
        if s:
            ax.axhline(s["median"], color="grey", linestyle=style, linewidth=1)
            ax.text(4, s["median"], f"pgbench {rows} row{'s' if rows != '1' else ''}/stmt", fontsize=7,
                    va="bottom", ha="right", color="grey")
    ax.set_xticks([1, 2, 4])
    ax.set_yscale("log")
    ax.set_title("W6 scale-out (W1 with n instances)", fontsize=10)
    ax.set_xlabel("instances / worker processes", fontsize=8)
    ax.set_ylabel("events/s", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=8)
    fig.suptitle("Punctual vs PgQueuer vs Procrastinate, one PostgreSQL, 2 cores (median, bars = range)", fontsize=11)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=90)
    return 0


if __name__ == "__main__":
    sys.exit(main())
