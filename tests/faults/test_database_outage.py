"""PostgreSQL stopped and restarted under a running app (on a server of our own, never the shared one).

The app must survive the outage without help: the API answers 503 JSON at once (no hang, no 500),
/health says what is down, the listener reconnects by itself, and events that fell due while the
database was gone run right after it is back. PUNCTUAL_SOAK=1 makes the outage 30 s.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone

import requests

from tests.faults.conftest import api, assert_every_attempt_recorded_once, at, count, record_figure, soak
from tests.helpers import sql, wait_for

OUTAGE_SECONDS = soak(8.0, 30.0)
ENV = {"DB_POOL_SIZE": "4", "HTTP_THREADS": "8", "WORKER_THREADS": "4", "RECONNECT_MAX_SECONDS": "2"}


def _short_callback(app) -> None:
    """`add` with a 2 s timeout: an attempt whose outcome the outage swallowed is rescued within ~3 s."""
    api(app, "POST", "/callbacks", {"name": "quick", "kind": "python", "target": "add", "timeout_seconds": 2,
                                    "max_attempts": 5}, 201)


def test_the_api_answers_503_json_at_once_during_a_database_outage_and_due_events_run_right_after_it(
        own_pg, own_db_url, start_app_on):
    app = start_app_on(own_db_url, **ENV)
    _short_callback(app)
    # Due inside the outage (1 s after it starts, and half-way) and after it.
    due_inside = [api(app, "POST", "/events", {"callback": "quick", "payload": {"x": i, "y": 1},
                                               "scheduled_for": at(1 + i * OUTAGE_SECONDS / 8)}, 201)["id"]
                  for i in range(5)]
    due_after = [api(app, "POST", "/events", {"callback": "quick", "payload": {"x": i, "y": 2},
                                              "scheduled_for": at(OUTAGE_SECONDS + 3 + i * 0.2)}, 201)["id"]
                 for i in range(5)]

    own_pg.stop("fast")
    down_at = time.monotonic()
    answers: list[tuple[str, int, float]] = []
    listener_seen_down = False
    probes = [("GET", "/events", None), ("POST", "/events", {"callback": "quick", "payload": {"x": 1, "y": 1}}),
              ("GET", "/callbacks", None), ("GET", "/events/1", None), ("GET", "/health", None)]
    while time.monotonic() - down_at < OUTAGE_SECONDS:
        for method, path, body in probes:
            started = time.monotonic()
            response = requests.request(method, app.url + path, json=body, timeout=15)
            took = time.monotonic() - started
            answers.append((f"{method} {path}", response.status_code, took))
            assert response.status_code == 503, (method, path, response.status_code, response.text[:300])
            assert response.headers["Content-Type"].startswith("application/json")
            data = response.json()
            if path == "/health":
                assert data["checks"]["database"]["status"] == "down"
                listener_seen_down |= data["checks"]["listener"]["status"] == "down"
            else:
                assert data["error"]["code"] == "unavailable", data
        time.sleep(0.2)
    own_pg.start()
    back_at = datetime.now(timezone.utc)
    back_mono = time.monotonic()

    slowest = max(took for _, _, took in answers)
    record_figure(f"database outage {OUTAGE_SECONDS:.0f} s: API answers during it",
                  f"{len(answers)} answers, all 503 JSON, slowest {slowest * 1000:.0f} ms")
    assert slowest < 2.0, f"an answer took {slowest:.2f} s while the database was down"
    assert listener_seen_down, "/health never reported the listener down while the database was"

    wait_for(app.healthy, 20, 0.1, "the app to report healthy again")
    healthy_after = time.monotonic() - back_mono
    assert api(app, "GET", "/health")["checks"]["listener"]["reconnects"] >= 1
    wait_for(lambda: count(own_db_url, "SELECT count(*) AS n FROM events WHERE id = ANY(%s) AND state = 'finished'",
                           (due_inside,)) == len(due_inside), 15, 0.1, "the events due during the outage to run")
    rows = sql(own_db_url, "SELECT id, started_at, attempts FROM events WHERE id = ANY(%s)", (due_inside,))
    after_back = [(r["started_at"] - back_at).total_seconds() for r in rows]
    record_figure(f"database outage {OUTAGE_SECONDS:.0f} s: recovery",
                  f"/health 200 after {healthy_after:.1f} s; events due during the outage started "
                  f"{min(after_back):.2f}-{max(after_back):.2f} s after the server was back")
    assert max(after_back) < 5, f"events due during the outage started up to {max(after_back):.2f} s after it"
    assert all(r["attempts"] == 1 for r in rows), rows  # none of them had been claimed during the outage

    wait_for(lambda: count(own_db_url, "SELECT count(*) AS n FROM events WHERE id = ANY(%s) AND state = 'finished'",
                           (due_after,)) == len(due_after), 15, 0.1, "the events due after the outage to run")
    late = sql(own_db_url, "SELECT max(extract(epoch FROM started_at - scheduled_for)) AS n FROM events "
                           "WHERE id = ANY(%s)", (due_after,))[0]["n"]
    assert 0 <= float(late) < 1.0, f"events due after the outage ran {late} s late"
    assert count(own_db_url, "SELECT count(*) AS n FROM events WHERE state <> 'finished'") == 0
    assert_every_attempt_recorded_once(own_db_url)
    assert app.proc.poll() is None


def test_a_fast_restart_while_events_run_loses_none_and_records_each_attempt_once(own_pg, own_db_url, start_app_on):
    app = start_app_on(own_db_url, **ENV)
    _short_callback(app)
    ids = [e["id"] for e in api(app, "POST", "/events/batch", {"events": [
        {"callback": "quick", "payload": {"x": i, "y": 0}, "scheduled_for": at(0.5 + i * 0.05)}
        for i in range(120)]}, 201)["events"]]  # due over 6 s: some run before, during and after the restart
    wait_for(lambda: count(own_db_url, "SELECT count(*) AS n FROM events WHERE state = 'finished'") >= 10, 10, 0.05,
             "the first events to run")
    restarts = soak(1, 5)
    for _ in range(restarts):
        own_pg.stop("fast")   # = pg_ctl restart -m fast, in two steps
        own_pg.start()
        wait_for(app.healthy, 20, 0.1, "the app to be healthy after the restart")
    wait_for(lambda: count(own_db_url, "SELECT count(*) AS n FROM events WHERE id = ANY(%s) AND state = 'finished'",
                           (ids,)) == len(ids), 30, 0.2, "every event to finish after the restart")
    assert_every_attempt_recorded_once(own_db_url)
    results = sql(own_db_url, "SELECT count(*) AS n FROM events WHERE id = ANY(%s) AND result = to_jsonb(payload->'x')",
                  (ids,))
    assert results[0]["n"] == len(ids)
    assert app.proc.poll() is None
    record_figure("database fast restart under load",
                  f"{restarts} restart(s), 120 events: all finished, "
                  f"{count(own_db_url, 'SELECT count(*) AS n FROM events WHERE attempts > 1')} needed a second attempt")
