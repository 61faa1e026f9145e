"""Schedules: each occurrence of a rule becomes an ordinary event, exactly once, in any time zone, with the
catch-up and overlap policies of DESIGN.md "Schedules"."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from controllers.schedules import Rule, advance_one, key_of
from tests.helpers import sql, wait_for

UTC = timezone.utc


def rule(cron: str, zone: str) -> Rule:
    return Rule(cron=cron, every=None, zone=ZoneInfo(zone), start_at=None, end_at=None)


def runs(cron: str, zone: str, after: str, n: int = 4) -> list[str]:
    start = datetime.fromisoformat(after).replace(tzinfo=ZoneInfo(zone))
    return [f"{when:%Y-%m-%dT%H:%MZ}" for when in rule(cron, zone).next_runs(start, n)]


# -- daylight saving, on real transitions -------------------------------------------------------

def test_a_local_time_that_does_not_exist_runs_at_the_first_instant_after_the_gap():
    # Paris, 2026-03-29: 02:00 CET jumps to 03:00 CEST. 02:30 does not exist that day: 03:00 CEST = 01:00Z.
    assert runs("30 2 * * *", "Europe/Paris", "2026-03-27T12:00") == [
        "2026-03-28T01:30Z", "2026-03-29T01:00Z", "2026-03-30T00:30Z", "2026-03-31T00:30Z"]
    # New York, 2026-03-08: 02:00 EST jumps to 03:00 EDT.
    assert runs("30 2 * * *", "America/New_York", "2026-03-07T12:00", 3) == [
        "2026-03-08T07:00Z", "2026-03-09T06:30Z", "2026-03-10T06:30Z"]
    # Lord Howe moves by half an hour: 2026-10-04 02:00 +10:30 jumps to 02:30 +11. 02:15 runs at 02:30 +11.
    assert runs("15 2 * * *", "Australia/Lord_Howe", "2026-10-02T12:00", 3) == [
        "2026-10-02T15:45Z", "2026-10-03T15:30Z", "2026-10-04T15:15Z"]


def test_an_ambiguous_local_time_runs_once_the_first():
    # Paris, 2026-10-25: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice, it runs at the first.
    assert runs("30 2 * * *", "Europe/Paris", "2026-10-23T12:00") == [
        "2026-10-24T00:30Z", "2026-10-25T00:30Z", "2026-10-26T01:30Z", "2026-10-27T01:30Z"]
    assert runs("30 1 * * *", "America/New_York", "2026-10-31T12:00", 3) == [
        "2026-11-01T05:30Z", "2026-11-02T06:30Z", "2026-11-03T06:30Z"]
    # Lord Howe, 2026-04-05: 02:00 +11 goes back to 01:30 +10:30; 01:15 happens twice.
    assert runs("15 1 * * *", "Australia/Lord_Howe", "2026-04-03T12:00", 3) == [
        "2026-04-03T14:15Z", "2026-04-04T14:15Z", "2026-04-05T14:45Z"]


def test_an_interval_of_minutes_keeps_running_through_the_repeated_hour():
    # Every 30 minutes is every 30 real minutes, through the hour that happens twice.
    assert runs("*/30 * * * *", "Europe/Paris", "2026-10-25T01:45", 6) == [
        "2026-10-25T00:00Z", "2026-10-25T00:30Z", "2026-10-25T01:00Z", "2026-10-25T01:30Z",
        "2026-10-25T02:00Z", "2026-10-25T02:30Z"]


def test_a_zone_whose_rules_changed_is_read_with_the_rules_of_each_date():
    # Brazil abolished daylight saving in 2019. In 2018 Sao Paulo's clocks jumped from 00:00 to 01:00 on
    # November 4 (00:30 did not exist: it ran at 01:00 -02 = 03:00Z); on the same date of 2019, nothing moved.
    assert runs("30 0 * * *", "America/Sao_Paulo", "2018-11-03T12:00", 2) == ["2018-11-04T03:00Z", "2018-11-05T02:30Z"]
    assert runs("30 0 * * *", "America/Sao_Paulo", "2019-11-03T12:00", 2) == ["2019-11-04T03:30Z", "2019-11-05T03:30Z"]


def test_a_sixth_field_counts_seconds_and_bounds_are_kept():
    start = datetime(2030, 1, 1, tzinfo=UTC)
    bounded = Rule(cron="*/20 * * * * *", every=None, zone=ZoneInfo("UTC"), start_at=start,
                   end_at=start + timedelta(seconds=60))
    assert [f"{w:%H:%M:%S}" for w in bounded.next_runs(start - timedelta(days=1), 10)] == [
        "00:00:00", "00:00:20", "00:00:40", "00:01:00"]
    every = Rule(cron=None, every=90, zone=ZoneInfo("UTC"), start_at=start, end_at=None)
    assert every.latest(start, start + timedelta(minutes=10), 2) == [start + timedelta(seconds=450),
                                                                   start + timedelta(seconds=540)]


# -- the API ------------------------------------------------------------------------------------

BAD = [
    ({"cron": "61 * * * *"}, "cron"),
    ({"cron": "* * *"}, "cron"),
    ({"cron": "0 9 * * *", "timezone": "Mars/Olympus"}, "timezone"),
    ({"cron": "0 9 * * *", "every": 60}, "cron"),
    ({}, "cron"),
    ({"every": 60, "start_at": "2030-01-02T00:00:00Z", "end_at": "2030-01-01T00:00:00Z"}, "end_at"),
    ({"every": 0.5}, "every"),
    ({"every": 60, "callback": "NoSuchCallback"}, "callback"),
]


@pytest.mark.parametrize("fields,field", BAD)
def test_an_invalid_rule_is_422_with_the_reason_and_stores_nothing(client, db_url, fields, field):
    body = {"name": "bad", "callback": "Addition", **fields}
    response = client.post("/schedules", json=body)
    assert response.status_code == 422, response.json
    error = response.json["error"]
    assert error["code"] == "invalid" and error["message"]
    assert field in str(error["details"]) or field in error["message"]
    assert sql(db_url, "SELECT count(*) AS n FROM schedules") == [{"n": 0}]
    assert sql(db_url, "SELECT count(*) AS n FROM events") == [{"n": 0}]


def test_a_schedule_answers_its_next_runs_and_its_rule_in_words_and_its_next_occurrence_exists(client, db_url):
    made = client.post("/schedules", json={"name": "nightly", "callback": "Addition", "payload": {"x": 1, "y": 2},
                                           "cron": "30 2 * * 1", "timezone": "Europe/Paris"})
    assert made.status_code == 201, made.json
    schedule = made.json
    assert schedule["description"] == "At 02:30 AM, only on Monday (Europe/Paris)"
    runs = [datetime.fromisoformat(r) for r in schedule["next_runs"]]
    assert len(runs) == 5 and runs == sorted(runs)
    assert all(r.astimezone(ZoneInfo("Europe/Paris")).strftime("%a %H:%M") == "Mon 02:30" for r in runs)
    events = sql(db_url, "SELECT * FROM events")
    assert len(events) == 1
    event = events[0]
    assert (event["schedule_id"], event["source"], event["state"]) == (schedule["id"], "schedule", "scheduled")
    assert event["scheduled_for"] == runs[0]
    assert event["idempotency_key"] == key_of(schedule["id"], runs[0]) and event["payload"] == {"x": 1, "y": 2}
    assert client.get(f"/events/{event['id']}").json["schedule_id"] == schedule["id"]
    assert client.get(f"/schedules/{schedule['id']}").json["next_runs"] == schedule["next_runs"]
    assert [s["name"] for s in client.get("/schedules").json["schedules"]] == ["nightly"]
    every = client.post("/schedules", json={"name": "often", "callback": "Addition", "every": 300}).json
    assert every["description"] == "Every 5 minutes" and every["every"] == 300


def test_editing_replaces_the_pending_occurrence_and_deleting_cancels_it_and_keeps_the_past(client, db_url):
    schedule = client.post("/schedules", json={"name": "s", "callback": "Addition", "cron": "0 9 * * *"}).json
    first = sql(db_url, "SELECT id, scheduled_for FROM events WHERE state = 'scheduled'")
    edited = client.patch(f"/schedules/{schedule['id']}", json={"cron": "0 10 * * *"})
    assert edited.status_code == 200, edited.json
    assert sql(db_url, "SELECT state FROM events WHERE id = %s", (first[0]["id"],)) == [{"state": "cancelled"}]
    pending = sql(db_url, "SELECT scheduled_for FROM events WHERE state = 'scheduled'")
    assert len(pending) == 1 and pending[0]["scheduled_for"].hour == 10
    # A past occurrence (finished) stays when the schedule goes; the pending one is cancelled.
    sql(db_url, """INSERT INTO events (callback_id, state, finished_at, schedule_id, source)
                   SELECT id, 'finished', now(), %s, 'schedule' FROM callbacks WHERE name = 'Addition'""",
        (schedule["id"],))
    assert client.delete(f"/schedules/{schedule['id']}").status_code == 204
    states = sql(db_url, "SELECT state, schedule_id FROM events ORDER BY id")
    assert [s["state"] for s in states] == ["cancelled", "cancelled", "finished"]
    assert {s["schedule_id"] for s in states} == {None}
    assert client.get(f"/schedules/{schedule['id']}").status_code == 404


def test_a_schedule_needs_the_admin_scope(settings, db, db_url):
    import hashlib

    from app import create_app

    sql(db_url, "INSERT INTO api_tokens (name, scope, token_hash) VALUES ('w', 'write', %s)",
        (hashlib.sha256(b"w-secret").hexdigest(),))
    client = create_app(settings.with_(api_token="admin-secret"), db).test_client()
    body = {"name": "s", "callback": "Addition", "every": 60}
    assert client.post("/schedules", json=body, headers={"Authorization": "Bearer w-secret"}).status_code == 403
    assert client.get("/schedules", headers={"Authorization": "Bearer w-secret"}).status_code == 200
    assert client.post("/schedules", json=body, headers={"Authorization": "Bearer admin-secret"}).status_code == 201


# -- exactly once, policies ---------------------------------------------------------------------

def make(db_url: str, **fields: Any) -> int:
    columns = {"name": "s", "payload": "{}", **fields}
    names = ", ".join(columns)
    marks = ", ".join(["%s"] * len(columns))
    return sql(db_url, f"""INSERT INTO schedules (callback_id, {names})
                           SELECT id, {marks} FROM callbacks WHERE name = 'Addition' RETURNING id""",
               tuple(columns.values()))[0]["id"]


def test_instances_advancing_one_schedule_at_once_make_each_occurrence_once(db, db_url):
    """Eight threads (as eight instances would) advance a schedule of every second whose last hour was
    missed, with catch_up all: each instant is made once."""
    now = datetime.now(UTC)
    schedule_id = make(db_url, every_seconds=1, catch_up="all", catch_up_limit=5000,
                       start_at=now - timedelta(hours=2), made_until=now - timedelta(hours=1))
    barrier = threading.Barrier(8)

    def instance() -> None:
        barrier.wait()
        for _ in range(3):
            advance_one(db, schedule_id, catching_up=True)

    threads = [threading.Thread(target=instance) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    rows = sql(db_url, "SELECT idempotency_key, scheduled_for FROM events WHERE schedule_id = %s", (schedule_id,))
    keys = [r["idempotency_key"] for r in rows]
    assert len(keys) == len(set(keys))
    instants = sorted(r["scheduled_for"] for r in rows)
    assert 3600 <= len(instants) <= 3605
    assert all((b - a) == timedelta(seconds=1) for a, b in zip(instants, instants[1:]))


@pytest.mark.parametrize("policy,expected", [("skip", 0), ("latest", 1), ("all", 20)])
def test_a_catch_up_after_downtime_does_what_its_policy_says(db, db_url, policy, expected):
    # 30 minutes down for a schedule of every minute, whose last made occurrence (made before the
    # downtime) still waits: skip runs nothing of it, latest one, all the last catch_up_limit (20).
    now = datetime.now(UTC)
    schedule_id = make(db_url, every_seconds=60, catch_up=policy, catch_up_limit=20,
                       start_at=now - timedelta(hours=1), made_until=now - timedelta(minutes=30))
    sql(db_url, """INSERT INTO events (callback_id, scheduled_for, schedule_id, source, idempotency_key)
                   SELECT id, %s, %s, 'schedule', 'pre' FROM callbacks WHERE name = 'Addition'""",
        (now - timedelta(minutes=30), schedule_id))
    advance_one(db, schedule_id, catching_up=True)
    past = sql(db_url, """SELECT state FROM events WHERE schedule_id = %s AND scheduled_for <= now()""",
               (schedule_id,))
    assert sum(1 for r in past if r["state"] == "scheduled") == expected
    future = sql(db_url, "SELECT count(*) AS n FROM events WHERE schedule_id = %s AND scheduled_for > now()",
                 (schedule_id,))
    assert future == [{"n": 1}]  # and the next occurrence exists


def test_overlap_skip_makes_nothing_while_the_previous_occurrence_runs(db, db_url):
    now = datetime.now(UTC)
    schedule_id = make(db_url, every_seconds=1, overlap="skip", made_until=now - timedelta(seconds=5))
    sql(db_url, """INSERT INTO events (callback_id, scheduled_for, schedule_id, state, attempts, started_at,
                                       lease_until, source)
                   SELECT id, %s, %s, 'running', 1, now(), now() + interval '1 minute', 'schedule'
                   FROM callbacks WHERE name = 'Addition'""", (now - timedelta(seconds=5), schedule_id))
    advance_one(db, schedule_id)
    assert sql(db_url, "SELECT count(*) AS n FROM events WHERE schedule_id = %s", (schedule_id,)) == [{"n": 1}]
    sql(db_url, "UPDATE events SET state = 'finished', finished_at = now() WHERE schedule_id = %s", (schedule_id,))
    advance_one(db, schedule_id)
    pending = sql(db_url, "SELECT scheduled_for FROM events WHERE schedule_id = %s AND state = 'scheduled'",
                  (schedule_id,))
    assert len(pending) == 1 and pending[0]["scheduled_for"] > now  # the next one; the ones that passed skipped


def test_a_paused_schedule_makes_nothing_and_resuming_applies_its_catch_up(client, db_url):
    schedule = client.post("/schedules", json={"name": "p", "callback": "Addition", "every": 60,
                                               "catch_up": "latest"}).json
    paused = client.post(f"/schedules/{schedule['id']}/pause")
    assert paused.status_code == 200 and paused.json["paused"] is True
    assert sql(db_url, "SELECT count(*) AS n FROM events WHERE state = 'scheduled'") == [{"n": 0}]
    sql(db_url, "UPDATE schedules SET made_until = now() - interval '10 minutes' WHERE id = %s", (schedule["id"],))
    resumed = client.post(f"/schedules/{schedule['id']}/resume")
    assert resumed.status_code == 200 and resumed.json["paused"] is False
    rows = sql(db_url, "SELECT scheduled_for <= now() AS past FROM events WHERE state = 'scheduled'")
    assert sorted(r["past"] for r in rows) == [False, True]  # one catch-up run (latest), and the next one


def test_occurrences_run_as_ordinary_events(live_client, db_url):
    made = live_client.post("/schedules", json={"name": "tick", "callback": "Addition", "payload": {"x": 2, "y": 2},
                                                "cron": "* * * * * *"})
    assert made.status_code == 201, made.json

    def finished() -> list[dict[str, Any]]:
        return sql(db_url, "SELECT result, started_at, scheduled_for FROM events WHERE state = 'finished'")

    done = wait_for(lambda: len(rows := finished()) >= 3 and rows, timeout=10, message="three occurrences")
    assert all(r["result"] == 4 for r in done)
    assert all(r["started_at"] >= r["scheduled_for"] for r in done)  # never early
    keys = sql(db_url, "SELECT idempotency_key FROM events")
    assert len({k["idempotency_key"] for k in keys}) == len(keys)


# -- the preview (the web form's live "next 5 runs") -------------------------------------------------

def test_a_preview_answers_the_next_runs_a_created_schedule_answers_and_writes_nothing(client, db_url):
    rule = {"cron": "30 2 * * 1", "timezone": "Europe/Paris"}
    preview = client.get("/schedules/preview", query_string=rule)
    assert preview.status_code == 200, preview.json
    assert sql(db_url, "SELECT count(*) AS n FROM schedules") == [{"n": 0}]
    assert sql(db_url, "SELECT count(*) AS n FROM events") == [{"n": 0}]
    made = client.post("/schedules", json={"name": "nightly", "callback": "Addition", **rule}).json
    assert preview.json == {"next_runs": made["next_runs"], "description": made["description"]}
    assert preview.json["description"] == "At 02:30 AM, only on Monday (Europe/Paris)"
    # Bounds count as in a schedule: nothing before start_at, nothing after end_at.
    bounded = client.get("/schedules/preview", query_string={
        "every": "3600", "start_at": "2031-01-01T00:00:00+01:00", "end_at": "2031-01-01T02:00:00Z"}).json
    assert bounded == {"next_runs": ["2030-12-31T23:00:00+00:00", "2031-01-01T00:00:00+00:00",
                                     "2031-01-01T01:00:00+00:00", "2031-01-01T02:00:00+00:00"],
                       "description": "Every hour"}


@pytest.mark.parametrize("rule,field", [
    ({"cron": "61 * * * *"}, "cron"),
    ({"cron": "* * *"}, "cron"),
    ({"cron": "0 9 * * *", "timezone": "Mars/Olympus"}, "timezone"),
    ({"cron": "0 9 * * *", "every": 60}, "cron"),
    ({}, "cron"),
    ({"every": 60, "start_at": "2030-01-02T00:00:00Z", "end_at": "2030-01-01T00:00:00Z"}, "end_at"),
    ({"every": 0.5}, "every"),
])
def test_a_preview_of_a_rule_a_create_would_refuse_is_422_with_the_same_reason(client, db_url, rule, field):
    response = client.get("/schedules/preview", query_string={k: str(v) for k, v in rule.items()})
    assert response.status_code == 422, response.json
    error = response.json["error"]
    assert error["code"] == "invalid" and (field in str(error["details"]) or field in error["message"])
    created = client.post("/schedules", json={"name": "bad", "callback": "Addition", **rule})
    assert created.status_code == 422 and created.json["error"]["message"] == error["message"]
    assert sql(db_url, "SELECT count(*) AS n FROM schedules") == [{"n": 0}]


def test_a_preview_refuses_what_is_not_part_of_a_rule(client):
    response = client.get("/schedules/preview", query_string={"every": "60", "name": "x"})
    assert response.status_code == 422 and "name" in response.json["error"]["message"]
