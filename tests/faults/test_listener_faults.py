"""The LISTEN connection killed again and again, held down, and notifications lost on purpose.

NOTIFY is a hint: the catch-up after each reconnect and the sweep must still run every event, and
/health must say the listener is down while it is (tests/test_listener.py covers one kill and
garbage notifications; this is the repeated and the prolonged fault).
"""
from __future__ import annotations

import threading
import time

import psycopg2
import psycopg2.extensions
from psycopg2.extras import Json

from app import create_app
from tests.faults.conftest import assert_every_attempt_recorded_once, count, record_figure, soak
from tests.helpers import sql, wait_for
from tests.test_listener import running_engine

KILLS = soak(10, 100)


def _insert(conn, in_seconds: float, n: int = 1, silent: bool = False) -> list[int]:
    with conn, conn.cursor() as cur:
        if silent:  # triggers off for this transaction: no NOTIFY, no history row for the insert
            cur.execute("SET LOCAL session_replication_role = replica")
        cur.execute("""INSERT INTO events (callback_id, payload, scheduled_for, source)
                       SELECT id, %s, now() + make_interval(secs => %s), 'sql'
                       FROM callbacks, generate_series(1, %s) WHERE name = 'Addition' RETURNING id""",
                    (Json({"x": 1, "y": 1}), in_seconds, n))
        return [r[0] for r in cur.fetchall()]


def _finished(conn, ids: list[int]) -> int:
    """Finished events among `ids`, on an open connection (no new one may open during the outage)."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM events WHERE id = ANY(%s) AND state = 'finished'", (ids,))
        return cur.fetchone()[0]


def test_the_listen_connection_killed_many_times_in_a_row_loses_no_event(db, settings, db_url):
    conn = psycopg2.connect(db_url)
    samples: list[str] = []
    stop = threading.Event()
    try:
        # A 30 s sweep: within this test only LISTEN and the catch-up after each reconnect can find the events.
        with running_engine(db, settings, sweep_seconds=30.0, reconnect_max_seconds=0.5) as eng:
            def sample() -> None:
                while not stop.is_set():
                    samples.append(eng.health()["listener"]["status"])
                    time.sleep(0.001)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            ids: list[int] = []
            for kill in range(KILLS):
                pid = eng.listener.backend_pid
                ids += _insert(conn, 0.3, 3)
                assert sql(db_url, "SELECT pg_terminate_backend(%s) AS ok", (pid,))[0]["ok"]
                ids += _insert(conn, 0.0, 2)   # most likely while no LISTEN is open
                ids += _insert(conn, 0.5, 2)
                wait_for(lambda: eng.listener.reconnects == kill + 1 and eng.listener.connected.is_set(), 10, 0.005,
                         f"reconnect {kill + 1}")
                assert eng.listener.backend_pid != pid
            wait_for(lambda: count(db_url, "SELECT count(*) AS n FROM events WHERE id = ANY(%s) "
                                           "AND state = 'finished'", (ids,)) == len(ids), 15, 0.1,
                     "every event to run")
            stop.set()
            sampler.join()
            assert eng.health()["listener"]["status"] == "ok"
            late = sql(db_url, "SELECT max(extract(epoch FROM started_at - scheduled_for))::float AS n "
                               "FROM events WHERE id = ANY(%s)", (ids,))[0]["n"]
    finally:
        stop.set()
        conn.close()
    assert_every_attempt_recorded_once(db_url)
    assert count(db_url, "SELECT count(*) AS n FROM events WHERE attempts <> 1") == 0
    assert "down" in samples, "the sampler never saw the listener reported down between a kill and its reconnect"
    assert late < 2.0, f"an event ran {late:.2f} s late although the sweep is 30 s: the catch-up missed it"
    record_figure(f"LISTEN connection killed {KILLS} times",
                  f"{len(ids)} events, all ran once, worst lateness {late:.2f} s with a 30 s sweep; "
                  f"/health said down in {samples.count('down')} of {len(samples)} samples")


def test_while_the_listener_cannot_reconnect_health_says_so_and_the_sweep_runs_events_without_notifications(
        db, settings, db_url):
    dbname = psycopg2.extensions.parse_dsn(db_url)["dbname"]
    admin = psycopg2.connect(psycopg2.extensions.make_dsn(db_url, dbname="postgres"))
    admin.autocommit = True
    conn = psycopg2.connect(db_url)
    try:
        with running_engine(db, settings, sweep_seconds=0.5, reconnect_max_seconds=0.5) as eng:
            client = create_app(eng.settings, db, eng, eng.metrics).test_client()
            wait_for(lambda: client.get("/health").status_code == 200, 5, 0.05)
            # Warm the pool so requests and claims keep connections while no new one may open.
            threads = [threading.Thread(target=lambda: db.query("SELECT pg_sleep(0.2)")) for _ in range(4)]
            [t.start() for t in threads]
            [t.join() for t in threads]
            with admin.cursor() as cur:
                cur.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
                cur.execute("SELECT pg_terminate_backend(%s)", (eng.listener.backend_pid,))
            try:
                health = wait_for(lambda: (r := client.get("/health")).status_code == 503 and r, 5, 0.02,
                                  "/health to report the listener down")
                listener = health.json["checks"]["listener"]
                assert listener["status"] == "down" and listener["connected"] is False and listener["last_error"]
                assert health.json["checks"]["database"]["status"] == "ok"
                # Lost notifications on purpose: silent inserts, and inserts while nobody listens.
                silent = _insert(conn, 0.0, 50, silent=True) + _insert(conn, 0.5, 50, silent=True)
                unheard = _insert(conn, 0.2, 20)
                wait_for(lambda: _finished(conn, silent + unheard) == 120, 10, 0.05,
                         "the sweep to run the events nobody was notified of")
                assert client.get("/health").json["checks"]["listener"]["status"] == "down"
            finally:
                with admin.cursor() as cur:
                    cur.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
            wait_for(lambda: client.get("/health").status_code == 200, 10, 0.05, "/health to recover")
            assert client.get("/health").json["checks"]["listener"]["reconnects"] >= 1
            after = _insert(conn, 0.3, 5)
            wait_for(lambda: count(db_url, "SELECT count(*) AS n FROM events WHERE id = ANY(%s) "
                                           "AND state = 'finished'", (after,)) == 5, 5, 0.05)
    finally:
        conn.close()
        admin.close()
    assert count(db_url, "SELECT count(*) AS n FROM events WHERE attempts <> 1") == 0
