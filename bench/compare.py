#!/usr/bin/env python3
"""Punctual against Procrastinate and PgQueuer, side by side in one run, on one PostgreSQL (issue 5).

Why one script and one run: numbers taken on different days or machines do not compare; here every system
meets the same server, the same load and the same workloads, interleaved run by run (the order of the systems
rotates each run, so a warm-up or a neighbour's burst does not always favour the same one).

    .venv/bin/python bench/compare.py                 # all workloads, 3 runs, about 15 minutes; writes RESULTS.md
    .venv/bin/python bench/compare.py --quick         # small sizes, 1 run: a smoke test; writes nothing
    .venv/bin/python bench/compare.py --runs 5 --only W1,W3 --systems punctual,pgqueuer

Punctual runs as `python app.py` with its defaults (bench/run.py does the Punctual side of W1-W5). The peers run
from bench/.venv-peers (made here with pip on first use, never in requirements.txt) through bench/peers.py, with
the settings each documents as best for the workload (peers.SETTINGS). The ceiling is pgbench on the same server
with the minimal event life cycle on Punctual's own schema. Issue 3's Kafka figures (alerts bridged per second,
manual claim/complete round trips per second) are measured for Punctual alone.

Writes the comparison into bench/RESULTS.md between COMPARE_BEGIN and COMPARE_END (run.py keeps that block)
and the chart bench/compare.png.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import psycopg2.extensions
import requests

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import run as punctual  # noqa: E402 - bench/run.py: the Punctual side of the workloads

PEERS_VENV = HERE / ".venv-peers"
PEERS_PY = PEERS_VENV / "bin" / "python"
# Pinned so that a result names exactly what it measured.
PEER_PACKAGES = ["procrastinate==3.10.0", "pgqueuer==1.6.0", "asyncpg==0.32.0", "psycopg[binary,pool]==3.3.9",
                 "matplotlib==3.11.2", "py-spy==0.4.3"]
RESULTS = HERE / "RESULTS.md"
CHART = HERE / "compare.png"
SYSTEMS = ("punctual", "pgqueuer", "procrastinate")
WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6", "CEIL", "KAFKA")
PGBENCH_CANDIDATES = ["pgbench", *sorted(str(p) for p in Path("/usr/lib/postgresql").glob("*/bin/pgbench"))]


class Sizes:
    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.w1 = 2_000 if quick else 20_000
        self.w1_batch = 500 if quick else 1_000
        self.w2 = 200 if quick else 1_000
        self.w2_window = (2.0, 5.0) if quick else (5.0, 15.0)
        self.w3_seconds = 3.0 if quick else 10.0
        self.w4 = 10_000 if quick else 100_000
        self.w5 = 100_000 if quick else 1_000_000
        self.w5_horizon = 1_000 if quick else 10_000
        self.w5_settle = 5.0 if quick else 40.0
        self.w6_instances = (1, 2, 4)
        # A peer slower than this is stopped there and its rate is done/elapsed (marked capped).
        self.cap_w1 = 10.0 if quick else 12.0
        self.cap_w4 = 10.0 if quick else 12.0
        self.cap_w6 = 8.0
        self.pgbench_seconds = 3 if quick else 8
        self.kafka_alerts = 500 if quick else 5_000
        self.manual_events = 300 if quick else 2_000


# -- environment ---------------------------------------------------------------------------------

def ensure_peers_venv() -> None:
    """bench/.venv-peers with the pinned peers, matplotlib and py-spy; made once, reused while the pins match."""
    marker = PEERS_VENV / ".installed"
    wanted = "\n".join(PEER_PACKAGES)
    if PEERS_PY.exists() and marker.exists() and marker.read_text() == wanted:
        return
    print(f"setting up {PEERS_VENV} (pip install {' '.join(PEER_PACKAGES)})", flush=True)
    if not PEERS_PY.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    subprocess.run([str(PEERS_PY), "-m", "pip", "install", "--quiet", *PEER_PACKAGES], check=True)
    marker.write_text(wanted)


def find_pgbench() -> Optional[str]:
    for candidate in PGBENCH_CANDIDATES:
        try:
            subprocess.run([candidate, "--version"], capture_output=True, check=True)
            return candidate
        except (OSError, subprocess.CalledProcessError):
            continue
    return None


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


# -- Punctual's side ----------------------------------------------------------------------------

def run_sizes(sizes: Sizes) -> punctual.Sizes:
    return punctual.Sizes(w1_events=sizes.w1, w1_batch=sizes.w1_batch, w2_events=sizes.w2,
                          w2_from=sizes.w2_window[0], w2_to=sizes.w2_window[1], w3_seconds=sizes.w3_seconds,
                          w4_events=sizes.w4, w5_future=sizes.w5, w5_horizon=sizes.w5_horizon,
                          w5_settle=sizes.w5_settle)


def punctual_scale_out(ctx: punctual.Context, instances: int, sizes: Sizes) -> dict[str, Any]:
    """W6: `instances` app processes on one database; the batches go round-robin, one client thread per instance."""
    n, batch = sizes.w1, sizes.w1_batch
    with ctx.server.database(f"w6_{instances}") as url:
        apps = [punctual.App(url, ctx.workdir / f"w6-{instances}-{i}") for i in range(instances)]
        try:
            for app in apps:
                app.start()
            apps[0].create_noop_callback()
            probe = punctual.Probe(url)
            bodies = [json.dumps({"events": [{"callback": punctual.CALLBACK}] * min(batch, n - s)}).encode()
                      for s in range(0, n, batch)]
            shares = [bodies[i::instances] for i in range(instances)]

            def send(index: int) -> list[int]:
                return [apps[index].post("/events/batch", None, raw=body).status_code for body in shares[index]]

            t0 = time.time()
            with ThreadPoolExecutor(max_workers=instances) as pool:
                statuses = [s for part in pool.map(send, range(instances)) for s in part]
            t_created = time.time()
            ok, t_seen = punctual.wait_all_done(probe, n, timeout=120)
            last, per_worker = probe.one("SELECT extract(epoch FROM max(finished_at)), "
                                         "(SELECT json_object_agg(w, c) FROM (SELECT worker w, count(*) c FROM events "
                                         "GROUP BY worker) x) FROM events")
            finished = probe.count("finished")
            probe.close()
        finally:
            for app in apps:
                app.stop()
    end = float(last) if last is not None else t_seen
    return {"events": n, "instances": instances, "http_errors": sum(1 for s in statuses if s != 201),
            "complete": ok, "finished": finished, "create_s": t_created - t0, "create_rate": n / (t_created - t0),
            "total_s": end - t0, "rate": finished / (end - t0),
            "per_instance": sorted((per_worker or {}).values(), reverse=True)}


def punctual_workload(ctx: punctual.Context, workload: str, sizes: Sizes, instances: int = 1) -> dict[str, Any]:
    if workload == "W6":
        return punctual_scale_out(ctx, instances, sizes)
    return punctual.RUNNERS[workload](ctx)


# -- peers' side --------------------------------------------------------------------------------

def peer_workload(server: punctual.Server, system: str, workload: str, sizes: Sizes, workdir: Path,
                  instances: int = 1) -> dict[str, Any]:
    """One workload of one peer in a fresh database, through bench/peers.py in the peers venv."""
    label = f"{system[:4]}_{workload.lower()}_{instances}"
    args = {"W1": ["--n", sizes.w1, "--batch", sizes.w1_batch, "--cap", sizes.cap_w1],
            "W6": ["--n", sizes.w1, "--batch", sizes.w1_batch, "--cap", sizes.cap_w6, "--instances", instances],
            "W2": ["--n", sizes.w2, "--lo", sizes.w2_window[0], "--hi", sizes.w2_window[1]],
            "W3": ["--seconds", sizes.w3_seconds],
            "W4": ["--n", sizes.w4, "--cap", sizes.cap_w4],
            "W5": ["--n", sizes.w5, "--settle", min(sizes.w5_settle, 10.0)]}[workload]
    with server.database(label) as dsn:
        # asyncpg takes URLs only; the database name is the one server.database() made.
        url = urlunsplit(urlsplit(server.url)._replace(path="/" + dsn_name(dsn)))
        cmd = [str(PEERS_PY), str(HERE / "peers.py"), "run", "--system", system, "--workload", workload,
               "--db", url, "--tmp", str(workdir), *map(str, args)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, preexec_fn=_die_with_parent)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        last = [line for line in proc.stderr.strip().splitlines() if line.strip()][-1:] or [""]
        raise RuntimeError(f"peers.py {system} {workload} exited {proc.returncode}: {last[0][:300]}")
    return json.loads(lines[-1])


def _die_with_parent() -> None:
    """Linux: peers.py gets SIGTERM when compare.py dies, and passes it on to its workers the same way."""
    import ctypes
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def dsn_name(dsn: str) -> str:
    return psycopg2.extensions.parse_dsn(dsn)["dbname"]


# -- the ceiling: pgbench -----------------------------------------------------------------------

CEILING_SCRIPTS = {
    # One event per statement: insert (committed), claim the oldest due one with SKIP LOCKED (committed),
    # finish what this client holds (committed): the three commits every event needs in Punctual.
    1: """INSERT INTO events (callback_id, scheduled_for, source) VALUES (1, now(), 'pgbench');
WITH due AS (SELECT id FROM events WHERE state = 'scheduled' AND scheduled_for <= now()
             ORDER BY priority DESC, scheduled_for, id LIMIT 1 FOR UPDATE SKIP LOCKED)
UPDATE events e SET state = 'running', attempts = e.attempts + 1, worker = 'pgbench-' || :client_id,
       started_at = clock_timestamp(), lease_until = clock_timestamp() + interval '60 s'
  FROM due WHERE e.id = due.id;
UPDATE events SET state = 'finished', finished_at = clock_timestamp(), lease_until = NULL
 WHERE worker = 'pgbench-' || :client_id AND state = 'running';
""",
    100: """INSERT INTO events (callback_id, scheduled_for, source) SELECT 1, now(), 'pgbench' FROM generate_series(1, 100);
WITH due AS (SELECT id FROM events WHERE state = 'scheduled' AND scheduled_for <= now()
             ORDER BY priority DESC, scheduled_for, id LIMIT 100 FOR UPDATE SKIP LOCKED)
UPDATE events e SET state = 'running', attempts = e.attempts + 1, worker = 'pgbench-' || :client_id,
       started_at = clock_timestamp(), lease_until = clock_timestamp() + interval '60 s'
  FROM due WHERE e.id = due.id;
UPDATE events SET state = 'finished', finished_at = clock_timestamp(), lease_until = NULL
 WHERE worker = 'pgbench-' || :client_id AND state = 'running';
""",
}


def ceiling(server: punctual.Server, pgbench: str, rows: int, seconds: int, workdir: Path,
            clients: int = 4) -> dict[str, Any]:
    """pgbench with the minimal life cycle on Punctual's schema (its triggers write history and NOTIFY too)."""
    with server.database(f"ceil_{rows}") as url:
        punctual.apply_schema(url)
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO callbacks (name, kind, target) VALUES ('pgbench-noop', 'python', 'noop') "
                        "RETURNING id")
            callback_id = cur.fetchone()[0]
        conn.close()
        script = workdir / f"ceiling-{rows}.sql"
        script.write_text(CEILING_SCRIPTS[rows].replace("SELECT 1, now()", f"SELECT {callback_id}, now()")
                          .replace("VALUES (1, now()", f"VALUES ({callback_id}, now()"))
        proc = subprocess.run([pgbench, "-n", "-M", "prepared", "-c", str(clients), "-j", "2", "-T", str(seconds),
                               "-f", str(script), url], capture_output=True, text=True, timeout=seconds + 60)
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FILTER (WHERE state = 'finished'), count(*) FROM events")
            finished, total = cur.fetchone()
        conn.close()
    tps = None
    for line in proc.stdout.splitlines():
        if line.startswith("tps = "):
            tps = float(line.split()[2])
    if tps is None:
        raise RuntimeError(f"pgbench failed: {proc.stderr[-1000:]}")
    return {"rows_per_statement": rows, "clients": clients, "seconds": seconds, "tps": tps,
            "rate": finished / seconds, "script_rate": tps * rows, "finished": finished, "inserted": total}


# -- issue 3: Kafka and manual claims ---------------------------------------------------------------

def kafka_alerts(ctx: punctual.Context, n: int) -> dict[str, Any]:
    """N alert messages produced to a tansu broker while the app bridges; time until all are events."""
    sys.path.insert(0, str(ROOT))
    from tests.kafka_broker import Broker  # the test suite's real Kafka-protocol broker (tansu)

    folder = ctx.workdir / "kafka"
    folder.mkdir(exist_ok=True)
    broker = Broker(folder).start()
    try:
        with ctx.server.database("kafka") as url:
            app = punctual.App(url, folder / "app")
            app.env.update(KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap, KAFKA_GROUP_ID="punctual-bench")
            try:
                app.start()
                probe = punctual.Probe(url)
                alert_sql = ("SELECT count(*) FROM events e JOIN callbacks c ON c.id = e.callback_id "
                             "WHERE c.name = 'Alert'")
                # One message first: the consumer has joined its group once that one is an event.
                producer = broker.producer()
                producer.send("alerts", json.dumps({"alerts": [{"alert_id": "warm", "message": "warm-up"}]}).encode())
                producer.flush()
                joined = punctual.wait_until(lambda: probe.one(alert_sql)[0] >= 1, 60, 0.05)
                values = [json.dumps({"alerts": [{"alert_id": i, "message": f"alert {i}"}]}).encode() for i in range(n)]
                t0 = time.time()
                for value in values:
                    producer.send("alerts", value)
                producer.flush()
                t_sent = time.time()
                ok = punctual.wait_until(lambda: probe.one(alert_sql)[0] >= n + 1, 120, 0.05)
                t_end = time.time()
                got = probe.one(alert_sql)[0] - 1
                producer.close()
                probe.close()
            finally:
                app.stop()
    finally:
        broker.stop()
    return {"messages": n, "joined": joined, "complete": ok, "events": got, "produce_s": t_sent - t0,
            "total_s": t_end - t0, "rate": got / (t_end - t0)}


def manual_round_trips(ctx: punctual.Context, n: int, workers: int = 4) -> dict[str, Any]:
    """n due events of the manual callback 'Alert'; `workers` threads POST /events/claim then /complete."""
    with ctx.server.database("manual") as url, punctual.running_app(url, ctx.workdir / "manual") as app:
        for start in range(0, n, 1000):
            size = min(1000, n - start)
            response = app.post("/events/batch", {"events": [{"callback": "Alert", "payload": {"i": start + i}}
                                                             for i in range(size)]})
            if response.status_code != 201:
                raise RuntimeError(f"batch answered {response.status_code}: {response.text[:300]}")
        done = [0] * workers
        errors = [0] * workers

        def work(index: int) -> None:
            session = requests.Session()
            name = f"bench-{index}"
            headers = {"Content-Type": "application/json"}
            while True:
                r = session.post(app.url + "/events/claim", data=json.dumps({"worker": name, "callback": "Alert"}),
                                 headers=headers, timeout=30)
                if r.status_code == 204:
                    return
                if r.status_code != 200:
                    errors[index] += 1
                    continue
                event_id, lease_token = r.json()["id"], r.json()["lease_token"]
                c = session.post(f"{app.url}/events/{event_id}/complete",
                                 data=json.dumps({"worker": name, "lease_token": lease_token, "result": {"ok": True}}),
                                 headers=headers, timeout=30)
                if c.status_code == 200:
                    done[index] += 1
                else:
                    errors[index] += 1

        t0 = time.time()
        threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        elapsed = time.time() - t0
    return {"events": n, "workers": workers, "completed": sum(done), "errors": sum(errors), "total_s": elapsed,
            "rate": sum(done) / elapsed}


# -- the run --------------------------------------------------------------------------------------

def measure(label: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    t = time.monotonic()
    load = loadavg()
    try:
        result = fn()
    except Exception as exc:  # noqa: BLE001 - one failed measurement is reported, the rest still run
        result = {"error": f"{type(exc).__name__}: {str(exc)[:600]}"}
    result["loadavg_before"] = load
    result["seconds"] = round(time.monotonic() - t, 1)
    short = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in result.items()
             if k in ("rate", "p50_ms", "p99_ms", "max_ms", "create_p99_ms", "early", "extra_mb", "future_extra_mb",
                      "horizon_extra_mb", "capped", "complete", "error", "seconds", "create_rate")}
    print(f"  {label}: {json.dumps(short)}", flush=True)
    return result


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=None, help="runs per measurement (default 3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run; writes nothing unless "
                                                             "--results is given")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(WORKLOADS)}")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset of " + ",".join(SYSTEMS))
    parser.add_argument("--tree", choices=["head", "worktree"], default="head",
                        help="run Punctual from a snapshot of HEAD (default) or from the working tree as it is")
    parser.add_argument("--results", type=Path, default=None, help="report file (default bench/RESULTS.md)")
    args = parser.parse_args(argv)
    runs = args.runs or (1 if args.quick else 3)
    chosen = [w.strip().upper() for w in args.only.split(",")] if args.only else list(WORKLOADS)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    bad = [w for w in chosen if w not in WORKLOADS] + [s for s in systems if s not in SYSTEMS]
    if bad:
        parser.error(f"unknown: {', '.join(bad)}")

    # A SIGTERM unwinds like Ctrl-C, so the benchmark databases are dropped and the apps stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sizes = Sizes(args.quick)
    commit = punctual.git_commit()
    snapshot_dir = None
    if args.tree == "head":
        # Other people edit the working tree while this runs for 15 minutes; measure one fixed commit instead.
        snapshot_dir = tempfile.TemporaryDirectory(prefix="punctual-snapshot-")
        archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", snapshot_dir.name], input=archive, check=True)
        punctual.ROOT = Path(snapshot_dir.name)
        commit = commit.split(" ")[0] + " (HEAD, a snapshot: uncommitted changes not measured)"
    if any(s != "punctual" for s in systems):
        ensure_peers_venv()
    server = punctual.Server.find(os.environ.get("BENCH_DATABASE_URL", punctual.DEFAULT_URL))
    pgbench = find_pgbench()
    began = time.monotonic()
    load_start = loadavg()
    # results[workload][system][variant] = list of per-run dicts; variant is "" or the instance count (W6),
    # or the rows per statement (CEIL).
    results: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {}

    def add(workload: str, system: str, variant: str, value: dict[str, Any]) -> None:
        results.setdefault(workload, {}).setdefault(system, {}).setdefault(variant, []).append(value)

    with tempfile.TemporaryDirectory(prefix="punctual-compare-") as tmp:
        workdir = Path(tmp)
        ctx = punctual.Context(server, run_sizes(sizes), workdir)
        for r in range(runs):
            order = systems[r % len(systems):] + systems[:r % len(systems)]
            print(f"run {r + 1}/{runs} (order {', '.join(order)}), load {loadavg():.2f}", flush=True)
            for workload in ("W1", "W2", "W3", "W4", "W6"):
                if workload not in chosen:
                    continue
                variants = [n for n in sizes.w6_instances if n > 1] if workload == "W6" else [1]
                for instances in variants:
                    for system in order:
                        variant = str(instances) if workload == "W6" else ""
                        label = f"{workload}{'x' + variant if variant else ''} {system}"
                        if system == "punctual":
                            add(workload, system, variant, measure(
                                label, lambda: punctual_workload(ctx, workload, sizes, instances)))
                        else:
                            add(workload, system, variant, measure(
                                label, lambda: peer_workload(server, system, workload, sizes, workdir, instances)))
            if "CEIL" in chosen and pgbench:
                for rows in (1, 100):
                    add("CEIL", "pgbench", str(rows), measure(
                        f"ceiling {rows} rows", lambda: ceiling(server, pgbench, rows, sizes.pgbench_seconds, workdir)))
        # Memory and the Kafka figures once: RSS does not vary run to run as rates do, and they take minutes.
        if "W5" in chosen:
            for system in systems:
                if system == "punctual":
                    add("W5", system, "", measure("W5 punctual", lambda: punctual.RUNNERS["W5"](ctx)))
                else:
                    add("W5", system, "", measure(f"W5 {system}",
                                                  lambda: peer_workload(server, system, "W5", sizes, workdir)))
        if "KAFKA" in chosen and "punctual" in systems:
            add("KAFKA", "punctual", "alerts", measure("kafka alerts", lambda: kafka_alerts(ctx, sizes.kafka_alerts)))
            add("KAFKA", "punctual", "manual", measure(
                "manual claim/complete", lambda: manual_round_trips(ctx, sizes.manual_events)))

    info = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "machine": punctual.machine(),
        "pg_version": server.version(),
        "pg_settings": server.settings(),
        "defaults": punctual.punctual_defaults(),
        "peers": peer_info() if any(s != "punctual" for s in systems) else {},
        "pgbench": pgbench_version(pgbench),
        "runs": runs,
        "quick": args.quick,
        "command": " ".join(["python bench/compare.py", *(argv if argv is not None else sys.argv[1:])]),
        "wall_s": time.monotonic() - began,
        "load_start": load_start,
        "load_end": loadavg(),
        # The 1-minute load average before each measurement: how busy the shared cores were throughout.
        "loads": sorted(r["loadavg_before"] for systems_ in results.values() for variants in systems_.values()
                        for runs_ in variants.values() for r in runs_ if "loadavg_before" in r),
    }
    import report  # noqa: E402 - bench/report.py: tables, RESULTS.md and the chart

    summary = report.summarise(results)
    print(report.console(summary, info))
    if args.quick and args.results is None:
        print("--quick: RESULTS.md and the chart not written")
        return 0
    target = args.results or RESULTS
    target.parent.mkdir(parents=True, exist_ok=True)
    raw = target.with_name(target.stem + ".compare.json")
    raw.write_text(json.dumps({"info": info, "results": results}, indent=1, default=str))
    chart = report.chart(summary, raw, CHART if target == RESULTS else target.with_suffix(".png"), PEERS_PY)
    report.write(target, summary, info, chart)
    print(f"wrote {target}, {raw.name}" + (f", {chart.name}" if chart else ""))
    return 0


def peer_info() -> dict[str, Any]:
    proc = subprocess.run([str(PEERS_PY), str(HERE / "peers.py"), "versions"], capture_output=True, text=True)
    versions = json.loads(proc.stdout) if proc.returncode == 0 else {}
    sys.path.insert(0, str(HERE))
    settings = subprocess.run([str(PEERS_PY), "-c", "import json, sys; sys.path.insert(0, %r); import peers; "
                               "print(json.dumps(peers.SETTINGS))" % str(HERE)], capture_output=True, text=True)
    return {"versions": versions, "settings": json.loads(settings.stdout) if settings.returncode == 0 else {}}


def pgbench_version(pgbench: Optional[str]) -> str:
    if not pgbench:
        return "not found"
    return subprocess.run([pgbench, "--version"], capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
