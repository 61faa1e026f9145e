"""Durable workflows (DESIGN.md "Workflows", issue 13): each step an event, replayed from its records; timers,
signals kept until waited for, compensations newest first, cancellation, and code that changed under its
records failing instead of doing something else. The workflows run here are in tests/handlers.py and examples/.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

import workflows
from tests import handlers
from tests.helpers import sql, wait_for
from workflows import Record, Signal, replay


def _wait_state(client, workflow_id: str, *states: str, timeout: float = 15.0) -> dict:
    def state():
        body = client.get(f"/workflows/{workflow_id}").json
        return body if body["state"] in states else None
    return wait_for(state, timeout, 0.05, f"workflow {workflow_id} to be {states}")


def _start(client, name: str, data, **extra) -> dict:
    answer = client.post("/workflows", json={"workflow": name, "input": data, **extra})
    assert answer.status_code == 201, answer.json
    return answer.json


def _trip_callbacks(client) -> None:
    from examples.trip import CALLBACKS
    for name in CALLBACKS:
        made = client.post("/callbacks", json={"name": name, "kind": "python", "target": f"trip.{name}"})
        assert made.status_code == 201, made.json


# -- replay, without a database ---------------------------------------------------------------------

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)


def test_replay_makes_the_first_step_without_a_result_and_suspends_there():
    decision = replay(handlers.tour, "w", {"x": 1}, {}, [], NOW)
    assert decision.outcome == "suspended"
    assert [(s.step, s.kind, s.name, s.payload) for s in decision.new_steps] == [(1, "call", "Addition",
                                                                                 {"x": 1, "y": 1})]

    records = {1: Record(1, "call", "Addition", "completed", result=2)}
    decision = replay(handlers.tour, "w", {"x": 1}, records, [], NOW)
    assert [(s.step, s.name) for s in decision.new_steps] == [(2, "Addition"), (3, "Multiplication")]  # all()


def test_replay_returns_recorded_results_and_a_kept_signal_without_waiting():
    records = {1: Record(1, "call", "Addition", "completed", result=2),
               2: Record(2, "call", "Addition", "completed", result=12),
               3: Record(3, "call", "Multiplication", "completed", result=4),
               4: Record(4, "sleep", "", "waiting", wake_at=NOW - timedelta(seconds=1))}
    decision = replay(handlers.tour, "w", {"x": 1}, records, [Signal(7, "go", "now!")], NOW)
    assert decision.outcome == "completed"
    assert decision.result == {"first": 2, "pair": [12, 4], "said": "now!", "when": NOW.isoformat()}
    assert [r.step for r in decision.resolved] == [4]                       # the timer ended
    assert [(s.step, s.kind, s.signal_id) for s in decision.new_steps] == [(5, "signal", 7), (6, "now", None)]


def test_replay_of_code_that_asks_for_other_steps_than_recorded_fails_with_the_reason():
    records = {1: Record(1, "call", "Multiplication", "completed", result=2)}
    decision = replay(handlers.changing, "w", None, records, [], NOW)
    assert decision.outcome == "failed"
    assert "step 1 was call 'Multiplication', the code now asks for call 'Addition'" in decision.error


def test_a_workflow_cannot_swallow_its_own_suspension_or_cancellation():
    def greedy(ctx, data):
        try:
            ctx.step("Addition", {})
        except Exception:  # noqa: BLE001 - the point of the test
            return "swallowed"
    assert replay(greedy, "w", None, {}, [], NOW).outcome == "suspended"
    assert replay(greedy, "w", None, {}, [], NOW, cancel_requested=True).outcome == "cancelled"


def test_registering_a_workflow_checks_its_signature():
    with pytest.raises(TypeError):
        workflows.workflow("bad")(lambda ctx: None)


# -- through the API, with a running engine -----------------------------------------------------------

def test_a_workflow_runs_every_kind_of_step_and_keeps_a_signal_sent_before_it_waits(live_client, db_url):
    made = _start(live_client, "tour", {"x": 1, "sleep": 0.3})
    assert made["state"] == "running" and isinstance(made["id"], str)
    # Sent before the workflow waits for it: kept, then returned by the wait.
    signalled = live_client.post(f"/workflows/{made['id']}/signals/go", json={"value": "now!"})
    assert signalled.status_code == 201 and signalled.json["step"] is None

    done = _wait_state(live_client, made["id"], "completed")
    assert done["result"]["first"] == 2 and done["result"]["pair"] == [12, 4] and done["result"]["said"] == "now!"
    kinds = [(s["step"], s["kind"], s["name"], s["state"]) for s in done["steps"]]
    assert kinds == [(1, "call", "Addition", "completed"), (2, "call", "Addition", "completed"),
                     (3, "call", "Multiplication", "completed"), (4, "sleep", "", "completed"),
                     (5, "signal", "go", "completed"), (6, "now", "", "completed")]
    assert done["signals"][0]["step"] == 5
    # Each call step is an event carrying the workflow and step, keyed by them.
    events = sql(db_url, "SELECT workflow_id, workflow_step, idempotency_key, source, state FROM events "
                         "WHERE workflow_id = %s ORDER BY workflow_step", (made["id"],))
    assert [(e["workflow_step"], e["idempotency_key"], e["source"], e["state"]) for e in events] == [
        (n, f"workflow:{made['id']}:{n}", "workflow", "finished") for n in (1, 2, 3)]
    assert [s["event_id"] is not None for s in done["steps"][:3]] == [True] * 3
    sleep = done["steps"][3]
    assert datetime.fromisoformat(sleep["finished_at"]) >= datetime.fromisoformat(sleep["wake_at"])


def test_a_wait_with_a_timeout_returns_none_when_no_signal_comes(live_client):
    made = _start(live_client, "tour", {"x": 5, "sleep": 0, "timeout": 0.5})
    waiting = _wait_state(live_client, made["id"], "waiting")
    assert "signal 'go'" in waiting["waiting_on"]
    done = _wait_state(live_client, made["id"], "completed")
    assert done["result"]["said"] is None


def test_the_trip_saga_books_all_three_or_undoes_what_it_booked_newest_first(live_client):
    _trip_callbacks(live_client)
    booked = _start(live_client, "trip", {"trip": "t1", "city": "Lisbon"})
    done = _wait_state(live_client, booked["id"], "completed")
    assert set(done["result"]) == {"car", "hotel", "flight"}
    assert not any(s["compensation"] for s in done["steps"])

    full = _start(live_client, "trip", {"trip": "t2", "city": "Oslo", "seat": "none left"})
    failed = _wait_state(live_client, full["id"], "failed")
    assert "step 3 (reserve_flight) failed" in failed["error"] and "no seat to Oslo" in failed["error"]
    steps = [(s["name"], s["compensation"], s["state"]) for s in failed["steps"]]
    assert steps == [("reserve_car", False, "completed"), ("reserve_hotel", False, "completed"),
                     ("reserve_flight", False, "failed"),
                     ("cancel_hotel", True, "completed"), ("cancel_car", True, "completed")]
    hotel, car = failed["steps"][1]["result"]["reservation"], failed["steps"][0]["result"]["reservation"]
    assert failed["steps"][3]["result"] == {"cancelled": hotel}
    assert failed["steps"][4]["result"] == {"cancelled": car}


def test_a_failed_step_can_be_caught_and_a_raised_error_runs_the_compensations(live_client):
    careful = _start(live_client, "careful", None)
    done = _wait_state(live_client, careful["id"], "completed")
    assert done["result"] == {"fallback": 2, "error": "division by zero: y must not be 0"}

    broken = _start(live_client, "broken", None)
    failed = _wait_state(live_client, broken["id"], "failed")
    assert failed["error"].startswith("ValueError: the order has no lines")
    assert [(s["step"], s["compensation"], s["result"]) for s in failed["steps"]] == [(1, False, 2), (2, True, 101)]


def test_cancelling_during_a_sleep_runs_the_compensations_once(live_client, db_url):
    held = _start(live_client, "hold", {"sleep": 3600})
    waiting = _wait_state(live_client, held["id"], "waiting")
    assert "sleep until" in waiting["waiting_on"]
    cancelled = live_client.post(f"/workflows/{held['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json["cancel_requested_at"]
    done = _wait_state(live_client, held["id"], "cancelled")
    assert [(s["kind"], s["compensation"], s["state"]) for s in done["steps"]] == [
        ("call", False, "completed"), ("sleep", False, "cancelled"), ("call", True, "completed")]
    assert done["steps"][2]["result"] == 4
    again = live_client.post(f"/workflows/{held['id']}/cancel")
    assert again.status_code == 409
    # Once: the compensation's event exists once, and another advance adds nothing.
    assert sql(db_url, "SELECT count(*) AS n FROM events WHERE workflow_id = %s", (held["id"],))[0]["n"] == 2


def test_code_changed_under_recorded_steps_fails_the_workflow_with_a_clear_error(live_client):
    made = _start(live_client, "changing", None)
    _wait_state(live_client, made["id"], "waiting")
    handlers.CHANGED_CODE["swap"] = True
    try:
        live_client.post(f"/workflows/{made['id']}/signals/continue", json={})
        failed = _wait_state(live_client, made["id"], "failed")
    finally:
        handlers.CHANGED_CODE["swap"] = False
    assert "no longer matches its recorded steps" in failed["error"]
    assert len(failed["steps"]) == 2  # nothing else was done


def test_a_manual_step_is_a_persons_approval_on_the_desk(live_client):
    assert live_client.post("/callbacks", json={"name": "Approve", "kind": "manual"}).status_code == 201
    made = _start(live_client, "approval", {"amount": 120})
    claimed = wait_for(lambda: (r := live_client.post("/events/claim", json={"worker": "ann",
                                                                             "callback": "Approve"})).status_code
                       == 200 and r.json, 10, 0.05, "the approval to be on the desk")
    assert claimed["payload"] == {"amount": 120}
    done = live_client.post(f"/events/{claimed['id']}/complete",
                            json={"worker": "ann", "lease_token": claimed["lease_token"], "result": "yes"})
    assert done.status_code == 200, done.json
    assert _wait_state(live_client, made["id"], "completed")["result"] == {"approved": "yes"}


def test_bad_requests_get_clear_errors(live_client):
    unknown = live_client.post("/workflows", json={"workflow": "nope", "input": 1})
    assert unknown.status_code == 422 and "no workflow named 'nope'" in unknown.json["error"]["message"]
    assert live_client.get("/workflows/missing").status_code == 404
    assert live_client.post("/workflows/missing/signals/go", json={"value": 1}).status_code == 404
    assert live_client.post("/workflows/missing/cancel").status_code == 404
    assert live_client.post("/workflows", json={"workflow": "tour", "id": "has space"}).status_code == 422

    first = live_client.post("/workflows", json={"workflow": "hold", "input": {"sleep": 60}, "id": "order-7"})
    same = live_client.post("/workflows", json={"workflow": "hold", "input": {"sleep": 60}, "id": "order-7"})
    other = live_client.post("/workflows", json={"workflow": "hold", "input": {"sleep": 61}, "id": "order-7"})
    assert (first.status_code, same.status_code, other.status_code) == (201, 200, 409)
    assert same.json["id"] == "order-7"

    listed = live_client.get("/workflows", query_string={"workflow": "hold"}).json["workflows"]
    assert [w["id"] for w in listed] == ["order-7"]
    assert live_client.get("/workflows", query_string={"state": "completed", "workflow": "hold"}).json[
        "workflows"] == []
    live_client.post("/workflows/order-7/cancel")
    _wait_state(live_client, "order-7", "cancelled")
    late = live_client.post("/workflows/order-7/signals/go", json={"value": 1})
    assert late.status_code == 409


def test_an_event_made_by_hand_with_a_steps_key_is_never_taken_for_that_step(live_client):
    squatter = live_client.post("/events", json={"callback": "Addition", "payload": {"x": 40, "y": 2},
                                                 "idempotency_key": "workflow:squat:1"})
    assert squatter.status_code == 201
    made = _start(live_client, "careful", None, id="squat")
    done = _wait_state(live_client, made["id"], "completed")
    assert "already holds this step's idempotency key" in done["result"]["error"]
    assert done["steps"][0]["event_id"] is None and done["result"]["fallback"] == 2
    event = live_client.get(f"/events/{done['steps'][1]['event_id']}").json
    assert (event["workflow_id"], event["workflow_step"]) == ("squat", 2)


@workflows.workflow("exits")
def _exits(ctx, data):
    ctx.step("Addition", {"x": 1, "y": 1})
    raise SystemExit(3)


def test_a_workflow_that_calls_sys_exit_fails_and_the_runner_lives_on(live_client, engine):
    made = _start(live_client, "exits", None)
    failed = _wait_state(live_client, made["id"], "failed")
    assert failed["error"].startswith("SystemExit: 3")
    assert engine.workflow_runner.alive
    assert _wait_state(live_client, _start(live_client, "careful", None)["id"], "completed")


def test_an_advance_that_fails_is_set_aside_and_retried_while_the_others_go_on(live_client, engine, monkeypatch):
    from controllers import workflows as controller

    real = controller._write_workflow
    failures = {"left": 2}

    def flaky(cur, row, decision):
        if row["id"] == "flaky" and failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("a bug in writing it down")
        return real(cur, row, decision)

    monkeypatch.setattr("engine.workflow_runner.SET_ASIDE_SECONDS", 0.3)
    monkeypatch.setattr(controller, "_write_workflow", flaky)
    flaky_one = _start(live_client, "careful", None, id="flaky")
    other = _start(live_client, "careful", None)
    assert _wait_state(live_client, other["id"], "completed")
    aside = wait_for(lambda: (w := live_client.get("/workflows/flaky").json)["waiting_on"] and
                     "a retry of its advance" in w["waiting_on"] and w, 10, 0.02, "the set-aside note")
    assert "RuntimeError: a bug in writing it down" in aside["waiting_on"]
    assert _wait_state(live_client, flaky_one["id"], "completed")["result"]["fallback"] == 2
    assert failures["left"] == 0
