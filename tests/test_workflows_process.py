"""Workflows on real `python app.py` processes (issue 13 point 6): 1,000 concurrent workflows with durable sleeps
across three instances all complete, each once and no step twice; a signal sent while every instance is down is
delivered after a restart; a cancel during a sleep, sent to two instances at once, runs the compensation once.

The workflows are tests/handlers.py's `nap` and `crash_rounds`; their steps call `workflow_record`, which writes
each (event, attempt) with its workflow and step into workflow_executions (unique per attempt), so the database
says what ran. tests/faults/test_workflow_crashes.py kills instances at every step boundary."""
from __future__ import annotations

import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from controllers import workflows as flows
from db import Database
from tests.handlers import WORKFLOW_EXECUTIONS, WORKFLOW_RECORD
from tests.helpers import record_figure, sql, wait_for

TERMINAL = ("completed", "failed", "cancelled")


def _prepare(app: Any, db_url: str) -> None:
    """The side table and the steps' callback (through the API, as a user makes one)."""
    sql(db_url, WORKFLOW_EXECUTIONS)
    made = requests.post(app.url + "/callbacks", json={"name": WORKFLOW_RECORD, "kind": "python",
                                                        "target": "workflow_record"}, timeout=10)
    assert made.status_code == 201, made.text


def _workflow(app: Any, workflow_id: str) -> dict[str, Any]:
    answer = requests.get(f"{app.url}/workflows/{workflow_id}", timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _wait(app: Any, workflow_id: str, predicate, timeout: float, message: str) -> dict[str, Any]:
    def check():
        body = _workflow(app, workflow_id)
        return body if predicate(body) else None
    return wait_for(check, timeout, 0.1, message)


def _count(db_url: str, query: str, params: Any = None) -> int:
    return sql(db_url, query, params)[0]["n"]


def test_a_thousand_workflows_with_sleeps_across_three_instances_all_complete_once_with_no_step_twice(
        start_app, db_url):
    # Pools of 8: three instances stay well inside a server's 100 connections while other tests share it.
    apps = [start_app(DB_POOL_SIZE="8") for _ in range(3)]
    _prepare(apps[0], db_url)
    n = 1000
    rng = random.Random()
    sleeps = {i: round(rng.uniform(0.5, 3.0), 3) for i in range(n)}

    def make(i: int, session=requests.Session()) -> None:  # noqa: B008 - one session per pool thread is enough
        answer = session.post(apps[i % 3].url + "/workflows", timeout=30,
                              json={"workflow": "nap", "id": f"nap-{i}", "input": {"n": i, "sleep": sleeps[i]}})
        assert answer.status_code == 201, answer.text

    began = time.monotonic()
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(make, range(n)))
    made_s = time.monotonic() - began
    wait_for(lambda: _count(db_url, "SELECT count(*) AS n FROM workflows WHERE state IN %s", (TERMINAL,)) == n,
             180, 0.5, "every workflow to end")
    for app in apps:
        assert app.healthy()

    rows = sql(db_url, "SELECT id, state, result FROM workflows")
    assert Counter(r["state"] for r in rows) == {"completed": n}
    wrong = [r for r in rows if r["result"] != (int(r["id"][4:]) * 2 + 1) * 2 + 1]
    assert wrong == [], wrong[:5]
    # Each one's steps: a call, its sleep, a call, each completed once; one event per call step.
    shapes = Counter(tuple(tuple(s) for s in r["steps"]) for r in sql(
        db_url, "SELECT json_agg(json_build_array(step, kind, state) ORDER BY step) AS steps FROM workflow_steps "
                "GROUP BY workflow_id"))
    assert shapes == {((1, "call", "completed"), (2, "sleep", "completed"), (3, "call", "completed")): n}
    events = sql(db_url, """SELECT count(*) AS n, count(DISTINCT (workflow_id, workflow_step)) AS steps,
                                   count(*) FILTER (WHERE state = 'finished') AS finished, sum(attempts) AS attempts
                            FROM events""")[0]
    assert events == {"n": 2 * n, "steps": 2 * n, "finished": 2 * n, "attempts": 2 * n}
    runs = sql(db_url, "SELECT count(*) AS n, count(DISTINCT event_id) AS events FROM workflow_executions")[0]
    assert runs == {"n": 2 * n, "events": 2 * n}, "a step ran twice, or not at all"
    # The sleep held: it ended after its instant, and the second step started after it. (Not the event's
    # created_at: that is now(), the advance's BEGIN, a round trip before the instant the replay compares with.)
    early = _count(db_url, """SELECT count(*) AS n FROM workflow_steps s JOIN events e
                              ON e.workflow_id = s.workflow_id AND e.workflow_step = 3
                              WHERE s.step = 2 AND (s.finished_at < s.wake_at OR e.started_at < s.wake_at)""")
    assert early == 0

    # Completed once: one workflow_completed audit line per workflow, whichever instance advanced it; and the
    # three instances shared the advances and the steps.
    completed = Counter(line["workflow_id"] for app in apps for line in app.audit_lines()
                        if line.get("action") == "workflow_completed")
    assert len(completed) == n and set(completed.values()) == {1}
    made_by = [sum(1 for line in app.audit_lines() if line.get("action") == "event_created"
                   and line.get("workflow_id")) for app in apps]
    assert sum(made_by) == 2 * n and all(made_by), made_by
    ran_by = Counter(r["pid"] for r in sql(db_url, "SELECT pid FROM workflow_executions"))
    assert set(ran_by) == {app.proc.pid for app in apps}, ran_by
    span = sql(db_url, "SELECT extract(epoch FROM max(finished_at) - min(created_at))::float8 AS s FROM workflows")
    record_figure("1,000 workflows on three instances",
                  f"made through the APIs in {made_s:.1f} s; all completed {span[0]['s']:.1f} s after the first was "
                  f"made (sleeps 0.5-3 s); steps' events made per instance {made_by}, run per instance "
                  f"{sorted(ran_by.values())}; each completed once, 2,000 step events, each run once")


def test_a_signal_sent_while_every_instance_is_down_is_delivered_after_the_restart(start_app, db_url):
    apps = [start_app(), start_app()]
    _prepare(apps[0], db_url)
    made = requests.post(apps[0].url + "/workflows", timeout=10,
                         json={"workflow": "crash_rounds", "id": "late-signal", "input": {"n": 7, "sleep": 0.1}})
    assert made.status_code == 201, made.text
    _wait(apps[1], "late-signal", lambda b: b["state"] == "waiting" and "signal 'go'" in (b["waiting_on"] or ""),
          20, "the wait for 'go'")
    apps[0].kill()
    assert apps[1].terminate() == 0  # one killed, one stopped: nobody runs

    db = Database(db_url, pool_size=1)
    try:
        kept = flows.signal(db, "late-signal", "go", 42, source="test")  # as another program on the database would
    finally:
        db.close()
    assert kept["step"] is None
    assert sql(db_url, "SELECT state FROM workflows WHERE id = 'late-signal'")[0]["state"] == "waiting"

    again = start_app()
    done = _wait(again, "late-signal", lambda b: b["state"] in TERMINAL, 20, "the workflow to end")
    assert done["state"] == "completed", done
    assert done["result"]["said"] == 42
    assert done["result"]["last"] == (done["result"]["pair"][0] + done["result"]["pair"][1] + 42) * 2 + 1
    assert [(s["step"], s["kind"], s["state"]) for s in done["steps"]] == [
        (1, "call", "completed"), (2, "call", "completed"), (3, "call", "completed"), (4, "sleep", "completed"),
        (5, "signal", "completed"), (6, "call", "completed")]
    assert [(g["value"], g["step"]) for g in done["signals"]] == [(42, 5)]
    assert _count(db_url, "SELECT count(*) AS n FROM workflow_executions") == 4  # one run per call step


def test_a_cancel_during_a_sleep_sent_to_two_instances_at_once_runs_the_compensation_once(start_app, db_url):
    apps = [start_app(), start_app()]
    _prepare(apps[0], db_url)
    made = requests.post(apps[0].url + "/workflows", timeout=10,
                         json={"workflow": "nap", "id": "held", "input": {"n": 3, "sleep": 3600}})
    assert made.status_code == 201, made.text
    waiting = _wait(apps[1], "held", lambda b: b["state"] == "waiting", 20, "the sleep")
    assert "sleep until" in waiting["waiting_on"]

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda app: requests.post(app.url + "/workflows/held/cancel", timeout=10), apps))
    assert sorted(a.status_code for a in answers) in ([200, 200], [200, 409]), [a.text for a in answers]
    done = _wait(apps[0], "held", lambda b: b["state"] in TERMINAL, 20, "the cancellation")
    assert done["state"] == "cancelled", done
    assert [(s["step"], s["kind"], s["compensation"], s["state"], s["result"]) for s in done["steps"]] == [
        (1, "call", False, "completed", 7), (2, "sleep", False, "cancelled", None), (3, "call", True, "completed", -13)]

    # Once, and still once after both runners have looked again a few times (they poll every second).
    time.sleep(2.5)
    assert _count(db_url, "SELECT count(*) AS n FROM events WHERE workflow_id = 'held'") == 2
    runs = sql(db_url, "SELECT step, count(*) AS n FROM workflow_executions GROUP BY step ORDER BY step")
    assert runs == [{"step": 1, "n": 1}, {"step": 3, "n": 1}]
    assert _workflow(apps[1], "held")["steps"] == done["steps"]
    assert requests.post(apps[1].url + "/workflows/held/cancel", timeout=10).status_code == 409


def test_a_cancel_lets_a_running_step_of_a_parallel_pair_finish_before_the_compensations_run(start_app, db_url):
    """controllers.workflows.cancel: "the next advance interrupts the function where it waits (a running step is
    let finish first) and runs its compensations". One of ctx.all()'s steps too: the pair's other, still scheduled
    event is cancelled, but the workflow ends, and its undo is made, only after the slow step finished."""
    app = start_app()
    _prepare(app, db_url)
    made = requests.post(app.url + "/callbacks", json={"name": "wapproval", "kind": "manual"}, timeout=10)
    assert made.status_code == 201, made.text
    made = requests.post(app.url + "/workflows", timeout=10, json={
        "workflow": "pair_hold", "id": "pair", "input": {"n": 5, "work": 3.0, "approval": "wapproval"}})
    assert made.status_code == 201, made.text
    wait_for(lambda: sql(db_url, "SELECT 1 FROM events WHERE workflow_id = 'pair' AND workflow_step = 1 "
                                 "AND state = 'running'"), 20, 0.05, "the slow step to run")
    assert requests.post(app.url + "/workflows/pair/cancel", timeout=10).status_code == 200
    _wait(app, "pair", lambda b: b["state"] in TERMINAL, 20, "the cancellation")
    wait_for(lambda: sql(db_url, "SELECT 1 FROM events WHERE workflow_id = 'pair' AND workflow_step = 1 "
                                 "AND state = 'finished'"), 20, 0.1, "the slow step to finish")
    order = sql(db_url, """SELECT w.state, w.finished_at >= slow.finished_at AS ended_after_the_slow_step,
                                  undo.created_at >= slow.finished_at AS undone_after_the_slow_step
                           FROM workflows w
                           JOIN events slow ON slow.workflow_id = w.id AND slow.workflow_step = 1
                           JOIN workflow_steps s ON s.workflow_id = w.id AND s.compensation
                           JOIN events undo ON undo.id = s.event_id
                           WHERE w.id = 'pair'""")
    assert order == [{"state": "cancelled", "ended_after_the_slow_step": True, "undone_after_the_slow_step": True}]


def _rows_read(plan: dict[str, Any], relation: str) -> int:
    """Rows a plan's scans of `relation` read: those returned plus those its filters threw away."""
    own = (plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)) * plan.get("Actual Loops", 1) \
        if plan.get("Relation Name") == relation else 0
    return own + sum(_rows_read(child, relation) for child in plan.get("Plans", []))


def test_looking_for_due_workflows_reads_only_due_ones_however_many_sleep(db_url):
    """The runner asks controllers.workflows.due() at least every second on every instance, and after each batch
    while busy. With `due_at <= clock_timestamp()` PostgreSQL walks workflows_due_idx in order but cannot stop at
    the first future row (a volatile function is a filter, not an index condition): every look reads every
    workflow with a timer, 20,000 here (18.7 ms measured with 100,000 sleeping, 0.03 ms with the instant taken
    once as `(SELECT clock_timestamp())`, an index condition)."""
    sql(db_url, """INSERT INTO workflows (id, name, input, due_at, state, source)
                   SELECT 'sleeper-' || g, 'nap', '{}', now() + interval '1 hour', 'waiting', 'test'
                   FROM generate_series(1, 20000) g""")
    sql(db_url, "ANALYZE workflows")
    seen: list[tuple[str, Any]] = []

    class Recording(Database):
        def query(self, query: str, params: Any = None) -> list[dict[str, Any]]:
            seen.append((query, params))
            return super().query(query, params)

    db = Recording(db_url, pool_size=1)
    try:
        assert flows.due(db) == []
    finally:
        db.close()
    (query, params), = seen
    plan = sql(db_url, "EXPLAIN (ANALYZE, FORMAT JSON) " + query, params)[0]["QUERY PLAN"][0]["Plan"]
    read = _rows_read(plan, "workflows")
    assert read <= 200, f"one look for due workflows read {read} rows of workflows, none of them due"
