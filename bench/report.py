"""The report of bench/compare.py: medians and ranges, the RESULTS.md block, and the chart.

Kept apart from compare.py so the numbers can be re-rendered from bench/RESULTS.compare.json without running
anything (`python bench/report.py bench/RESULTS.compare.json`).
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
COMPARE_BEGIN = "<!-- compare:begin (written by bench/compare.py) -->"
COMPARE_END = "<!-- compare:end -->"
PEERS = ("pgqueuer", "procrastinate")
NAMES = {"punctual": "Punctual", "pgqueuer": "PgQueuer", "procrastinate": "Procrastinate", "pgbench": "pgbench"}

# The figures summarised per workload (keys of the per-run dicts).
METRICS = {
    "W1": ("rate", "create_rate", "total_s"),
    "W2": ("p50_ms", "p95_ms", "p99_ms", "max_ms", "early"),
    "W3": ("p50_ms", "p99_ms", "max_ms", "create_p99_ms"),
    "W4": ("rate", "total_s"),
    "W5": ("future_extra_mb", "extra_mb", "horizon_extra_mb"),
    "W6": ("rate", "create_rate"),
    "CEIL": ("rate", "tps"),
    "KAFKA": ("rate", "total_s"),
}


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """{workload: {system: {variant: {metric: {median, min, max, n}, capped, errors}}}}."""
    out: dict[str, Any] = {}
    for workload, systems in results.items():
        for system, variants in systems.items():
            for variant, runs in variants.items():
                good = [r for r in runs if "error" not in r]
                entry: dict[str, Any] = {"errors": [r["error"] for r in runs if "error" in r],
                                         "capped": any(r.get("capped") or r.get("complete") is False for r in good),
                                         "runs": len(runs)}
                for metric in METRICS.get(workload, ()):
                    values = [float(r[metric]) for r in good if r.get(metric) is not None]
                    if values:
                        entry[metric] = {"median": statistics.median(values), "min": min(values),
                                         "max": max(values), "n": len(values)}
                out.setdefault(workload, {}).setdefault(system, {})[variant] = entry
    # W6's one-instance point is W1 itself (same workload, same run).
    if "W1" in out:
        for system, variants in out["W1"].items():
            out.setdefault("W6", {}).setdefault(system, {})["1"] = variants[""]
    return out


def _get(summary: dict[str, Any], workload: str, system: str, variant: str, metric: str) -> Optional[dict[str, float]]:
    return summary.get(workload, {}).get(system, {}).get(variant, {}).get(metric)


def cell(stat: Optional[dict[str, float]], unit: str = "", digits: int = 0, entry: Optional[dict] = None) -> str:
    """median (min-max) with a mark for capped runs, or what went wrong."""
    if stat is None:
        if entry and entry.get("errors"):
            return "error: " + entry["errors"][0][:80].replace("|", "/")
        return "n/a"
    f = f"{{:,.{digits}f}}"
    text = f.format(stat["median"]) + unit
    if stat["n"] > 1:
        text += f" ({f.format(stat['min'])}–{f.format(stat['max'])})"
    if entry and entry.get("capped"):
        text += " capped"
    return text


def verdicts(summary: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(target, Punctual's figure, verdict, note) for issue 15's targets: against PgQueuer at its best setting, in
    the same run."""
    rows = []
    pgq = "pgqueuer"

    def both(workload: str, metric: str) -> tuple[Optional[dict[str, float]], Optional[dict[str, float]]]:
        return _get(summary, workload, "punctual", "", metric), _get(summary, workload, pgq, "", metric)

    w1, p1 = both("W1", "rate")
    if w1 and p1:
        ratio = w1["median"] / p1["median"]
        rows.append((">= 1.5x PgQueuer (W1, creation included)", f"{w1['median']:,.0f}/s = {ratio:.2f}x "
                     f"({p1['median']:,.0f}/s)", "met" if ratio >= 1.5 else "MISSED", ""))
    w2 = _get(summary, "W2", "punctual", "", "p99_ms")
    early = _get(summary, "W2", "punctual", "", "early")
    if w2:
        rows.append(("W2 p99 <= 5 ms, none early", f"p99 {w2['median']:.1f} ms, early max {early['max']:.0f}"
                     if early else f"p99 {w2['median']:.1f} ms",
                     "met" if w2["median"] <= 5 and (early is None or early["max"] == 0) else "MISSED", ""))
    w3, p3 = both("W3", "p99_ms")
    if w3 and p3:
        rows.append(("W3 p99 <= PgQueuer's", f"{w3['median']:.1f} ms vs {p3['median']:.1f} ms",
                     "met" if w3["median"] <= p3["median"] else "MISSED",
                     "both from the client's clock just before the create (enqueue) call to the handler's start"))
    w4, p4 = both("W4", "rate")
    if w4 and p4:
        ratio = w4["median"] / p4["median"]
        rows.append((">= 3x PgQueuer (W4)", f"{w4['median']:,.0f}/s = {ratio:.2f}x ({p4['median']:,.0f}/s)",
                     "met" if ratio >= 3 else "MISSED",
                     "PgQueuer capped" if summary.get("W4", {}).get(pgq, {}).get("", {}).get("capped") else ""))
    w5 = _get(summary, "W5", "punctual", "", "future_extra_mb")
    if w5:
        rows.append(("W5 unchanged (< 50 MB for 1M future)", f"+{w5['median']:.1f} MB",
                     "met" if w5["median"] < 50 else "MISSED", ""))
    points = [(_get(summary, "W6", "punctual", str(k), "rate"), k) for k in (1, 2, 4)]
    if all(p for p, _ in points):
        rates = [p["median"] for p, _ in points]
        ceil = _get(summary, "CEIL", "pgbench", "100", "rate")
        share = f"; 4 instances = {rates[2] / ceil['median']:.0%} of the 100-row ceiling" if ceil else ""
        rows.append(("W6 (for reference)", " / ".join(f"{r:,.0f}" for r in rates) + share, "", ""))
    return rows


def comparison_rows(summary: dict[str, Any]) -> list[list[str]]:
    systems = ("punctual", "pgqueuer", "procrastinate")
    rows: list[list[str]] = []

    def row(label: str, workload: str, metric: str, unit: str, digits: int, variant: str = "") -> None:
        cells = []
        for s in systems:
            entry = summary.get(workload, {}).get(s, {}).get(variant)
            # Only a rate can be capped; the other figures of a capped run are complete.
            shown = entry if metric == "rate" else {"errors": entry.get("errors")} if entry else None
            cells.append(cell(_get(summary, workload, s, variant, metric), unit, digits, shown) if entry else "—")
        rows.append([label, *cells])

    row("W1 throughput, 20,000 due (events/s)", "W1", "rate", "", 0)
    row("W1 creation alone (events/s)", "W1", "create_rate", "", 0)
    for metric in ("p50_ms", "p95_ms", "p99_ms", "max_ms"):
        row(f"W2 lateness {metric[:-3]} (ms)", "W2", metric, "", 1)
    row("W2 started early (max of runs)", "W2", "early", "", 0)
    row("W3 idle latency p50, from before the create call (ms)", "W3", "p50_ms", "", 1)
    row("W3 idle latency p99, from before the create call (ms)", "W3", "p99_ms", "", 1)
    row("W3 p99 from the insert statement's start (ms)", "W3", "create_p99_ms", "", 1)
    row("W4 recovery, 100,000 due at start (events/s)", "W4", "rate", "", 0)
    for k in (1, 2, 4):
        row(f"W6 scale-out, {k} instance{'s' if k > 1 else ''} (events/s)", "W6", "rate", "", 0, str(k))
    rows.append(["W5 extra RSS, 1,000,000 a month ahead (MB)",
                 *[cell(_get(summary, "W5", s, "", "future_extra_mb" if s == "punctual" else "extra_mb"), "", 1,
                        summary.get("W5", {}).get(s, {}).get("")) if summary.get("W5", {}).get(s) else "—"
                   for s in systems]])
    rows.append(["W5 extra RSS, 10,000 inside the horizon (MB)",
                 cell(_get(summary, "W5", "punctual", "", "horizon_extra_mb"), "", 1), "not held", "not held"])
    return rows


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(r) + " |" for r in rows]]


def console(summary: dict[str, Any], info: dict[str, Any]) -> str:
    lines = ["", "median (min–max) of runs"]
    for r in comparison_rows(summary):
        lines.append(f"  {r[0]:<48} " + " | ".join(f"{c:<26}" for c in r[1:]))
    ceil = [(k, _get(summary, "CEIL", "pgbench", k, "rate")) for k in ("1", "100")]
    for k, stat in ceil:
        if stat:
            lines.append(f"  ceiling, pgbench {k} row(s)/statement: {cell(stat)} events/s")
    for k in ("alerts", "manual"):
        stat = _get(summary, "KAFKA", "punctual", k, "rate")
        if stat:
            lines.append(f"  issue 3 {k}: {cell(stat, '', 0)} per s")
    for target, value, verdict, _ in verdicts(summary):
        lines.append(f"  target {target:<32} {value:<50} {verdict}")
    return "\n".join(lines)


def settings_lines(info: dict[str, Any]) -> list[str]:
    peers = info.get("peers", {})
    versions = peers.get("versions", {})
    settings = peers.get("settings", {})
    lines = []
    if versions:
        lines.append("- peers: " + ", ".join(f"{k} {v}" for k, v in versions.items())
                     + " (bench/.venv-peers, made by compare.py with pip; not in requirements.txt)")
    for system, profiles in settings.items():
        parts = [f"{profile} (W{'1, W4, W5, W6' if profile == 'throughput' else '2, W3'}): "
                 + ", ".join(f"{k}={v}" for k, v in values.items()) for profile, values in profiles.items()]
        lines.append(f"- {NAMES[system]} settings: " + "; ".join(parts))
    return lines


def write(path: Path, summary: dict[str, Any], info: dict[str, Any], chart: Optional[Path]) -> None:
    m = info["machine"]
    block = [
        COMPARE_BEGIN,
        "## Side by side: Punctual, PgQueuer, Procrastinate (issue 5)",
        "",
        "Written by `bench/compare.py` (`make compare`); the method is in bench/README.md. Each cell is the "
        f"median of {info['runs']} run(s) with the range in brackets; *capped* = the peer did not finish within "
        "the time cap, its rate is jobs done / time until the cap.",
        "",
        f"- date: {info['date']}; commit: {info['commit']}; command: `{info['command']}`; wall time "
        f"{info['wall_s'] / 60:.1f} min",
        f"- machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']} RAM; 1-minute load average {info['load_start']:.2f} "
        f"at the start, {info['load_end']:.2f} at the end"
        + (f", {statistics.median(info['loads']):.2f} median ({min(info['loads']):.2f}–{max(info['loads']):.2f}) "
           "before each measurement" if info.get("loads") else "")
        + " (other sessions' tests share these 2 cores; the machine has no idle baseline)",
        f"- PostgreSQL {info['pg_version']} on loopback, "
        + ", ".join(f"{k}={v}" for k, v in sorted(info["pg_settings"].items())) + f"; {info['pgbench']}",
        "- Punctual: `python app.py`, defaults: " + ", ".join(f"{k}={v}" for k, v in info["defaults"].items()),
        *settings_lines(info),
        "",
    ]
    if chart:
        block += [f"![Punctual, PgQueuer and Procrastinate compared]({chart.name})", ""]
    block += markdown_table(["workload", "Punctual", "PgQueuer", "Procrastinate"], comparison_rows(summary))
    block.append("")
    ceil_rows = []
    for k in ("1", "100"):
        stat = _get(summary, "CEIL", "pgbench", k, "rate")
        if stat:
            ceil_rows.append([f"pgbench, {k} row{'s' if k != '1' else ''} per statement (4 clients)",
                              cell(stat) + " events/s"])
    if ceil_rows:
        block += ["The ceiling: pgbench on Punctual's schema (its triggers included), each event inserted, claimed "
                  "with `FOR UPDATE SKIP LOCKED` and finished, three commits:", ""]
        block += markdown_table(["script", "finished events/s"], ceil_rows) + [""]
    kafka = [(label, _get(summary, "KAFKA", "punctual", k, "rate"), summary.get("KAFKA", {}).get("punctual", {}).get(k))
             for k, label in (("alerts", "alert messages bridged into events (tansu broker, one alert per message)"),
                              ("manual", "manual claim + complete round trips (4 HTTP workers)"))]
    if any(stat for _, stat, _ in kafka):
        block += ["Issue 3 (Kafka and manual callbacks), Punctual alone:", ""]
        block += markdown_table(["what", "per second"], [[label, cell(stat, "", 0, entry)] for label, stat, entry in kafka])
        block.append("")
    block += ["Targets of issue 15 (medians):", ""]
    block += markdown_table(["target", "Punctual", "verdict", "note"], [list(v) for v in verdicts(summary)])
    block += ["", "Raw per-run figures: [RESULTS.compare.json](RESULTS.compare.json).", COMPARE_END]
    text = path.read_text() if path.exists() else "# Punctual benchmark results\n"
    if COMPARE_BEGIN in text and COMPARE_END in text:
        before, rest = text.split(COMPARE_BEGIN, 1)
        after = rest.split(COMPARE_END, 1)[1]
        text = before + "\n".join(block) + after
    else:
        head, sep, tail = text.partition("\n")
        if "## Punctual alone" not in tail:
            tail = "\n## Punctual alone (issue 2 targets)\n" + tail
        text = head + "\n\n" + "\n".join(block) + "\n" + tail
    path.write_text(text)


def chart(summary: dict[str, Any], raw: Path, out: Path, python: Path) -> Optional[Path]:
    """The PNG, drawn by bench/chart.py with the peers venv's matplotlib (not a dependency of Punctual)."""
    data = raw.with_name(raw.stem + ".summary.json")
    data.write_text(json.dumps(summary))
    proc = subprocess.run([str(python), str(HERE / "chart.py"), str(data), str(out)], capture_output=True, text=True)
    data.unlink()
    if proc.returncode != 0:
        print(f"chart failed: {proc.stderr[-800:]}")
        return None
    return out


if __name__ == "__main__":
    raw_path = Path(sys.argv[1])
    loaded = json.loads(raw_path.read_text())
    s = summarise(loaded["results"])
    print(console(s, loaded["info"]))
