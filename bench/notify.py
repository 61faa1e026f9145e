#!/usr/bin/env python3
"""NOTIFY under concurrency (issue 15): commits per second of concurrent single-event creators, with the insert
trigger's NOTIFY and without it.

Why: PostgreSQL serialises the commits of transactions that sent a NOTIFY. At commit, PreCommit_Notify (async.c)
takes one heavyweight lock for the whole server, an AccessExclusiveLock on "database 0" (pg_locks: locktype
object, classid pg_database, objid 0), and holds it until the transaction ends, after its commit record is
flushed: notifying transactions of every database on the server commit one after another and cannot share a WAL
flush. Punctual's insert trigger notifies, so every event created through `POST /events` is such a transaction.

Database only, like bench/dbcost.py: a scratch database on BENCH_DATABASE_URL (default
postgresql://postgres@127.0.0.1:5432/postgres; an embedded pgserver when none answers, through bench/run.py's
Server), database.sql applied, then C creators (each its own connection, in autocommit, as the API creates one
event) insert one event per statement, so one commit each, for --seconds (after a second of warm-up), in three
modes:

  notify   the schema as is: the statement trigger writes the history row and sends the NOTIFY;
  history  the same trigger function with its pg_notify(...) calls replaced by a no-op function of the same
           arguments (derived at run time from the function database.sql created, read back with
           pg_get_functiondef, so it cannot drift from the schema): history row and payload built, nothing sent;
  none     no triggers at all (session_replication_role = replica, which also skips the callback foreign key):
           the floor.

for C in 1, 8 and 64. The modes run one after the other at each C (so a change in the machine's load hits all three
alike). Then, at the largest C, the ways round the lock that the conclusion weighs: `after` (the insert without
the NOTIFY, then `SELECT pg_notify(...)` with the same payload as a statement of its own, after the insert's
commit, as an application could send it) and --batch-rows events per statement with and without the NOTIFY
(what `POST /events/batch`, or coalescing concurrent creations into one statement, gives); --no-extras skips them.

Creators are threads spread over worker processes (--processes, default 4; 1, 2 and 4 gave the same rates within
the noise here, the client using about 0.35 of a core in all), so no single interpreter's GIL caps the client;
the client's CPU is reported so that can be checked. One connection LISTENs on the events channel all the
time, as a running Punctual does, and drains what arrives. While each run lasts, a sampler reads the creators'
wait events from pg_stat_activity (10 per second), which shows what they wait on: the notify lock
(Lock:object), the WAL flush (IO:WALSync, LWLock:WALWrite), nothing (CPU: running or runnable), or the client
(the backend idle until the creator's next statement arrives, which includes waiting for a core).

    .venv/bin/python bench/notify.py                # 12 runs of 6 s: about 1 minute 45 s; writes bench/RESULTS.md
    .venv/bin/python bench/notify.py --seconds 2 --quick   # a smoke run; RESULTS.md untouched

Its section goes into bench/RESULTS.md between NOTIFY_BEGIN and NOTIFY_END, below the workflows section (or the
schedules section, or run.py's notes marker), so the other scripts keep it; the rest of the file is left as it is.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import select
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import psycopg2
import psycopg2.extensions

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402 - bench/run.py: the server, percentiles, machine facts

RESULTS = run.RESULTS
NOTIFY_BEGIN = "<!-- notify:begin (written by bench/notify.py) -->"
NOTIFY_END = "<!-- notify:end -->"
ABOVE = ("<!-- workflows:end -->", "<!-- schedules:end -->", run.NOTES_MARKER)  # the first found goes above ours

MODES = ("notify", "history", "none", "after")
DEFAULT_MODES = MODES[:3]  # "after" runs at the largest count only, with the extras
APP_NAME = "punctual-bench-notify"
CHANNEL = "punctual_events"
WARMUP_S = 1.0  # every creator runs this long before the measured window opens
GAP_LARGE = 0.20  # a NOTIFY gap above this gets the paragraph on what Punctual does about it
STUB = "punctual_bench_no_notify"
# One event per statement, in autocommit, with a RETURNING list like the API's single-event creation.
INSERT = """INSERT INTO events (callback_id, payload, source) VALUES (%s, %s::jsonb, 'api')
            RETURNING id, state, scheduled_for, created_at"""
INSERT_MANY = """INSERT INTO events (callback_id, payload, source) SELECT %s, %s::jsonb, 'api' FROM generate_series(1, %s)
                 RETURNING id, state, scheduled_for, created_at"""
PAYLOAD = '{"n": 1}'


# -- the creators (in worker processes) -------------------------------------------------------------

def _creator(dsn: str, mode: str, rows: int, callback: int, warm: threading.Barrier, go: threading.Event,
             window: list[float], out: list[Any]) -> None:
    """One creator: its own autocommit connection, one INSERT (one commit) after another until the window ends.
    Records the latency of each commit that ends inside the window."""
    conn = psycopg2.connect(dsn, application_name=APP_NAME)
    conn.autocommit = True
    cur = conn.cursor()
    if mode == "none":
        cur.execute("SET session_replication_role = replica")
    sql, params = (INSERT, (callback, PAYLOAD)) if rows == 1 else (INSERT_MANY, (callback, PAYLOAD, rows))
    after = mode == "after"

    def create() -> None:
        cur.execute(sql, params)
        made = cur.fetchall()
        if after:  # the notification the trigger would have sent, as a statement of its own after the commit
            cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, json.dumps(
                {"op": "INSERT", "ids": [r[0] for r in made], "states": [r[1] for r in made],
                 "at": [int(r[2].timestamp() * 1_000_000) for r in made]})))

    for _ in range(3):  # plans of the statement and of the trigger function, cached for the session
        create()
    warm.wait()
    go.wait()
    start, end = window
    latencies = []
    clock = time.perf_counter
    while True:
        t0 = clock()
        if t0 >= end:
            break
        create()
        t1 = clock()
        if start <= t1 <= end:
            latencies.append(t1 - t0)
    conn.close()
    out.append(latencies)


def worker(dsn: str, callback: int, tasks: Any, results: Any) -> None:
    """A worker process, kept for the whole benchmark. For each task (mode, events per statement, creators): starts
    that many creator threads, reports ready once each is connected and warm, takes the go with the window (on the
    monotonic clock, which all processes share), then reports each commit latency and its own CPU seconds inside
    the window."""
    while True:
        task = tasks.get()
        if task is None:
            return
        mode, rows, threads = task
        warm = threading.Barrier(threads + 1)
        started = threading.Event()
        span: list[float] = []
        out: list[Any] = []
        errors: list[str] = []

        def body() -> None:
            try:
                _creator(dsn, mode, rows, callback, warm, started, span, out)  # noqa: B023 - joined below
            except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the run
                errors.append(f"{type(exc).__name__}: {str(exc).strip()[:300]}")  # noqa: B023
                warm.abort()  # noqa: B023

        pool = [threading.Thread(target=body, daemon=True) for _ in range(threads)]
        for t in pool:
            t.start()
        try:
            warm.wait(timeout=120)
        except threading.BrokenBarrierError:
            errors.append(errors[0] if errors else "creators not ready within 120 s")
        results.put(("ready", errors))
        span.extend(tasks.get())  # the go: start, end
        started.set()
        time.sleep(max(0.0, span[0] - time.perf_counter()))
        cpu0 = time.process_time()
        time.sleep(max(0.0, span[1] - time.perf_counter()))
        cpu1 = time.process_time()
        for t in pool:
            t.join(timeout=60)
        results.put(("done", {"latencies": [x for chunk in out for x in chunk], "cpu_s": cpu1 - cpu0,
                              "errors": errors}))


class Workers:
    """The worker processes (spawned once, so a run pays no interpreter start-up) and their task queues."""

    def __init__(self, dsn: str, callback: int, processes: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.results = ctx.Queue()
        self.tasks = [ctx.Queue() for _ in range(processes)]
        self.procs = [ctx.Process(target=worker, args=(dsn, callback, q, self.results), daemon=True)
                      for q in self.tasks]
        for p in self.procs:
            p.start()

    def _get(self, kind: str, timeout: float) -> Any:
        got, value = self.results.get(timeout=timeout)
        assert got == kind, (got, kind)
        return value

    def run(self, dsn: str, mode: str, creators: int, rows: int, seconds: float) -> dict[str, Any]:
        """One run: `creators` concurrent creators in `mode`, `rows` events per statement, for `seconds` (after
        WARMUP_S), spread over the worker processes."""
        shares = split(creators, len(self.procs))
        for q, n in zip(self.tasks, shares):
            q.put((mode, rows, n))
        errors = [e for _ in shares for e in self._get("ready", 180)]
        sampler = Sampler(dsn)
        begin = time.perf_counter() + 0.05 + WARMUP_S
        load_before = float(Path("/proc/loadavg").read_text().split()[0])
        for q in self.tasks[:len(shares)]:
            q.put((begin, begin + seconds))
        time.sleep(max(0.0, begin - time.perf_counter()))
        sampler.start()
        time.sleep(max(0.0, begin + seconds - time.perf_counter()))
        waits = sampler.stop()
        collected = [self._get("done", 120) for _ in shares]
        errors += [e for c in collected for e in c["errors"]]
        if errors:
            raise RuntimeError(f"{len(errors)} creator(s) failed, first: {errors[0]}")
        latencies = [x for c in collected for x in c["latencies"]]
        cpu = [c["cpu_s"] / seconds for c in collected]
        return {
            "mode": mode, "creators": creators, "rows": rows, "processes": len(shares), "seconds": seconds,
            "commits": len(latencies), "commits_per_s": len(latencies) / seconds,
            "events_per_s": len(latencies) * rows / seconds,
            "p50_ms": run.percentile(latencies, 50) * 1000 if latencies else None,
            "p99_ms": run.percentile(latencies, 99) * 1000 if latencies else None,
            "client_cpu_cores": round(sum(cpu), 3), "client_cpu_max_process": round(max(cpu), 3),
            "waits": waits, "loadavg_1m_before": load_before,
        }

    def close(self) -> None:
        for q in self.tasks:
            q.put(None)
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()


# -- the parent: listener, sampler, runs -------------------------------------------------------------

class Listener(threading.Thread):
    """LISTEN on the events channel and drain it, as a running Punctual's listener does; counts what arrives."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.conn = psycopg2.connect(dsn, application_name=APP_NAME + "-listener")
        self.conn.autocommit = True
        self.conn.cursor().execute(f"LISTEN {CHANNEL}")
        self.received = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            if select.select([self.conn], [], [], 0.2)[0]:
                self.conn.poll()
                self.received += len(self.conn.notifies)
                self.conn.notifies.clear()

    def stop(self) -> None:
        self.stopping.set()
        self.join()
        self.conn.close()


class Sampler(threading.Thread):
    """Ten times a second: what the creators' backends wait on (pg_stat_activity), counted by wait event."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.conn = psycopg2.connect(dsn, application_name=APP_NAME + "-sampler")
        self.conn.autocommit = True
        self.waits: dict[str, int] = {}
        self.samples = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        with self.conn.cursor() as cur:
            while not self.stopping.wait(0.1):
                cur.execute("""SELECT CASE WHEN state = 'active' THEN coalesce(wait_event_type || ':' || wait_event, 'CPU')
                                           ELSE 'client' END, count(*)
                               FROM pg_stat_activity WHERE application_name = %s GROUP BY 1""", (APP_NAME,))
                for name, n in cur.fetchall():
                    self.waits[name] = self.waits.get(name, 0) + n
                self.samples += 1

    def stop(self) -> dict[str, float]:
        """Mean number of creators in each wait, per sample."""
        self.stopping.set()
        self.join()
        self.conn.close()
        return {k: round(v / max(1, self.samples), 2) for k, v in sorted(self.waits.items(), key=lambda kv: -kv[1])}


def split(creators: int, processes: int) -> list[int]:
    """Creators per worker process, as even as can be."""
    processes = max(1, min(processes, creators))
    return [creators // processes + (1 if i < creators % processes else 0) for i in range(processes)]


# -- the schema without NOTIFY, derived from database.sql's own functions -----------------------------

NOTIFY_CALL = re.compile(r"(?:pg_catalog\s*\.\s*)?\bpg_notify\s*\(", re.IGNORECASE)
NOTIFY_STATEMENT = re.compile(r"^\s*NOTIFY\b", re.IGNORECASE | re.MULTILINE)


def insert_trigger_functions(cur: Any) -> dict[str, str]:
    """The functions of the user triggers that fire on INSERT into events: signature -> CREATE OR REPLACE text."""
    cur.execute("""SELECT DISTINCT p.oid::regprocedure::text, pg_get_functiondef(p.oid)
                   FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
                   WHERE t.tgrelid = 'events'::regclass AND NOT t.tgisinternal AND (t.tgtype & 4) <> 0""")
    return dict(cur.fetchall())


def without_notify(functions: dict[str, str]) -> dict[str, str]:
    """Each function that notifies, with every pg_notify(channel, payload) call replaced by the no-op STUB (the
    arguments are still computed, so the difference is the NOTIFY itself). Fails when there is nothing to
    replace, or a NOTIFY statement that this does not handle."""
    changed = {}
    for name, text in functions.items():
        stubbed, n = NOTIFY_CALL.subn(f"{STUB}(", text)
        if NOTIFY_STATEMENT.search(stubbed):
            raise RuntimeError(f"{name} has a NOTIFY statement; bench/notify.py replaces only pg_notify() calls")
        if n:
            changed[name] = stubbed
    if not changed:
        raise RuntimeError("no trigger on INSERT into events calls pg_notify: nothing to compare "
                           f"(functions: {', '.join(functions) or 'none'})")
    return changed


class Schema:
    """The scratch database's insert trigger functions, switchable between as created and without NOTIFY."""

    def __init__(self, dsn: str) -> None:
        run.apply_schema(dsn)
        self.conn = psycopg2.connect(dsn)
        self.conn.autocommit = True
        with self.conn.cursor() as cur:
            cur.execute(f"CREATE FUNCTION {STUB}(text, text) RETURNS void LANGUAGE plpgsql AS $$BEGIN NULL; END$$")
            self.original = insert_trigger_functions(cur)
            self.stubbed = without_notify(self.original)
            cur.execute("""SELECT bool_and(t.tgtype & 1 = 0) FROM pg_trigger t
                           WHERE t.tgrelid = 'events'::regclass AND NOT t.tgisinternal AND (t.tgtype & 4) <> 0
                             AND t.tgfoid::regprocedure::text = ANY(%s)""", (list(self.stubbed),))
            self.per_statement = bool(cur.fetchone()[0])
            cur.execute("INSERT INTO callbacks (name, kind, target) VALUES ('bench-notify', 'python', 'noop') "
                        "RETURNING id")
            self.callback = cur.fetchone()[0]

    def use(self, mode: str) -> None:
        with self.conn.cursor() as cur:
            for name, text in (self.stubbed if mode in ("history", "after") else self.original).items():
                if name in self.stubbed:
                    cur.execute(text)

    def close(self) -> None:
        self.conn.close()


# -- report ---------------------------------------------------------------------------------------------

def fmt_waits(waits: dict[str, float], top: int = 3) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in list(waits.items())[:top]) or "-"


def table(runs: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    out = []
    by = {(r["creators"], r["mode"], r["rows"]): r for r in runs}
    for r in runs:
        ref = by.get((r["creators"], "history", r["rows"]))
        vs = ""
        if r["mode"] != "history" and ref and ref["events_per_s"]:
            vs = f"{(r['events_per_s'] / ref['events_per_s'] - 1) * 100:+.0f} %"
        out.append((str(r["creators"]), r["mode"], str(r["rows"]), f"{r['commits_per_s']:,.0f}",
                    f"{r['events_per_s']:,.0f}", vs, f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}",
                    f"{r['client_cpu_cores']:.2f}", f"{r['loadavg_1m_before']:.1f}", f"{r['notifications_heard']:,}",
                    fmt_waits(r["waits"])))
    return out


HEADER = ("creators", "mode", "events/commit", "commits/s", "events/s", "vs history", "p50 ms", "p99 ms",
          "client CPU cores", "load 1m at start", "notifications heard", "creators' waits (mean per sample)")


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADER)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print(line.format(*HEADER))
    print(line.format(*("-" * w for w in widths)))
    for r in rows:
        print(line.format(*r))


def _waiting(r: dict[str, Any], name: str = "Lock:object") -> float:
    return r["waits"].get(name, 0.0)


def flat(single: dict[tuple[int, str], dict[str, Any]], counts: list[int]) -> bool:
    """Whether the NOTIFY's commits/s at the largest count stay within 1.5x of the smallest count's."""
    rates = [single[(c, "notify")]["commits_per_s"] for c in counts]
    return len(rates) > 1 and rates[-1] <= 1.5 * rates[0]


def conclusion(runs: list[dict[str, Any]], per_statement: bool = True) -> list[str]:
    """What the runs say, in words built from their figures only: the gap at the largest count, the curve, and,
    when the gap is over GAP_LARGE, what Punctual does and could do about it with the extras' figures."""
    top = max(r["creators"] for r in runs)
    single = {(r["creators"], r["mode"]): r for r in runs if r["rows"] == 1}
    n, h, z = (single.get((top, m)) for m in ("notify", "history", "none"))
    if not (n and h):
        return []
    gap = 1 - n["commits_per_s"] / h["commits_per_s"]
    counts = sorted({c for c, m in single if m == "notify" and (c, "history") in single})
    out = [
        f"**At {top} creators the NOTIFY costs {gap * 100:.0f} % of the commits per second**: "
        f"{n['commits_per_s']:,.0f}/s with it against {h['commits_per_s']:,.0f}/s without it (history kept"
        + (f"; {z['commits_per_s']:,.0f}/s with no trigger at all" if z else "")
        + f"), commit p50 {n['p50_ms']:.1f} ms against {h['p50_ms']:.1f} ms. "
        f"On average {_waiting(n):.1f} of the {top} creators were waiting on the notify lock (`Lock:object`) "
        f"in each sample, {_waiting(h):.1f} without the NOTIFY. "
        "By creators (" + ", ".join(str(c) for c in counts) + "): with the NOTIFY "
        + " / ".join(f"{single[(c, 'notify')]['commits_per_s']:,.0f}" for c in counts) + " commits/s, without "
        + " / ".join(f"{single[(c, 'history')]['commits_per_s']:,.0f}" for c in counts)
        + (": notifying commits go one at a time, each holding the lock through its WAL flush, so more creators "
           "add waiting, not commits." if flat(single, counts) else ".")
    ]
    if gap <= GAP_LARGE:
        out.append(f"The gap is under {GAP_LARGE * 100:.0f} %: nothing to do about it at this scale.")
        return out
    batch = {r["mode"]: r for r in runs if r["creators"] == top and r["rows"] > 1}
    after = single.get((top, "after"))
    if per_statement:
        text = ("What Punctual does about it: its insert trigger runs once per statement and sends one notification "
                "per statement, not per row, so the lock is paid once per transaction, however many "
                "events it makes; `POST /events/batch` makes its events in one statement, and the engine's claims "
                "and outcomes are one statement per batch too.")
    else:
        text = ("The insert trigger that notifies runs once per row; the lock is still taken once per transaction, "
                "so batches amortise it.")
    if "notify" in batch and "history" in batch:
        b, bh = batch["notify"], batch["history"]
        text += (f" Measured here with {b['rows']} events per statement at {top} creators: "
                 f"{b['events_per_s']:,.0f} events/s with the NOTIFY "
                 f"({b['events_per_s'] / n['events_per_s']:.1f}x single events with it), "
                 f"{bh['events_per_s']:,.0f}/s without it. Punctual does not coalesce concurrent single creations "
                 "into one statement today; that is the rate a coalescer making such batches would aim at.")
    if flat(single, counts):
        text += (" Single events through `POST /events` pay one lock each: on this machine they top out near the "
                 f"rate of one creator ({single[(counts[0], 'notify')]['commits_per_s']:,.0f}/s at {counts[0]}, "
                 f"{n['commits_per_s']:,.0f}/s at {top}) however many clients send them.")
    else:
        text += (" Single events through `POST /events` pay one lock each: "
                 f"{n['commits_per_s']:,.0f}/s at {top} creators.")
    if after:
        text += (f" Sending the notification in a transaction of its own right after the insert's commit (which "
                  "still takes the lock, but holds it through the flush of a bare commit record, not the insert's) "
                 f"gave {after['commits_per_s']:,.0f} creations/s "
                 f"({(after['commits_per_s'] / n['commits_per_s'] - 1) * 100:+.0f} % against the trigger's NOTIFY, "
                 f"{(after['commits_per_s'] / h['commits_per_s'] - 1) * 100:+.0f} % against no NOTIFY), "
                 f"{_waiting(after):.1f} creators waiting on the lock: less waiting, a second round trip and "
                 "commit per event (and plain-SQL inserts would not notify).")
    text += (" Not notifying at all leaves the sweeper's poll (every `SWEEP_SECONDS`, 2 s by default) to find new "
             "events: no lock, but seconds of delay, against issue 15's W3 target of a few milliseconds. "
             "PgQueuer 1.6.0 pays the same lock: its statement trigger calls pg_notify on every INSERT, UPDATE, "
             "DELETE and TRUNCATE of its queue table (`pgqueuer/domain/schema/notify.py`).")
    out.append(text)
    return out


def write_results(path: Path, runs: list[dict[str, Any]], info: dict[str, Any]) -> None:
    """Replace this script's block in RESULTS.md, or add it below the workflows section (else the schedules
    section, else run.py's notes marker); nothing else moves."""
    m = info["machine"]
    loads = [r["loadavg_1m_before"] for r in runs]
    block = [
        NOTIFY_BEGIN,
        "## NOTIFY under concurrency (issue 15)",
        "",
        "Written by `bench/notify.py` (what it does: its docstring); the next run rewrites this block only.",
        "",
        f"- date: {info['date']}; commit: {info['commit']}; command: `{info['command']}`; "
        f"wall time {info['wall_s']:.0f} s",
        f"- machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']} RAM; PostgreSQL {info['pg_version']} "
        f"({info['pg_where']}; {info['pg_settings']})",
        f"- load average before the first run (other work on the machine): {info['load_before']} (1, 5, 15 min), "
        f"{info['other_sessions']} other sessions on the server; at the start of each run (the benchmark's own "
        f"creators and backends now count too) {min(loads):.1f}-{max(loads):.1f}; {info['load_after']} after",
        f"- the client was not the limit: its CPU stayed at {max(r['client_cpu_cores'] for r in runs):.2f} cores or "
        f"less in total, {max(r['client_cpu_max_process'] for r in runs):.2f} or less in any one process",
        f"- each run: {info['seconds']:g} s measured after {WARMUP_S:g} s of warm-up; creators as threads in "
        f"{info['processes']} worker processes at most; one listener draining the channel throughout",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
        *("| " + " | ".join(r) + " |" for r in table(runs)),
        "",
        *(p + "\n" for p in conclusion(runs, info["per_statement"])),
        "<details><summary>Raw figures</summary>",
        "",
        "```json",
        "[",
        ",\n".join("  " + json.dumps(r, default=str) for r in runs),  # one run per line
        "]",
        "```",
        "",
        "</details>",
        NOTIFY_END,
    ]
    run.write_block(path, block, NOTIFY_BEGIN, NOTIFY_END, below=ABOVE)


def plan(counts: list[int], modes: list[str], extras: bool, batch_rows: int) -> list[tuple[int, str, int]]:
    """(creators, mode, events per statement) of each run: every mode at every count, the modes one after the other
    at each count; then, at the largest count, the two ways round the lock that the section compares."""
    runs = [(c, m, 1) for c in counts for m in modes]
    if extras:
        top = max(counts)
        runs.append((top, "after", 1))
        if batch_rows > 1:
            runs += [(top, "notify", batch_rows), (top, "history", batch_rows)]
    return runs


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per run (default 6)")
    parser.add_argument("--creators", default="1,8,64", help="comma-separated creator counts (default 1,8,64)")
    parser.add_argument("--modes", default=",".join(DEFAULT_MODES), help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--batch-rows", type=int, default=10,
                        help="events per statement of the batch runs at the largest count (default 10)")
    parser.add_argument("--no-extras", dest="extras", action="store_false",
                        help="skip the runs at the largest count with the NOTIFY after the commit and with batches")
    parser.add_argument("--processes", type=int, default=4,
                        help="worker processes the creators are spread over (default 4; 1 = all threads of one)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: RESULTS.md untouched")
    parser.add_argument("--results", type=Path, default=None, help="report file (default bench/RESULTS.md)")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.creators.split(",")]
    modes = [m.strip() for m in args.modes.split(",")]
    if set(modes) - set(MODES):
        parser.error(f"unknown mode(s); choose from {', '.join(MODES)}")

    began = time.monotonic()
    server = run.Server.find(os.environ.get("BENCH_DATABASE_URL", run.DEFAULT_URL))
    start_activity = server.activity()
    load_before = ", ".join(Path("/proc/loadavg").read_text().split()[:3])
    runs: list[dict[str, Any]] = []
    with server.database("notify") as dsn:
        schema = Schema(dsn)
        listener = Listener(dsn)
        listener.start()
        workers = Workers(dsn, schema.callback, args.processes)
        try:
            for creators, mode, rows in plan(counts, modes, args.extras, args.batch_rows):
                schema.use(mode)
                heard = listener.received
                result = workers.run(dsn, mode, creators, rows, args.seconds)
                time.sleep(0.3)  # the last notifications reach the listener
                result["notifications_heard"] = listener.received - heard
                runs.append(result)
                print(f"  {creators:>3} creators, {mode:<7} x{rows:<3}: {result['commits_per_s']:7,.0f} commits/s "
                      f"{result['events_per_s']:7,.0f} events/s  p50 {result['p50_ms']:6.2f} ms  "
                      f"p99 {result['p99_ms']:6.2f} ms  client CPU {result['client_cpu_cores']:.2f}  "
                      f"load {result['loadavg_1m_before']:4.1f}  heard {result['notifications_heard']:,}  "
                      f"waits {fmt_waits(result['waits'])}", flush=True)
        finally:
            workers.close()
            listener.stop()
            schema.close()
    print()
    print_table(table(runs))
    print()
    print("\n\n".join(conclusion(runs, schema.per_statement)))
    if args.quick and args.results is None:
        print("--quick: bench/RESULTS.md not written")
        return 0
    info = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": run.git_commit(),
        "machine": run.machine(),
        "pg_version": server.version(),
        "pg_settings": ", ".join(f"{k} {v}" for k, v in sorted(server.settings().items())
                                 if k in ("fsync", "synchronous_commit")),
        "pg_where": "embedded pgserver" if server.embedded else "BENCH_DATABASE_URL / default server",
        "command": " ".join(["python bench/notify.py", *(argv if argv is not None else sys.argv[1:])]),
        "wall_s": time.monotonic() - began,
        "load_before": load_before, "load_after": ", ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "per_statement": schema.per_statement,
        "other_sessions": start_activity["other_sessions"],
        "seconds": args.seconds, "processes": args.processes,
    }
    target = args.results or RESULTS
    write_results(target, runs, info)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
