"""The /events API on a real database: create, batch, list and page, read with history, edit, cancel, retry,
delete, idempotency keys, and (with the engine running) what an event's end looks like through the API."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from tests.helpers import sql, wait_for

FAR = "2999-01-01T00:00:00+00:00"


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """The documented error body with the expected status; returns its `error` object."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    error = response.json["error"]
    assert set(error) == {"code", "message", "details"} and error["message"]
    if code is not None:
        assert error["code"] == code
    return error


def counts(db_url: str) -> dict[str, int]:
    return sql(db_url, """SELECT (SELECT count(*) FROM events) AS events,
                                 (SELECT count(*) FROM event_history) AS history""")[0]


def create(client: Any, **fields: Any) -> dict[str, Any]:
    body = {"callback": "Addition", "payload": {"x": 1, "y": 2}, "scheduled_for": FAR, **fields}
    response = client.post("/events", json=body)
    assert response.status_code == 201, response.json
    return response.json


def set_state(db_url: str, event_id: int, state: str) -> None:
    """Put an event in a state the API cannot reach without the engine (as another program could)."""
    sql(db_url, "UPDATE events SET state = %s, attempts = GREATEST(attempts, 1) WHERE id = %s", (state, event_id))


def db_now(db_url: str) -> datetime:
    return sql(db_url, "SELECT now() AS now")[0]["now"]


# -- create -------------------------------------------------------------------------------

def test_create_defaults_scheduled_for_to_now_and_answers_201_with_location(client, db_url):
    before = db_now(db_url)
    response = client.post("/events", json={"callback": "Addition", "payload": {"x": 1, "y": 2}})
    after = db_now(db_url)
    assert response.status_code == 201
    event = response.json
    assert response.headers["Location"] == f"/events/{event['id']}"
    scheduled = datetime.fromisoformat(event["scheduled_for"])
    assert before <= scheduled <= after
    assert event["state"] == "scheduled" and event["attempts"] == 0 and event["source"] == "api"
    assert event["callback"] == "Addition" and event["payload"] == {"x": 1, "y": 2}
    assert event["max_attempts"] == 3 and event["priority"] == 0 and event["result"] is None


def test_the_same_instant_in_two_offsets_is_stored_equal_and_answered_in_utc(client, db_url):
    a = create(client, scheduled_for="2030-01-01T12:00:00+05:30")
    b = create(client, scheduled_for="2030-01-01T06:30:00Z")
    c = create(client, scheduled_for="2030-01-01T01:30:00.000-05:00")
    assert a["scheduled_for"] == b["scheduled_for"] == c["scheduled_for"] == "2030-01-01T06:30:00+00:00"
    stored = sql(db_url, "SELECT DISTINCT scheduled_for FROM events")
    assert stored == [{"scheduled_for": datetime(2030, 1, 1, 6, 30, tzinfo=timezone.utc)}]
    for field in ("created_at", "updated_at"):
        assert a[field].endswith("+00:00")


def test_callback_may_be_named_by_id_and_explicit_fields_are_kept(client, db_url):
    division = next(c for c in client.get("/callbacks").json["callbacks"] if c["name"] == "Division")
    event = create(client, callback=division["id"], priority=7, max_attempts=9, payload={"x": 4, "y": 2})
    assert event["callback"] == "Division" and event["priority"] == 7 and event["max_attempts"] == 9
    by_digit_string = create(client, callback=str(division["id"]))
    assert by_digit_string["callback"] == "Division"


def test_a_repeated_idempotency_key_returns_the_first_event_without_a_second_row(client, db_url):
    first = create(client, idempotency_key="order-42", payload={"x": 1, "y": 1})
    again = client.post("/events", json={"callback": "Addition", "payload": {"y": 1, "x": 1}, "scheduled_for": FAR,
                                         "idempotency_key": "order-42"})
    assert again.status_code == 200
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json == first
    assert sql(db_url, "SELECT count(*) AS n FROM events") == [{"n": 1}]
    # In a batch too: the known key answers the first event, the new one is created.
    batch = client.post("/events/batch", json={"events": [
        {"callback": "Addition", "payload": {"x": 1, "y": 1}, "scheduled_for": FAR, "idempotency_key": "order-42"},
        {"callback": "Addition", "idempotency_key": "order-43", "scheduled_for": FAR}]})
    assert batch.status_code == 201, batch.json
    assert batch.json["events"][0]["id"] == first["id"]
    assert batch.json["events"][1]["idempotency_key"] == "order-43"
    assert sql(db_url, "SELECT count(*) AS n FROM events") == [{"n": 2}]


def test_a_reused_idempotency_key_with_another_body_is_refused_and_creates_nothing(client, db_url):
    first = create(client, idempotency_key="order-42", payload={"x": 1, "y": 1})
    addition = next(c["id"] for c in client.get("/callbacks").json["callbacks"] if c["name"] == "Addition")
    same_by_id = client.post("/events", json={"callback": addition, "payload": {"x": 1, "y": 1},
                                              "scheduled_for": FAR, "idempotency_key": "order-42"})
    assert same_by_id.status_code == 200 and same_by_id.json["id"] == first["id"]  # the same request
    before = sql(db_url, "SELECT * FROM events ORDER BY id")
    for changed in ({"payload": {"x": 9, "y": 9}}, {"callback": "Subtraction"}, {"priority": 5},
                    {"scheduled_for": "2998-01-01T00:00:00+00:00"}, {"max_attempts": 7}):
        body = {"callback": "Addition", "payload": {"x": 1, "y": 1}, "scheduled_for": FAR,
                "idempotency_key": "order-42", **changed}
        refused = client.post("/events", json=body)
        assert refused.status_code == 409, (changed, refused.json)
        assert refused.json["error"]["details"] == {"idempotency_key": "order-42", "event_id": first["id"]}
        # In a batch, the conflict refuses the whole batch: its new event is not left behind.
        batch = client.post("/events/batch", json={"events": [{"callback": "Addition", "scheduled_for": FAR}, body]})
        assert batch.status_code == 409, (changed, batch.json)
    assert sql(db_url, "SELECT * FROM events ORDER BY id") == before


# -- batch --------------------------------------------------------------------------------

def test_batch_creates_all_in_order(client, db_url):
    items = [{"callback": "Addition", "payload": {"i": i}, "scheduled_for": FAR} for i in range(50)]
    response = client.post("/events/batch", json={"events": items})
    assert response.status_code == 201, response.json
    assert [e["payload"]["i"] for e in response.json["events"]] == list(range(50))
    assert counts(db_url) == {"events": 50, "history": 50}


def test_batch_with_one_bad_item_creates_nothing(client, db_url):
    good = {"callback": "Addition", "payload": {}, "scheduled_for": FAR}
    before = counts(db_url)
    # Unknown callback (found by the controller, inside the transaction).
    error = assert_error(client.post("/events/batch", json={"events": [good, good, {"callback": "nope"}]}),
                         422, "invalid")
    assert error["details"]["unknown"] == ["nope"]
    # Invalid value (found by validation, before any SQL).
    assert_error(client.post("/events/batch", json={"events": [good, {**good, "scheduled_for": "soon"}]}), 422)
    # A key repeated within the batch.
    assert_error(client.post("/events/batch", json={"events": [{**good, "idempotency_key": "k"},
                                                               {**good, "idempotency_key": "k"}]}), 422)
    # Empty, and not a list.
    assert_error(client.post("/events/batch", json={"events": []}), 422)
    assert_error(client.post("/events/batch", json={"events": good}), 422)
    assert counts(db_url) == before


# -- list and pages -----------------------------------------------------------------------

def _ids(response: Any) -> list[int]:
    assert response.status_code == 200, response.json
    return [e["id"] for e in response.json["events"]]


def test_list_filters_by_state_callback_and_time_range(client, db_url):
    division_id = next(c["id"] for c in client.get("/callbacks").json["callbacks"] if c["name"] == "Division")
    early = create(client, scheduled_for="2030-01-01T00:00:00Z")
    middle = create(client, callback="Division", scheduled_for="2030-06-01T00:00:00Z")
    late = create(client, scheduled_for="2031-01-01T00:00:00Z")
    client.post(f"/events/{late['id']}/cancel")

    assert _ids(client.get("/events")) == [late["id"], middle["id"], early["id"]]
    assert _ids(client.get("/events?state=cancelled")) == [late["id"]]
    assert _ids(client.get("/events?state=scheduled")) == [middle["id"], early["id"]]
    assert _ids(client.get("/events?state=failed")) == []
    assert _ids(client.get("/events?callback=Division")) == [middle["id"]]
    assert _ids(client.get(f"/events?callback={division_id}")) == [middle["id"]]
    assert _ids(client.get("/events?callback=Nope")) == []
    # after is inclusive, before exclusive; offsets are honoured.
    assert _ids(client.get("/events", query_string={"scheduled_after": "2030-06-01T00:00:00Z"})) \
        == [late["id"], middle["id"]]
    assert _ids(client.get("/events", query_string={"scheduled_before": "2030-06-01T02:00:00+02:00"})) \
        == [early["id"]]
    assert _ids(client.get("/events", query_string={"scheduled_after": "2030-02-01T00:00:00Z",
                                                    "scheduled_before": "2030-12-01T00:00:00Z",
                                                    "state": "scheduled", "callback": "Division"})) \
        == [middle["id"]]


def test_keyset_pages_cover_every_event_once_in_both_orders(client, db_url):
    items = [{"callback": "Addition", "scheduled_for": FAR} for _ in range(23)]
    all_ids = [e["id"] for e in client.post("/events/batch", json={"events": items}).json["events"]]
    for order, expected in (("desc", sorted(all_ids, reverse=True)), ("asc", sorted(all_ids))):
        seen, cursor, pages = [], None, 0
        while True:
            params = {"limit": 10, "order": order, **({"cursor": cursor} if cursor is not None else {})}
            page = client.get("/events", query_string=params)
            seen += _ids(page)
            pages += 1
            cursor = page.json["next_cursor"]
            if cursor is None:
                break
            assert len(page.json["events"]) == 10
        assert seen == expected and pages == 3
    # An event created between pages does not shift the next page (keyset, not offset).
    first = client.get("/events?limit=5").json
    create(client)
    second = client.get(f"/events?limit=5&cursor={first['next_cursor']}").json
    assert _ids_of(second) == sorted(all_ids, reverse=True)[5:10]
    assert client.get("/events?limit=1000").json["next_cursor"] is None


def _ids_of(body: dict[str, Any]) -> list[int]:
    return [e["id"] for e in body["events"]]


# -- read ---------------------------------------------------------------------------------

def test_get_answers_the_event_with_its_history_oldest_first(client, db_url):
    event = create(client)
    client.post(f"/events/{event['id']}/cancel")
    got = client.get(f"/events/{event['id']}")
    assert got.status_code == 200
    body = got.json
    assert body["state"] == "cancelled" and body["finished_at"] is not None
    assert [h["state"] for h in body["history"]] == ["scheduled", "cancelled"]
    assert body["history"][0]["at"] <= body["history"][1]["at"]
    assert set(body["history"][0]) >= {"state", "attempt", "at", "worker", "error"}
    assert_error(client.get("/events/999999"), 404, "not_found")
    assert_error(client.get("/events/abc"), 404)


def test_a_claim_writes_no_history_row_and_the_attempts_end_writes_one_that_tells_its_start(client, db_url):
    event = create(client)
    claim = """UPDATE events SET state = 'running', attempts = attempts + 1, worker = 'w:1',
                      started_at = clock_timestamp(), lease_until = now() + interval '1 minute'
               WHERE id = %s RETURNING started_at"""
    started_at = sql(db_url, claim, (event["id"],))[0]["started_at"]
    rows = "SELECT state, attempt, started_at FROM event_history WHERE event_id = %s ORDER BY id"
    assert [r["state"] for r in sql(db_url, rows, (event["id"],))] == ["scheduled"]
    # While it runs, the story reads the running attempt from the event itself.
    running = client.get(f"/events/{event['id']}").json["history"]
    assert [(h["state"], h["attempt"], h["worker"]) for h in running] == [("scheduled", 0, None), ("running", 1, "w:1")]
    sql(db_url, "UPDATE events SET state = 'finished', finished_at = now(), lease_until = NULL WHERE id = %s",
        (event["id"],))
    assert [(r["state"], r["attempt"], r["started_at"]) for r in sql(db_url, rows, (event["id"],))] == [
        ("scheduled", 0, None), ("finished", 1, started_at)]
    story = client.get(f"/events/{event['id']}").json["history"]
    assert [(h["state"], h["attempt"], h["worker"]) for h in story] == [
        ("scheduled", 0, None), ("running", 1, "w:1"), ("finished", 1, "w:1")]
    assert story[1]["at"] <= story[2]["at"]


def test_history_rows_written_before_the_per_attempt_history_read_as_they_were(client, db_url):
    """A database upgraded past migration 0011 keeps its 'running' rows; an attempt that began before the upgrade
    and ended after it is told once, not twice."""
    event = create(client)
    sql(db_url, """INSERT INTO event_history (event_id, state, attempt, worker, at)
                   VALUES (%s, 'running', 1, 'old:1', now()), (%s, 'finished', 1, 'old:1', now())""",
        (event["id"], event["id"]))
    sql(db_url, """INSERT INTO event_history (event_id, state, attempt, worker, at, started_at)
                   VALUES (%s, 'running', 2, 'old:1', now(), NULL),
                          (%s, 'finished', 2, 'old:1', now(), now())""", (event["id"], event["id"]))
    story = client.get(f"/events/{event['id']}").json["history"]
    assert [(h["state"], h["attempt"]) for h in story] == [
        ("scheduled", 0), ("running", 1), ("finished", 1), ("running", 2), ("finished", 2)]


# -- edit, cancel, delete -----------------------------------------------------------------

def test_put_and_patch_reschedule_and_edit_a_scheduled_event(client, db_url):
    event = create(client)
    for method, change in (("put", {"scheduled_for": "2040-01-01T10:00:00+10:00", "priority": 3}),
                           ("patch", {"payload": {"x": 5, "y": 5}, "max_attempts": 1})):
        response = getattr(client, method)(f"/events/{event['id']}", json=change)
        assert response.status_code == 200, response.json
    row = sql(db_url, "SELECT scheduled_for, priority, payload, max_attempts, state FROM events")[0]
    assert row == {"scheduled_for": datetime(2040, 1, 1, 0, 0, tzinfo=timezone.utc), "priority": 3,
                   "payload": {"x": 5, "y": 5}, "max_attempts": 1, "state": "scheduled"}
    assert response.json["scheduled_for"] == "2040-01-01T00:00:00+00:00"
    # Nothing to change, nulls, read-only fields: 422 and unchanged.
    for bad in ({}, {"payload": None}, {"state": "finished"}, {"callback": "Division"}, {"attempts": 0}):
        assert_error(client.put(f"/events/{event['id']}", json=bad), 422)
    assert sql(db_url, "SELECT scheduled_for, priority, payload, max_attempts, state FROM events")[0] == row
    assert_error(client.put("/events/999999", json={"priority": 1}), 404)


def test_only_scheduled_events_can_be_edited_or_cancelled_409(client, db_url):
    for state in ("running", "finished", "failed", "cancelled"):
        event = create(client)
        set_state(db_url, event["id"], state)
        before = sql(db_url, "SELECT * FROM events WHERE id = %s", (event["id"],))
        error = assert_error(client.put(f"/events/{event['id']}", json={"priority": 1}), 409, "conflict")
        assert error["details"]["state"] == state
        assert_error(client.post(f"/events/{event['id']}/cancel"), 409, "conflict")
        assert sql(db_url, "SELECT * FROM events WHERE id = %s", (event["id"],)) == before
    assert_error(client.post("/events/999999/cancel"), 404)


def test_cancel_a_scheduled_event(client, db_url):
    event = create(client)
    response = client.post(f"/events/{event['id']}/cancel")
    assert response.status_code == 200
    assert response.json["state"] == "cancelled"
    assert sql(db_url, "SELECT state FROM events") == [{"state": "cancelled"}]


def test_delete_any_event_but_a_running_one(client, db_url):
    for state in ("scheduled", "finished", "failed", "cancelled"):
        event = create(client)
        set_state(db_url, event["id"], state)
        response = client.delete(f"/events/{event['id']}")
        assert response.status_code == 204, (state, response.json)
        assert_error(client.get(f"/events/{event['id']}"), 404)
        assert sql(db_url, "SELECT count(*) AS n FROM event_history WHERE event_id = %s", (event["id"],)) \
            == [{"n": 0}]
    running = create(client)
    set_state(db_url, running["id"], "running")
    error = assert_error(client.delete(f"/events/{running['id']}"), 409, "conflict")
    assert error["details"]["state"] == "running"
    assert sql(db_url, "SELECT state FROM events") == [{"state": "running"}]
    assert_error(client.delete("/events/999999"), 404)


def test_events_deleted_by_plain_sql_take_their_history_with_them_and_no_other(client, db_url):
    kept, *gone = [create(client)["id"] for _ in range(4)]
    for event_id in [kept, *gone]:
        set_state(db_url, event_id, "finished")
    sql(db_url, "DELETE FROM events WHERE id = ANY(%s)", (gone,))
    left = sql(db_url, "SELECT DISTINCT event_id FROM event_history")
    assert left == [{"event_id": kept}]


def test_retry_is_only_for_failed_or_cancelled_events(client, db_url):
    for state in ("scheduled", "running", "finished"):
        event = create(client)
        set_state(db_url, event["id"], state)
        assert_error(client.post(f"/events/{event['id']}/retry"), 409, "conflict")
        assert sql(db_url, "SELECT state FROM events WHERE id = %s", (event["id"],)) == [{"state": state}]
    assert_error(client.post("/events/999999/retry"), 404)


# -- with the engine ----------------------------------------------------------------------

def _wait_state(client: Any, event_id: int, state: str, timeout: float = 10) -> dict[str, Any]:
    return wait_for(lambda: (r := client.get(f"/events/{event_id}").json)["state"] == state and r,
                    timeout=timeout, message=f"event {event_id} to be {state}")


def test_division_by_zero_fails_after_max_attempts_with_a_clear_error(live_client, db_url):
    created = live_client.post("/events", json={"callback": "Division", "payload": {"x": 1, "y": 0},
                                                "max_attempts": 2})
    assert created.status_code == 201
    failed = _wait_state(live_client, created.json["id"], "failed")
    assert failed["attempts"] == 2
    assert "division by zero" in failed["last_error"]
    assert failed["result"] is None and failed["finished_at"] is not None
    states = [h["state"] for h in failed["history"]]
    assert states == ["scheduled", "running", "scheduled", "running", "failed"]
    assert "division by zero" in failed["history"][-1]["error"]
    assert [h["attempt"] for h in failed["history"] if h["state"] == "running"] == [1, 2]


def test_retry_runs_a_failed_event_again_and_a_cancelled_one_for_the_first_time(live_client, db_url):
    failed = live_client.post("/events", json={"callback": "Division", "payload": {"x": 1, "y": 0},
                                               "max_attempts": 1}).json
    _wait_state(live_client, failed["id"], "failed")
    # Make it succeed this time: the retry keeps the payload, so fix it in the database first.
    sql(db_url, """UPDATE events SET payload = '{"x": 6, "y": 3}' WHERE id = %s""", (failed["id"],))
    retried = live_client.post(f"/events/{failed['id']}/retry")
    assert retried.status_code == 200, retried.json
    assert retried.json["state"] == "scheduled" and retried.json["attempts"] == 0
    assert retried.json["last_error"] is None
    done = _wait_state(live_client, failed["id"], "finished")
    assert done["result"] == 2 and done["attempts"] == 1
    assert [h["state"] for h in done["history"]] == ["scheduled", "running", "failed", "scheduled", "running",
                                                     "finished"]

    cancelled = create(live_client)
    live_client.post(f"/events/{cancelled['id']}/cancel")
    assert live_client.post(f"/events/{cancelled['id']}/retry").status_code == 200
    assert _wait_state(live_client, cancelled["id"], "finished")["result"] == 3


def test_a_rescheduled_event_runs_at_its_new_time(live_client, db_url):
    event = create(live_client)
    soon = (datetime.now(timezone.utc) + timedelta(milliseconds=300)).isoformat()
    assert live_client.patch(f"/events/{event['id']}", json={"scheduled_for": soon}).status_code == 200
    done = _wait_state(live_client, event["id"], "finished", timeout=10)
    assert datetime.fromisoformat(done["started_at"]) >= datetime.fromisoformat(soon)


# -- health and metrics -------------------------------------------------------------------

def test_health_is_200_with_every_check_when_the_engine_runs(live_client, db):
    response = live_client.get("/health")
    assert response.status_code == 200, response.json
    # A server with autovacuum off (the machine's shared one) is a warning: degraded, still 200 (test_maintenance.py).
    autovacuum = db.query("SHOW autovacuum")[0]["autovacuum"] == "on"
    assert response.json["status"] == ("ok" if autovacuum else "degraded"), response.json["reasons"]
    checks = response.json["checks"]
    assert {"database", "listener", "scheduler", "executor", "kafka"} <= set(checks)
    for name in ("database", "listener", "scheduler", "executor"):
        assert checks[name]["status"] == "ok", (name, checks[name])
    assert checks["kafka"]["status"] == "off"


def test_health_without_an_engine_says_so_and_stays_200(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json["checks"]["engine"]["status"] == "off"
    assert response.json["checks"]["database"]["status"] == "ok"


def _metric(text: str, name: str, labels: str = "") -> float:
    """The value of one sample line `name{labels} value` of Prometheus text."""
    prefix = f"{name}{{{labels}}} " if labels else f"{name} "
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, (prefix, [line for line in text.splitlines() if line.startswith(name)])
    return float(lines[0].split()[-1])


def test_metrics_count_events_by_state_attempts_lateness_and_run_time(live_client, db_url):
    ok = live_client.post("/events", json={"callback": "Addition", "payload": {"x": 1, "y": 1}}).json
    bad = live_client.post("/events", json={"callback": "Division", "payload": {"x": 1, "y": 0},
                                            "max_attempts": 1}).json
    create(live_client)
    _wait_state(live_client, ok["id"], "finished")
    _wait_state(live_client, bad["id"], "failed")

    def attempts_total(text: str) -> float:
        return sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith("punctual_attempts_total{"))

    # The counters move just after the outcome commits, so wait for them rather than race them.
    text = wait_for(lambda: (t := live_client.get("/metrics").get_data(as_text=True)) and attempts_total(t) == 2
                    and t, timeout=5, message="both attempts counted")
    response = live_client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    assert _metric(text, "punctual_events", 'state="finished"') == 1
    assert _metric(text, "punctual_events", 'state="failed"') == 1
    assert _metric(text, "punctual_events", 'state="scheduled"') == 1
    assert _metric(text, "punctual_events", 'state="running"') == 0
    assert _metric(text, "punctual_events", 'state="cancelled"') == 0
    assert _metric(text, "punctual_attempts_total", 'outcome="succeeded"') == 1
    assert _metric(text, "punctual_attempts_total", 'outcome="failed"') == 1
    assert _metric(text, "punctual_lateness_seconds_count") == 2
    assert _metric(text, "punctual_lateness_seconds_sum") >= 0
    run_counts = [float(line.split()[-1]) for line in text.splitlines()
                  if line.startswith("punctual_run_seconds_count")]
    assert sum(run_counts) == 2
    assert 'punctual_run_seconds_bucket{kind="python",le="+Inf"}' in text


def test_concurrent_requests_with_one_idempotency_key_create_one_event(client, db_url):
    import threading

    answers: list[Any] = []
    barrier = threading.Barrier(8)

    def post() -> None:
        barrier.wait()
        answers.append(client.post("/events", json={"callback": "Addition", "scheduled_for": FAR,
                                                    "idempotency_key": "same"}))

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert sorted(a.status_code for a in answers) == [200] * 7 + [201]
    assert len({a.json["id"] for a in answers}) == 1
    assert sql(db_url, "SELECT count(*) AS n FROM events") == [{"n": 1}]


def test_a_digit_string_names_a_callback_before_it_means_an_id(client, db_url):
    addition_id = next(c["id"] for c in client.get("/callbacks").json["callbacks"] if c["name"] == "Addition")
    named = client.post("/callbacks", json={"name": str(addition_id), "kind": "manual"}).json
    by_name = create(client, callback=str(addition_id))
    by_id = create(client, callback=addition_id)
    assert by_name["callback"] == named["name"] and by_id["callback"] == "Addition"
    assert _ids(client.get("/events", query_string={"callback": str(addition_id)})) == [by_name["id"]]
    assert _ids(client.get("/events", query_string={"callback": "Addition"})) == [by_id["id"]]


def test_a_reschedule_is_in_the_event_s_history_not_only_in_the_audit_log(client):
    event = create(client)
    moved = client.patch(f"/events/{event['id']}", json={"scheduled_for": "2998-06-01T12:00:00+02:00"})
    assert moved.status_code == 200, moved.json
    client.patch(f"/events/{event['id']}", json={"priority": 3})  # neither state nor time: no history row
    history = client.get(f"/events/{event['id']}").json["history"]
    assert [(h["state"], h["note"]) for h in history] == [
        ("scheduled", None), ("scheduled", "rescheduled to 2998-06-01T10:00:00.000000Z")]
