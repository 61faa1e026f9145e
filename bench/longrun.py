#!/usr/bin/env python3
"""Long run (issue 14 point 5): Punctual at a fixed rate for minutes, on a PostgreSQL with autovacuum on, through
a clean phase, a phase where another session holds a transaction open (vacuum cannot clean), recovery, and a
kill -9 of one of two instances.

    .venv/bin/python bench/longrun.py                              # 200 and 1,000 events/s, 4 phases of 3 minutes
    .venv/bin/python bench/longrun.py --minutes-per-phase 1 --rates 200 --no-write   # a short run while iterating

What it runs, and why so:
- its own PostgreSQL: an embedded pgserver cluster in a temporary folder with the server's defaults, autovacuum
  on (the machine's shared server at 127.0.0.1:5432 runs with autovacuum off, which no production server does);
  one fresh database per rate;
- Punctual as real processes, `python app.py` with its defaults, except: DATABASE_URL, HOST, PORT, LOG_DIR, the
  test handlers (PYTHON_HANDLER_MODULES=tests.handlers, whose `sleep` handler is the callback: 1 ms, through
  the worker pool), RETENTION_DAYS small (default 0.001: 86 s, so retention applies within the first phase) and
  RETENTION_INTERVAL_SECONDS 10 (smaller rounds, so the table's size is read between them, not sawing);
- a producer at a fixed rate over HTTP, from several threads with a keep-alive session each: `POST /events`, one
  event each, up to 200/s; above, `POST /events/batch` of rate/100 events (see batch_size); thread k sends
  requests k, k + n, k + 2n... each at its own instant, late ones at once, so the rate holds whatever one request
  takes;
- phases, each --minutes-per-phase long: clean; idle-in-transaction (a second session runs BEGIN;
  SELECT txid_current() and sits idle: nothing deleted or updated after it began can be vacuumed); recovery
  (that transaction ends); kill (a second instance starts, 2 s sleeps join the 1 ms ones at 4 a second so both
  instances hold attempts, and a third of the way in the second instance gets SIGKILL).

What it measures, from the database's own timestamps (read back every 2 s, before retention deletes the rows):
- pickup: started_at - created_at of each 1 ms event (created_at: the insert's transaction start, database clock;
  started_at: its worker's start, written with its outcome), p50/p95/p99/max per phase and per 5 s;
- completion: events finished per second against events accepted per second;
- every 5 s, for events and event_history: size (heap, indexes), live and dead rows, inserts, updates, HOT
  updates, deletes and autovacuum runs (pg_stat_user_tables), and the due backlog;
- the kill: which attempts the killed instance held, and when each started again (its next 'running' history
  row), from the SIGKILL.

Results: the "Long run" section of bench/RESULTS.md (between LONGRUN_BEGIN and LONGRUN_END, below run.py's notes
marker, so the other scripts keep it), the raw series in bench/RESULTS.longrun.json and a plot over time in
bench/longrun.png, drawn by bench/longrun_chart.py in bench/.venv-peers (where matplotlib is; made here as
bench/compare.py makes it, if missing). It never asserts.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import psycopg2
import psycopg2.extensions
import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run  # noqa: E402 - bench/run.py: the app process, percentiles, machine facts

RESULTS = run.RESULTS
RAW = HERE / "RESULTS.longrun.json"
CHART = HERE / "longrun.png"
LONGRUN_BEGIN = "<!-- longrun:begin (written by bench/longrun.py) -->"
LONGRUN_END = "<!-- longrun:end -->"
PHASES = ("clean", "idle", "recovery", "kill")
PHASE_TITLES = {"clean": "clean", "idle": "idle in transaction", "recovery": "recovery", "kill": "kill -9"}
QUICK = "longrun-1ms"  # the callback every produced event runs: the `sleep` test handler, 1 ms
SLOW = "longrun-2s"  # the kill phase's slow callback: 2 s, so the instance killed surely holds attempts
BUCKET = 5.0  # seconds per point of the time series
TABLES = ("events", "event_history")
# Targets of issue 14 point 5: pickup p99 at 200/s.
TARGET_P99_MS = {"clean": 10.0, "idle": 25.0, "recovery": 10.0}


def now() -> float:
    return time.time()


def ms(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value * 1000, 2)


def pct(values: list[float], q: float) -> Optional[float]:
    return run.percentile(values, q)


# -- PostgreSQL --------------------------------------------------------------------------------------------------

class Cluster:
    """A pgserver cluster of this run's own, in a temporary folder, with the server's defaults (autovacuum on)."""

    def __init__(self) -> None:
        import pgserver  # the package the app's embedded mode uses

        # Not under a folder only root may enter: as root, pgserver runs the server as an unprivileged user.
        self.folder = tempfile.mkdtemp(prefix="punctual-longrun-pg-", dir="/tmp")
        os.chmod(self.folder, 0o755)
        self.server = pgserver.get_server(self.folder, cleanup_mode="delete")
        self.url = self.server.get_uri()

    def admin(self) -> psycopg2.extensions.connection:
        conn = psycopg2.connect(self.url)
        conn.autocommit = True
        return conn

    def settings(self) -> dict[str, str]:
        names = ("server_version", "autovacuum", "autovacuum_naptime", "autovacuum_vacuum_scale_factor",
                 "autovacuum_vacuum_threshold", "autovacuum_vacuum_insert_scale_factor",
                 "autovacuum_vacuum_cost_delay", "autovacuum_vacuum_cost_limit", "shared_buffers",
                 "synchronous_commit", "fsync", "max_connections")
        conn = self.admin()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)",
                            (list(names),))
                found = dict(cur.fetchall())
                cur.execute("SHOW server_version")
                found["server_version"] = cur.fetchone()[0]
        finally:
            conn.close()
        return found

    def database(self, name: str) -> str:
        conn = self.admin()
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                cur.execute(f"CREATE DATABASE {name}")
        finally:
            conn.close()
        return psycopg2.extensions.make_dsn(self.url, dbname=name)

    def close(self) -> None:
        try:
            self.server.cleanup()
        except Exception as exc:  # noqa: BLE001 - the folder is temporary anyway
            print(f"note: stopping the cluster failed ({exc})")


def connect(url: str) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(url, options="-c timezone=UTC", application_name="longrun-bench")
    conn.autocommit = True
    return conn


# -- the producer ------------------------------------------------------------------------------------------------

class Producer:
    """Events at a fixed rate through the API: `POST /events` one each, or `POST /events/batch` of `batch` each;
    thread k of n sends requests k, k + n, ... each at t0 + i * batch / rate (a late one at once).

    One keep-alive requests.Session per thread. Counts per second of when each request was sent: events accepted
    (201) and refused or failed; and how late each request left against its instant.
    """

    def __init__(self, url: str, callback: str, payload: dict[str, Any], rate: float, threads: int,
                 batch: int = 1) -> None:
        event = {"callback": callback, "payload": payload}
        self.url = url + ("/events" if batch == 1 else "/events/batch")
        self.body = json.dumps(event if batch == 1 else {"events": [event] * batch}).encode()
        self.batch = batch
        self.rate = rate / batch  # requests per second
        self.threads = threads
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.accepted: dict[int, int] = {}  # second (epoch) -> 201s
        self.failed: dict[int, int] = {}
        self.late_ms: list[float] = []
        self.errors: dict[str, int] = {}
        self.t0 = 0.0

    def start(self) -> None:
        self.t0 = now() + 0.2
        for k in range(self.threads):
            thread = threading.Thread(target=self._send, args=(k,), name=f"producer-{k}", daemon=True)
            thread.start()
            self._workers.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._workers:
            thread.join(30)

    def _send(self, k: int) -> None:
        session = requests.Session()
        headers = {"Content-Type": "application/json"}
        i = k
        late: list[float] = []
        while not self._stop.is_set():
            due = self.t0 + i / self.rate
            pause = due - now()
            if pause > 0:
                if self._stop.wait(pause):
                    break
            else:
                late.append(-pause * 1000)
            second = int(now())
            try:
                response = session.post(self.url, data=self.body, headers=headers, timeout=30)
                ok = response.status_code == 201
                error = None if ok else f"HTTP {response.status_code}"
            except requests.RequestException as exc:
                ok, error = False, type(exc).__name__
            with self._lock:
                target = self.accepted if ok else self.failed
                target[second] = target.get(second, 0) + self.batch
                if error:
                    self.errors[error] = self.errors.get(error, 0) + 1
            i += self.threads
        with self._lock:
            self.late_ms.extend(late)

    def between(self, start: float, end: float) -> tuple[int, int]:
        """(accepted, failed) in seconds [start, end)."""
        with self._lock:
            ok = sum(n for s, n in self.accepted.items() if start <= s < end)
            bad = sum(n for s, n in self.failed.items() if start <= s < end)
        return ok, bad


# -- what the database says --------------------------------------------------------------------------------------

class Collector:
    """Every 2 s, reads the events that ended since the last read: before retention deletes them. Keeps per event
    (created, started, finished, callback, attempts, state)."""

    OVERLAP = 10.0  # seconds re-read each time: an outcome stamped earlier may commit later

    def __init__(self, url: str) -> None:
        self.url = url
        self.rows: list[tuple[float, Optional[float], float, str, int, str]] = []
        self._recent: dict[int, float] = {}
        self._since = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="collector", daemon=True)
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self.read_once()

    def _loop(self) -> None:
        while not self._stop.wait(2.0):
            try:
                self.read_once()
            except psycopg2.Error as exc:
                print(f"  collector: {exc}".rstrip(), flush=True)

    def read_once(self) -> None:
        with self._lock:
            conn = connect(self.url)
            try:
                with conn.cursor() as cur:
                    cur.execute(
                        """SELECT e.id, extract(epoch FROM e.created_at), extract(epoch FROM e.started_at),
                                  extract(epoch FROM e.finished_at), c.name, e.attempts, e.state
                           FROM events e JOIN callbacks c ON c.id = e.callback_id
                           WHERE e.state IN ('finished', 'failed', 'cancelled') AND e.finished_at >= to_timestamp(%s)""",
                        (self._since - self.OVERLAP,))
                    fetched = cur.fetchall()
            finally:
                conn.close()
            for event_id, created, started, finished, name, attempts, state in fetched:
                if event_id in self._recent:
                    continue
                self._recent[event_id] = float(finished)
                self.rows.append((float(created), None if started is None else float(started), float(finished),
                                  name, attempts, state))
                self._since = max(self._since, float(finished))
            horizon = self._since - 2 * self.OVERLAP
            self._recent = {k: v for k, v in self._recent.items() if v >= horizon}


class Sampler:
    """Every 5 s: per table, size and pg_stat_user_tables counters; the due backlog; the oldest transaction; the
    app processes' CPU."""

    def __init__(self, url: str, pids: Any, postmaster: Optional[int]) -> None:
        self.url = url
        self.pids = pids  # callable: the app processes' pids now
        self.postmaster = postmaster
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sampler", daemon=True)

    def start(self) -> None:
        self.sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(BUCKET):
            try:
                self.sample()
            except psycopg2.Error as exc:
                print(f"  sampler: {exc}".rstrip(), flush=True)

    @staticmethod
    def _cpu(pid: int, children: bool = False) -> float:
        """CPU seconds of a process (and of its children it has reaped, with `children`)."""
        try:
            rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        own = int(rest[11]) + int(rest[12])
        return (own + (int(rest[13]) + int(rest[14]) if children else 0)) / run.CpuMeter.TICK

    def _pg_cpu(self) -> Optional[float]:
        """The cluster's CPU seconds: the postmaster with what it reaped, and its live children (backends,
        autovacuum workers, walwriter...)."""
        if self.postmaster is None:
            return None
        total = self._cpu(self.postmaster, children=True)
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    ppid = int(Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                if ppid == self.postmaster:
                    total += self._cpu(int(entry.name))
        return total

    def sample(self) -> None:
        conn = connect(self.url)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    """SELECT relname, pg_table_size(relid), pg_indexes_size(relid), n_live_tup, n_dead_tup, n_tup_ins,
                              n_tup_upd, n_tup_hot_upd, n_tup_del, autovacuum_count, autoanalyze_count,
                              extract(epoch FROM last_autovacuum)
                       FROM pg_stat_user_tables WHERE relname = ANY(%s)""", (list(TABLES),))
                tables = {row[0]: dict(zip(("table", "heap", "indexes", "live", "dead", "ins", "upd", "hot", "del",
                                            "autovacuums", "autoanalyzes", "last_autovacuum"), row))
                          for row in cur.fetchall()}
                cur.execute("SELECT count(*) FROM events WHERE state = 'scheduled' AND scheduled_for <= now()")
                backlog = cur.fetchone()[0]
                cur.execute("SELECT count(*) FROM events WHERE state = 'running'")
                running = cur.fetchone()[0]
                cur.execute("""SELECT extract(epoch FROM now() - min(xact_start)) FROM pg_stat_activity
                               WHERE datname = current_database() AND backend_xid IS NOT NULL
                                 AND pid <> pg_backend_pid()""")
                oldest = cur.fetchone()[0]
        finally:
            conn.close()
        for table in tables.values():
            table["last_autovacuum"] = None if table["last_autovacuum"] is None else float(table["last_autovacuum"])
        self.samples.append({"t": now(), "tables": tables, "backlog": backlog, "running": running,
                             "oldest_xact_s": None if oldest is None else float(oldest),
                             "app_cpu_s": sum(self._cpu(pid) for pid in self.pids()), "pg_cpu_s": self._pg_cpu(),
                             "loadavg": float(Path("/proc/loadavg").read_text().split()[0])})


# -- one rate ----------------------------------------------------------------------------------------------------

def app_process(url: str, folder: Path, name: str, retention_days: float) -> run.App:
    app = run.App(url, folder)
    app.env.update(PYTHON_HANDLER_MODULES="tests.handlers", RETENTION_DAYS=str(retention_days),
                   RETENTION_INTERVAL_SECONDS="10", INSTANCE_NAME=name)
    return app


def track_rescue(url: str, worker: str, killed_at: float, timeout: float = 90.0) -> dict[str, Any]:
    """The attempts `worker` held when it was killed, and when each started again (the start of the next attempt);
    also when the rescue put it back (the history row of the held attempt, written at its end, after the kill)."""
    conn = connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT e.id, e.attempts, c.name FROM events e JOIN callbacks c ON c.id = e.callback_id "
                        "WHERE e.state = 'running' AND e.worker = %s", (worker,))
            held = {event_id: (attempt, name) for event_id, attempt, name in cur.fetchall()}
        restarted: dict[int, float] = {}
        rescued: dict[int, float] = {}
        deadline = now() + timeout
        while held and len(restarted) < len(held) and now() < deadline:
            time.sleep(0.5)
            with conn.cursor() as cur:
                # Started again: the next attempt's start, from its history row once it ended, from the event
                # while it runs. Put back: the history row of the held attempt, which its rescue wrote.
                cur.execute("""SELECT held.id, extract(epoch FROM COALESCE(
                                          (SELECT h.started_at FROM event_history h WHERE h.event_id = held.id
                                             AND h.attempt = held.attempt + 1 AND h.started_at IS NOT NULL),
                                          CASE WHEN e.attempts = held.attempt + 1 AND e.state = 'running'
                                               THEN e.started_at END)),
                                      extract(epoch FROM (SELECT min(h.at) FROM event_history h
                                          WHERE h.event_id = held.id AND h.attempt = held.attempt
                                            AND h.at > to_timestamp(%s)))
                               FROM unnest(%s::bigint[], %s::int[]) AS held(id, attempt)
                               JOIN events e ON e.id = held.id""",
                            (killed_at, list(held), [attempt for attempt, _ in held.values()]))
                for event_id, again, back in cur.fetchall():
                    if again is not None:
                        restarted[event_id] = float(again)
                    if back is not None:
                        rescued[event_id] = float(back)
    finally:
        conn.close()
    delays = sorted(restarted[i] - killed_at for i in restarted)
    back = sorted(rescued[i] - killed_at for i in rescued)
    return {"held": len(held), "held_slow": sum(1 for _, name in held.values() if name == SLOW),
            "restarted": len(restarted),
            "restart_after_kill_s": {"min": delays[0] if delays else None,
                                     "median": statistics.median(delays) if delays else None,
                                     "max": delays[-1] if delays else None},
            "rescued_after_kill_s": {"min": back[0] if back else None, "max": back[-1] if back else None}}


def batch_size(args: argparse.Namespace, rate: int) -> int:
    """Events per request: --batch, or by default one (`POST /events`) up to 200/s and `POST /events/batch` of
    rate / 100 above: one request per event at 1,000/s is more than this 2-core machine's HTTP path serves beside
    the engine, PostgreSQL and this producer (about 360 a second measured, with 32 threads)."""
    if args.batch:
        return args.batch
    return 1 if rate <= 200 else max(1, rate // 100)


def run_rate(cluster: Cluster, rate: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    minutes = args.minutes_per_phase
    url = cluster.database(f"longrun_{rate}")
    a = app_process(url, workdir / f"{rate}-a", f"longrun-a-{rate}", args.retention_days)
    b = app_process(url, workdir / f"{rate}-b", f"longrun-b-{rate}", args.retention_days)
    a.start()
    for name in (QUICK, SLOW):
        response = a.post("/callbacks", {"name": name, "kind": "python", "target": "sleep", "max_attempts": 5})
        if response.status_code != 201:
            raise RuntimeError(f"POST /callbacks answered {response.status_code}: {response.text}")
    pids = lambda: [p.proc.pid for p in (a, b) if p.proc is not None and p.proc.poll() is None]  # noqa: E731
    collector, sampler = Collector(url), Sampler(url, pids, cluster.server.get_pid())
    batch = batch_size(args, rate)
    producer = Producer(a.url, QUICK, {"seconds": 0.001}, rate, args.threads, batch)
    slow = Producer(a.url, SLOW, {"seconds": 2.0}, 4.0, 1)
    sampler.start()
    collector.start()
    producer.start()
    phases: list[dict[str, Any]] = []
    holder: Optional[psycopg2.extensions.connection] = None
    kill: dict[str, Any] = {}
    began = now()
    try:
        for name in args.phases:
            start = now()
            end = start + minutes * 60
            phase: dict[str, Any] = {"name": name, "start": start}
            print(f"  {rate}/s {name}: {minutes:g} min", flush=True)
            if name == "idle":
                holder = connect(url)
                holder.autocommit = False
                with holder.cursor() as cur:
                    cur.execute("SELECT txid_current()")  # an xid: the server's horizon stays at it
            elif name == "recovery" and holder is not None:
                holder.rollback()
                holder.close()
                holder = None
            elif name == "kill":
                b.start()
                slow.start()
                kill_at = max(start + minutes * 60 / 3, now() + 10)
                time.sleep(max(0.0, kill_at - now()))
                assert b.proc is not None
                killed_at = now()
                os.kill(b.proc.pid, signal.SIGKILL)
                b.proc.wait(10)
                kill = {"killed_at": killed_at, "instance_dead_seconds": 10.0,
                        **track_rescue(url, f"longrun-b-{rate}", killed_at)}
                print(f"    kill: {json.dumps(kill, default=str)}", flush=True)
            time.sleep(max(0.0, end - now()))
            phase["end"] = now()
            phases.append(phase)
    finally:
        producer.stop()
        slow.stop()
        if holder is not None:
            holder.rollback()
            holder.close()
    produced_until = now()
    # Drain: everything accepted ends (or 60 s pass).
    probe = connect(url)
    drained = run.wait_until(lambda: _open(probe) == 0, 60, 0.25)
    probe.close()
    collector.stop()
    sampler.stop()
    errors = a.errors_logged() + b.errors_logged()
    a.stop()
    b.stop()
    return summarise(rate, phases, producer, slow, collector, sampler, kill, began, produced_until, drained,
                     errors)


def _open(conn: psycopg2.extensions.connection) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM events WHERE state IN ('scheduled', 'running')")
        return cur.fetchone()[0]


# -- figures ---------------------------------------------------------------------------------------------------

def _at(samples: list[dict[str, Any]], t: float) -> dict[str, Any]:
    """The last sample taken at or before t (the first one if none)."""
    best = samples[0]
    for sample in samples:
        if sample["t"] <= t:
            best = sample
    return best


def _table_delta(first: dict[str, Any], last: dict[str, Any], table: str) -> dict[str, Any]:
    a, b = first["tables"].get(table, {}), last["tables"].get(table, {})
    d = {k: (b.get(k) or 0) - (a.get(k) or 0) for k in ("ins", "upd", "hot", "del", "autovacuums")}
    return {
        "inserted": d["ins"], "updated": d["upd"], "hot_updated": d["hot"], "deleted": d["del"],
        "hot_share": round(d["hot"] / d["upd"], 3) if d["upd"] else None,
        "autovacuums": d["autovacuums"],
        "size_mb_end": round((b.get("heap", 0) + b.get("indexes", 0)) / 2**20, 2),
        "heap_mb_end": round(b.get("heap", 0) / 2**20, 2),
        "indexes_mb_end": round(b.get("indexes", 0) / 2**20, 2),
        "growth_mb": round(((b.get("heap", 0) + b.get("indexes", 0)) - (a.get("heap", 0) + a.get("indexes", 0)))
                           / 2**20, 2),
        "dead_end": b.get("dead"), "live_end": b.get("live"),
    }


def summarise(rate: int, phases: list[dict[str, Any]], producer: Producer, slow: Producer, collector: Collector,
              sampler: Sampler, kill: dict[str, Any], began: float, produced_until: float, drained: bool,
              errors: int) -> dict[str, Any]:
    rows = collector.rows
    samples = sampler.samples
    out_phases = []
    for phase in phases:
        start, end = phase["start"], phase["end"]
        seconds = end - start
        quick = [r for r in rows if r[3] == QUICK and start <= r[0] < end]
        pickup = [r[1] - r[0] for r in quick if r[1] is not None]
        first_attempt = [r[1] - r[0] for r in quick if r[1] is not None and r[4] == 1]
        finished = sum(1 for r in rows if start <= r[2] < end)
        accepted, failed = producer.between(start, end)
        s0, s1 = _at(samples, start), _at(samples, end)
        window = [s for s in samples if start <= s["t"] <= end]
        per_event = {}
        for table in TABLES:
            delta = _table_delta(s0, s1, table)
            delta["dead_max"] = max((s["tables"].get(table, {}).get("dead") or 0 for s in window), default=None)
            per_event[table] = delta
        ev = per_event["events"]
        out_phases.append({
            "phase": phase["name"], "seconds": round(seconds, 1),
            "accepted_per_s": round(accepted / seconds, 1), "producer_failed": failed,
            "finished_per_s": round(finished / seconds, 1),
            "events": len(quick), "first_attempt_only": len(first_attempt),
            "pickup_ms": {"p50": ms(pct(pickup, 50)), "p95": ms(pct(pickup, 95)), "p99": ms(pct(pickup, 99)),
                          "max": ms(max(pickup)) if pickup else None},
            "pickup_first_attempt_p99_ms": ms(pct(first_attempt, 99)),
            "backlog_max": max((s["backlog"] for s in window), default=None),
            "app_cpu_cores": round((s1["app_cpu_s"] - s0["app_cpu_s"]) / max(s1["t"] - s0["t"], 1e-9), 2)
            if s1 is not s0 else None,
            "pg_cpu_cores": round((s1["pg_cpu_s"] - s0["pg_cpu_s"]) / max(s1["t"] - s0["t"], 1e-9), 2)
            if s1 is not s0 and s1.get("pg_cpu_s") is not None else None,
            "loadavg_end": s1["loadavg"],
            "loadavg_mean": round(statistics.mean(s["loadavg"] for s in window), 2) if window else None,
            # Row versions made dead (updates + deletes) per event accepted in the phase, events table.
            "events_dead_versions_per_event": round((ev["updated"] + ev["deleted"]) / accepted, 2) if accepted else None,
            "tables": per_event,
        })
    series = time_series(rows, samples, producer, began, produced_until)
    return {"rate": rate, "batch": producer.batch, "phases": out_phases, "kill": kill, "drained": drained, "app_errors_logged": errors,
            "producer_errors": producer.errors, "producer_late_p99_ms": pct(producer.late_ms, 99),
            "slow_accepted": sum(slow.accepted.values()), "series": series,
            "killed_at_s": kill["killed_at"] - began if kill else None,
            "phase_bounds": [(p["name"], p["start"] - began, p["end"] - began) for p in phases]}


def time_series(rows: list[tuple[Any, ...]], samples: list[dict[str, Any]], producer: Producer, began: float,
                until: float) -> list[dict[str, Any]]:
    """Per BUCKET seconds from the start: accepted and finished per second, pickup p50/p99 of the 1 ms events
    created in it, and the last sample's sizes, dead rows and backlog."""
    buckets: dict[int, list[float]] = {}
    finished: dict[int, int] = {}
    for created, started, done, name, _attempts, _state in rows:
        if name == QUICK and started is not None:
            buckets.setdefault(int((created - began) // BUCKET), []).append(started - created)
        finished[int((done - began) // BUCKET)] = finished.get(int((done - began) // BUCKET), 0) + 1
    out = []
    for i in range(int((until - began) // BUCKET)):  # whole buckets only: the last, cut short, would read low
        t0, t1 = began + i * BUCKET, began + (i + 1) * BUCKET
        accepted, _ = producer.between(t0, t1)
        sample = _at(samples, t1)
        values = buckets.get(i, [])
        out.append({
            "t": round(i * BUCKET, 1), "accepted_per_s": accepted / BUCKET, "finished_per_s": finished.get(i, 0) / BUCKET,
            "pickup_p50_ms": ms(pct(values, 50)), "pickup_p99_ms": ms(pct(values, 99)),
            "backlog": sample["backlog"],
            **{f"{table}_mb": round((sample["tables"].get(table, {}).get("heap", 0)
                                     + sample["tables"].get(table, {}).get("indexes", 0)) / 2**20, 2)
               for table in TABLES},
            **{f"{table}_dead": sample["tables"].get(table, {}).get("dead") for table in TABLES},
        })
    return out


# -- report ----------------------------------------------------------------------------------------------------

def verdicts(result: dict[str, Any]) -> list[str]:
    lines = []
    rate = result["rate"]
    for phase in result["phases"]:
        p99 = phase["pickup_ms"]["p99"]
        if rate == 200 and phase["phase"] in TARGET_P99_MS and p99 is not None:
            target = TARGET_P99_MS[phase["phase"]]
            lines.append(f"{rate}/s {PHASE_TITLES[phase['phase']]}: pickup p99 {p99:.1f} ms, target {target:g} ms: "
                         f"{'met' if p99 <= target else 'MISSED'}")
        if rate >= 1000:
            keeps = phase["finished_per_s"] >= 0.97 * phase["accepted_per_s"] and (phase["backlog_max"] or 0) < rate
            lines.append(f"{rate}/s {PHASE_TITLES[phase['phase']]}: {phase['finished_per_s']:,.0f} finished/s for "
                         f"{phase['accepted_per_s']:,.0f} accepted/s, due backlog at most {phase['backlog_max']}: "
                         f"{'keeps up' if keeps else 'FALLS BEHIND'}")
    return lines


def phase_rows(result: dict[str, Any]) -> list[str]:
    out = []
    for p in result["phases"]:
        ev, hi = p["tables"]["events"], p["tables"]["event_history"]
        pk = p["pickup_ms"]
        out.append(
            f"| {PHASE_TITLES[p['phase']]} | {p['seconds']:.0f} s | {p['accepted_per_s']:,.0f} / {p['finished_per_s']:,.0f} | "
            f"{run.fmt(pk['p50'], '', 1)} / {run.fmt(pk['p95'], '', 1)} / {run.fmt(pk['p99'], '', 1)} / "
            f"{run.fmt(pk['max'], '', 0)} | {p['backlog_max']} | "
            f"{ev['size_mb_end']:.1f} ({ev['growth_mb']:+.1f}) | {hi['size_mb_end']:.1f} ({hi['growth_mb']:+.1f}) | "
            f"{ev['dead_max']:,} / {hi['dead_max']:,} | {run.fmt(p['events_dead_versions_per_event'])} | "
            f"{run.fmt(ev['hot_share'], '', 2)} | {ev['autovacuums']} / {hi['autovacuums']} | "
            f"{run.fmt(p['app_cpu_cores'], '', 2)} / {run.fmt(p['pg_cpu_cores'], '', 2)} | {run.fmt(p['loadavg_mean'])} |")
    return out


def write_results(path: Path, results: list[dict[str, Any]], info: dict[str, Any], chart: Optional[Path]) -> None:
    """Replace this script's block in RESULTS.md, or add it below the schedules block (else below run.py's notes
    marker); nothing else moves."""
    m = info["machine"]
    pg = info["pg_settings"]
    block = [
        LONGRUN_BEGIN,
        "## Long run (issue 14)",
        "",
        "Written by `bench/longrun.py` (what it runs and measures: its docstring); the next run rewrites this "
        "block only. Pickup is `started_at - created_at` of each 1 ms event (database timestamps), per phase.",
        "",
        f"- date: {info['date']}; commit: {info['commit']}; command: `{info['command']}`; wall time "
        f"{info['wall_s'] / 60:.0f} min",
        f"- machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']} RAM, shared with other work (load average in the "
        f"raw figures)",
        f"- PostgreSQL {pg.get('server_version')} (an embedded pgserver cluster of its own): autovacuum "
        f"{pg.get('autovacuum')}, naptime {pg.get('autovacuum_naptime')}, vacuum scale factor "
        f"{pg.get('autovacuum_vacuum_scale_factor')}, cost delay {pg.get('autovacuum_vacuum_cost_delay')}, "
        f"shared_buffers {pg.get('shared_buffers')}, synchronous_commit {pg.get('synchronous_commit')}",
        f"- Punctual: `python app.py` with its defaults but RETENTION_DAYS={info['retention_days']:g} "
        f"({info['retention_days'] * 1440:.1f} min), RETENTION_INTERVAL_SECONDS=10, the `sleep` test handler "
        f"(1 ms); producer: {info['threads']} threads, keep-alive, one `POST /events` per event",
        "",
    ]
    for result in results:
        kill = result["kill"]
        block += [
            f"### {result['rate']:,} events/s",
            "",
            ("One `POST /events` per event." if result["batch"] == 1 else
             f"`POST /events/batch` of {result['batch']} events, {result['rate'] // result['batch']} a second."),
            "",
            "| phase | length | accepted / finished per s | pickup p50 / p95 / p99 / max (ms) "
            "| due backlog max | events MB (growth) | history MB (growth) | dead rows max events / history "
            "| dead versions per event (events) | HOT share (events) | autovacuums events / history "
            "| CPU app / PostgreSQL (cores) | load average (mean) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            *phase_rows(result),
            "",
        ]
        if kill:
            restart = kill["restart_after_kill_s"]
            block.append(
                f"kill -9 of the second instance: it held {kill['held']} attempts ({kill['held_slow']} of them 2 s "
                f"ones); {kill['restarted']} started again, {run.fmt(restart['min'], ' s')} to "
                f"{run.fmt(restart['max'], ' s')} after the kill (median {run.fmt(restart['median'], ' s')}; "
                f"INSTANCE_DEAD_SECONDS {kill['instance_dead_seconds']:g})."
            )
            block.append("")
        block += [f"- {line}" for line in verdicts(result)]
        block.append(f"- drained at the end: {result['drained']}; app error-log lines: {result['app_errors_logged']}; "
                     f"producer errors: {result['producer_errors'] or 'none'}; producer send lateness p99 "
                     f"{run.fmt(result['producer_late_p99_ms'], ' ms')}")
        block.append("")
    if chart is not None:
        block += [f"![long run over time]({chart.name})", ""]
    block += ["Raw figures and the series: `bench/RESULTS.longrun.json`.", LONGRUN_END]
    text = path.read_text() if path.exists() else "# Punctual benchmark results\n"
    schedules_end = "<!-- schedules:end -->"
    if LONGRUN_BEGIN in text and LONGRUN_END in text:
        before, rest = text.split(LONGRUN_BEGIN, 1)
        text = before + "\n".join(block) + rest.split(LONGRUN_END, 1)[1]
    elif schedules_end in text:
        before, after = text.split(schedules_end, 1)
        text = before + schedules_end + "\n\n" + "\n".join(block) + "\n\n" + after.lstrip("\n")
    elif run.NOTES_MARKER in text:
        before, after = text.split(run.NOTES_MARKER, 1)
        text = before + run.NOTES_MARKER + "\n\n" + "\n".join(block) + "\n\n" + after.lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + run.NOTES_MARKER + "\n\n" + "\n".join(block) + "\n"
    path.write_text(text)


def draw(raw: Path, out: Path) -> Optional[Path]:
    """The PNG, drawn by bench/longrun_chart.py in bench/.venv-peers (matplotlib is no dependency of Punctual)."""
    try:
        import compare  # bench/compare.py: makes bench/.venv-peers as it does for its own chart

        compare.ensure_peers_venv()
        subprocess.run([str(compare.PEERS_PY), str(HERE / "longrun_chart.py"), str(raw), str(out)], check=True)
        return out
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"no chart: {exc}")
        return None


def print_summary(result: dict[str, Any]) -> None:
    print(f"\n{result['rate']} events/s")
    for p in result["phases"]:
        pk = p["pickup_ms"]
        ev, hi = p["tables"]["events"], p["tables"]["event_history"]
        print(f"  {p['phase']:<9} accepted {p['accepted_per_s']:>7.1f}/s finished {p['finished_per_s']:>7.1f}/s  "
              f"pickup p50 {pk['p50']} p95 {pk['p95']} p99 {pk['p99']} max {pk['max']} ms  "
              f"backlog {p['backlog_max']}  events {ev['size_mb_end']} MB ({ev['growth_mb']:+}) "
              f"dead {ev['dead_max']}  history {hi['size_mb_end']} MB ({hi['growth_mb']:+}) dead {hi['dead_max']}  "
              f"dead/event {p['events_dead_versions_per_event']} HOT {ev['hot_share']}  cpu app {p['app_cpu_cores']} "
              f"pg {p['pg_cpu_cores']} load {p['loadavg_mean']}")
    if result["kill"]:
        print(f"  kill: {json.dumps({k: v for k, v in result['kill'].items() if k != 'killed_at'}, default=str)}")
    for line in verdicts(result):
        print(f"  {line}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes-per-phase", type=float, default=3.0, help="length of each phase (default 3)")
    parser.add_argument("--rates", default="200,1000", help="events per second, comma-separated (default 200,1000)")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"subset and order of {', '.join(PHASES)}")
    parser.add_argument("--retention-days", type=float, default=0.001, help="RETENTION_DAYS of the app (0.001: 86 s)")
    parser.add_argument("--threads", type=int, default=8, help="producer threads (default 8)")
    parser.add_argument("--batch", type=int, default=0,
                        help="events per request (default: 1 up to 200/s, rate/100 above, through /events/batch)")
    parser.add_argument("--no-write", action="store_true", help="print only; RESULTS.md, the JSON and PNG untouched")
    parser.add_argument("--results", type=Path, default=None, help="report file (default bench/RESULTS.md)")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    parser.add_argument("--app-root", type=Path, default=None,
                        help="run `python app.py` from this checkout instead (the same harness on another commit: a "
                             "before/after comparison); implies --no-write")
    args = parser.parse_args(argv)
    args.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = [p for p in args.phases if p not in PHASES]
    if unknown:
        parser.error(f"unknown phase(s) {unknown}; choose from {', '.join(PHASES)}")
    rates = [int(r) for r in args.rates.split(",") if r.strip()]
    if args.app_root:
        run.ROOT = args.app_root.resolve()  # run.App starts app.py there; git_commit() reads its HEAD
        args.no_write = True
    if (run.ROOT / ".env").exists():
        print("note: a .env file exists in the repository; Punctual reads it, so its values replace the defaults")

    began = time.monotonic()
    cluster = Cluster()
    results: list[dict[str, Any]] = []
    try:
        pg_settings = cluster.settings()
        print(f"PostgreSQL {pg_settings['server_version']} at {cluster.folder}: autovacuum {pg_settings['autovacuum']}",
              flush=True)
        if pg_settings.get("autovacuum") != "on":
            print("warning: autovacuum is off on this cluster; the run measures something else")
        with tempfile.TemporaryDirectory(prefix="punctual-longrun-") as workdir:
            for rate in rates:
                result = run_rate(cluster, rate, args, Path(workdir))
                print_summary(result)
                results.append(result)
    finally:
        cluster.close()
    info = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "commit": run.git_commit(),
            "machine": run.machine(), "pg_settings": pg_settings,
            "command": " ".join(["python bench/longrun.py", *(argv if argv is not None else sys.argv[1:])]),
            "wall_s": time.monotonic() - began, "retention_days": args.retention_days, "threads": args.threads,
            "minutes_per_phase": args.minutes_per_phase}
    raw = {"info": info, "results": results}
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1, default=str))
    if args.no_write:
        return 0
    RAW.write_text(json.dumps(raw, indent=1, default=str))
    chart = draw(RAW, CHART)
    target = args.results or RESULTS
    write_results(target, results, info, chart)
    print(f"wrote {target}, {RAW.name}" + (f", {CHART.name}" if chart else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
