"""Schedules on real `python app.py` processes (issue 12 points 4, 5 and 8): exactly once across instances,
each catch-up policy after a kill -9 of every instance, an edit while an occurrence runs, the lateness of a
cron of every second next to ordinary events, an app run under another TZ, and a kafka callback end to end.

Every instant and every timing is read from the database (its clock writes created_at, started_at and
finished_at, and `now()` is asked of it), so the test's own clock never decides anything."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

from tests.conftest import kafka_env
from tests.helpers import sql, wait_for

UTC = timezone.utc
ADD = {"x": 1, "y": 2}


def db_now(db_url: str) -> datetime:
    return sql(db_url, "SELECT clock_timestamp() AS now")[0]["now"]


def whole_second_ahead(db_url: str, seconds: float) -> datetime:
    """A whole second at least `seconds` from the database's now: a schedule's start_at."""
    return (db_now(db_url) + timedelta(seconds=seconds + 1)).replace(microsecond=0)


def create_schedule(app: Any, **fields: Any) -> dict[str, Any]:
    body = {"callback": "Addition", "payload": ADD, **fields}
    for key in ("start_at", "end_at"):
        if isinstance(body.get(key), datetime):
            body[key] = body[key].isoformat()
    answer = requests.post(app.url + "/schedules", json=body, timeout=10)
    assert answer.status_code == 201, answer.text
    return answer.json()


def create_callback(app: Any, name: str, kind: str, target: str) -> None:
    answer = requests.post(app.url + "/callbacks", json={"name": name, "kind": kind, "target": target}, timeout=10)
    assert answer.status_code == 201, answer.text


def occurrences(db_url: str, schedule_id: int, where: str = "true", params: tuple = ()) -> list[dict[str, Any]]:
    return sql(db_url, f"""SELECT id, state, scheduled_for, started_at, finished_at, created_at, attempts,
                                  idempotency_key, payload, last_error
                           FROM events WHERE schedule_id = %s AND ({where}) ORDER BY scheduled_for, id""",
               (schedule_id, *params))


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: p100 is the largest value seen."""
    ordered = sorted(values)
    return ordered[max(1, -(-len(ordered) * q // 100)) - 1]


# -- exactly once, across instances --------------------------------------------------------------

def test_three_instances_and_sixty_one_second_occurrences_make_exactly_sixty_events_each_run_once(
        start_app, db_url):
    apps = [start_app() for _ in range(3)]
    create_callback(apps[0], "Record", "python", "record")  # (event, attempt) into a unique key: twice would fail
    start = whole_second_ahead(db_url, 3)
    end = start + timedelta(seconds=59)
    schedule = create_schedule(apps[0], name="sixty", callback="Record", payload={}, every=1, start_at=start,
                               end_at=end)
    expected = [start + timedelta(seconds=i) for i in range(60)]
    assert [datetime.fromisoformat(r) for r in schedule["next_runs"]] == expected[:5]

    wait_for(lambda: db_now(db_url) > end
             and not occurrences(db_url, schedule["id"], "state NOT IN ('finished', 'failed', 'cancelled')")
             and len(occurrences(db_url, schedule["id"])) >= 60,
             timeout=(end - db_now(db_url)).total_seconds() + 20, interval=0.5, message="the 60th occurrence to run")
    for app in apps:
        assert app.healthy()  # all three ran their schedule keeper the whole time

    events = occurrences(db_url, schedule["id"])
    assert len(events) == 60
    assert [e["scheduled_for"] for e in events] == expected  # each instant once, none outside start..end
    assert {e["state"] for e in events} == {"finished"} and {e["attempts"] for e in events} == {1}
    assert len({e["idempotency_key"] for e in events}) == 60
    early = [e for e in events if e["started_at"] < e["scheduled_for"]]
    assert early == []
    runs = sql(db_url, "SELECT event_id, count(*) AS n FROM executions GROUP BY event_id")
    assert len(runs) == 60 and {r["n"] for r in runs} == {1}
    assert sql(db_url, "SELECT count(*) AS n FROM events WHERE schedule_id IS NOT NULL") == [{"n": 60}]


# -- kill -9 of every instance, each catch-up policy ---------------------------------------------

def test_a_kill_9_of_every_instance_for_ten_seconds_gives_what_each_catch_up_policy_says(start_app, db_url):
    app = start_app()
    ids = {policy: create_schedule(app, name=f"every-second-{policy}", every=1, catch_up=policy,
                                   catch_up_limit=50)["id"]
           for policy in ("skip", "latest", "all")}
    wait_for(lambda: all(len(occurrences(db_url, i, "state = 'finished'")) >= 3 for i in ids.values()), 20, 0.2,
             "a few occurrences of each schedule to run")
    killed_at = db_now(db_url)
    app.kill()
    pending = {policy: occurrences(db_url, i, "state = 'scheduled' AND scheduled_for > %s", (killed_at,))
               for policy, i in ids.items()}
    assert all(pending.values()), pending  # the next occurrence existed before the kill

    wait_for(lambda: db_now(db_url) >= killed_at + timedelta(seconds=10), 15, 0.2, "ten seconds of downtime")
    restarted_at = db_now(db_url)
    start_app()

    for policy, schedule_id in ids.items():
        # The downtime of a schedule ends with the new instance's catch-up round for it: the first events
        # that instance made for it were made in that round (one transaction, one created_at).
        caught_up_at = wait_for(lambda: sql(db_url, "SELECT min(created_at) AS at FROM events "
                                                    "WHERE schedule_id = %s AND created_at > %s",
                                            (schedule_id, restarted_at))[0]["at"], 20, 0.1,
                                f"the catch-up round for {policy}")
        missed = occurrences(db_url, schedule_id, "scheduled_for > %s AND scheduled_for <= %s",
                             (killed_at, caught_up_at))
        wait_for(lambda: not occurrences(db_url, schedule_id, "scheduled_for <= %s AND state IN ('scheduled', "
                                                              "'running')", (caught_up_at,)),
                 20, 0.1, f"the caught-up occurrences of {policy} to run")
        ran = occurrences(db_url, schedule_id, "scheduled_for > %s AND scheduled_for <= %s AND state = 'finished'",
                          (killed_at, caught_up_at))
        instants = int((caught_up_at - killed_at).total_seconds())  # every 1 s: this many in the downtime, +-1
        if policy == "skip":
            assert ran == []
            # The pending occurrences made before the kill were cancelled as missed, never run.
            before_kill = {e["id"] for e in pending["skip"]}
            cancelled = [e for e in missed if e["id"] in before_kill]
            assert len(cancelled) == len(before_kill)
            assert all(e["state"] == "cancelled" and "missed" in e["last_error"] for e in cancelled)
        elif policy == "latest":
            assert len(ran) == 1, ran
            # The one run stands for the latest missed instant.
            assert caught_up_at - ran[0]["scheduled_for"] < timedelta(seconds=1)
        else:
            assert instants - 1 <= len(ran) <= instants + 1 and len(ran) >= 10, (instants, len(ran))
            gaps = {b["scheduled_for"] - a["scheduled_for"] for a, b in zip(ran, ran[1:])}
            assert gaps == {timedelta(seconds=1)}  # each missed instant once, none left out
            assert ran[0]["scheduled_for"] - killed_at <= timedelta(seconds=1)
            assert caught_up_at - ran[-1]["scheduled_for"] < timedelta(seconds=1)
        assert len({e["scheduled_for"] for e in ran}) == len(ran)
        print(f"catch_up {policy}: {instants} s from the kill to the catch-up, {len(missed)} occurrence events "
              f"in it, {len(ran)} ran")

    # After the restart, occurrences resume every second.
    for policy, schedule_id in ids.items():
        after = wait_for(lambda: (rows := occurrences(db_url, schedule_id, "state = 'finished' AND created_at > %s "
                                                      "AND scheduled_for > created_at", (restarted_at,)))
                         and len(rows) >= 3 and rows, 20, 0.2, f"{policy} to run on time again")
        gaps = {b["scheduled_for"] - a["scheduled_for"] for a, b in zip(after, after[1:])}
        assert gaps == {timedelta(seconds=1)}, (policy, after)
        assert all(e["started_at"] >= e["scheduled_for"] for e in after)
    keys = sql(db_url, "SELECT idempotency_key FROM events WHERE schedule_id IS NOT NULL")
    assert len(keys) == len({k["idempotency_key"] for k in keys})


# -- an edit while an occurrence runs ------------------------------------------------------------

def test_a_schedule_edited_while_its_occurrence_runs_lets_it_finish_and_replaces_the_pending_one(start_app, db_url):
    app = start_app()
    create_callback(app, "Slow", "python", "record")  # sleeps payload["sleep"] s; records each run once
    start = whole_second_ahead(db_url, 2)
    schedule = create_schedule(app, name="slow", callback="Slow", payload={"sleep": 3, "version": "old"}, every=5,
                               start_at=start)
    running = wait_for(lambda: occurrences(db_url, schedule["id"], "state = 'running'"), 15, 0.05,
                       "the first occurrence to start")[0]
    assert running["scheduled_for"] == start
    pending = wait_for(lambda: occurrences(db_url, schedule["id"], "state = 'scheduled'"), 5, 0.05,
                       "the next occurrence to be made")
    assert [p["scheduled_for"] for p in pending] == [start + timedelta(seconds=5)]
    assert pending[0]["payload"]["version"] == "old"

    edited = requests.patch(f"{app.url}/schedules/{schedule['id']}", timeout=10,
                            json={"payload": {"sleep": 0, "version": "new"}, "every": 4})
    assert edited.status_code == 200, edited.text
    assert occurrences(db_url, schedule["id"], "id = %s", (running["id"],))[0]["state"] == "running"  # still

    replaced = occurrences(db_url, schedule["id"], "id = %s", (pending[0]["id"],))[0]
    assert replaced["state"] == "cancelled" and "edited" in replaced["last_error"]
    new = occurrences(db_url, schedule["id"], "state = 'scheduled'")
    assert [(n["scheduled_for"], n["payload"]["version"]) for n in new] == [(start + timedelta(seconds=4), "new")]
    assert [datetime.fromisoformat(r) for r in edited.json()["next_runs"]][:2] == [
        start + timedelta(seconds=4), start + timedelta(seconds=8)]

    old = wait_for(lambda: (rows := occurrences(db_url, schedule["id"], "id = %s AND state = 'finished'",
                                                (running["id"],))) and rows[0], 10, 0.05, "the running one to end")
    assert old["payload"]["version"] == "old" and old["attempts"] == 1
    done = wait_for(lambda: (rows := occurrences(db_url, schedule["id"], "id = %s AND state = 'finished'",
                                                 (new[0]["id"],))) and rows[0], 15, 0.05, "the new one to run")
    assert done["payload"]["version"] == "new" and done["started_at"] >= done["scheduled_for"]
    # Nothing ran twice: one execution per event that ran, and the replaced one never ran.
    runs = sql(db_url, "SELECT event_id, count(*) AS n FROM executions GROUP BY event_id ORDER BY event_id")
    assert runs == [{"event_id": running["id"], "n": 1}, {"event_id": new[0]["id"], "n": 1}]


# -- lateness ------------------------------------------------------------------------------------

def test_a_cron_of_every_second_is_no_later_than_ordinary_events_due_at_the_same_instants(start_app, db_url,
                                                                                            record_property):
    app = start_app()
    start = whole_second_ahead(db_url, 3)
    seconds = 60  # a minute, as issue 12 asks
    end = start + timedelta(seconds=seconds - 1)
    schedule = create_schedule(app, name="tick", cron="* * * * * *", start_at=start, end_at=end)
    # Ordinary events at the same instants, made ahead in one batch.
    batch = [{"callback": "Addition", "payload": ADD, "scheduled_for": (start + timedelta(seconds=i)).isoformat()}
             for i in range(seconds)]
    answer = requests.post(app.url + "/events/batch", json={"events": batch}, timeout=10)
    assert answer.status_code == 201, answer.text

    wait_for(lambda: sql(db_url, "SELECT count(*) AS n FROM events WHERE state = 'finished'")[0]["n"] >= 2 * seconds,
             (end - db_now(db_url)).total_seconds() + 15, 0.25, "every occurrence and event to run")
    rows = sql(db_url, """SELECT schedule_id IS NOT NULL AS scheduled, scheduled_for,
                                 extract(epoch FROM started_at - scheduled_for)::float8 AS late
                          FROM events WHERE state = 'finished'""")
    made = sorted(r["late"] for r in rows if r["scheduled"])
    ordinary = sorted(r["late"] for r in rows if not r["scheduled"])
    assert len(made) == seconds and len(ordinary) == seconds
    assert sorted(r["scheduled_for"] for r in rows if r["scheduled"]) == [
        start + timedelta(seconds=i) for i in range(seconds)]
    assert min(made) >= 0 and min(ordinary) >= 0  # none early
    figures = {name: {"p50_ms": round(percentile(v, 50) * 1000, 1), "p99_ms": round(percentile(v, 99) * 1000, 1),
                      "max_ms": round(max(v) * 1000, 1)} for name, v in (("occurrences", made),
                                                                           ("ordinary", ordinary))}
    record_property("lateness", json.dumps(figures))
    print(f"lateness of a cron of every second for {seconds} s, next to ordinary events: {figures}")
    assert percentile(made, 99) < 0.5, figures
    # Within the lateness of ordinary events: a generous margin, this machine is shared.
    assert percentile(made, 99) <= percentile(ordinary, 99) + 0.25, figures
    assert schedule["description"]


# -- time zones ----------------------------------------------------------------------------------

def paris(day: str, hhmm: str, first: bool = True) -> datetime:
    """A Paris wall-clock time in UTC by zoneinfo; for an ambiguous time `first` picks the earlier instant."""
    local = datetime.fromisoformat(f"{day}T{hhmm}").replace(tzinfo=ZoneInfo("Europe/Paris"), fold=0 if first else 1)
    return local.astimezone(UTC)


def test_an_app_under_another_tz_answers_the_next_runs_of_a_paris_cron_as_computed_in_utc(start_app, db_url):
    # The transitions of 2027 (the next ones ahead of any run of this test before then): start_at pins the
    # window. Autumn: 2027-10-31 03:00 CEST goes back to 02:00 CET; 02:30 happens twice and runs once (first).
    app = start_app(TZ="Pacific/Auckland")
    autumn = create_schedule(app, name="paris-autumn", cron="30 2 * * *", timezone="Europe/Paris",
                             start_at="2027-10-29T12:00:00+00:00")
    expected = [paris(day, "02:30") for day in ("2027-10-30", "2027-10-31", "2027-11-01", "2027-11-02",
                                                "2027-11-03")]
    assert [f"{d:%Y-%m-%dT%H:%MZ}" for d in expected] == [  # read by hand: CEST is +2, CET +1
        "2027-10-30T00:30Z", "2027-10-31T00:30Z", "2027-11-01T01:30Z", "2027-11-02T01:30Z", "2027-11-03T01:30Z"]
    # Spring: 2027-03-28 02:00 CET jumps to 03:00 CEST; 02:30 does not exist, it runs at 03:00 CEST = 01:00Z.
    spring = create_schedule(app, name="paris-spring", cron="30 2 * * *", timezone="Europe/Paris",
                             start_at="2027-03-26T12:00:00+00:00")
    spring_expected = [paris("2027-03-27", "02:30"), datetime(2027, 3, 28, 1, 0, tzinfo=UTC),
                       paris("2027-03-29", "02:30"), paris("2027-03-30", "02:30"), paris("2027-03-31", "02:30")]
    assert spring_expected[0] == datetime(2027, 3, 27, 1, 30, tzinfo=UTC)
    assert spring_expected[2] == datetime(2027, 3, 29, 0, 30, tzinfo=UTC)

    for schedule, runs in ((autumn, expected), (spring, spring_expected)):
        read = requests.get(f"{app.url}/schedules/{schedule['id']}", timeout=10).json()
        assert [datetime.fromisoformat(r) for r in read["next_runs"]] == runs, read["next_runs"]
        assert [datetime.fromisoformat(r) for r in schedule["next_runs"]] == runs
        assert all(r.endswith(("Z", "+00:00")) for r in read["next_runs"])  # answered in UTC
        # The occurrence made is the first of them, at the same instant.
        assert [e["scheduled_for"] for e in occurrences(db_url, schedule["id"])] == [runs[0]]
    listed = requests.get(app.url + "/schedules", timeout=10).json()["schedules"]
    assert [[datetime.fromisoformat(r) for r in s["next_runs"]] for s in listed] == [expected, spring_expected]
    assert requests.get(app.url + "/health", timeout=5).status_code == 200


# -- Kafka ---------------------------------------------------------------------------------------

@pytest.mark.kafka
def test_a_schedule_with_a_kafka_callback_produces_a_message_every_second_end_to_end(kafka_broker, start_app,
                                                                                    db_url):
    app = start_app(**kafka_env(kafka_broker))
    create_callback(app, "Tick", "kafka", "fired")
    start = whole_second_ahead(db_url, 3)
    count = 5
    schedule = create_schedule(app, name="tick-to-kafka", callback="Tick", every=1, start_at=start,
                               end_at=start + timedelta(seconds=count - 1),
                               payload={"value": {"tick": True}, "key": "tick", "headers": {"kind": "tick"}})

    messages = kafka_broker.read_all("fired", expect=count, timeout=40)
    assert len(messages) == count, [m.value for m in messages]
    events = {e["id"]: e for e in occurrences(db_url, schedule["id"])}
    assert len(events) == count and {e["state"] for e in events.values()} == {"finished"}
    by_event = {}
    for message in messages:
        headers = {name: value.decode() for name, value in message.headers}
        assert message.key == b"tick" and json.loads(message.value) == {"tick": True} and headers["kind"] == "tick"
        by_event[int(headers["punctual-event-id"])] = message
    assert set(by_event) == set(events)  # one message per occurrence, none twice
    ordered = sorted(by_event.items(), key=lambda item: events[item[0]]["scheduled_for"])
    assert [events[i]["scheduled_for"] for i, _ in ordered] == [start + timedelta(seconds=k) for k in range(count)]
    for event_id, message in ordered:
        produced = datetime.fromtimestamp(message.timestamp / 1000, UTC)
        # Never early; produced within a second of its instant (the broker's clock is this machine's).
        assert events[event_id]["scheduled_for"] - timedelta(milliseconds=20) <= produced
        assert produced - events[event_id]["scheduled_for"] < timedelta(seconds=1)
