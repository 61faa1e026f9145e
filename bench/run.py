#!/usr/bin/env python3
"""Benchmark of Punctual: throughput, punctuality, idle latency, recovery and memory of a real `python app.py`.

Why a separate process and a real server: the numbers must be the ones a user gets, so Punctual runs as
`python app.py` with its defaults, against a PostgreSQL server, and every timing is read back from the
events table (started_at, finished_at, created_at are written by the database's clock). Each workload gets
a fresh database, so one cannot warm or slow down the next.

    .venv/bin/python bench/run.py                 # W1..W5 (about 3 minutes here)
    .venv/bin/python bench/run.py --only W1,W3    # a subset
    .venv/bin/python bench/run.py --quick         # smaller sizes, for a smoke run (RESULTS.md not written)

The script never asserts: it reports each figure next to its target and writes bench/RESULTS.md.
Hand-written notes below the NOTES_MARKER line of an existing RESULTS.md are kept across runs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import psycopg2
import psycopg2.extensions
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # punctual.client, the way an application calls Punctual (W3)
from punctual.client import Client, PunctualError  # noqa: E402 - after the path it is found on

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
NOTES_MARKER = "<!-- notes: everything below this line is kept when run.py rewrites this file -->"
COMPARE_BEGIN = "<!-- compare:begin (written by bench/compare.py) -->"  # the same markers as bench/report.py
COMPARE_END = "<!-- compare:end -->"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
CALLBACK = "bench-noop"
WORKLOADS = ("W1", "W2", "W3", "W4", "W5")


# -- small helpers ---------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> Optional[float]:
    """Nearest-rank percentile (q in 0..100): no interpolation, so p100 is the maximum actually seen."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n*q/100), at least 1
    return ordered[int(rank) - 1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll `predicate` until true or the deadline; returns whether it became true (never raises on timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


def fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    return f"{value}{unit}"


# -- PostgreSQL -------------------------------------------------------------------------------

class Server:
    """The PostgreSQL server all workloads run on: BENCH_DATABASE_URL, or an embedded pgserver as a fallback."""

    def __init__(self, url: str, embedded: Any = None) -> None:
        self.url = url
        self.embedded = embedded  # keeps the pgserver object (and so the server) alive

    @classmethod
    def find(cls, url: str) -> "Server":
        try:
            psycopg2.connect(url, connect_timeout=3).close()
            return cls(url)
        except psycopg2.OperationalError as exc:
            print(f"no PostgreSQL answers at {url} ({str(exc).strip().splitlines()[0]}); starting an embedded pgserver")
        import pgserver

        folder = tempfile.mkdtemp(prefix="punctual-bench-pg-")
        server = pgserver.get_server(folder, cleanup_mode="delete")
        return cls(server.get_uri(), server)

    def _admin(self) -> psycopg2.extensions.connection:
        conn = psycopg2.connect(self.url)
        conn.autocommit = True
        return conn

    def version(self) -> str:
        with self._admin() as conn, conn.cursor() as cur:
            cur.execute("SHOW server_version")
            return cur.fetchone()[0]

    def settings(self) -> dict[str, str]:
        names = ("shared_buffers", "synchronous_commit", "fsync", "max_connections", "work_mem")
        with self._admin() as conn, conn.cursor() as cur:
            cur.execute("SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)",
                        (list(names),))
            return dict(cur.fetchall())

    def activity(self) -> dict[str, Any]:
        """1-minute load average and the sessions of other programs on this server (not the benchmark's)."""
        with self._admin() as conn, conn.cursor() as cur:
            cur.execute("""SELECT count(*) FROM pg_stat_activity
                           WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
                             AND datname NOT LIKE 'punctual\\_bench\\_%'""")
            others = cur.fetchone()[0]
        return {"loadavg_1m": float(Path("/proc/loadavg").read_text().split()[0]), "other_sessions": others}

    @contextmanager
    def database(self, label: str) -> Iterator[str]:
        """A fresh, empty database for one workload, dropped afterwards."""
        name = f"punctual_bench_{label.lower()}_{os.getpid()}"
        admin = self._admin()
        try:
            with admin.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                cur.execute(f"CREATE DATABASE {name}")
            yield psycopg2.extensions.make_dsn(self.url, dbname=name)
        finally:
            with admin.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            admin.close()


class Probe:
    """The benchmark's own autocommit connection for polling counts and reading timings back."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg2.connect(url, options="-c timezone=UTC")
        self.conn.autocommit = True

    def one(self, sql: str, params: Any = None) -> Any:
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchone()

    def column(self, sql: str, params: Any = None) -> list[Any]:
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return [row[0] for row in cur.fetchall()]

    def rows(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def execute(self, sql: str, params: Any = None) -> None:
        with self.conn.cursor() as cur:
            cur.execute(sql, params)

    def count(self, state: str) -> int:
        return self.one("SELECT count(*) FROM events WHERE state = %s", (state,))[0]

    def done(self) -> int:
        return self.one("SELECT count(*) FROM events WHERE state IN ('finished', 'failed')")[0]

    def close(self) -> None:
        self.conn.close()


def apply_schema(url: str) -> None:
    """database.sql, as the app applies it at start: for workloads that fill the table before the app runs."""
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute((ROOT / "database.sql").read_text())
    conn.close()


class CpuMeter:
    """CPU seconds used by the app process and by PostgreSQL between two points: who is busy on this machine.

    PostgreSQL's share is the live server processes plus what the postmaster has reaped from exited backends
    (cutime/cstime), so short-lived connections are counted too. Only possible with a local server; otherwise None.
    """

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, app_pid: int) -> None:
        self.app_pid = app_pid
        self.start = self._sample()

    @staticmethod
    def _stat(pid: str) -> Optional[tuple[str, int, float, float]]:
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        comm = raw[raw.index("(") + 1:raw.rindex(")")]
        rest = raw[raw.rindex(")") + 2:].split()
        ppid = int(rest[1])
        own = (int(rest[11]) + int(rest[12])) / CpuMeter.TICK
        children = (int(rest[13]) + int(rest[14])) / CpuMeter.TICK
        return comm, ppid, own, children

    def _sample(self) -> tuple[Optional[float], Optional[float]]:
        app = self._stat(str(self.app_pid))
        procs = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                stat = self._stat(entry.name)
                if stat is not None and stat[0] == "postgres":
                    procs[int(entry.name)] = stat
        pg = None
        if procs:
            roots = [pid for pid, stat in procs.items() if stat[1] not in procs]
            pg = sum(stat[2] for stat in procs.values()) + sum(procs[pid][3] for pid in roots)
        return (app[2] if app else None), pg

    def stop(self) -> dict[str, Optional[float]]:
        end = self._sample()
        diff = [e - s if e is not None and s is not None else None for s, e in zip(self.start, end)]
        return {"app_cpu_s": None if diff[0] is None else round(diff[0], 2),
                "postgres_cpu_s": None if diff[1] is None else round(diff[1], 2)}


# -- the app under test -----------------------------------------------------------------------

class App:
    """One `python app.py` with Punctual's defaults, except DATABASE_URL, HOST, PORT and LOG_DIR."""

    def __init__(self, db_url: str, folder: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        # A minimal environment: no stray Punctual setting from the caller's shell changes the defaults.
        keep = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
        self.env = {k: os.environ[k] for k in keep if k in os.environ}
        self.env.update(DATABASE_URL=db_url, HOST="127.0.0.1", PORT=str(self.port), LOG_DIR=str(folder / "logs"))
        self.proc: Optional[subprocess.Popen] = None
        self.session = requests.Session()
        self.started_at = 0.0

    def launch(self) -> float:
        """Start the process without waiting; returns the wall-clock time of the start."""
        self.output = open(self.folder / "output.log", "ab")
        self.started_at = time.time()
        self.proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=self.env,
                                     stdout=self.output, stderr=subprocess.STDOUT)
        return self.started_at

    def wait_healthy(self, timeout: float = 60.0) -> bool:
        return wait_until(self.healthy, timeout, 0.05)

    def start(self) -> "App":
        self.launch()
        if not self.wait_healthy():
            raise RuntimeError(f"app did not become healthy:\n{self.log_tail()}")
        return self

    def healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"app exited with {self.proc.returncode}:\n{self.log_tail()}")
        try:
            return self.session.get(self.url + "/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def health(self) -> dict[str, Any]:
        return self.session.get(self.url + "/health", timeout=5).json()

    def rss_mb(self) -> float:
        """Resident set size of the app process (VmRSS), in MiB."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS line")

    def post(self, path: str, body: Any, raw: Optional[bytes] = None, minimal: bool = False) -> requests.Response:
        data = raw if raw is not None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if minimal:  # ids only, as punctual.client asks for batches: the caller needs nothing more
            headers["Prefer"] = "return=minimal"
        return self.session.post(self.url + path, data=data, headers=headers, timeout=60)

    def create_noop_callback(self) -> None:
        response = self.post("/callbacks", {"name": CALLBACK, "kind": "python", "target": "noop"})
        if response.status_code != 201:
            raise RuntimeError(f"POST /callbacks answered {response.status_code}: {response.text}")

    def log_tail(self, chars: int = 3000) -> str:
        path = self.folder / "output.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def errors_logged(self) -> int:
        path = self.folder / "logs" / "errors.log"
        return sum(1 for _ in path.open()) if path.exists() else 0

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@contextmanager
def running_app(db_url: str, folder: Path, start: bool = True) -> Iterator[App]:
    app = App(db_url, folder)
    try:
        if start:
            app.start()
        yield app
    finally:
        app.stop()


# -- workloads --------------------------------------------------------------------------------

@dataclass
class Sizes:
    w1_events: int = 20_000
    w1_batch: int = 1_000
    w2_events: int = 1_000
    w2_from: float = 5.0
    w2_to: float = 15.0
    w3_interval: float = 0.020
    w3_seconds: float = 10.0
    w4_events: int = 100_000
    w5_future: int = 1_000_000
    w5_horizon: int = 10_000
    w5_settle: float = 40.0  # > the horizon refill period (HORIZON_SECONDS / 10 = 30 s by default)

    @classmethod
    def quick(cls) -> "Sizes":
        return cls(w1_events=2_000, w1_batch=500, w2_events=200, w2_from=2.0, w2_to=5.0, w3_seconds=3.0,
                   w4_events=10_000, w5_future=100_000, w5_horizon=1_000, w5_settle=5.0)


class Context:
    def __init__(self, server: Server, sizes: Sizes, workdir: Path, profile_dir: Optional[Path] = None,
                 py_spy: str = "py-spy") -> None:
        self.server = server
        self.sizes = sizes
        self.workdir = workdir
        self.profile_dir = profile_dir
        self.py_spy = py_spy


class Profiler:
    """py-spy attached to the app for the measured part of a workload (--profile): collapsed stacks, all threads.

    py-spy is not a dependency of Punctual; install it anywhere (e.g. a venv under /tmp) and pass --py-spy.
    """

    def __init__(self, ctx: Context, app: App, name: str) -> None:
        self.proc: Optional[subprocess.Popen] = None
        if ctx.profile_dir is None or app.proc is None:
            return
        ctx.profile_dir.mkdir(parents=True, exist_ok=True)
        out = ctx.profile_dir / f"{name}.collapsed.txt"
        self.proc = subprocess.Popen([ctx.py_spy, "record", "--pid", str(app.proc.pid), "--rate", "100", "--nonblocking",
                                      "--format", "raw", "--threads", "--output", str(out)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # let it attach before the clock starts

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def drain_summary(probe: Probe) -> tuple[Any, Any, int, int]:
    """After a drain: last finished_at and first started_at (epoch), failed and finished counts; closes the probe."""
    last_finished, first_started, failed = probe.one(
        "SELECT extract(epoch FROM max(finished_at)), extract(epoch FROM min(started_at)),"
        " count(*) FILTER (WHERE state = 'failed') FROM events")
    finished = probe.count("finished")
    probe.close()
    return last_finished, first_started, failed, finished


def wait_all_done(probe: Probe, total: int, timeout: float) -> tuple[bool, float]:
    """Poll count(*) until `total` events are terminal; returns (all done, wall time when seen)."""
    ok = wait_until(lambda: probe.done() >= total, timeout, 0.02)
    return ok, time.time()


def w1_throughput(ctx: Context) -> dict[str, Any]:
    """20,000 due no-op events created through POST /events/batch (answered with ids: `Prefer: return=minimal`, as
    punctual.client asks); time from the first batch to all finished."""
    n, batch = ctx.sizes.w1_events, ctx.sizes.w1_batch
    with ctx.server.database("w1") as url, running_app(url, ctx.workdir / "w1") as app:
        app.create_noop_callback()
        probe = Probe(url)
        profiler = Profiler(ctx, app, "W1")
        cpu = CpuMeter(app.proc.pid)
        # Bodies are serialised before the clock starts: the client's JSON work is not Punctual's.
        bodies = []
        for start in range(0, n, batch):
            size = min(batch, n - start)
            bodies.append(json.dumps({"events": [{"callback": CALLBACK}] * size}).encode())
        t0 = time.time()
        statuses = [app.post("/events/batch", None, raw=body, minimal=True).status_code for body in bodies]
        t_created = time.time()
        ok, t_seen = wait_all_done(probe, n, timeout=max(120.0, n / 100))
        cpu_used = cpu.stop()
        profiler.stop()
        last_finished, first_started, failed, finished = drain_summary(probe)
        end = float(last_finished) if last_finished is not None else t_seen
        total = end - t0
        return {
            "events": n, "batch": batch, "http_errors": sum(1 for s in statuses if s != 201),
            "finished": finished, "failed": failed, "complete": ok,
            "create_s": t_created - t0, "total_s": total,
            "rate": finished / total if total > 0 else None,
            "create_rate": n / (t_created - t0),
            "drain_after_create_s": end - t_created,
            "first_start_after_t0_s": float(first_started) - t0 if first_started is not None else None,
            **cpu_used, "wall_s": t_seen - t0,
            "app_errors_logged": app.errors_logged(),
        }


def w2_lateness(ctx: Context) -> dict[str, Any]:
    """1,000 events spread evenly over now+5 s .. now+15 s; lateness = started_at - scheduled_for."""
    n, lo, hi = ctx.sizes.w2_events, ctx.sizes.w2_from, ctx.sizes.w2_to
    with ctx.server.database("w2") as url, running_app(url, ctx.workdir / "w2") as app:
        app.create_noop_callback()
        probe = Probe(url)
        profiler = Profiler(ctx, app, "W2")
        now = time.time()
        events = [{"callback": CALLBACK, "scheduled_for": iso(now + lo + (hi - lo) * i / max(n - 1, 1))}
                  for i in range(n)]
        response = app.post("/events/batch", {"events": events})
        created_after = time.time() - now
        ok, _ = wait_all_done(probe, n, timeout=hi + 60)
        profiler.stop()
        lateness = [float(v) for v in probe.column(
            "SELECT extract(epoch FROM started_at - scheduled_for) * 1000 FROM events WHERE started_at IS NOT NULL")]
        early_history = probe.one(
            """SELECT count(*) FROM event_history h JOIN events e ON e.id = h.event_id
               WHERE h.started_at < e.scheduled_for""")[0]
        probe.close()
        return {
            "events": n, "window_s": [lo, hi], "http_status": response.status_code,
            "batch_created_in_s": created_after,
            "complete": ok, "started": len(lateness),
            "p50_ms": percentile(lateness, 50), "p95_ms": percentile(lateness, 95),
            "p99_ms": percentile(lateness, 99), "max_ms": max(lateness) if lateness else None,
            "early": sum(1 for v in lateness if v < 0), "early_by_history": early_history,
            "app_errors_logged": app.errors_logged(),
        }


def w3_idle_latency(ctx: Context) -> dict[str, Any]:
    """One due event every 20 ms for 10 s via POST /events; latency = the handler's start - the client's clock just
    before the create call.

    Issue 15 measures W3 for every system from the client's clock just before the create call to the handler's
    start (the peers in bench/peers.py the same way), so the HTTP request and the insert's commit count for
    Punctual as the enqueue call counts for the peers; the call is punctual.client's `create`, as each peer's is
    its own client library's. started_at is the worker's wall clock, on this machine.
    Also kept: from the insert's 'scheduled' history row (written inside the insert, just before its commit:
    insert_p50_ms/insert_p99_ms, issue 5's "committed insert to start") and from created_at (the insert
    statement's start).
    """
    interval, seconds = ctx.sizes.w3_interval, ctx.sizes.w3_seconds
    count = int(round(seconds / interval))
    with ctx.server.database("w3") as url, running_app(url, ctx.workdir / "w3") as app:
        app.create_noop_callback()
        probe = Probe(url)
        profiler = Profiler(ctx, app, "W3")
        cpu = CpuMeter(app.proc.pid)
        request_ms: list[float] = []
        statuses: list[int] = []
        sent_at: dict[int, float] = {}  # event id -> the client's wall clock just before its create call
        local = threading.local()

        def send() -> None:
            # Through Punctual's own client, as an application would (punctual.client); one per sender thread, as
            # each application thread would hold its own. Not retried: a failure is counted, not hidden.
            client = getattr(local, "client", None) or Client(app.url, retries=0, timeout=60)
            local.client = client
            wall, sent = time.time(), time.monotonic()
            try:
                event = client.create(CALLBACK)
                status = 201
            except PunctualError as exc:
                event, status = None, exc.status
            except ConnectionError:
                event, status = None, 0
            request_ms.append((time.monotonic() - sent) * 1000)
            statuses.append(status)
            if event is not None:
                sent_at[event["id"]] = wall

        # Each request leaves at its own tick, whether or not the previous one has been answered, so the
        # pace is one per interval even when a request takes longer than the interval.
        behind = 0
        with ThreadPoolExecutor(max_workers=4) as senders:
            t0 = time.monotonic()
            for i in range(count):
                pause = t0 + i * interval - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                elif pause < -interval:
                    behind += 1
                senders.submit(send)
        ok, _ = wait_all_done(probe, count, timeout=60)
        cpu_used = cpu.stop()
        profiler.stop()
        started = {int(i): float(at) for i, at in probe.rows(
            "SELECT id, extract(epoch FROM started_at) FROM events WHERE started_at IS NOT NULL")}
        latency = [(started[i] - wall) * 1000 for i, wall in sent_at.items() if i in started]
        from_insert = [float(v) for v in probe.column(
            """SELECT extract(epoch FROM e.started_at - h.at) * 1000 FROM events e
               JOIN event_history h ON h.event_id = e.id AND h.state = 'scheduled' AND h.attempt = 0
               WHERE e.started_at IS NOT NULL""")]
        from_create = [float(v) for v in probe.column(
            "SELECT extract(epoch FROM started_at - created_at) * 1000 FROM events WHERE started_at IS NOT NULL")]
        probe.close()
        return {
            "events": count, "http_errors": sum(1 for s in statuses if s != 201), "ticks_missed": behind,
            "complete": ok, "started": len(latency),
            "p50_ms": percentile(latency, 50), "p99_ms": percentile(latency, 99),
            "max_ms": max(latency) if latency else None,
            "insert_p50_ms": percentile(from_insert, 50), "insert_p99_ms": percentile(from_insert, 99),
            "create_p50_ms": percentile(from_create, 50), "create_p99_ms": percentile(from_create, 99),
            "http_p50_ms": percentile(request_ms, 50), "http_p99_ms": percentile(request_ms, 99),
            **cpu_used, "wall_s": time.monotonic() - t0,
            "app_errors_logged": app.errors_logged(),
        }


def insert_with_sql(probe: Probe, n: int, scheduled_for_sql: str) -> float:
    """n events of the no-op callback in one INSERT ... SELECT generate_series; returns seconds taken."""
    started = time.monotonic()
    probe.execute(
        f"""INSERT INTO events (callback_id, scheduled_for, source)
            SELECT (SELECT id FROM callbacks WHERE name = %s), {scheduled_for_sql}, 'bench'
            FROM generate_series(1, %s) AS g""",
        (CALLBACK, n))
    return time.monotonic() - started


def w4_recovery(ctx: Context) -> dict[str, Any]:
    """100,000 due events already in the table when the app starts; time from process start until all finished."""
    n = ctx.sizes.w4_events
    with ctx.server.database("w4") as url, running_app(url, ctx.workdir / "w4", start=False) as app:
        apply_schema(url)
        probe = Probe(url)
        probe.execute("INSERT INTO callbacks (name, kind, target) VALUES (%s, 'python', 'noop')", (CALLBACK,))
        insert_s = insert_with_sql(probe, n, "now()")
        t0 = app.launch()
        cpu = CpuMeter(app.proc.pid)
        healthy = app.wait_healthy(timeout=120)
        t_healthy = time.time()
        profiler = Profiler(ctx, app, "W4")
        ok, t_seen = wait_all_done(probe, n, timeout=max(300.0, n / 100))
        cpu_used = cpu.stop()
        profiler.stop()
        last_finished, first_started, failed, finished = drain_summary(probe)
        end = float(last_finished) if last_finished is not None else t_seen
        first = float(first_started) if first_started is not None else None
        return {
            "events": n, "sql_insert_s": insert_s, "healthy": healthy, "healthy_after_s": t_healthy - t0,
            "complete": ok, "finished": finished, "failed": failed,
            "total_s": end - t0, "rate": finished / (end - t0),
            "first_start_after_s": first - t0 if first else None,
            "rate_from_first_start": finished / (end - first) if first and end > first else None,
            **cpu_used, "wall_s": t_seen - t0,
            "app_errors_logged": app.errors_logged(),
        }


def _rss_window(app: App, seconds: float) -> tuple[float, float]:
    """Sample RSS every 0.25 s for `seconds`: (peak, last)."""
    peak = last = app.rss_mb()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.25)
        last = app.rss_mb()
        peak = max(peak, last)
    return peak, last


def _settle_idle(app: App) -> float:
    """Idle RSS after the start-up catch-up and a first sweep: the baseline the extra MB is counted from."""
    time.sleep(5.0)
    return app.rss_mb()


def w5_memory(ctx: Context) -> dict[str, Any]:
    """Extra RSS with 1,000,000 events a month ahead (never armed) and with 10,000 inside the horizon (armed)."""
    sizes = ctx.sizes
    out: dict[str, Any] = {"future_events": sizes.w5_future, "horizon_events": sizes.w5_horizon}
    with ctx.server.database("w5a") as url, running_app(url, ctx.workdir / "w5a") as app:
        app.create_noop_callback()
        probe = Probe(url)
        idle = _settle_idle(app)
        insert_s = insert_with_sql(probe, sizes.w5_future, "now() + interval '30 days' + g * interval '1 ms'")
        # The listener receives one NOTIFY per row: wait until it consumed them all, then past a horizon refill.
        t_insert = time.monotonic()
        drained = wait_until(lambda: probe.one("SELECT pg_notification_queue_usage()")[0] == 0, 600, 0.25)
        drain_s = time.monotonic() - t_insert
        peak, last = _rss_window(app, max(sizes.w5_settle - (time.monotonic() - t_insert), 5.0))
        armed = app.health()["checks"]["scheduler"]["armed"]
        probe.close()
        out.update(future_idle_mb=idle, future_insert_s=insert_s, future_notify_drained=drained,
                   future_notify_drain_s=drain_s, future_peak_mb=peak, future_after_mb=last,
                   future_extra_mb=last - idle, future_peak_extra_mb=peak - idle, future_armed=armed,
                   future_app_errors_logged=app.errors_logged())
    with ctx.server.database("w5b") as url, running_app(url, ctx.workdir / "w5b") as app:
        app.create_noop_callback()
        probe = Probe(url)
        idle = _settle_idle(app)
        n = sizes.w5_horizon
        # Due in 100..200 s: inside the 300 s horizon, so every one is armed in APScheduler.
        insert_with_sql(probe, n, f"now() + interval '100 s' + g * interval '{100_000 // n} ms'")
        t_insert = time.monotonic()
        armed_all = wait_until(lambda: app.health()["checks"]["scheduler"]["armed"] >= n, 60, 0.25)
        armed_s = time.monotonic() - t_insert
        peak, last = _rss_window(app, 3.0)
        armed = app.health()["checks"]["scheduler"]["armed"]
        probe.close()
        out.update(horizon_idle_mb=idle, horizon_armed=armed, horizon_armed_all=armed_all,
                   horizon_armed_in_s=armed_s, horizon_after_mb=last, horizon_extra_mb=last - idle,
                   horizon_peak_extra_mb=peak - idle, horizon_app_errors_logged=app.errors_logged())
    return out


RUNNERS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "W1": w1_throughput, "W2": w2_lateness, "W3": w3_idle_latency, "W4": w4_recovery, "W5": w5_memory,
}


# -- report -----------------------------------------------------------------------------------

def verdict(ok: Optional[bool]) -> str:
    return "n/a" if ok is None else ("met" if ok else "MISSED")


def cpu_text(r: dict[str, Any]) -> str:
    """CPU seconds as cores busy on average over the workload's wall time."""
    wall = r.get("wall_s") or 0
    parts = []
    for key, label in (("app_cpu_s", "app"), ("postgres_cpu_s", "PostgreSQL")):
        value = r.get(key)
        if value is not None and wall > 0:
            parts.append(f"{label} {value:.1f} s ({value / wall:.2f} cores)")
    return ", ".join(parts) or "n/a"


def summary_rows(results: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, str, str]]:
    """(workload, figure, value, issue-2 target, verdict) for the table."""
    rows = []
    if "W1" in results:
        r = results["W1"]
        if "error" in r:
            rows.append(("W1 throughput", "error", r["error"], ">= 3,000 events/s", "n/a"))
        else:
            rows.append(("W1 throughput", f"{r['events']:,} events, batches of {r['batch']:,}",
                         f"{fmt(r['rate'], ' events/s', 0)} ({fmt(r['total_s'], ' s', 2)})",
                         ">= 3,000 events/s", verdict(r["complete"] and r["rate"] >= 3000)))
            rows.append(("", "creation alone (HTTP batches)",
                         f"{fmt(r['create_rate'], ' events/s', 0)} ({fmt(r['create_s'], ' s', 2)})", "", ""))
            rows.append(("", "CPU used meanwhile", cpu_text(r), "", ""))
    if "W2" in results:
        r = results["W2"]
        if "error" in r:
            rows.append(("W2 lateness", "error", r["error"], "p99 < 50 ms, none early", "n/a"))
        else:
            rows.append(("W2 lateness", f"{r['events']:,} events over +{r['window_s'][0]:g}..+{r['window_s'][1]:g} s",
                         f"p50 {fmt(r['p50_ms'], ' ms')}, p95 {fmt(r['p95_ms'], ' ms')}, "
                         f"p99 {fmt(r['p99_ms'], ' ms')}, max {fmt(r['max_ms'], ' ms')}",
                         "p99 < 50 ms", verdict(r["complete"] and r["p99_ms"] is not None and r["p99_ms"] < 50)))
            rows.append(("", "started early", f"{r['early']} (history: {r['early_by_history']})", "0",
                         verdict(r["early"] == 0 and r["early_by_history"] == 0)))
    if "W3" in results:
        r = results["W3"]
        if "error" in r:
            rows.append(("W3 idle latency", "error", r["error"], "p99 < 50 ms", "n/a"))
        else:
            rows.append(("W3 idle latency", f"{r['events']} events, one per 20 ms: insert to start",
                         f"p50 {fmt(r['p50_ms'], ' ms')}, p99 {fmt(r['p99_ms'], ' ms')}, max {fmt(r['max_ms'], ' ms')}",
                         "p99 < 50 ms", verdict(r["complete"] and r["p99_ms"] is not None and r["p99_ms"] < 50)))
            rows.append(("", "from the insert statement's start",
                         f"p50 {fmt(r.get('create_p50_ms'), ' ms')}, p99 {fmt(r.get('create_p99_ms'), ' ms')}", "", ""))
            rows.append(("", "POST /events round trip (client)",
                         f"p50 {fmt(r['http_p50_ms'], ' ms')}, p99 {fmt(r['http_p99_ms'], ' ms')}", "", ""))
            rows.append(("", "CPU used meanwhile", cpu_text(r), "", ""))
    if "W4" in results:
        r = results["W4"]
        if "error" in r:
            rows.append(("W4 recovery", "error", r["error"], "(issue 5: >= W1 rate)", "n/a"))
        else:
            rows.append(("W4 recovery", f"{r['events']:,} due events before start",
                         f"{fmt(r['rate'], ' events/s', 0)} ({fmt(r['total_s'], ' s', 1)} from process start)",
                         "(issue 5: >= W1 rate)", "n/a"))
            rows.append(("", "rate from the first start", fmt(r["rate_from_first_start"], " events/s", 0), "", ""))
            rows.append(("", "CPU used meanwhile", cpu_text(r), "", ""))
    if "W5" in results:
        r = results["W5"]
        if "error" in r:
            rows.append(("W5 memory", "error", r["error"], "< 50 MB for 1M future", "n/a"))
        else:
            rows.append(("W5 memory", f"{r['future_events']:,} events a month ahead",
                         f"+{fmt(r['future_extra_mb'], ' MB')} (peak +{fmt(r['future_peak_extra_mb'], ' MB')}, "
                         f"idle {fmt(r['future_idle_mb'], ' MB')})",
                         "< 50 MB", verdict(r["future_extra_mb"] < 50)))
            rows.append(("", f"{r['horizon_events']:,} events inside the horizon",
                         f"+{fmt(r['horizon_extra_mb'], ' MB')} ({r['horizon_armed']:,} armed)", "", ""))
    return rows


def print_table(rows: list[tuple[str, ...]]) -> None:
    header = ("workload", "what", "result", "target (issue 2)", "verdict")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    line = "  ".join("{:<%d}" % w for w in widths)
    print()
    print(line.format(*header))
    print(line.format(*("-" * w for w in widths)))
    for row in rows:
        print(line.format(*row))
    print()


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {"nproc": str(os.cpu_count()), "cpu": cpu, "memory": mem, "kernel": platform.release(),
            "python": platform.python_version()}


def punctual_defaults() -> dict[str, Any]:
    """The defaults the app runs with, read from config.Settings so this report cannot drift from the code."""
    sys.path.insert(0, str(ROOT))
    from config import Settings  # noqa: E402 - the app's own settings class

    wanted = ("worker_threads", "claim_batch", "horizon_seconds", "sweep_seconds", "listen_timeout_seconds",
              "http_threads", "db_pool_size", "lease_grace_seconds")
    defaults = {f.name: f.default for f in fields(Settings)}
    return {name.upper(): defaults[name] for name in wanted}


def write_block(path: Path, block: list[str], begin: str, end: str, below: tuple[str, ...] = ()) -> None:
    """Put a script's own section (`block`, from its `begin` marker to its `end` marker) into RESULTS.md: in place
    of its previous run, else just below the first of `below` found (markers of other sections), else below the
    notes marker; every other part of the file is kept as it is."""
    text = path.read_text() if path.exists() else "# Punctual benchmark results\n"
    body = "\n".join(block)
    if begin in text and end in text:
        before, rest = text.split(begin, 1)
        text = before + body + rest.split(end, 1)[1]
    else:
        for marker in (*below, NOTES_MARKER):
            if marker in text:
                before, after = text.split(marker, 1)
                text = before + marker + "\n\n" + body + "\n\n" + after.lstrip("\n")
                break
        else:
            text = text.rstrip("\n") + "\n\n" + NOTES_MARKER + "\n\n" + body + "\n"
    path.write_text(text)


def git_commit() -> str:
    """The commit measured, and whether tracked files differ from it (the numbers are then of the working tree)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head} + uncommitted changes" if dirty else head


def write_results(path: Path, results: dict[str, dict[str, Any]], info: dict[str, Any]) -> None:
    notes = ""
    compare_block = ""
    if path.exists():
        text = path.read_text()
        if NOTES_MARKER in text:
            notes = text.split(NOTES_MARKER, 1)[1].lstrip("\n")
        # bench/compare.py's side-by-side section lives above this script's table; keep it as it is.
        if COMPARE_BEGIN in text and COMPARE_END in text and COMPARE_BEGIN not in notes:
            compare_block = COMPARE_BEGIN + text.split(COMPARE_BEGIN, 1)[1].split(COMPARE_END, 1)[0] + COMPARE_END
    m = info["machine"]
    lines = [
        "# Punctual benchmark results",
        "",
        *([compare_block, ""] if compare_block else []),
        "## Punctual alone (issue 2 targets)",
        "",
        "Written by `bench/run.py` (see bench/README.md for what each workload does). Do not edit above the notes "
        "marker: the next run rewrites it.",
        "",
        f"- date: {info['date']}",
        f"- commit: {info['commit']}",
        f"- machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']} RAM, Linux {m['kernel']}",
        f"- PostgreSQL {info['pg_version']} on loopback ({info['pg_where']}); "
        + ", ".join(f"{k}={v}" for k, v in sorted(info["pg_settings"].items())),
        f"- Python {m['python']}; Punctual as `python app.py` with its defaults: "
        + ", ".join(f"{k}={v}" for k, v in info["defaults"].items()),
        f"- command: `{info['command']}`; wall time {info['wall_s']:.0f} s",
        "- other load while each workload ran (1-minute load average before/after, sessions of other programs "
        "on the server): " + "; ".join(
            f"{name} {r['machine_load']['before']['loadavg_1m']:.1f}/{r['machine_load']['after']['loadavg_1m']:.1f}, "
            f"{r['machine_load']['before']['other_sessions']}/{r['machine_load']['after']['other_sessions']}"
            for name, r in results.items() if "machine_load" in r),
        "",
        "| workload | what | result | target (issue 2) | verdict |",
        "|---|---|---|---|---|",
    ]
    for row in summary_rows(results):
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    lines += ["", "Raw figures (seconds, milliseconds, MiB as named):", "", "```json",
              json.dumps(results, indent=2, default=str), "```", "", NOTES_MARKER, ""]
    if notes:
        lines.append(notes.rstrip("\n"))
        lines.append("")
    path.write_text("\n".join(lines))


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated workloads, e.g. W1,W3 (default: all of W1-W5)")
    parser.add_argument("--recovery", action="store_true",
                        help="run W4 (100,000 events before start) with --only too; it is in the default set "
                             "(about 45 s here)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="attach py-spy to the app during W1-W4 and write collapsed stacks to this folder")
    parser.add_argument("--py-spy", default="py-spy", help="the py-spy executable for --profile")
    parser.add_argument("--quick", action="store_true", help="smaller sizes for a smoke run; RESULTS.md untouched")
    parser.add_argument("--results", type=Path, default=None,
                        help="where to write the report (default: bench/RESULTS.md; never written with --quick)")
    args = parser.parse_args(argv)

    if args.only:
        chosen = [w.strip().upper() for w in args.only.split(",") if w.strip()]
        unknown = [w for w in chosen if w not in WORKLOADS]
        if unknown:
            parser.error(f"unknown workload(s): {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}")
        if args.recovery and "W4" not in chosen:
            chosen.append("W4")
    else:
        chosen = list(WORKLOADS)
    chosen.sort()
    if (ROOT / ".env").exists():
        print("note: a .env file exists in the repository; Punctual reads it, so its values replace the defaults")

    sizes = Sizes.quick() if args.quick else Sizes()
    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    server = Server.find(url)
    began = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="punctual-bench-") as workdir:
        ctx = Context(server, sizes, Path(workdir), args.profile, args.py_spy)
        for name in chosen:
            print(f"{name}: {RUNNERS[name].__doc__.splitlines()[0]}", flush=True)
            t = time.monotonic()
            before = server.activity()
            try:
                results[name] = RUNNERS[name](ctx)
            except Exception as exc:  # noqa: BLE001 - a failed workload is reported, the others still run
                results[name] = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
            # Other load on the machine or the server skews every figure: say so next to them.
            results[name]["machine_load"] = {"before": before, "after": server.activity()}
            print(f"  {json.dumps(results[name], default=lambda v: round(v, 3) if isinstance(v, float) else str(v))}"
                  f"  [{time.monotonic() - t:.0f} s]", flush=True)

    rows = summary_rows(results)
    print_table(rows)
    if args.quick and args.results is None:
        print("--quick: bench/RESULTS.md not written")
        return 0
    info = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "machine": machine(),
        "pg_version": server.version(),
        "pg_where": "embedded pgserver" if server.embedded else "BENCH_DATABASE_URL / default server",
        "pg_settings": server.settings(),
        "defaults": punctual_defaults(),
        "command": " ".join(["python bench/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "wall_s": time.monotonic() - began,
    }
    target = args.results or RESULTS
    write_results(target, results, info)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
