"""The shortcuts taken for speed keep every guarantee: inline handlers, the idle instance claiming
what its own API just created, and statement-level triggers.

Each shortcut is proved to be taken (not only that the result is right), and to leave the same
trail as the ordinary path: one history row per state change, audit lines, once per attempt.
"""
from __future__ import annotations

import json
import select
import threading
import time
from typing import Any

import psycopg2

from engine.listener import CHANNEL, parse_notification
from tests.helpers import event_history, running_engine, sql, wait_for


def make_callback(db_url: str, name: str, target: str) -> int:
    return sql(db_url, "INSERT INTO callbacks (name, kind, target) VALUES (%s, 'python', %s) RETURNING id",
               (name, target))[0]["id"]


def states(db_url: str) -> dict[str, int]:
    return {r["state"]: r["n"] for r in sql(db_url, "SELECT state, count(*) AS n FROM events GROUP BY state")}


def history_per_event(db_url: str) -> dict[int, list[tuple[str, int]]]:
    ids = [r["event_id"] for r in sql(db_url, "SELECT DISTINCT event_id FROM event_history")]
    return {event_id: [(h["state"], h["attempt"]) for h in event_history(db_url, event_id)] for event_id in ids}


# -- inline handlers --------------------------------------------------------------------------

def test_inline_handlers_run_in_the_claiming_thread_and_leave_the_same_trail(live_client, db_url, log_dir):
    make_callback(db_url, "Inline", "thread_inline")
    make_callback(db_url, "Pooled", "thread_pooled")
    body = {"events": [{"callback": "Inline"}] * 300 + [{"callback": "Pooled"}] * 20
            + [{"callback": "Addition", "payload": {"x": 2, "y": 3}}]}
    created = live_client.post("/events/batch", json=body)
    assert created.status_code == 201, created.json
    wait_for(lambda: states(db_url) == {"finished": 321}, timeout=15, message="every event to finish")

    ran_in = {r["callback"]: set() for r in sql(db_url, "SELECT name AS callback FROM callbacks")}
    for r in sql(db_url, "SELECT c.name AS callback, e.result FROM events e JOIN callbacks c ON c.id = e.callback_id"):
        ran_in[r["callback"]].add(json.dumps(r["result"]))
    assert ran_in["Inline"] == {'"punctual-dispatcher"'}  # claimed and run by the dispatcher itself
    assert ran_in["Pooled"] == {'"punctual-worker"'}      # handed to the worker pool
    assert ran_in["Addition"] == {"5"}                    # a built-in, also inline
    # The same trail as a pooled attempt: scheduled -> running -> finished, one attempt, audited.
    assert set(map(tuple, history_per_event(db_url).values())) == {
        (("scheduled", 0), ("running", 1), ("finished", 1))}
    actions = [json.loads(line)["action"] for line in (log_dir / "events.log").read_text().splitlines()]
    assert actions.count("attempt_started") == 321 and actions.count("attempt_succeeded") == 321


def test_a_stop_in_the_middle_of_an_inline_batch_gives_back_what_had_not_started(db, settings, db_url):
    make_callback(db_url, "Inline", "thread_inline")
    sql(db_url, """INSERT INTO events (callback_id, payload)
                   SELECT id, '{"pause": 0.02}' FROM callbacks, generate_series(1, 60) WHERE name = 'Inline'""")
    # The first claim takes a few (a callback not yet seen finishing is capped); once it is known
    # to be quick, the next claim takes about 28, which run back to back for about half a second.
    with running_engine(db, settings) as eng:
        wait_for(lambda: states(db_url).get("finished", 0) >= 10, timeout=10, message="a few to finish")
    # Stopped mid-batch: nothing is left running; what ran is recorded, the rest is due again with
    # its attempt not counted (it never started).
    rows = sql(db_url, "SELECT state, attempts, last_error FROM events")
    assert {r["state"] for r in rows} <= {"finished", "scheduled"}
    released = [r for r in rows if (r["last_error"] or "").startswith("released: instance shutting down")]
    assert released, "the stop came after the whole claimed batch had run"
    for r in rows:
        assert r["attempts"] == (1 if r["state"] == "finished" else 0)  # released ones were never started
    assert not len(eng.inflight)


# -- the idle instance claims a new due event from its notification -------------------------------

def test_an_idle_instance_claims_a_new_due_event_from_its_notification_without_the_dispatcher(
        db, settings, db_url, log_dir):
    from app import create_app

    make_callback(db_url, "Pooled", "thread_pooled")
    # The sweep far away and the dispatcher never woken: only the listener's claim by id can start
    # these in time. Events from the API and from plain SQL alike.
    with running_engine(db, settings, sweep_seconds=60) as eng:
        eng.dispatcher.wake = eng.scheduler._on_due = lambda *_: None  # only an offer by id can claim
        client = create_app(eng.settings, db, eng, eng.metrics).test_client()
        for callback, expected in (("Addition", 7), ("Pooled", "punctual-worker")):
            response = client.post("/events", json={"callback": callback, "payload": {"x": 3, "y": 4}})
            assert response.status_code == 201, response.json
            from_sql = sql(db_url, "INSERT INTO events (callback_id, payload) SELECT id, '{\"x\": 3, \"y\": 4}' "
                                   "FROM callbacks WHERE name = %s RETURNING id", (callback,))[0]["id"]
            for event_id in (response.json["id"], from_sql):
                began = time.monotonic()
                done = wait_for(lambda: (r := sql(db_url, "SELECT * FROM events WHERE id = %s", (event_id,))[0])
                                ["state"] == "finished" and r, timeout=5, message="the event to finish")
                assert time.monotonic() - began < 2
                assert done["result"] == expected and done["worker"] == eng.settings.instance_name
                assert history_per_event(db_url)[event_id] == [("scheduled", 0), ("running", 1), ("finished", 1)]


def test_an_idle_instance_starts_what_its_api_creates_without_waiting_for_any_notification(
        db, settings, db_url, log_dir):
    from app import create_app

    make_callback(db_url, "Pooled", "thread_pooled")
    make_callback(db_url, "Inline", "thread_inline")
    with running_engine(db, settings, sweep_seconds=60) as eng:
        # No listener, no timer, no claim of everything due: only the claim made in the creating transaction
        # can start these events within the minute.
        eng.listener.stop()
        eng.dispatcher.wake = eng.scheduler._on_due = lambda *_: None
        client = create_app(eng.settings, db, eng, eng.metrics).test_client()
        single = client.post("/events", json={"callback": "Addition", "payload": {"x": 3, "y": 4}})
        batch = client.post("/events/batch", json={"events": [{"callback": "Pooled"},
                                                        {"callback": "Addition", "payload": {"x": 1, "y": 2}}]})
        later = client.post("/events", json={"callback": "Addition", "scheduled_for": "2999-01-01T00:00:00Z"})
        inline = client.post("/events", json={"callback": "Inline"})
        assert single.status_code == batch.status_code == later.status_code == inline.status_code == 201
        assert (single.json["state"], single.json["attempts"]) == ("running", 1)  # inserted claimed
        ids = [single.json["id"]] + [e["id"] for e in batch.json["events"]] + [inline.json["id"]]
        done = wait_for(lambda: (rows := sql(db_url, "SELECT id, state, result, worker FROM events WHERE id = ANY(%s)",
                                             (ids,))) and all(r["state"] == "finished" for r in rows) and rows,
                        timeout=5, message="the new events to finish")
        # The inline handler ran in the creating request's thread (here, the test client's), before the answer.
        assert {r["id"]: r["result"] for r in done} == {ids[0]: 7, ids[1]: "punctual-worker", ids[2]: 3,
                                                        ids[3]: threading.current_thread().name}
        assert {r["worker"] for r in done} == {eng.settings.instance_name}
        # A future event is not claimed early; nothing is left reserved.
        assert sql(db_url, "SELECT state FROM events WHERE id = %s", (later.json["id"],))[0]["state"] == "scheduled"
        assert eng.dispatcher._reserved == 0
    # The same trail as the ordinary path: created, then one attempt, audited in that order.
    for event_id in ids:
        assert history_per_event(db_url)[event_id] == [("scheduled", 0), ("running", 1), ("finished", 1)]
    lines = [json.loads(line) for line in (log_dir / "events.log").read_text().splitlines()]
    for event_id in ids:
        actions = [line["action"] for line in lines if line.get("event_id") == event_id]
        assert actions == ["event_created", "attempt_started", "attempt_succeeded"], actions



def _claims_at_creation_only(eng: Any) -> None:
    """No listener, no timer, no claim of everything due: only a claim made by a creating transaction starts an
    event within the minute (the sweep)."""
    eng.listener.stop()
    eng.dispatcher.wake = eng.scheduler._on_due = lambda *_: None


def test_a_batch_of_inline_events_is_claimed_as_it_is_created_and_run_highest_priority_first(db, settings, db_url):
    from app import create_app

    make_callback(db_url, "Order", "run_order")
    with running_engine(db, settings, sweep_seconds=60) as eng:
        _claims_at_creation_only(eng)
        client = create_app(eng.settings, db, eng, eng.metrics).test_client()
        # More than a request runs in its own thread (half the workers): the dispatcher's thread runs them.
        priorities = [n % 3 for n in range(3 * eng.settings.worker_threads)]
        answer = client.post("/events/batch", json={"events": [{"callback": "Order", "priority": p}
                                                               for p in priorities]})
        assert answer.status_code == 201
        events = answer.json["events"]
        assert {(e["state"], e["attempts"]) for e in events} == {("running", 1)}  # inserted claimed
        ids = [e["id"] for e in events]
        done = wait_for(lambda: (rows := sql(db_url, "SELECT id, state, result FROM events WHERE id = ANY(%s)",
                                             (ids,))) and all(r["state"] == "finished" for r in rows) and rows,
                        timeout=10, message="the batch to finish")
        assert eng.dispatcher._reserved == 0
    ran = sorted(done, key=lambda r: r["result"])
    # In claim order: highest priority first, then oldest first.
    expected = sorted(events, key=lambda e: (-e["priority"], e["id"]))
    assert [r["id"] for r in ran] == [e["id"] for e in expected]
    for event_id in ids:
        assert history_per_event(db_url)[event_id] == [("scheduled", 0), ("running", 1), ("finished", 1)]


def test_no_event_is_claimed_at_creation_while_an_earlier_due_event_waits(db, settings, db_url):
    from app import create_app

    pooled = make_callback(db_url, "Pooled", "thread_pooled")
    manual = sql(db_url, "INSERT INTO callbacks (name, kind, target) VALUES ('Desk', 'manual', '') RETURNING id")[0]["id"]
    with running_engine(db, settings, sweep_seconds=60) as eng:
        _claims_at_creation_only(eng)
        client = create_app(eng.settings, db, eng, eng.metrics).test_client()
        # A due event waiting for a person does not hold new ones back: it is not the engine's to run.
        sql(db_url, "INSERT INTO events (callback_id) VALUES (%s)", (manual,))
        first = client.post("/events/batch", json={"events": [{"callback": "Addition", "payload": {"x": 1, "y": 1}}]})
        assert first.json["events"][0]["state"] == "running"
        # A due event the engine has not claimed yet (its notification lost): new ones must not run before it.
        waiting = sql(db_url, "INSERT INTO events (callback_id) VALUES (%s) RETURNING id", (pooled,))[0]["id"]
        later = client.post("/events/batch", json={"events": [{"callback": "Addition", "payload": {"x": 1, "y": 2}}
                                                              for _ in range(20)]})
        single = client.post("/events", json={"callback": "Pooled"})
        assert {e["state"] for e in later.json["events"]} == {single.json["state"]} == {"scheduled"}
        assert eng.dispatcher._reserved == 0
        assert sql(db_url, "SELECT state FROM events WHERE id = %s", (waiting,))[0]["state"] == "scheduled"


def test_a_creating_request_waits_while_the_completer_is_behind_and_never_on_a_stopped_one(db, settings):
    from engine.completer import Completer
    from engine.queries import Outcome
    from metrics import Metrics

    completer = Completer(db, settings, Metrics())
    for n in range(5):  # outcomes of attempts this instance does not hold: written as nothing, dropped
        completer.put(Outcome(n, 1, True))
    began = time.monotonic()
    assert completer.wait_below(2, timeout=5) is False  # stopped: nothing would come down, so no wait at all
    assert time.monotonic() - began < 1
    assert completer.wait_below(5, timeout=0) is True
    database_answers = threading.Event()
    write = completer._write_each
    completer._write_each = lambda outcomes: (database_answers.wait(10), write(outcomes))  # type: ignore[method-assign]
    completer.start()
    try:
        began = time.monotonic()
        assert completer.wait_below(0, timeout=0.3) is False  # running but behind: waited the whole timeout
        assert time.monotonic() - began >= 0.3
        database_answers.set()
        assert completer.wait_below(0, timeout=5) is True  # the backlog was written
        assert completer.backlog == 0
    finally:
        database_answers.set()
        completer.stop()


def test_a_claim_made_at_creation_is_given_back_uncounted_if_the_instance_stops_before_starting_it(
        db, settings, db_url):
    from controllers.events import create_event
    from schemas import EventCreate

    with running_engine(db, settings, sweep_seconds=60) as eng:
        event, _ = create_event(db, EventCreate(callback="Addition", payload={"x": 1, "y": 1}),
                                starter=_StopsBeforeHandOver(eng.dispatcher))
        assert event["state"] == "running"  # inserted claimed
        assert eng.dispatcher._reserved == 0
    row = sql(db_url, "SELECT state, attempts, worker, last_error FROM events WHERE id = %s", (event["id"],))[0]
    assert (row["state"], row["attempts"]) == ("scheduled", 0)
    assert row["last_error"].startswith("released: instance shutting down")


class _StopsBeforeHandOver:
    """The instance's own starter, but its stop begins between the creation's commit and the hand-over."""

    def __init__(self, dispatcher: Any) -> None:
        self.dispatcher = dispatcher
        self.worker = dispatcher.worker
        self.lease_grace = dispatcher.lease_grace

    def runs_inline(self, kind: str, target: str) -> bool:
        return self.dispatcher.runs_inline(kind, target)

    def admit(self, count: int) -> None:
        self.dispatcher.admit(count)

    def reserve(self, pooled: int, inline: list[int]) -> bool:
        return self.dispatcher.reserve(pooled, inline)

    def withdraw(self, count: int) -> None:
        self.dispatcher.withdraw(count)

    def hand_over(self, created: Any) -> None:
        self.dispatcher.quiesce()
        self.dispatcher.hand_over(created)


def test_a_claim_by_id_takes_nothing_another_instance_holds_or_that_is_not_due(db, db_url):
    from engine import queries

    cb = make_callback(db_url, "Pooled", "thread_pooled")
    due, future, taken = (sql(db_url, "INSERT INTO events (callback_id, scheduled_for) VALUES (%s, now() + %s) "
                                      "RETURNING id", (cb, delay))[0]["id"]
                          for delay in ("0 s", "1 hour", "0 s"))
    assert [r.id for r in queries.claim_ids(db, "other", [taken], 5)] == [taken]
    claimed = queries.claim_ids(db, "me", [due, future, taken], 5)
    assert [r.id for r in claimed] == [due]
    assert {r["id"]: r["worker"] for r in sql(db_url, "SELECT id, worker FROM events WHERE state = 'running'")} == \
        {due: "me", taken: "other"}


# -- a finished attempt claims again only when the last claim held back ----------------------------

def test_at_a_steady_rate_finished_attempts_add_no_claim_of_everything_due(db, settings, db_url, monkeypatch):
    from engine import queries

    make_callback(db_url, "Pooled", "thread_pooled")
    calls = []
    real = queries.claim_due
    monkeypatch.setattr(queries, "claim_due", lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
    # The sweep (and the dispatcher's own period) far away: every claim below is caused by an event.
    with running_engine(db, settings, sweep_seconds=60):
        started_with = len(calls)  # the catch-up at start
        for _ in range(40):
            sql(db_url, "INSERT INTO events (callback_id) SELECT id FROM callbacks WHERE name = 'Pooled'")
            time.sleep(0.02)
        wait_for(lambda: states(db_url) == {"finished": 40}, timeout=15, message="every event to finish")
    # Each event was claimed by id from its notification; each finished attempt freed a worker slot, and with
    # nothing held back none of them made the dispatcher claim everything due (it did, 40 times, before).
    assert len(calls) - started_with <= 2, len(calls) - started_with


def test_a_backlog_beyond_what_the_instance_may_hold_is_claimed_as_slots_come_free(db, settings, db_url):
    make_callback(db_url, "Slow", "sleep")
    make_callback(db_url, "Pooled", "thread_pooled")
    # Slow attempts: two at a time (half of four workers); quick ones: the claim holds at most 4 + 2 at once.
    sql(db_url, """INSERT INTO events (callback_id, payload) SELECT id, '{"seconds": 0.3}'
                   FROM callbacks, generate_series(1, 12) WHERE name = 'Slow'""")
    sql(db_url, "INSERT INTO events (callback_id) SELECT id FROM callbacks, generate_series(1, 60) "
                "WHERE name = 'Pooled'")
    began = time.monotonic()
    with running_engine(db, settings, sweep_seconds=60, worker_threads=4, claim_batch=2):
        wait_for(lambda: states(db_url) == {"finished": 72}, timeout=20, message="every event to finish")
    # Six rounds of two 0.3 s sleeps: only the slots they free can claim the next ones in time (the sweep is a
    # minute away).
    assert time.monotonic() - began < 12


# -- statement-level triggers -----------------------------------------------------------------

def _listen(db_url: str):
    conn = psycopg2.connect(db_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"LISTEN {CHANNEL}")
    return conn


def _drain(conn, until: float) -> list[str]:
    payloads: list[str] = []
    while time.monotonic() < until:
        if select.select([conn], [], [], 0.1)[0]:
            conn.poll()
            payloads += [n.payload for n in conn.notifies]
            conn.notifies.clear()
        elif payloads:
            break
    return payloads


def test_one_statement_over_250_rows_records_every_change_and_notifies_in_chunks_of_100(db_url):
    cb = make_callback(db_url, "Pooled", "thread_pooled")
    spy = _listen(db_url)
    try:
        ids = [r["id"] for r in sql(db_url, "INSERT INTO events (callback_id, scheduled_for) "
                                            "SELECT %s, now() + interval '1 hour' FROM generate_series(1, 250) "
                                            "RETURNING id", (cb,))]
        inserted = _drain(spy, time.monotonic() + 5)
        sql(db_url, "UPDATE events SET payload = '{\"edited\": true}'")  # neither state nor time: silent
        sql(db_url, "UPDATE events SET state = 'cancelled', finished_at = now() WHERE id = ANY(%s)", (ids[:150],))
        updated = _drain(spy, time.monotonic() + 5)
        sql(db_url, "DELETE FROM events WHERE id = ANY(%s)", (ids[150:],))
        deleted = _drain(spy, time.monotonic() + 5)
    finally:
        spy.close()
    for payloads, op, count in ((inserted, "INSERT", 250), (updated, "UPDATE", 150), (deleted, "DELETE", 100)):
        assert all(len(p) < 8000 for p in payloads)
        assert [len(json.loads(p)["ids"]) for p in payloads] == [100] * (count // 100) + \
            ([count % 100] if count % 100 else [])
        assert {json.loads(p)["op"] for p in payloads} == {op}
    hints: dict[int, Any] = {}
    for payload in updated:
        hints.update(parse_notification(payload))
    assert sorted(hints) == ids[:150] and {h.state for h in hints.values()} == {"cancelled"}
    # History: the 150 kept events were inserted and cancelled (the deleted ones' rows went with them);
    # the payload edit changed no state and wrote nothing.
    rows = sql(db_url, "SELECT state, count(*) AS n FROM event_history GROUP BY state")
    assert {r["state"]: r["n"] for r in rows} == {"scheduled": 150, "cancelled": 150}



def test_claims_and_final_outcomes_are_notified_only_while_a_live_page_is_open(db_url):
    """A claim, an attempt's final outcome and an event inserted claimed serve only live pages (a timer of an event
    claimed or ended elsewhere finds it so), so they are notified only while the 'live' flag is fresh; a retry, like
    every change made from outside, is notified whatever the flag says."""
    cb = make_callback(db_url, "Pooled", "thread_pooled")
    ids = [r["id"] for r in sql(db_url, "INSERT INTO events (callback_id) SELECT %s FROM generate_series(1, 3) "
                                        "RETURNING id", (cb,))]
    claim = "UPDATE events SET state = 'running', attempts = attempts + 1, worker = 'w', started_at = now(), " \
            "lease_until = now() + interval '1 minute' WHERE id = %s"
    finish = "UPDATE events SET state = 'finished', finished_at = now(), lease_until = NULL WHERE id = %s"
    retry = "UPDATE events SET state = 'scheduled', scheduled_for = now() + interval '1 hour', lease_until = NULL " \
            "WHERE id = %s"
    inserted_claimed = "INSERT INTO events (callback_id, state, attempts, worker, started_at, lease_until) " \
                       "VALUES (%s, 'running', 1, 'w', now(), now() + interval '1 minute')"

    def states_notified(statement: str, value: int) -> list[str]:
        spy = _listen(db_url)
        try:
            sql(db_url, statement, (value,))
            payloads = _drain(spy, time.monotonic() + 1.5)
        finally:
            spy.close()
        return [h.state for p in payloads for h in parse_notification(p).values() if h is not None]

    # No page open: silent but for the retry.
    assert states_notified(claim, ids[0]) == []
    assert states_notified(finish, ids[0]) == []
    assert states_notified(claim, ids[1]) == []
    assert states_notified(retry, ids[1]) == ["scheduled"]
    assert states_notified(inserted_claimed, cb) == []
    sql(db_url, "INSERT INTO punctual_flags (name, set_at) VALUES ('live', now() - interval '1 minute')")
    assert states_notified(claim, ids[2]) == []  # a page closed a minute ago: still silent
    sql(db_url, "UPDATE punctual_flags SET set_at = now() WHERE name = 'live'")
    assert states_notified(finish, ids[2]) == ["finished"]
    assert states_notified(claim, ids[1]) == ["running"]
    assert states_notified(inserted_claimed, cb) == ["running"]
    # The history is the same either way: one row per creation and one per attempt's end, none for a claim.
    rows = sql(db_url, "SELECT event_id, state FROM event_history WHERE event_id = ANY(%s) ORDER BY id", (ids,))
    assert [(r["event_id"], r["state"]) for r in rows] == [(i, "scheduled") for i in ids] + \
        [(ids[0], "finished"), (ids[1], "scheduled"), (ids[2], "finished")]


def test_a_page_opening_waits_for_transactions_that_began_before_it_could_be_known(db, db_url):
    """Such a transaction may have read the flag before it was set: what it changes would never reach the page."""
    from controllers import live

    began = time.monotonic()
    live.watching(db, settle=2.0)
    assert time.monotonic() - began < 1.0  # nothing older running: no wait
    older = psycopg2.connect(db_url)
    try:
        with older.cursor() as cur:
            cur.execute("SELECT 1")  # a transaction begun (and left open) before the page opens
        ended = threading.Timer(0.5, older.commit)
        ended.start()
        began = time.monotonic()
        live.watching(db, settle=5.0)
        assert 0.4 <= time.monotonic() - began < 4.0  # until it ended, not the whole settle
        ended.join()
    finally:
        older.close()
    fresh = sql(db_url, "SELECT set_at > now() - interval '10 seconds' AS fresh FROM punctual_flags WHERE name = 'live'")
    assert fresh == [{"fresh": True}]

# -- planner statistics after a burst ----------------------------------------------------------

def test_a_full_and_slow_claim_refreshes_the_planner_statistics_once_per_interval(db, db_url):
    from engine.planner_stats import PlannerStats

    cb = make_callback(db_url, "Pooled", "thread_pooled")
    sql(db_url, "ALTER TABLE events SET (autovacuum_enabled = false)")  # this test's database only
    sql(db_url, "INSERT INTO events (callback_id) SELECT %s FROM generate_series(1, 5000)", (cb,))

    def analyzed() -> int:
        return sql(db_url, "SELECT count(*) AS n FROM pg_stats WHERE tablename = 'events'")[0]["n"]

    stats = PlannerStats(db, min_interval=60)
    stats.claimed(rows=100, limit=256, seconds=1.0)   # not full: the backlog is gone, nothing to fix
    stats.claimed(rows=256, limit=256, seconds=0.005)  # full but quick: the plan is fine
    stats.claimed(rows=8, limit=8, seconds=1.0)      # too few rows to tell
    stats.stop()
    assert stats.refreshed == 0 and analyzed() == 0
    stats.claimed(rows=256, limit=256, seconds=0.055)  # full and slow: the sign of a sorted backlog
    stats.claimed(rows=256, limit=256, seconds=0.055)  # again at once: within the interval, skipped
    stats.stop()
    assert stats.refreshed == 1 and analyzed() > 0
