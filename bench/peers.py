#!/usr/bin/env python3
"""The peers' side of bench/compare.py: Procrastinate and PgQueuer on the same workloads as Punctual.

Why a separate script: the peers (and their drivers psycopg 3 and asyncpg) live in their own venv,
bench/.venv-peers, never in Punctual's requirements. compare.py runs this file with that venv's python,
one workload per call, against a fresh database it made, and reads one JSON line from stdout.

    bench/.venv-peers/bin/python bench/peers.py run --system pgqueuer --workload W1 --db URL [--instances 2]

Each workload spawns its worker process(es) (`peers.py worker ...`, like a user runs `procrastinate worker` or
`pgq run`), enqueues through the library's own API from this process, and times what a user would see:
- W1/W6: from the first batch enqueued until the database shows all jobs done (`--cap` stops a slow peer early:
  the rate is then done/elapsed, marked capped);
- W2: lateness = the job's start (time.time() in the worker, the same machine's clock) - the time asked for;
- W3: from the client's clock just before the enqueue call to the job's start (as Punctual's W3, from just
  before its create call);
- W4: jobs inserted before the worker process starts; from the process start until all are done;
- W5: extra RSS of the worker with 1,000,000 jobs a month ahead in its table.

The settings per workload are the ones each project documents for that goal; see SETTINGS.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

import psycopg

# Documented best settings per goal. Procrastinate: `concurrency` runs that many async jobs at once per worker
# ("how many asynchronous jobs the worker can run in parallel"), `listen_notify` wakes on LISTEN/NOTIFY,
# `fetch_job_polling_interval` bounds the wait for jobs NOTIFY does not announce (scheduled ones); default 5 s,
# the docs suggest lowering it when scheduled jobs must start on time. PgQueuer: `batch_size` jobs per dequeue
# (default 10; larger for throughput), `max_concurrent_tasks` unset (unlimited), LISTEN/NOTIFY always on;
# scheduled jobs (`execute_after`) are woken by its next-ETA timer (min poll 0.1 s).
SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "procrastinate": {
        # concurrency=1: with a deep queue its fetch contends with itself; a 20,000-job trial here gave 216/s at
        # 1, 85/s at 8, 82/s at 32 (more worker processes is W6).
        "throughput": {"concurrency": 1, "listen_notify": True, "fetch_job_polling_interval": 5.0,
                       "pool_max_size": 3},
        "latency": {"concurrency": 8, "listen_notify": True, "fetch_job_polling_interval": 0.1,
                    "pool_max_size": 10},
    },
    "pgqueuer": {
        "throughput": {"batch_size": 100, "dequeue_timeout_s": 30.0, "driver": "asyncpg"},
        "latency": {"batch_size": 10, "dequeue_timeout_s": 30.0, "driver": "asyncpg"},
    },
}
PROFILE = {"W1": "throughput", "W4": "throughput", "W6": "throughput", "W5": "throughput",
           "W2": "latency", "W3": "latency"}


def versions() -> dict[str, str]:
    from importlib.metadata import version
    return {name: version(name) for name in ("procrastinate", "pgqueuer", "psycopg", "asyncpg")}


# -- worker processes -----------------------------------------------------------------------------

class Recorder:
    """Start times of jobs, one line each (seq, epoch), written only when asked (W2/W3: few jobs)."""

    def __init__(self, path: Optional[str]) -> None:
        self.file = open(path, "a", buffering=1) if path else None

    def __call__(self, seq: Any) -> None:
        if self.file is not None:
            self.file.write(f"{seq} {time.time():.6f}\n")


async def procrastinate_worker(url: str, settings: dict[str, Any], record: Recorder) -> None:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(
        conninfo=url, min_size=1, max_size=settings["pool_max_size"]))

    @app.task(name="noop", queue="bench")
    async def noop(seq: Any = None) -> None:
        record(seq)

    async with app.open_async():
        await app.run_worker_async(queues=["bench"], concurrency=settings["concurrency"],
                                   listen_notify=settings["listen_notify"],
                                   fetch_job_polling_interval=settings["fetch_job_polling_interval"],
                                   install_signal_handlers=False, wait=True)


async def pgqueuer_worker(url: str, settings: dict[str, Any], record: Recorder) -> None:
    import asyncpg
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.qm import QueueManager
    from pgqueuer.queries import Queries

    conn = await asyncpg.connect(url)
    qm = QueueManager(Queries(AsyncpgDriver(conn)))

    @qm.entrypoint("noop")
    async def noop(job: Any) -> None:
        record(json.loads(job.payload)["seq"] if job.payload else None)

    await qm.run(batch_size=settings["batch_size"], dequeue_timeout=timedelta(seconds=settings["dequeue_timeout_s"]))


def worker_main(args: argparse.Namespace) -> int:
    record = Recorder(args.record)
    settings = SETTINGS[args.system][args.profile]
    runner = procrastinate_worker if args.system == "procrastinate" else pgqueuer_worker
    loop = asyncio.new_event_loop()
    task = loop.create_task(runner(args.db, settings, record))
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        loop.run_until_complete(task)
    except asyncio.CancelledError:
        pass
    return 0


# -- schema, enqueue, counts ---------------------------------------------------------------------

async def install(system: str, url: str) -> None:
    if system == "procrastinate":
        import procrastinate
        app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))
        async with app.open_async():
            await app.schema_manager.apply_schema_async()
    else:
        import asyncpg
        from pgqueuer.db import AsyncpgDriver
        from pgqueuer.queries import Queries
        conn = await asyncpg.connect(url)
        await Queries(AsyncpgDriver(conn)).install()
        await conn.close()


class Enqueuer:
    """The library's own enqueue API, from one client process (as an application would)."""

    def __init__(self, system: str, url: str) -> None:
        self.system, self.url = system, url

    async def __aenter__(self) -> "Enqueuer":
        if self.system == "procrastinate":
            import procrastinate
            self.app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=self.url, min_size=1,
                                                                                   max_size=4))

            @self.app.task(name="noop", queue="bench")
            async def noop(seq: Any = None) -> None:  # pragma: no cover - runs in the worker
                return None

            self.task = noop
            await self.app.open_async()
        else:
            import asyncpg
            from pgqueuer.db import AsyncpgDriver
            from pgqueuer.queries import Queries
            self.conn = await asyncpg.connect(self.url)
            self.queries = Queries(AsyncpgDriver(self.conn))
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self.system == "procrastinate":
            await self.app.close_async()
        else:
            await self.conn.close()

    async def batch(self, seqs: list[int]) -> None:
        if self.system == "procrastinate":
            await self.task.batch_defer_async(*({"seq": s} for s in seqs))
        else:
            n = len(seqs)
            await self.queries.enqueue(["noop"] * n, [json.dumps({"seq": s}).encode() for s in seqs], [0] * n)

    async def one(self, seq: int, at: Optional[float] = None) -> None:
        """One job, due now or at epoch `at`."""
        if self.system == "procrastinate":
            task = self.task if at is None else self.task.configure(
                schedule_at=datetime.fromtimestamp(at, timezone.utc))
            await task.defer_async(seq=seq)
        else:
            after = None if at is None else timedelta(seconds=max(at - time.time(), 0.0))
            await self.queries.enqueue("noop", json.dumps({"seq": seq}).encode(), 0, after)

    async def many_at(self, ats: list[float]) -> None:
        """Jobs due at the given epochs (W2); PgQueuer takes them in one call, Procrastinate one by one."""
        if self.system == "procrastinate":
            for seq, at in enumerate(ats):
                await self.one(seq, at)
        else:
            now = time.time()
            n = len(ats)
            await self.queries.enqueue(["noop"] * n, [json.dumps({"seq": s}).encode() for s in range(n)], [0] * n,
                                       [timedelta(seconds=max(at - now, 0.0)) for at in ats])


def done_sql(system: str) -> str:
    """How many jobs are finished: Procrastinate keeps them as 'succeeded'; PgQueuer deletes them from its queue."""
    if system == "procrastinate":
        return "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
    return "SELECT count(*) FROM pgqueuer"


class Probe:
    def __init__(self, system: str, url: str, total: int) -> None:
        self.system, self.total = system, total
        self.conn = psycopg.connect(url, autocommit=True)

    def done(self) -> int:
        value = self.conn.execute(done_sql(self.system)).fetchone()[0]
        return value if self.system == "procrastinate" else self.total - value

    def wait(self, cap: float, interval: float = 0.02) -> tuple[bool, int, float]:
        """Poll until all done or `cap` seconds; returns (complete, done, epoch seen)."""
        deadline = time.monotonic() + cap
        while True:
            done = self.done()
            if done >= self.total:
                return True, done, time.time()
            if time.monotonic() > deadline:
                return False, done, time.time()
            time.sleep(interval)

    def close(self) -> None:
        self.conn.close()


def sql_fill(system: str, url: str, n: int, when_sql: str) -> float:
    """n jobs in one INSERT ... SELECT generate_series into the peer's own table (W4, W5); seconds taken."""
    started = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        if system == "procrastinate":
            # A job deferred without schedule_at has scheduled_at NULL: fill due jobs the same way.
            when_sql = "NULL::timestamptz" if when_sql == "now()" else when_sql
            conn.execute(f"""INSERT INTO procrastinate_jobs (queue_name, task_name, args, scheduled_at, status)
                             SELECT 'bench', 'noop', jsonb_build_object('seq', g), {when_sql}, 'todo'
                             FROM generate_series(1, %s) AS g""", (n,))
        else:
            conn.execute(f"""INSERT INTO pgqueuer (priority, entrypoint, payload, execute_after, status)
                             SELECT 0, 'noop', convert_to(json_build_object('seq', g)::text, 'UTF8'), {when_sql},
                                    'queued'
                             FROM generate_series(1, %s) AS g""", (n,))
    return time.monotonic() - started


# -- worker processes from the driver ------------------------------------------------------------

def _die_with_parent() -> None:
    """Linux: the worker gets SIGTERM when this driver dies (killed mid-run), so no worker is left behind."""
    import ctypes
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Workers:
    def __init__(self, system: str, url: str, profile: str, count: int, record: Optional[Path] = None) -> None:
        self.procs: list[subprocess.Popen] = []
        self.args = [sys.executable, __file__, "worker", "--system", system, "--db", url, "--profile", profile]
        if record is not None:
            self.args += ["--record", str(record)]
        self.count = count
        self.started_at = 0.0

    def start(self) -> float:
        self.started_at = time.time()
        for _ in range(self.count):
            self.procs.append(subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                               preexec_fn=_die_with_parent))
        return self.started_at

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def rss_mb(self) -> float:
        total = 0.0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        return total

    def cpu_s(self) -> float:
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in self.pids():
            try:
                rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(rest[11]) + int(rest[12])) / tick
            except OSError:
                pass
        return total

    def check(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f"worker exited {p.returncode}: {p.stderr.read().decode()[-2000:]}")

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def wait_ready(workers: Workers, seconds: float = 2.0) -> None:
    """Workers connect and LISTEN; no readiness API exists in either library, so give them a fixed start."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        workers.check()
        time.sleep(0.1)


def read_starts(path: Path) -> dict[int, float]:
    starts: dict[int, float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            seq, at = line.split()
            starts.setdefault(int(seq), float(at))
    return starts


def percentile(values: list[float], q: float) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


# -- workloads ------------------------------------------------------------------------------------

async def w_throughput(args: argparse.Namespace) -> dict[str, Any]:
    """W1 / W6: n due jobs enqueued in batches; time until all are done (capped)."""
    n, batch = args.n, args.batch
    workers = Workers(args.system, args.db, "throughput", args.instances)
    workers.start()
    wait_ready(workers)
    probe = Probe(args.system, args.db, n)
    cpu0 = workers.cpu_s()
    async with Enqueuer(args.system, args.db) as enq:
        t0 = time.time()
        for start in range(0, n, batch):
            await enq.batch(list(range(start, min(start + batch, n))))
        t_created = time.time()
    complete, done, t_end = probe.wait(args.cap)
    cpu = workers.cpu_s() - cpu0
    workers.check()
    workers.stop()
    probe.close()
    total = t_end - t0
    return {"events": n, "batch": batch, "instances": args.instances, "complete": complete, "finished": done,
            "create_s": t_created - t0, "create_rate": n / (t_created - t0), "total_s": total,
            "rate": done / total, "capped": not complete, "worker_cpu_s": round(cpu, 2)}


async def w_lateness(args: argparse.Namespace) -> dict[str, Any]:
    """W2: n jobs spread over now+lo .. now+hi; lateness of each start."""
    n, lo, hi = args.n, args.lo, args.hi
    record = Path(args.tmp) / f"w2-{args.system}-{os.getpid()}.txt"
    workers = Workers(args.system, args.db, "latency", 1, record)
    workers.start()
    wait_ready(workers)
    probe = Probe(args.system, args.db, n)
    now = time.time()
    ats = [now + lo + (hi - lo) * i / max(n - 1, 1) for i in range(n)]
    async with Enqueuer(args.system, args.db) as enq:
        await enq.many_at(ats)
    created_in = time.time() - now
    complete, done, _ = probe.wait(hi + 30)
    workers.stop()
    probe.close()
    starts = read_starts(record)
    lateness = [(starts[i] - ats[i]) * 1000 for i in range(n) if i in starts]
    return {"events": n, "window_s": [lo, hi], "created_in_s": created_in, "complete": complete, "started": len(lateness),
            "p50_ms": percentile(lateness, 50), "p95_ms": percentile(lateness, 95),
            "p99_ms": percentile(lateness, 99), "max_ms": max(lateness) if lateness else None,
            "early": sum(1 for v in lateness if v < 0)}


async def w_idle(args: argparse.Namespace) -> dict[str, Any]:
    """W3: one due job every `interval` for `seconds`; from just before the enqueue call to the job's start."""
    count = int(round(args.seconds / args.interval))
    record = Path(args.tmp) / f"w3-{args.system}-{os.getpid()}.txt"
    workers = Workers(args.system, args.db, "latency", 1, record)
    workers.start()
    wait_ready(workers)
    probe = Probe(args.system, args.db, count)
    sent: dict[int, float] = {}
    async with Enqueuer(args.system, args.db) as enq:
        t0 = time.monotonic()
        for i in range(count):
            pause = t0 + i * args.interval - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            sent[i] = time.time()
            await enq.one(i)
    complete, done, _ = probe.wait(30)
    workers.stop()
    probe.close()
    starts = read_starts(record)
    latency = [(starts[i] - sent[i]) * 1000 for i in sent if i in starts]
    return {"events": count, "complete": complete, "started": len(latency),
            "p50_ms": percentile(latency, 50), "p99_ms": percentile(latency, 99),
            "max_ms": max(latency) if latency else None,
            "note": "from the client's clock just before the enqueue call to the job's start"}


async def w_recovery(args: argparse.Namespace) -> dict[str, Any]:
    """W4: n due jobs in the table before the worker starts; from process start until all done (capped)."""
    n = args.n
    insert_s = sql_fill(args.system, args.db, n, "now()")
    probe = Probe(args.system, args.db, n)
    workers = Workers(args.system, args.db, "throughput", 1)
    t0 = workers.start()
    complete, done, t_end = probe.wait(args.cap)
    workers.check()
    workers.stop()
    probe.close()
    return {"events": n, "sql_insert_s": insert_s, "complete": complete, "finished": done,
            "total_s": t_end - t0, "rate": done / (t_end - t0), "capped": not complete}


async def w_memory(args: argparse.Namespace) -> dict[str, Any]:
    """W5: worker RSS idle, then with n jobs a month ahead in its table (after `settle` seconds)."""
    workers = Workers(args.system, args.db, "throughput", 1)
    workers.start()
    wait_ready(workers, 5.0)
    idle = workers.rss_mb()
    insert_s = sql_fill(args.system, args.db, args.n, "now() + interval '30 days' + g * interval '1 ms'")
    peak = last = workers.rss_mb()
    deadline = time.monotonic() + args.settle
    while time.monotonic() < deadline:
        time.sleep(0.25)
        last = workers.rss_mb()
        peak = max(peak, last)
    workers.check()
    workers.stop()
    return {"future_events": args.n, "idle_mb": idle, "insert_s": insert_s, "after_mb": last,
            "extra_mb": last - idle, "peak_extra_mb": peak - idle}


WORKLOADS = {"W1": w_throughput, "W6": w_throughput, "W2": w_lateness, "W3": w_idle, "W4": w_recovery,
             "W5": w_memory}


def run_main(args: argparse.Namespace) -> int:
    asyncio.run(install(args.system, args.db))
    result = asyncio.run(WORKLOADS[args.workload](args))
    result["settings"] = SETTINGS[args.system][PROFILE[args.workload]]
    print(json.dumps(result))
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker")
    w.add_argument("--system", required=True, choices=sorted(SETTINGS))
    w.add_argument("--db", required=True)
    w.add_argument("--profile", default="throughput", choices=["throughput", "latency"])
    w.add_argument("--record")
    r = sub.add_parser("run")
    r.add_argument("--system", required=True, choices=sorted(SETTINGS))
    r.add_argument("--workload", required=True, choices=sorted(WORKLOADS))
    r.add_argument("--db", required=True)
    r.add_argument("--n", type=int, default=20_000)
    r.add_argument("--batch", type=int, default=1_000)
    r.add_argument("--instances", type=int, default=1)
    r.add_argument("--cap", type=float, default=60.0, help="seconds at most to wait for all jobs (W1, W4, W6)")
    r.add_argument("--lo", type=float, default=5.0)
    r.add_argument("--hi", type=float, default=15.0)
    r.add_argument("--interval", type=float, default=0.02)
    r.add_argument("--seconds", type=float, default=10.0)
    r.add_argument("--settle", type=float, default=10.0)
    r.add_argument("--tmp", default="/tmp")
    sub.add_parser("versions")
    args = parser.parse_args(argv)
    if args.command == "worker":
        return worker_main(args)
    if args.command == "versions":
        print(json.dumps(versions()))
        return 0
    return run_main(args)


if __name__ == "__main__":
    sys.exit(main())
