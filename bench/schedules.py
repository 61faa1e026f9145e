#!/usr/bin/env python3
"""Benchmark of schedules (issue 12 point 8): the lateness of scheduled occurrences, and what 10,000 schedules
cost a real `python app.py` at start-up (time) and at rest (memory).

The conventions of bench/run.py (whose helpers this script uses): a fresh database per workload on
BENCH_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/postgres, an embedded pgserver when none
answers), the app as a subprocess with its defaults and a minimal environment, every timing read back from
the database's own timestamps, no assertion.

    .venv/bin/python bench/schedules.py            # S1 and S2, about 2 minutes here; writes bench/RESULTS.md
    .venv/bin/python bench/schedules.py --quick    # smaller sizes, a smoke run; RESULTS.md untouched

S1 lateness: 20 schedules of every second for 30 s (600 occurrences of a no-op python callback), made ahead by
    the schedule keeper; `started_at - scheduled_for` of each occurrence, p50/p95/p99/max, and how many started
    early.
S2 10,000 schedules: the same fresh database is started three times. First empty (the baseline), then after
    10,000 schedules were inserted with SQL (half `every: 3600`, half a cron `0 2 * * *` in Europe/Paris: none
    is due while measured), so the start-up catch-up round makes the first occurrence of each; then once more,
    all of them made (a plain restart: the round looks at each and makes nothing). For each start: process
    start to /health ok, to all 10,000 having their next occurrence as a scheduled event, and VmRSS settled.

Its section goes into bench/RESULTS.md between SCHEDULES_BEGIN and SCHEDULES_END, below run.py's notes marker
(so run.py and compare.py keep it); the rest of the file is left as it is.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402 - bench/run.py: the server, the app process, percentiles, machine facts

RESULTS = run.RESULTS
SCHEDULES_BEGIN = "<!-- schedules:begin (written by bench/schedules.py) -->"
SCHEDULES_END = "<!-- schedules:end -->"


@dataclass
class Sizes:
    s1_schedules: int = 20
    s1_seconds: int = 30
    s2_schedules: int = 10_000

    @classmethod
    def quick(cls) -> "Sizes":
        return cls(s1_schedules=5, s1_seconds=8, s2_schedules=1_000)


def db_now(probe: run.Probe) -> datetime:
    return probe.one("SELECT clock_timestamp()")[0]


def s1_lateness(server: run.Server, sizes: Sizes, workdir: Path) -> dict[str, Any]:
    """Lateness of occurrences: schedules of every second, started_at - scheduled_for from the events table."""
    n, seconds = sizes.s1_schedules, sizes.s1_seconds
    total = n * seconds
    with server.database("s1") as url, run.running_app(url, workdir / "s1") as app:
        app.create_noop_callback()
        probe = run.Probe(url)
        start = (db_now(probe) + timedelta(seconds=4)).replace(microsecond=0)
        end = start + timedelta(seconds=seconds - 1)
        for i in range(n):
            answer = app.post("/schedules", {"name": f"tick-{i}", "callback": run.CALLBACK, "every": 1,
                                             "start_at": start.isoformat(), "end_at": end.isoformat()})
            if answer.status_code != 201:
                raise RuntimeError(f"POST /schedules answered {answer.status_code}: {answer.text}")
        cpu = run.CpuMeter(app.proc.pid)
        complete = run.wait_until(lambda: probe.done() >= total,
                                  (end - db_now(probe)).total_seconds() + 30, 0.25)
        used = cpu.stop()
        late = probe.column("""SELECT extract(epoch FROM started_at - scheduled_for)::float8 * 1000
                               FROM events WHERE schedule_id IS NOT NULL AND started_at IS NOT NULL""")
        events, keys = probe.one("SELECT count(*), count(DISTINCT idempotency_key) FROM events "
                                 "WHERE schedule_id IS NOT NULL")
        # How far ahead the keeper made each occurrence after the first (those were made by POST /schedules).
        ahead = probe.column("""SELECT extract(epoch FROM scheduled_for - created_at)::float8
                                FROM events WHERE schedule_id IS NOT NULL AND scheduled_for > %s""", (start,))
        probe.close()
        return {"schedules": n, "seconds": seconds, "occurrences_expected": total, "events": events,
                "distinct_keys": keys, "complete": complete, "started": len(late),
                "p50_ms": run.percentile(late, 50), "p95_ms": run.percentile(late, 95),
                "p99_ms": run.percentile(late, 99), "max_ms": max(late) if late else None,
                "early": sum(1 for v in late if v < 0),
                "made_ahead_min_s": min(ahead) if ahead else None, **used, "wall_s": float(seconds),
                "app_errors_logged": app.errors_logged()}


def _start(app: run.App, probe: run.Probe, expect: int) -> dict[str, Any]:
    """One start: process start to /health ok, to `expect` schedules each with a scheduled occurrence, RSS."""
    t0 = time.monotonic()
    app.launch()
    healthy = app.wait_healthy(300)
    health_s = time.monotonic() - t0
    made = run.wait_until(lambda: probe.one("""SELECT count(DISTINCT schedule_id) FROM events
                                               WHERE schedule_id IS NOT NULL AND state = 'scheduled'""")[0]
                          >= expect, 300, 0.1)
    made_s = time.monotonic() - t0
    settled = run._settle_idle(app)  # 5 s after: the rounds of the schedule keeper, a sweep
    peak, last = run._rss_window(app, 3.0)
    out = {"healthy": healthy, "to_health_s": health_s, "all_made": made, "to_all_made_s": made_s if expect else None,
           "rss_mb": last, "rss_peak_mb": max(peak, settled), "armed": app.health()["checks"]["scheduler"]["armed"],
           "app_errors_logged": app.errors_logged()}
    app.stop()
    return out


def s2_many_schedules(server: run.Server, sizes: Sizes, workdir: Path) -> dict[str, Any]:
    """Start-up time and memory of an app with 10,000 schedules, against the same app with none."""
    n = sizes.s2_schedules
    out: dict[str, Any] = {"schedules": n}
    with server.database("s2") as url:
        probe = run.Probe(url)
        out["empty"] = _start(run.App(url, workdir / "s2-empty"), probe, 0)
        t = time.monotonic()
        probe.execute("""INSERT INTO schedules (name, callback_id, payload, cron, every_seconds, timezone)
                         SELECT 'bench-' || g, c.id, '{}'::jsonb,
                                CASE WHEN g %% 2 = 0 THEN '0 2 * * *' END, CASE WHEN g %% 2 = 1 THEN 3600 END,
                                CASE WHEN g %% 2 = 0 THEN 'Europe/Paris' ELSE 'UTC' END
                         FROM generate_series(1, %s) g, callbacks c WHERE c.name = 'Addition'""", (n,))
        out["insert_s"] = time.monotonic() - t
        out["first_start"] = _start(run.App(url, workdir / "s2-first"), probe, n)
        out["occurrences_after_first_start"] = probe.one(
            "SELECT count(*) FROM events WHERE schedule_id IS NOT NULL")[0]
        out["restart"] = _start(run.App(url, workdir / "s2-restart"), probe, n)
        out["occurrences_after_restart"] = probe.one("SELECT count(*) FROM events WHERE schedule_id IS NOT NULL")[0]
        probe.close()
    out["extra_rss_first_start_mb"] = out["first_start"]["rss_mb"] - out["empty"]["rss_mb"]
    out["extra_rss_restart_mb"] = out["restart"]["rss_mb"] - out["empty"]["rss_mb"]
    return out


# -- report -----------------------------------------------------------------------------------

def rows(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    fmt = run.fmt
    out: list[tuple[str, str, str]] = []
    s1 = results.get("S1", {})
    if "error" in s1:
        out.append(("S1 lateness", "error", s1["error"]))
    elif s1:
        out.append(("S1 lateness", f"{s1['schedules']} schedules of every second for {s1['seconds']} s "
                                   f"({s1['occurrences_expected']:,} occurrences, {s1['events']:,} events)",
                    f"p50 {fmt(s1['p50_ms'], ' ms')}, p95 {fmt(s1['p95_ms'], ' ms')}, p99 {fmt(s1['p99_ms'], ' ms')}, "
                    f"max {fmt(s1['max_ms'], ' ms')}"))
        out.append(("", "started early / made ahead (least)",
                    f"{s1['early']} / {fmt(s1['made_ahead_min_s'], ' s', 2)}"))
        out.append(("", "CPU used meanwhile", run.cpu_text(s1)))
    s2 = results.get("S2", {})
    if "error" in s2:
        out.append(("S2 10,000 schedules", "error", s2["error"]))
    elif s2:
        e, f, r = s2["empty"], s2["first_start"], s2["restart"]
        out.append((f"S2 {s2['schedules']:,} schedules", "start to /health ok: none / first start / restart",
                    f"{fmt(e['to_health_s'], ' s', 2)} / {fmt(f['to_health_s'], ' s', 2)} / "
                    f"{fmt(r['to_health_s'], ' s', 2)}"))
        out.append(("", "start to every next occurrence made: first start / restart",
                    f"{fmt(f['to_all_made_s'], ' s', 2)} / {fmt(r['to_all_made_s'], ' s', 2)}"))
        out.append(("", "VmRSS settled: none / first start / restart",
                    f"{fmt(e['rss_mb'], ' MB')} / {fmt(f['rss_mb'], ' MB')} (+{fmt(s2['extra_rss_first_start_mb'])})"
                    f" / {fmt(r['rss_mb'], ' MB')} (+{fmt(s2['extra_rss_restart_mb'])})"))
        out.append(("", "occurrence events after first start / after restart",
                    f"{s2['occurrences_after_first_start']:,} / {s2['occurrences_after_restart']:,}"))
    return out


def print_table(table: list[tuple[str, str, str]]) -> None:
    header = ("workload", "what", "result")
    widths = [max(len(str(row[i])) for row in [header, *table]) for i in range(3)]
    line = "  ".join("{:<%d}" % w for w in widths)
    print()
    print(line.format(*header))
    print(line.format(*("-" * w for w in widths)))
    for row in table:
        print(line.format(*row))
    print()


def write_results(path: Path, results: dict[str, Any], info: dict[str, Any]) -> None:
    """Replace this script's block in RESULTS.md, or add it just below run.py's notes marker; nothing else moves."""
    m = info["machine"]
    block = [
        SCHEDULES_BEGIN,
        "## Schedules (issue 12)",
        "",
        "Written by `bench/schedules.py` (what each workload does: its docstring and bench/README.md); the next "
        "run rewrites this block only.",
        "",
        f"- date: {info['date']}; commit: {info['commit']}; command: `{info['command']}`; "
        f"wall time {info['wall_s']:.0f} s",
        f"- machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']} RAM; PostgreSQL {info['pg_version']} "
        f"({info['pg_where']}); Punctual as `python app.py` with its defaults",
        "- 1-minute load average before/after: " + "; ".join(
            f"{name} {r['machine_load']['before']['loadavg_1m']:.1f}/{r['machine_load']['after']['loadavg_1m']:.1f}"
            for name, r in results.items() if "machine_load" in r),
        "",
        "| workload | what | result |",
        "|---|---|---|",
        *("| " + " | ".join(row) + " |" for row in rows(results)),
        "",
        "<details><summary>Raw figures (seconds, milliseconds, MiB as named)</summary>",
        "",
        "```json",
        json.dumps(results, indent=2, default=str),
        "```",
        "",
        "</details>",
        SCHEDULES_END,
    ]
    run.write_block(path, block, SCHEDULES_BEGIN, SCHEDULES_END)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="S1 or S2 (default: both)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes for a smoke run; RESULTS.md untouched")
    parser.add_argument("--results", type=Path, default=None, help="report file (default bench/RESULTS.md)")
    args = parser.parse_args(argv)
    runners = {"S1": s1_lateness, "S2": s2_many_schedules}
    chosen = [w.strip().upper() for w in args.only.split(",")] if args.only else list(runners)
    unknown = [w for w in chosen if w not in runners]
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(unknown)}; choose from S1, S2")
    if (run.ROOT / ".env").exists():
        print("note: a .env file exists in the repository; Punctual reads it, so its values replace the defaults")

    sizes = Sizes.quick() if args.quick else Sizes()
    server = run.Server.find(os.environ.get("BENCH_DATABASE_URL", run.DEFAULT_URL))
    began = time.monotonic()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="punctual-bench-schedules-") as workdir:
        for name in chosen:
            print(f"{name}: {runners[name].__doc__.splitlines()[0]}", flush=True)
            t = time.monotonic()
            before = server.activity()
            try:
                results[name] = runners[name](server, sizes, Path(workdir))
            except Exception as exc:  # noqa: BLE001 - a failed workload is reported, the other still runs
                results[name] = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
            results[name]["machine_load"] = {"before": before, "after": server.activity()}
            print(f"  {json.dumps(results[name], default=lambda v: round(v, 3) if isinstance(v, float) else str(v))}"
                  f"  [{time.monotonic() - t:.0f} s]", flush=True)

    print_table(rows(results))
    if args.quick and args.results is None:
        print("--quick: bench/RESULTS.md not written")
        return 0
    info = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": run.git_commit(),
        "machine": run.machine(),
        "pg_version": server.version(),
        "pg_where": "embedded pgserver" if server.embedded else "BENCH_DATABASE_URL / default server",
        "command": " ".join(["python bench/schedules.py", *(argv if argv is not None else sys.argv[1:])]),
        "wall_s": time.monotonic() - began,
    }
    target = args.results or RESULTS
    write_results(target, results, info)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
