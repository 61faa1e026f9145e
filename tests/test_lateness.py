"""GET /stats/lateness (issue 14, point 4): per minute of the last hour, p50 and p99 of started_at - scheduled_for,
computed by the database from the events; found through event_history's primary key, not a scan of the events."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from controllers import lateness
from controllers.lateness import Lateness
from tests.helpers import wait_for


def percentile_cont(values: list[float], fraction: float) -> float:
    """PostgreSQL's percentile_cont: linear interpolation between the two nearest ranks."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def started(db, minutes_ago: int, late: list[float], callback: str = "Addition", state: str = "finished") -> None:
    """Events whose latest attempt started 30 s into the minute `minutes_ago` before this one, `late` seconds after
    its scheduled_for (the insert trigger writes their history rows now, as a real attempt's outcome would be)."""
    db.query(
        """INSERT INTO events (callback_id, scheduled_for, started_at, finished_at, state, attempts)
           SELECT c.id, m.at - make_interval(secs => v.late), m.at,
                  CASE WHEN %(state)s IN ('finished', 'failed') THEN m.at END, %(state)s, 1
           FROM callbacks c, unnest(%(late)s::float8[]) AS v(late),
                (SELECT date_trunc('minute', now()) - make_interval(mins => %(ago)s) + interval '30 seconds' AS at) m
           WHERE c.name = %(callback)s""",
        {"state": state, "late": late, "ago": minutes_ago, "callback": callback})


def minute_of(now: str, minutes_ago: int) -> str:
    at = datetime.strptime(now, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc, second=0)
    return (at - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_each_minute_has_the_percentiles_of_its_attempts(client, db):
    rng = random.Random(14)
    recent = [round(rng.uniform(0.001, 0.02), 6) for _ in range(40)] + [0.35]  # one slow start in the minute
    older = [round(rng.expovariate(200), 6) for _ in range(25)]
    started(db, 3, recent)
    started(db, 41, older)
    started(db, 3, [0.5], state="running")  # running: counts, at its start
    started(db, 3, [900.0], callback="Alert")  # a manual event: a person's response time, not lateness
    started(db, 3, [-5.0], state="scheduled")  # waiting for its retry: scheduled_for moved, its start is old
    started(db, 75, [7.0])  # before the window

    body = client.get("/stats/lateness").json
    by_minute = {row["minute"]: row for row in body["per_minute"]}
    assert set(by_minute) == {minute_of(body["now"], 3), minute_of(body["now"], 41)}, body
    three = by_minute[minute_of(body["now"], 3)]
    counted = recent + [0.5]
    assert three["attempts"] == len(counted)
    assert abs(three["p50"] - percentile_cont(counted, 0.5)) < 1e-6
    assert abs(three["p99"] - percentile_cont(counted, 0.99)) < 1e-6
    forty_one = by_minute[minute_of(body["now"], 41)]
    assert forty_one["attempts"] == len(older)
    assert abs(forty_one["p50"] - percentile_cont(older, 0.5)) < 1e-6
    assert abs(forty_one["p99"] - percentile_cont(older, 0.99)) < 1e-6
    assert [row["minute"] for row in body["per_minute"]] == sorted(by_minute)


def test_attempts_the_engine_runs_show_at_once(live_client, db):
    for _ in range(20):
        assert live_client.post("/events", json={"callback": "Addition", "payload": {"x": 1, "y": 2}}).status_code == 201
    wait_for(lambda: db.query("SELECT count(*) AS n FROM events WHERE state = 'finished'")[0]["n"] == 20, 10)
    rows = live_client.get("/stats/lateness").json["per_minute"]
    assert sum(row["attempts"] for row in rows) == 20, rows
    for row in rows:
        assert 0 <= row["p50"] <= row["p99"] < 5, row


def test_a_minute_that_is_over_is_read_once(db, monkeypatch):
    started(db, 5, [0.01, 0.02, 0.03])
    started(db, 0, [0.04])
    sinces = []
    real = lateness.read
    monkeypatch.setattr(lateness, "read", lambda database, since=None: sinces.append(since) or real(database, since))
    reader = Lateness(db, ttl=0)
    first = reader.last_hour()
    started(db, 5, [9.0])  # written late into a minute that is over: not read again
    second = reader.last_hour()
    assert sinces[0] is None
    now = datetime.strptime(second["now"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert now - timedelta(minutes=3) <= sinces[1] <= now - timedelta(minutes=2)  # the last minutes only
    assert first["per_minute"] == second["per_minute"]
    assert [row["attempts"] for row in second["per_minute"]] == [3, 1]


def test_the_window_is_found_by_the_history_primary_key_not_a_scan(db):
    """events has no index on started_at (it would cost each claim its HOT update): the window's events come from
    event_history's newest rows, found by walking its primary key backwards; neither table is read whole."""
    db.query("""INSERT INTO events (callback_id, scheduled_for, started_at, finished_at, state, attempts)
                SELECT 1, now() - interval '3 days', now() - interval '3 days', now() - interval '3 days', 'finished', 1
                FROM generate_series(1, 20000)""")
    db.query("UPDATE event_history SET at = now() - interval '3 days'")
    started(db, 2, [0.01] * 50)
    db.query("ANALYZE events")
    db.query("ANALYZE event_history")
    since = db.query("SELECT date_trunc('minute', now()) - interval '59 minutes' AS at")[0]["at"]

    def plan(sql: str, params: dict) -> str:
        return "\n".join(row["QUERY PLAN"] for row in db.query("EXPLAIN " + sql, params))

    first = plan(lateness._FIRST_ID_SQL, {"before": since - lateness.CLOCK_MARGIN})
    assert "Index Scan Backward using event_history_pkey" in first, first
    first_id = db.query(lateness._FIRST_ID_SQL, {"before": since - lateness.CLOCK_MARGIN})[0]["id"]
    per_minute = plan(lateness._PER_MINUTE_SQL, {"first_id": first_id, "since": since})
    assert "Seq Scan on event_history" not in per_minute and "Seq Scan on events" not in per_minute, per_minute
    assert "event_history_pkey" in per_minute and "events_pkey" in per_minute, per_minute
