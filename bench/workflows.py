#!/usr/bin/env python3
"""Benchmark of durable workflows (issue 13 point 7): steps per second, the overhead between a step and the next,
and what 10,000 waiting workflows cost a real `python app.py` in memory.

The conventions of bench/run.py (whose helpers this script uses): a fresh database per workload on
BENCH_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/postgres, an embedded pgserver when none
answers), the app as a subprocess with its defaults and a minimal environment, every timing read back from the
database's own timestamps, no assertion. The one setting added: PYTHON_HANDLER_MODULES names a small module of
two workflows (HANDLER_MODULE below, written into a temporary folder put on PYTHONPATH); their steps are events of
a `python` callback with the built-in no-op handler, so what is measured is the workflow machinery, not work.

    .venv/bin/python bench/workflows.py            # F1, F2, F3, about 4 minutes here; writes bench/RESULTS.md
    .venv/bin/python bench/workflows.py --quick    # smaller sizes, a smoke run; RESULTS.md untouched
    .venv/bin/python bench/workflows.py --only F2  # a subset

F1 steps per second: 200 workflows of 10 sequential steps each (2,000 step events), inserted with one SQL
    statement into a running, idle app (and one NOTIFY on the workflows channel, as the API sends); from the
    insert to the last workflow's finished_at. Also advances per second, and the step-to-step gaps under that load.
F2 step-to-step overhead: one workflow at a time (8 of 25 sequential steps, started through POST /workflows,
    each after the previous one completed), so the machine is otherwise idle; the gap is the next step's event
    `started_at` minus the previous step's event `finished_at`, both written by the database's clock: the
    outcome's commit and its trigger, the NOTIFY, the runner's replay and the next event's insert, the NOTIFY of
    that event and its claim. Split into finished -> next event made (`created_at`: the advance) and made ->
    started (the dispatch). Also from the workflow's `created_at` to its first step's `started_at`.
F3 memory per 10,000 waiting workflows: a fresh app idle (the baseline); then 10,000 workflows inserted with SQL,
    each making one step and then waiting (half on a signal that never comes, half on a one-hour sleep); VmRSS
    once all of them wait, and in a new process started on that database (what they cost at rest).

Its section goes into bench/RESULTS.md between WORKFLOWS_BEGIN and WORKFLOWS_END, below the schedules section
(or run.py's notes marker), so run.py, compare.py and schedules.py keep it; the rest of the file is left as it is.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402 - bench/run.py: the server, the app process, percentiles, machine facts

RESULTS = run.RESULTS
WORKFLOWS_BEGIN = "<!-- workflows:begin (written by bench/workflows.py) -->"
WORKFLOWS_END = "<!-- workflows:end -->"
SCHEDULES_END = "<!-- schedules:end -->"

MODULE = "punctual_bench_workflows"
HANDLER_MODULE = f'''"""The benchmark's workflows (bench/workflows.py): steps of the no-op callback {run.CALLBACK!r}."""
from workflows import workflow


@workflow("bench_chain")
def chain(ctx, data):
    """`steps` sequential steps."""
    for i in range(data["steps"]):
        ctx.step({run.CALLBACK!r}, {{"i": i}})
    return data["steps"]


@workflow("bench_park")
def park(ctx, data):
    """One step, then a wait that does not end while measured: a one-hour sleep, or a signal nobody sends."""
    ctx.step({run.CALLBACK!r}, {{}})
    if data["sleep"]:
        ctx.sleep(3600)
    else:
        ctx.wait_for("never")
    return "woke"
'''


@dataclass
class Sizes:
    f1_workflows: int = 200
    f1_steps: int = 10
    f2_workflows: int = 8
    f2_steps: int = 25
    f3_waiting: int = 10_000

    @classmethod
    def quick(cls) -> "Sizes":
        return cls(f1_workflows=40, f1_steps=5, f2_workflows=3, f2_steps=10, f3_waiting=1_000)


class Bench:
    """What every workload needs: the server, the sizes, a folder, the handler module."""

    def __init__(self, server: run.Server, sizes: Sizes, workdir: Path) -> None:
        self.server = server
        self.sizes = sizes
        self.workdir = workdir
        self.modules = workdir / "modules"
        self.modules.mkdir(parents=True, exist_ok=True)
        (self.modules / f"{MODULE}.py").write_text(HANDLER_MODULE)

    def app(self, url: str, label: str) -> run.App:
        app = run.App(url, self.workdir / label)
        app.env.update(PYTHONPATH=str(self.modules), PYTHON_HANDLER_MODULES=MODULE)
        return app

    @contextmanager
    def running(self, url: str, label: str) -> Iterator[run.App]:
        app = self.app(url, label)
        try:
            app.start()
            yield app
        finally:
            app.stop()


def insert_workflows(probe: run.Probe, workflow: str, prefix: str, n: int, input_sql: str) -> float:
    """`n` workflows (ids `prefix`-1..n) due now with one INSERT, then one NOTIFY (an id: the runner then reads
    every due one); seconds."""
    t = time.monotonic()
    probe.execute(f"""INSERT INTO workflows (id, name, input, due_at, source)
                      SELECT %s || '-' || g, %s, {input_sql}, clock_timestamp(), 'bench'
                      FROM generate_series(1, %s) g""", (prefix, workflow, n))
    probe.execute("SELECT pg_notify('punctual_workflows', %s)", (f"{prefix}-1",))
    return time.monotonic() - t


def gaps(probe: run.Probe, where: str = "true") -> dict[str, Any]:
    """Step to step, from the events' own timestamps: (next started - previous finished), split at the next
    event's created_at; milliseconds, p50/p99/max."""
    rows = probe.column(f"""SELECT json_build_array(extract(epoch FROM n.started_at - p.finished_at) * 1000,
                                                    extract(epoch FROM n.created_at - p.finished_at) * 1000,
                                                    extract(epoch FROM n.started_at - n.created_at) * 1000)
                            FROM events p JOIN events n ON n.workflow_id = p.workflow_id
                                                       AND n.workflow_step = p.workflow_step + 1
                            WHERE p.state = 'finished' AND n.started_at IS NOT NULL AND ({where})""")
    total, advance, dispatch = ([float(r[i]) for r in rows] for i in range(3))
    out: dict[str, Any] = {"gaps": len(total)}
    for label, values in (("", total), ("advance_", advance), ("dispatch_", dispatch)):
        out[f"{label}p50_ms"] = run.percentile(values, 50)
        out[f"{label}p99_ms"] = run.percentile(values, 99)
        out[f"{label}max_ms"] = max(values) if values else None
    return out


def f1_steps_per_second(bench: Bench) -> dict[str, Any]:
    """Steps per second: workflows of sequential no-op steps inserted at once into a running app."""
    n, k = bench.sizes.f1_workflows, bench.sizes.f1_steps
    with bench.server.database("wf1") as url, bench.running(url, "f1") as app:
        app.create_noop_callback()
        probe = run.Probe(url)
        time.sleep(2.0)  # past the start-up rounds
        cpu = run.CpuMeter(app.proc.pid)
        t0 = time.monotonic()
        insert_workflows(probe, "bench_chain", "chain", n, f"jsonb_build_object('steps', {int(k)})")
        complete = run.wait_until(lambda: probe.one("SELECT count(*) FROM workflows WHERE state = 'completed'")[0]
                                  >= n, max(120.0, n * k / 20), 0.1)
        wall = time.monotonic() - t0
        used = cpu.stop()
        span, advances, failed = probe.one("""SELECT extract(epoch FROM max(finished_at) - min(created_at))::float8,
                                                     sum(advances), count(*) FILTER (WHERE state <> 'completed')
                                              FROM workflows""")
        events, finished = probe.one("SELECT count(*), count(*) FILTER (WHERE state = 'finished') FROM events")
        under_load = gaps(probe)
        probe.close()
        return {"workflows": n, "steps_each": k, "complete": complete, "not_completed": failed,
                "step_events": events, "finished": finished, "span_s": span,
                "steps_per_s": finished / span if span else None, "workflows_per_s": n / span if span else None,
                "advances": advances, "advances_per_s": advances / span if span else None,
                "gaps_under_load": under_load, **used, "wall_s": wall, "app_errors_logged": app.errors_logged()}


def f2_step_overhead(bench: Bench) -> dict[str, Any]:
    """Step-to-step overhead: one workflow of sequential no-op steps at a time, finished -> next started."""
    m, k = bench.sizes.f2_workflows, bench.sizes.f2_steps
    with bench.server.database("wf2") as url, bench.running(url, "f2") as app:
        app.create_noop_callback()
        probe = run.Probe(url)
        time.sleep(2.0)
        t0 = time.monotonic()
        complete = 0
        for i in range(m):
            answer = app.post("/workflows", {"workflow": "bench_chain", "id": f"one-{i}", "input": {"steps": k}})
            if answer.status_code != 201:
                raise RuntimeError(f"POST /workflows answered {answer.status_code}: {answer.text}")
            complete += run.wait_until(lambda: probe.one("SELECT state FROM workflows WHERE id = %s",
                                                         (f"one-{i}",))[0] == "completed", 60, 0.02)
        wall = time.monotonic() - t0
        first = [float(v) for v in probe.column(
            """SELECT extract(epoch FROM e.started_at - w.created_at) * 1000 FROM workflows w
               JOIN events e ON e.workflow_id = w.id AND e.workflow_step = 1""")]
        per_workflow = [float(v) for v in probe.column(
            "SELECT extract(epoch FROM finished_at - created_at)::float8 FROM workflows")]
        out = {"workflows": m, "steps_each": k, "complete": complete, **gaps(probe),
               "first_step_p50_ms": run.percentile(first, 50), "first_step_max_ms": max(first) if first else None,
               "workflow_p50_s": run.percentile(per_workflow, 50), "wall_s": wall,
               "app_errors_logged": app.errors_logged()}
        probe.close()
        return out


def f3_waiting_memory(bench: Bench) -> dict[str, Any]:
    """Memory per 10,000 waiting workflows: VmRSS idle, once all wait, and in a new process at rest."""
    n = bench.sizes.f3_waiting
    out: dict[str, Any] = {"waiting_workflows": n}
    with bench.server.database("wf3") as url:
        with bench.running(url, "f3-first") as app:
            app.create_noop_callback()
            probe = run.Probe(url)
            idle = run._settle_idle(app)
            t = time.monotonic()
            insert_workflows(probe, "bench_park", "park", n, "jsonb_build_object('sleep', g %% 2 = 0)")
            parked = run.wait_until(lambda: probe.one("SELECT count(*) FROM workflows WHERE state = 'waiting'")[0]
                                    >= n, max(120.0, n / 10), 0.5)
            park_s = time.monotonic() - t
            settled = run._settle_idle(app)
            peak, last = run._rss_window(app, 3.0)
            out.update(idle_mb=idle, all_waiting=parked, park_s=park_s, parked_per_s=n / park_s,
                       after_parking_mb=last, after_parking_peak_mb=max(peak, settled),
                       extra_after_parking_mb=last - idle, first_app_errors_logged=app.errors_logged())
        with bench.running(url, "f3-restart") as app:
            settled = run._settle_idle(app)
            peak, last = run._rss_window(app, 3.0)
            waiting = probe.one("SELECT count(*) FROM workflows WHERE state = 'waiting'")[0]
            out.update(restart_mb=last, restart_peak_mb=max(peak, settled), extra_at_rest_mb=last - idle,
                       still_waiting=waiting, restart_app_errors_logged=app.errors_logged())
        probe.close()
    return out


# -- report -----------------------------------------------------------------------------------

def rows(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    fmt = run.fmt
    out: list[tuple[str, str, str]] = []

    def split(g: dict[str, Any]) -> str:
        return (f"p50 {fmt(g['p50_ms'], ' ms')}, p99 {fmt(g['p99_ms'], ' ms')}, max {fmt(g['max_ms'], ' ms')} "
                f"({g['gaps']:,} gaps; finished -> next made p50 {fmt(g['advance_p50_ms'], ' ms')}, "
                f"p99 {fmt(g['advance_p99_ms'], ' ms')}; made -> started p50 {fmt(g['dispatch_p50_ms'], ' ms')}, "
                f"p99 {fmt(g['dispatch_p99_ms'], ' ms')})")

    f1 = results.get("F1", {})
    if "error" in f1:
        out.append(("F1 steps per second", "error", f1["error"]))
    elif f1:
        out.append(("F1 steps per second", f"{f1['workflows']:,} workflows x {f1['steps_each']} sequential no-op "
                                            f"steps, inserted at once ({f1['step_events']:,} step events)",
                    f"**{fmt(f1['steps_per_s'], '/s', 0)}** steps ({fmt(f1['workflows_per_s'], '/s')} workflows, "
                    f"{fmt(f1['advances_per_s'], '/s', 0)} advances) over {fmt(f1['span_s'], ' s', 2)}; the "
                    f"instance's runner advances up to 4 workflows at once"))
        out.append(("", "step to step under that load", split(f1["gaps_under_load"])))
        out.append(("", "CPU used meanwhile", run.cpu_text(f1)))
    f2 = results.get("F2", {})
    if "error" in f2:
        out.append(("F2 step-to-step overhead", "error", f2["error"]))
    elif f2:
        out.append(("F2 step-to-step overhead", f"one workflow at a time, {f2['workflows']} x {f2['steps_each']} "
                                                "sequential no-op steps; next started_at - previous finished_at",
                    "**" + split(f2).replace(", max", "**, max", 1)))
        out.append(("", "workflow created -> first step started; one workflow end to end",
                    f"p50 {fmt(f2['first_step_p50_ms'], ' ms')}, max {fmt(f2['first_step_max_ms'], ' ms')}; "
                    f"p50 {fmt(f2['workflow_p50_s'], ' s', 2)} for {f2['steps_each']} steps"))
    f3 = results.get("F3", {})
    if "error" in f3:
        out.append(("F3 waiting workflows", "error", f3["error"]))
    elif f3:
        out.append((f"F3 {f3['waiting_workflows']:,} waiting workflows", "VmRSS of a new process at rest with them, "
                                                                          "against the same app idle before them",
                    f"**{f3['extra_at_rest_mb']:+.1f} MB** ({fmt(f3['idle_mb'], ' MB')} -> "
                    f"{fmt(f3['restart_mb'], ' MB')}; {f3['still_waiting']:,} still waiting)"))
        out.append(("", "VmRSS of the app that advanced them into their wait (settled / peak)",
                    f"{f3['extra_after_parking_mb']:+.1f} MB / {fmt(f3['after_parking_peak_mb'], ' MB')} "
                    f"peak; {fmt(f3['park_s'], ' s')} to park them all ({fmt(f3['parked_per_s'], '/s', 0)}; "
                    "each a step and two advances)"))
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
    """Replace this script's block in RESULTS.md, or add it below the schedules section (else just below run.py's
    notes marker); nothing else moves."""
    m = info["machine"]
    block = [
        WORKFLOWS_BEGIN,
        "## Workflows (issue 13)",
        "",
        "Written by `bench/workflows.py` (what each workload does: its docstring); the next run rewrites this block "
        "only.",
        "",
        f"- date: {info['date']}; commit: {info['commit']}; command: `{info['command']}`; "
        f"wall time {info['wall_s']:.0f} s",
        f"- machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']} RAM; PostgreSQL {info['pg_version']} "
        f"({info['pg_where']}); Punctual as `python app.py` with its defaults, plus PYTHON_HANDLER_MODULES for the "
        "benchmark's two workflows",
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
        WORKFLOWS_END,
    ]
    run.write_block(path, block, WORKFLOWS_BEGIN, WORKFLOWS_END, below=(SCHEDULES_END,))


RUNNERS = {"F1": f1_steps_per_second, "F2": f2_step_overhead, "F3": f3_waiting_memory}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated workloads of F1, F2, F3 (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes for a smoke run; RESULTS.md untouched")
    parser.add_argument("--results", type=Path, default=None, help="report file (default bench/RESULTS.md)")
    args = parser.parse_args(argv)
    chosen = [w.strip().upper() for w in args.only.split(",")] if args.only else list(RUNNERS)
    unknown = [w for w in chosen if w not in RUNNERS]
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(unknown)}; choose from {', '.join(RUNNERS)}")
    if (run.ROOT / ".env").exists():
        print("note: a .env file exists in the repository; Punctual reads it, so its values replace the defaults")

    sizes = Sizes.quick() if args.quick else Sizes()
    server = run.Server.find(os.environ.get("BENCH_DATABASE_URL", run.DEFAULT_URL))
    began = time.monotonic()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="punctual-bench-workflows-") as workdir:
        bench = Bench(server, sizes, Path(workdir))
        for name in chosen:
            print(f"{name}: {RUNNERS[name].__doc__.splitlines()[0]}", flush=True)
            t = time.monotonic()
            before = server.activity()
            try:
                results[name] = RUNNERS[name](bench)
            except Exception as exc:  # noqa: BLE001 - a failed workload is reported, the others still run
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
        "command": " ".join(["python bench/workflows.py", *(argv if argv is not None else sys.argv[1:])]),
        "wall_s": time.monotonic() - began,
    }
    target = args.results or RESULTS
    write_results(target, results, info)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
