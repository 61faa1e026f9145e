"""The engine in-process against a real PostgreSQL: events run on time (never early), follow
reschedules, cancels and deletes, respect the horizon, are found when written with plain SQL,
retry with growing backoff, run by priority, time out without shrinking the pool, come back
from expired leases, and are finished or released when the engine stops."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg2
from psycopg2.extras import Json

from engine import Engine, queries
from engine.queries import Change
from metrics import Metrics
from tests.helpers import event_history, running_engine, sql, wait_for

LATENESS = 1.0  # generous: tests prove "on time, never early"; bench/ measures the real lateness


# -- helpers ------------------------------------------------------------------------------

def make_callback(db_url: str, name: str, target: str, *, max_attempts: int = 3, timeout: float = 30.0) -> int:
    """A python callback written straight into the table (the API's validation is tested elsewhere)."""
    return sql(db_url, """INSERT INTO callbacks (name, kind, target, max_attempts, timeout_seconds)
                          VALUES (%s, 'python', %s, %s, %s) RETURNING id""",
               (name, target, max_attempts, timeout))[0]["id"]


_INSERT = """INSERT INTO events (callback_id, payload, scheduled_for, priority, max_attempts, source)
             SELECT id, %s, now() + make_interval(secs => %s), %s, %s, 'sql' FROM callbacks WHERE name = %s
             RETURNING id"""


def insert_event(db_url: str, callback: str, payload: dict | None = None, *, in_seconds: float = 0.0,
                 priority: int = 0, max_attempts: int = 3) -> int:
    """Insert an event as another program would: plain SQL on a connection of its own."""
    return sql(db_url, _INSERT, (Json(payload or {}), in_seconds, priority, max_attempts, callback))[0]["id"]


def row(db_url: str, event_id: int) -> dict[str, Any] | None:
    rows = sql(db_url, "SELECT * FROM events WHERE id = %s", (event_id,))
    return rows[0] if rows else None


def history(db_url: str, event_id: int) -> list[dict[str, Any]]:
    return event_history(db_url, event_id)


def wait_state(db_url: str, event_id: int, *states: str, timeout: float = 10.0) -> dict[str, Any]:
    return wait_for(lambda: (r := row(db_url, event_id)) is not None and r["state"] in states and r,
                    timeout=timeout, message=f"event {event_id} to be {'/'.join(states)}")


def assert_on_time(event: dict[str, Any]) -> None:
    late = (event["started_at"] - event["scheduled_for"]).total_seconds()
    assert late >= 0, f"event {event['id']} started {-late:.3f} s early"
    assert late < LATENESS, f"event {event['id']} started {late:.3f} s late"


def wait_sweeps(engine: Engine, count: int = 2) -> None:
    """Wait until the sweep (the safety net) has run `count` more times: it had its chance to act."""
    for _ in range(count):
        before = engine.last_sweep
        wait_for(lambda: engine.last_sweep > before, timeout=10, message="a sweep")


def audit_lines(log_dir) -> list[dict[str, Any]]:
    path = log_dir / "events.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []




def iso_in(seconds: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat()


# -- on time ------------------------------------------------------------------------------

def test_events_due_soon_start_at_or_after_their_time_and_within_a_small_lateness(live_client, db_url):
    ids = []
    for delay in (0.5, 1.0, 1.5, 2.0):
        created = live_client.post("/events", json={"callback": "Addition", "payload": {"x": 1, "y": delay},
                                                    "scheduled_for": iso_in(delay)})
        assert created.status_code == 201, created.json
        ids.append(created.json["id"])
        ids.append(insert_event(db_url, "Addition", {"x": 2, "y": 2}, in_seconds=delay))
    for event_id in ids:
        event = wait_state(db_url, event_id, "finished")
        assert event["attempts"] == 1
        assert_on_time(event)


# -- reschedule, cancel, delete while running ---------------------------------------------

def test_an_event_moved_later_does_not_run_at_its_old_time(live_client, db_url):
    created = live_client.post("/events", json={"callback": "Addition", "payload": {"x": 1, "y": 1},
                                                "scheduled_for": iso_in(1.2)})
    event_id = created.json["id"]
    old_time = row(db_url, event_id)["scheduled_for"]
    moved = live_client.put(f"/events/{event_id}", json={"scheduled_for": iso_in(2.7)})
    assert moved.status_code == 200, moved.json
    event = wait_state(db_url, event_id, "finished")
    assert event["scheduled_for"] > old_time + timedelta(seconds=1)
    assert_on_time(event)
    assert event["attempts"] == 1


def test_an_event_moved_earlier_runs_at_its_new_time(live_client, db_url):
    created = live_client.post("/events", json={"callback": "Addition", "payload": {"x": 1, "y": 1},
                                                "scheduled_for": iso_in(60)})
    event_id = created.json["id"]
    moved = live_client.put(f"/events/{event_id}", json={"scheduled_for": iso_in(1.0)})
    assert moved.status_code == 200, moved.json
    event = wait_state(db_url, event_id, "finished", timeout=5)
    assert_on_time(event)


def test_a_cancelled_or_deleted_event_never_runs(live_client, engine, db_url, log_dir):
    def create(delay: float) -> int:
        return live_client.post("/events", json={"callback": "Addition", "payload": {"x": 1, "y": 1},
                                                 "scheduled_for": iso_in(delay)}).json["id"]

    cancelled, deleted, control = create(1.0), create(1.0), create(1.3)
    assert live_client.post(f"/events/{cancelled}/cancel").status_code == 200
    assert live_client.delete(f"/events/{deleted}").status_code == 204
    wait_state(db_url, control, "finished")
    wait_sweeps(engine)
    event = row(db_url, cancelled)
    assert event["state"] == "cancelled" and event["attempts"] == 0 and event["started_at"] is None
    assert "running" not in [h["state"] for h in history(db_url, cancelled)]
    assert row(db_url, deleted) is None
    started = {line["event_id"] for line in audit_lines(log_dir) if line["action"] == "attempt_started"}
    assert control in started and cancelled not in started and deleted not in started


# -- horizon ------------------------------------------------------------------------------

def test_only_events_within_the_horizon_are_armed_and_later_ones_are_armed_as_it_moves(db, settings, db_url):
    with running_engine(db, settings, horizon_seconds=2.0) as eng:
        conn = psycopg2.connect(db_url)
        try:
            with conn, conn.cursor() as cur:  # one transaction: one batch of notifications
                cur.execute(_INSERT, (Json({"x": 1, "y": 1}), 1.5, 0, 3, "Addition"))
                near = cur.fetchone()[0]
                cur.execute(_INSERT, (Json({"x": 1, "y": 1}), 4.0, 0, 3, "Addition"))
                far = cur.fetchone()[0]
        finally:
            conn.close()
        wait_for(lambda: near in eng.scheduler._armed, timeout=2, message="the near event to be armed")
        assert far not in eng.scheduler._armed, "an event beyond the horizon was armed"
        wait_for(lambda: far in eng.scheduler._armed, timeout=4, interval=0.01, message="the far event to be armed")
        due_in = (eng.scheduler._armed[far] - datetime.now(timezone.utc)).total_seconds()
        assert due_in <= 2.0, f"armed {due_in:.2f} s ahead, beyond the 2 s horizon"
        assert due_in > 0, "armed only once already due: the refill came too late"
        assert_on_time(wait_state(db_url, near, "finished"))
        assert_on_time(wait_state(db_url, far, "finished"))
        assert eng.scheduler.armed_count == 0


# -- rows written by other programs -------------------------------------------------------

def test_rows_inserted_or_moved_with_plain_sql_by_another_connection_run(engine, db_url):
    now_id = insert_event(db_url, "Addition", {"x": 1, "y": 2})
    soon_id = insert_event(db_url, "Addition", {"x": 1, "y": 2}, in_seconds=0.8)
    moved_id = insert_event(db_url, "Addition", {"x": 1, "y": 2}, in_seconds=3600)
    sql(db_url, "UPDATE events SET scheduled_for = now() + interval '1 second' WHERE id = %s", (moved_id,))
    for event_id in (now_id, soon_id, moved_id):
        event = wait_state(db_url, event_id, "finished")
        assert event["result"] == 3
        assert_on_time(event)


def test_a_rolled_back_insert_runs_nothing_and_an_open_one_runs_only_after_commit(engine, db_url, log_dir):
    conn = psycopg2.connect(db_url)
    try:
        with conn.cursor() as cur:
            cur.execute(_INSERT, (Json({"x": 1, "y": 1}), 0, 0, 3, "Addition"))
            rolled_back = cur.fetchone()[0]
        conn.rollback()
        with conn.cursor() as cur:
            cur.execute(_INSERT, (Json({"x": 2, "y": 2}), 0, 0, 3, "Addition"))
            pending = cur.fetchone()[0]
            wait_sweeps(engine)  # the engine looked, twice, while the transaction was open
            assert row(db_url, pending) is None
            cur.execute("SELECT clock_timestamp()")
            before_commit = cur.fetchone()[0]
        conn.commit()
    finally:
        conn.close()
    event = wait_state(db_url, pending, "finished", timeout=5)
    assert event["started_at"] >= before_commit
    assert (event["started_at"] - before_commit).total_seconds() < LATENESS
    assert row(db_url, rolled_back) is None
    assert rolled_back not in {line["event_id"] for line in audit_lines(log_dir)}


# -- payloads of every size (NOTIFY carries only the id) ----------------------------------

def test_payloads_around_and_far_above_the_notify_limit_are_accepted_and_run(live_client, db_url):
    assert live_client.post("/callbacks", json={"name": "Noop", "kind": "python", "target": "noop"}).status_code == 201
    ids = {}
    for size in (7_999, 8_001, 100_000):
        payload = {"blob": ""}
        payload["blob"] = "x" * (size - len(json.dumps(payload)))
        assert len(json.dumps(payload)) == size
        created = live_client.post("/events", json={"callback": "Noop", "payload": payload})
        assert created.status_code == 201, created.json
        ids[created.json["id"]] = payload
    for event_id, payload in ids.items():
        event = wait_state(db_url, event_id, "finished")
        assert event["payload"] == payload
        assert_on_time(event)


# -- retries ------------------------------------------------------------------------------

def test_a_flaky_callback_succeeds_on_its_third_attempt_with_each_attempt_in_history(db, settings, db_url, log_dir):
    make_callback(db_url, "Flaky", "flaky")
    with running_engine(db, settings, retry_base_seconds=0.2, retry_max_seconds=5.0):
        event_id = insert_event(db_url, "Flaky", {"succeed_on": 3}, max_attempts=3)
        event = wait_state(db_url, event_id, "finished", timeout=10)
    assert event["attempts"] == 3 and event["result"] == 3 and event["last_error"] is None
    steps = history(db_url, event_id)
    assert [(h["state"], h["attempt"]) for h in steps] == [
        ("scheduled", 0), ("running", 1), ("scheduled", 1), ("running", 2), ("scheduled", 2), ("running", 3),
        ("finished", 3)]
    assert [h["error"] for h in steps if h["state"] == "scheduled"][1:] == [
        "RuntimeError: flaky failure on attempt 1", "RuntimeError: flaky failure on attempt 2"]
    assert all(h["worker"] for h in steps if h["state"] == "running")
    # Backoff: the retry's scheduled_for (audit next_run) minus the failure time, per attempt.
    failures = [h["at"] for h in steps if h["state"] == "scheduled" and h["error"]]
    next_runs = [datetime.fromisoformat(line["next_run"]) for line in audit_lines(log_dir)
                 if line["event_id"] == event_id and line["action"] == "attempt_failed"]
    delays = [(run - failed).total_seconds() for run, failed in zip(next_runs, failures)]
    assert len(delays) == 2
    assert 0.09 <= delays[0] <= 0.21, delays  # base 0.2 s, jitter in the upper half
    assert 0.19 <= delays[1] <= 0.41, delays  # doubled
    assert delays[1] > delays[0]
    starts = [h["at"] for h in steps if h["state"] == "running"]
    for _failed, run_at, started in zip(failures, next_runs, starts[1:]):
        assert started >= run_at, "a retry started before its backoff ran out"


def test_a_callback_failing_on_every_allowed_attempt_ends_failed_with_its_last_error(engine, db_url):
    make_callback(db_url, "Flaky", "flaky")
    event_id = insert_event(db_url, "Flaky", {"succeed_on": 3}, max_attempts=2)
    event = wait_state(db_url, event_id, "failed")
    assert event["attempts"] == 2
    assert event["last_error"] == "RuntimeError: flaky failure on attempt 2"
    assert event["finished_at"] is not None
    steps = history(db_url, event_id)
    assert [h["attempt"] for h in steps if h["state"] == "running"] == [1, 2]
    assert (steps[-1]["state"], steps[-1]["error"]) == ("failed", "RuntimeError: flaky failure on attempt 2")


def test_retry_delay_grows_exponentially_with_jitter_up_to_its_cap():
    for attempt in range(1, 12):
        ceiling = min(8.0, 1.0 * 2 ** (attempt - 1))
        for _ in range(50):
            assert ceiling / 2 <= queries.retry_delay(attempt, 1.0, 8.0) <= ceiling


def test_division_by_zero_is_a_failed_attempt_with_a_clear_error(engine, db_url):
    event_id = insert_event(db_url, "Division", {"x": 1, "y": 0}, max_attempts=1)
    event = wait_state(db_url, event_id, "failed")
    assert event["last_error"] == "division by zero: y must not be 0"


# -- priority -----------------------------------------------------------------------------

def test_due_events_start_in_priority_order(db, settings, db_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", db_url)  # the `record` handler writes to this database
    make_callback(db_url, "Sleeper", "sleep")
    make_callback(db_url, "Recorder", "record")
    with running_engine(db, settings, worker_threads=1) as eng:
        busy = insert_event(db_url, "Sleeper", {"seconds": 0.8})
        wait_state(db_url, busy, "running")
        priorities = [1, 5, -3, 10, 0, 7]
        conn = psycopg2.connect(db_url)
        try:
            with conn, conn.cursor() as cur:
                ids = {}
                for priority in priorities:
                    cur.execute(_INSERT, (Json({}), 0, priority, 3, "Recorder"))
                    ids[cur.fetchone()[0]] = priority
        finally:
            conn.close()
        for event_id in ids:
            wait_state(db_url, event_id, "finished")
        assert eng.settings.worker_threads == 1
    ran = sql(db_url, "SELECT event_id FROM executions ORDER BY at")
    assert [ids[r["event_id"]] for r in ran] == sorted(priorities, reverse=True)


# -- timeouts -----------------------------------------------------------------------------

def test_an_attempt_past_its_timeout_fails_and_other_events_keep_running(db, settings, db_url):
    make_callback(db_url, "Hang", "sleep", timeout=0.3, max_attempts=1)
    with running_engine(db, settings, worker_threads=1) as eng:
        hung = insert_event(db_url, "Hang", {"seconds": 3})
        wait_state(db_url, hung, "running")
        other = insert_event(db_url, "Addition", {"x": 4, "y": 5}, in_seconds=0.2)
        failed = wait_state(db_url, hung, "failed", timeout=3)
        assert failed["last_error"] == "timed out after 0.3 s"
        done = wait_state(db_url, other, "finished", timeout=3)
        # The only worker is still asleep in the hung callback; a replacement ran this one.
        assert (done["finished_at"] - failed["started_at"]).total_seconds() < 2.5
        assert done["result"] == 9
        assert len(eng.inflight) == 0
    assert history(db_url, hung)[-1]["error"] == "timed out after 0.3 s"


# -- lease recovery -----------------------------------------------------------------------

_DEAD = """INSERT INTO events (callback_id, payload, scheduled_for, state, attempts, max_attempts, worker,
                               started_at, lease_until, source)
           SELECT id, %s, now() - interval '10 seconds', 'running', %s, %s, 'dead-instance:1',
                  now() - interval '9 seconds', now() - interval '1 second', 'sql'
           FROM callbacks WHERE name = 'Addition' RETURNING id"""


def test_an_event_left_running_with_an_expired_lease_is_rescued_and_run_again(engine, db_url, log_dir):
    again = sql(db_url, _DEAD, (Json({"x": 1, "y": 1}), 1, 3))[0]["id"]
    spent = sql(db_url, _DEAD, (Json({"x": 1, "y": 1}), 3, 3))[0]["id"]
    event = wait_state(db_url, again, "finished")
    assert event["attempts"] == 2 and event["result"] == 2
    steps = history(db_url, again)
    # Inserted running (a dead instance's attempt): its creation, then that attempt, rescued, then ours.
    assert [(h["state"], h["attempt"]) for h in steps] == [
        ("scheduled", 0), ("running", 1), ("scheduled", 1), ("running", 2), ("finished", 2)]
    assert steps[1]["worker"] == "dead-instance:1" and "lease expired" in steps[2]["error"]
    assert steps[3]["worker"] == engine.settings.instance_name
    dead = wait_state(db_url, spent, "failed")
    assert dead["attempts"] == 3 and "lease expired" in dead["last_error"]
    wait_sweeps(engine)
    assert row(db_url, spent)["attempts"] == 3  # never run again
    rescued = {line["event_id"] for line in audit_lines(log_dir) if line["action"] == "lease_expired"}
    assert rescued == {again, spent}


# -- graceful stop ------------------------------------------------------------------------

def _wait_attempt_started(eng: Engine, event_id: int) -> None:
    """Wait until a worker thread is inside the callback (not merely claimed)."""
    def inside() -> bool:
        return any(entry.row.id == event_id and entry.thread is not None for entry in eng.inflight.held())
    wait_for(inside, timeout=5, message=f"event {event_id} to be inside its callback")


def test_stop_lets_a_running_attempt_finish_within_the_grace_and_records_it(db, settings, db_url, log_dir):
    make_callback(db_url, "Sleeper", "sleep")
    eng = Engine(db, settings.with_(shutdown_grace_seconds=3.0), Metrics())
    eng.start()
    try:
        event_id = insert_event(db_url, "Sleeper", {"seconds": 0.6})
        _wait_attempt_started(eng, event_id)
    finally:
        eng.stop()
    event = row(db_url, event_id)
    assert (event["state"], event["attempts"], event["result"]) == ("finished", 1, 0.6)
    assert [line["action"] for line in audit_lines(log_dir) if line["event_id"] == event_id] == [
        "attempt_started", "attempt_succeeded"]


def test_stop_releases_an_attempt_running_past_the_grace_back_to_scheduled(db, settings, db_url, log_dir):
    make_callback(db_url, "Sleeper", "sleep")
    eng = Engine(db, settings.with_(shutdown_grace_seconds=0.3), Metrics())
    eng.start()
    try:
        event_id = insert_event(db_url, "Sleeper", {"seconds": 1.5})
        _wait_attempt_started(eng, event_id)
    finally:
        eng.stop()
    event = row(db_url, event_id)
    # It had started, so it keeps its number: the rerun is attempt 2 (receivers deduplicate on it).
    assert (event["state"], event["attempts"], event["lease_until"]) == ("scheduled", 1, None)
    assert "released" in event["last_error"]
    assert [line["action"] for line in audit_lines(log_dir) if line["event_id"] == event_id] == [
        "attempt_started", "attempt_released"]
    # Another instance picks it up again at once.
    with running_engine(db, settings) as again:
        done = wait_state(db_url, event_id, "finished", timeout=8)
    assert done["attempts"] == 2 and done["worker"] == again.settings.instance_name
    assert [(h["state"], h["attempt"]) for h in history(db_url, event_id)] == [
        ("scheduled", 0), ("running", 1), ("scheduled", 1), ("running", 2), ("finished", 2)]


def test_an_attempt_queued_behind_busy_workers_keeps_its_lease_and_runs_once(db, settings, db_url, monkeypatch):
    """Claimed in one batch, the last events wait locally longer than the lease grace: the lease must
    not run out meanwhile, or the sweep would hand the event out again and it would run twice."""
    monkeypatch.setenv("DATABASE_URL", db_url)
    make_callback(db_url, "Recorder", "record", timeout=1.0)
    with running_engine(db, settings, worker_threads=1, lease_grace_seconds=0.4) as eng:
        conn = psycopg2.connect(db_url)
        try:
            with conn, conn.cursor() as cur:
                ids = []
                for _ in range(5):
                    cur.execute(_INSERT, (Json({"sleep": 0.35}), 0, 0, 3, "Recorder"))
                    ids.append(cur.fetchone()[0])
        finally:
            conn.close()
        for event_id in ids:
            event = wait_state(db_url, event_id, "finished", timeout=10)
            assert event["attempts"] == 1, f"event {event_id} was handed out again: {history(db_url, event_id)}"
        wait_sweeps(eng)
    runs = sql(db_url, "SELECT event_id, count(*) AS n FROM executions GROUP BY event_id ORDER BY event_id")
    assert [(r["event_id"], r["n"]) for r in runs] == [(event_id, 1) for event_id in ids]



def test_a_disarm_racing_an_arm_of_the_same_event_never_removes_the_new_timer():
    """The listener and the sweep sync the scheduler from two threads. Here one thread arms an event
    again exactly while another is between the two steps of disarming it (dropped from the dict,
    timer not yet removed): the new timer must survive, or the event waits for the next sweep."""
    import threading

    from engine.scheduler import Scheduler

    scheduler = Scheduler(300, on_due=lambda _: None)
    scheduler.start()
    first = datetime.now(timezone.utc) + timedelta(seconds=100)
    second = first + timedelta(seconds=5)
    remove_job = scheduler._aps.remove_job
    racers: list[threading.Thread] = []

    def remove_job_with_a_racing_arm(job_id: str, *args: Any, **kwargs: Any) -> None:
        armed = threading.Event()

        def arm_again() -> None:
            scheduler.sync([Change(7, "scheduled", second)])
            armed.set()

        racer = threading.Thread(target=arm_again)
        racers.append(racer)
        racer.start()
        armed.wait(0.3)  # lets the arm through now, unless the disarm holds the scheduler's lock
        remove_job(job_id, *args, **kwargs)

    try:
        scheduler.sync([Change(7, "scheduled", first)])
        scheduler._aps.remove_job = remove_job_with_a_racing_arm
        scheduler.sync([Change(7, "cancelled", first)])
        scheduler._aps.remove_job = remove_job
        for racer in racers:
            racer.join(5)
        assert scheduler._armed == {7: second}
        job = scheduler._aps.get_job("event:7")
        assert job is not None and job.next_run_time == second, "the re-armed event lost its timer"
    finally:
        scheduler._aps.remove_job = remove_job
        scheduler.stop()


# -- outcomes PostgreSQL cannot store -----------------------------------------------------

from engine.kinds.python import handler  # noqa: E402


@handler("nul_result")
def nul_result(payload: dict[str, Any]) -> str:
    """Returns a string with a NUL character, which jsonb cannot hold."""
    return "before\x00after"


@handler("nul_error")
def nul_error(payload: dict[str, Any]) -> None:
    """Raises with a NUL character in the message, which a text column cannot hold."""
    raise RuntimeError("bad\x00byte " + "x" * 5_000)


@handler("surrogate_result")
def surrogate_result(payload: dict[str, Any]) -> str:
    """Returns a lone surrogate: valid for json.dumps, refused by PostgreSQL only when written."""
    return "half a pair: \ud800"


@handler("surrogate_error")
def surrogate_error(payload: dict[str, Any]) -> None:
    raise RuntimeError("half a pair: \udfff")


def test_outcomes_postgres_cannot_store_fail_the_attempt_and_the_engine_keeps_recording(engine, db_url):
    make_callback(db_url, "NulResult", "nul_result", max_attempts=1)
    make_callback(db_url, "NulError", "nul_error", max_attempts=1)
    make_callback(db_url, "Surrogate", "surrogate_result", max_attempts=1)
    make_callback(db_url, "SurrogateError", "surrogate_error", max_attempts=1)
    conn = psycopg2.connect(db_url)
    try:
        with conn, conn.cursor() as cur:  # one transaction: likely one claim and one outcome batch
            ids = {}
            for name, callback, payload in (("infinite", "Division", {"x": 1e300, "y": 1e-300}),  # inf
                                            ("nul_result", "NulResult", {}), ("nul_error", "NulError", {}),
                                            ("surrogate", "Surrogate", {}), ("surrogate_error", "SurrogateError", {}),
                                            ("fine", "Addition", {"x": 1, "y": 2})):
                cur.execute(_INSERT, (Json(payload), 0, 0, 1, callback))
                ids[name] = cur.fetchone()[0]
    finally:
        conn.close()
    assert wait_state(db_url, ids["fine"], "finished")["result"] == 3
    for name in ("infinite", "nul_result"):
        event = wait_state(db_url, ids[name], "failed")
        assert "not storable" in event["last_error"], event["last_error"]
    event = wait_state(db_url, ids["nul_error"], "failed")
    assert event["last_error"].startswith("RuntimeError: bad")
    assert "\x00" not in event["last_error"] and len(event["last_error"]) <= 4_000
    event = wait_state(db_url, ids["surrogate"], "failed")
    assert event["last_error"].startswith("outcome not recorded"), event["last_error"]
    event = wait_state(db_url, ids["surrogate_error"], "failed")
    assert event["last_error"].startswith("RuntimeError: half a pair: "), event["last_error"]
    later = insert_event(db_url, "Addition", {"x": 2, "y": 2})  # the completer is still alive
    assert wait_state(db_url, later, "finished")["result"] == 4
    assert engine.completer.alive and engine.dispatcher.alive


def test_results_are_stored_as_returned_a_null_as_a_json_null_and_a_long_integer_exactly(engine, db_url):
    make_callback(db_url, "Nothing", "noop")
    nothing = insert_event(db_url, "Nothing")
    big = insert_event(db_url, "Multiplication", {"x": 10 ** 20, "y": 10 ** 20})
    assert wait_state(db_url, big, "finished")["result"] == 10 ** 40
    assert wait_state(db_url, nothing, "finished")["result"] is None
    stored = sql(db_url, "SELECT jsonb_typeof(result) AS kind, result::text AS text FROM events WHERE id = ANY(%s) "
                         "ORDER BY id", ([nothing, big],))
    assert stored == [{"kind": "null", "text": "null"}, {"kind": "number", "text": str(10 ** 40)}]


def test_armed_timers_are_bounded_and_events_beyond_the_bound_still_run(db, settings, db_url):
    with running_engine(db, settings) as eng:
        eng.scheduler.max_armed = 2
        conn = psycopg2.connect(db_url)
        try:
            with conn, conn.cursor() as cur:
                ids = []
                for n in range(6):
                    cur.execute(_INSERT, (Json({"x": n, "y": 0}), 1.0, 0, 3, "Addition"))
                    ids.append(cur.fetchone()[0])
        finally:
            conn.close()
        wait_for(lambda: eng.scheduler.overflowed >= 4, timeout=3, message="the bound to be reached")
        assert eng.scheduler.armed_count <= 2 and len(eng.scheduler._aps.get_jobs()) <= 2
        for event_id in ids:
            assert_on_time(wait_state(db_url, event_id, "finished"))
