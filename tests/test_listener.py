"""The LISTEN side: a killed connection is re-established and caught up, garbage notifications are
skipped, and a lost notification is covered by the sweep. NOTIFY is a hint, the table is the truth.

Most engines here run with a 30 s sweep, so an event that runs on time can only have been found
through LISTEN or the catch-up after a reconnect, not by the safety net."""
from __future__ import annotations

import select
import time
from datetime import datetime, timezone
from typing import Any

import psycopg2
from psycopg2.extras import Json

from engine.listener import CHANNEL, parse_notification
from engine.queries import Change
from tests.helpers import running_engine, sql, wait_for

LATENESS = 1.0

_INSERT = """INSERT INTO events (callback_id, payload, scheduled_for, source)
             SELECT id, %s, now() + make_interval(secs => %s), 'sql' FROM callbacks WHERE name = 'Addition'
             RETURNING id"""


def insert_event(db_url: str, in_seconds: float, *, silent: bool = False) -> int:
    """Insert with plain SQL from another connection; `silent` disables the triggers (no NOTIFY)."""
    conn = psycopg2.connect(db_url)
    try:
        with conn, conn.cursor() as cur:
            if silent:
                cur.execute("SET LOCAL session_replication_role = replica")
            cur.execute(_INSERT, (Json({"x": 1, "y": 1}), in_seconds))
            return cur.fetchone()[0]
    finally:
        conn.close()


def finished(db_url: str, event_id: int, timeout: float = 8.0) -> dict[str, Any]:
    def done():
        rows = sql(db_url, "SELECT * FROM events WHERE id = %s AND state = 'finished'", (event_id,))
        return rows[0] if rows else None
    return wait_for(done, timeout=timeout, message=f"event {event_id} to finish")


def assert_on_time(event: dict[str, Any]) -> None:
    late = (event["started_at"] - event["scheduled_for"]).total_seconds()
    assert 0 <= late < LATENESS, f"event {event['id']} started {late:+.3f} s from its time"




def test_a_terminated_listen_connection_reconnects_and_events_inserted_meanwhile_still_run_on_time(
        db, settings, db_url):
    from app import create_app

    with running_engine(db, settings, sweep_seconds=30.0) as eng:
        client = create_app(eng.settings, db, eng, eng.metrics).test_client()
        old_pid = eng.listener.backend_pid
        listeners = sql(db_url, "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'punctual-listener%%' "
                                "AND datname = current_database()")
        assert [r["pid"] for r in listeners] == [old_pid]
        assert sql(db_url, "SELECT pg_terminate_backend(%s) AS ok", (old_pid,))[0]["ok"]
        during_gap = insert_event(db_url, 0.5)  # most likely inserted before LISTEN is back: catch-up finds it
        wait_for(lambda: eng.listener.reconnects >= 1 and eng.listener.connected.is_set(), timeout=5,
                 message="the listener to reconnect")
        assert eng.listener.backend_pid != old_pid
        after = [insert_event(db_url, delay) for delay in (0.3, 0.8, 1.2)]
        for event_id in (during_gap, *after):
            assert_on_time(finished(db_url, event_id))
        health = client.get("/health")
        assert health.status_code == 200, health.json
        listener = health.json["checks"]["listener"]
        assert listener["status"] == "ok" and listener["connected"] and listener["reconnects"] >= 1
        assert b"punctual_listener_reconnects_total 1.0" in client.get("/metrics").data


def test_garbage_and_unknown_notifications_are_skipped_and_later_events_still_run(db, settings, db_url):
    with running_engine(db, settings, sweep_seconds=30.0) as eng:
        pid = eng.listener.backend_pid
        for payload in ("garbage", '{"id": "abc"}', '{"op": "INSERT"}', "[1, 2]", "null", '{"id": true}',
                        '{"id": 987654321}', '{"id": -1}', '{"id": 99999999999999999999999999}', "x" * 7000):
            sql(db_url, "SELECT pg_notify(%s, %s)", (CHANNEL, payload))
        sql(db_url, f"NOTIFY {CHANNEL}, 'garbage'")
        event_id = insert_event(db_url, 0.5)
        assert_on_time(finished(db_url, event_id))
        assert eng.listener.alive and eng.listener.reconnects == 0 and eng.listener.backend_pid == pid


def test_parse_notification_reads_the_triggers_format_and_refuses_anything_else():
    hints = parse_notification('{"op": "UPDATE", "ids": [41, 42], "states": ["running", "scheduled"], '
                               '"at": [1795380280263002, 0]}')
    assert hints[41] == Change(41, "running", datetime(2026, 11, 22, 20, 44, 40, 263002, tzinfo=timezone.utc))
    assert hints[42] is not None and hints[42].scheduled_for == datetime(1970, 1, 1, tzinfo=timezone.utc)
    assert parse_notification('{"op": "DELETE", "ids": [7]}') == {7: Change(7, None, None)}
    # Ids without usable hints are still named: the caller reads those rows back.
    assert parse_notification('{"op": "INSERT", "ids": [1, 2], "states": ["scheduled"], "at": [1]}') == \
        {1: None, 2: None}
    assert parse_notification('{"op": "INSERT", "ids": [3], "states": ["scheduled"], "at": ["x"]}') == {3: None}
    for payload in ("garbage", '{"ids": ["42"]}', '{"ids": [true]}', '{"ids": [4.2]}', '{"ids": []}', "[]",
                    "null", "42", '{"id": 1}', '{"ids": 5}'):
        assert parse_notification(payload) == {}


def test_an_insert_whose_notification_was_lost_is_run_by_the_sweep(engine, db_url):
    spy = psycopg2.connect(db_url)
    spy.autocommit = True
    try:
        with spy.cursor() as cur:
            cur.execute(f"LISTEN {CHANNEL}")
        due_now = insert_event(db_url, 0, silent=True)
        due_soon = insert_event(db_url, 0.6, silent=True)
        control = insert_event(db_url, 0.6)
        # The control's notification arrives; the silent inserts sent none.
        deadline = time.monotonic() + 3
        seen: list[Any] = []
        while time.monotonic() < deadline and not any(control in parse_notification(n.payload) for n in seen):
            if select.select([spy], [], [], 0.2)[0]:
                spy.poll()
                seen.extend(spy.notifies)
                spy.notifies.clear()
        ids = {i for n in seen for i in parse_notification(n.payload)}
        assert control in ids and due_now not in ids and due_soon not in ids
    finally:
        spy.close()
    for event_id in (due_now, due_soon, control):
        assert_on_time(finished(db_url, event_id))


def test_notifications_count_as_heartbeats_so_a_busy_listener_stays_healthy(db, settings, db_url):
    """Under steady traffic select() never times out, so the heartbeat query never runs: received
    notifications must prove the connection alive, or /health calls a busy listener dead."""
    with running_engine(db, settings, listen_timeout_seconds=30.0) as eng:
        before = eng.listener.last_heartbeat
        sql(db_url, "SELECT pg_notify(%s, %s)", (CHANNEL, "garbage"))
        wait_for(lambda: eng.listener.last_heartbeat > before, timeout=3, message="a heartbeat from the notification")
        assert eng.health()["listener"]["status"] == "ok"
        started = time.monotonic()
    assert time.monotonic() - started < 5, "stop waited for the listener's 30 s select()"
