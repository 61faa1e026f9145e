"""kill -9 at every boundary of a workflow's steps, over rounds with random timing (issue 13 point 6).

Each round makes a few `crash_rounds` workflows (tests/handlers.py: a call, a parallel pair, a durable sleep, a
kept signal, a last call, and for some a planned failure that runs two compensations), as another program
would (controllers.workflows from this process), and starts `python app.py` armed to die (PUNCTUAL_CRASH_AT, the
n-th time, n random) at one of the workflow runner's points (an advance locked, a step's event about to be
made, just made, the advance committed) or the engine's (an attempt claimed, inside the step's callback, its
outcome not yet committed), or kills it at a random moment. Some signals are sent while no instance runs, and
now and then a workflow made earlier is cancelled (also while no instance runs). The next round inherits what the
dead one left. At the end a clean instance runs everything out, together with an uninterrupted copy of each
workflow (same input, same signal, never cancelled), and the database must show:

- every workflow ended as its uninterrupted copy did: same state, result or error, and the same steps with
  the same results (compensations included); a cancelled one did the copy's steps up to where it stopped, then
  the compensations it had registered by then, newest first, each once;
- each call step has exactly one event and every event is a step's (its key makes it once), and the step's
  recorded result is its event's;
- no (event, attempt) ran twice (workflow_executions' primary key; a second run would fail the attempt with a
  duplicate key), each attempt has one 'running' history row, and every finished event's last attempt ran. An
  attempt killed inside its callback ran once and its retry once: at least once to the outside world, never
  twice per attempt;
- each signal was consumed by exactly one wait, which returned its value (a cancelled workflow's maybe by none).

PUNCTUAL_SOAK=1 runs 60 rounds instead of 8 (one per point).
"""
from __future__ import annotations

import random
import time
from typing import Any

from controllers import workflows as flows
from db import Database
from errors import Conflict
from tests.faults.conftest import assert_every_attempt_recorded_once, count, record_figure, soak
from tests.handlers import WORKFLOW_EXECUTIONS, WORKFLOW_RECORD
from tests.helpers import sql, wait_for

ROUNDS = soak(8, 60)
WORKFLOW_POINTS = ["workflow_before_advance", "workflow_before_step_event", "workflow_after_step_event",
                   "workflow_after_advance"]
ENGINE_POINTS = ["after_claim", "in_callback", "before_outcome"]
POINTS = [*WORKFLOW_POINTS, *ENGINE_POINTS, "random"]
ENV = {"WORKER_THREADS": "4", "DB_POOL_SIZE": "4", "HTTP_THREADS": "2"}
TERMINAL = ("completed", "failed", "cancelled")


def _steps(db_url: str, workflow_id: str) -> list[tuple]:
    rows = sql(db_url, """SELECT step, kind, name, compensation, state, result FROM workflow_steps
                          WHERE workflow_id = %s ORDER BY step""", (workflow_id,))
    return [tuple(r.values()) for r in rows]


def test_kill_9_at_every_step_boundary_over_random_rounds_does_each_step_once_with_the_uninterrupted_result(
        db_url, start_round):
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    sql(db_url, WORKFLOW_EXECUTIONS)
    # 25 attempts: a crash spends an attempt of each event the dead instance had claimed (see test_crash_rounds).
    sql(db_url, "INSERT INTO callbacks (name, kind, target, timeout_seconds, max_attempts) "
                "VALUES (%s, 'python', 'workflow_record', 1, 25)", (WORKFLOW_RECORD,))
    db = Database(db_url, pool_size=1)
    inputs: dict[str, dict[str, Any]] = {}
    unsent: list[str] = []        # signals held back to be sent while no instance runs
    outcomes: dict[str, int] = {}
    cancelled: list[str] = []
    started = time.monotonic()

    def send(workflow_id: str) -> None:
        try:
            flows.signal(db, workflow_id, "go", inputs[workflow_id]["n"], source="test")
        except Conflict:
            assert workflow_id in cancelled  # it ended (cancelled) before its signal came

    try:
        for index in range(ROUNDS):
            for workflow_id in unsent:                     # the previous round's instance is dead by now
                send(workflow_id)
            unsent = []
            if inputs and rng.random() < 0.4:              # cancel one made earlier, wherever it is
                victim = rng.choice(sorted(inputs))
                try:
                    flows.cancel(db, victim)
                    cancelled.append(victim)
                except Conflict:
                    pass                                   # it had ended (or was cancelled) already
            for _ in range(rng.randint(2, 5)):
                n = len(inputs) + 1
                workflow_id = f"crash-{n}"
                inputs[workflow_id] = {"n": n, "fail": rng.random() < 0.3, "sleep": round(rng.uniform(0.05, 0.8), 3),
                                       "work": round(rng.uniform(0, 0.08), 3)}
                flows.start(db, "crash_rounds", inputs[workflow_id], workflow_id, source="test")
                if rng.random() < 0.5:
                    flows.signal(db, workflow_id, "go", n, source="test")   # before it waits: kept
                else:
                    unsent.append(workflow_id)
            point = POINTS[index % len(POINTS)] if index < len(POINTS) else rng.choice(POINTS)
            if point == "random":
                app = start_round(db_url, index, ENV)
                time.sleep(rng.uniform(0.0, 2.0))  # a random moment, not a synchronisation
                app.kill()
                outcomes["random kill"] = outcomes.get("random kill", 0) + 1
                continue
            app = start_round(db_url, index, ENV | {"PUNCTUAL_CRASH_AT": point,
                                                    "PUNCTUAL_CRASH_AFTER": str(rng.randint(1, 4))})
            try:
                wait_for(lambda: app.proc.poll() is not None, 15, 0.05, f"the app to die at {point}")
                assert app.proc.returncode == 137, app.log_text()[-2000:]
                outcomes[point] = outcomes.get(point, 0) + 1
            except AssertionError:
                if app.proc.poll() is not None:
                    raise
                app.kill()  # the point was not reached often enough this round: an ordinary kill -9 then
                outcomes[f"{point} (not reached, killed)"] = outcomes.get(f"{point} (not reached, killed)", 0) + 1

        for workflow_id in unsent:
            send(workflow_id)
        left = {r["state"]: r["n"] for r in sql(db_url, "SELECT state, count(*) AS n FROM workflows GROUP BY state")}
        # The uninterrupted copies: same input, their signal sent at once; run by the clean instance only.
        for workflow_id, data in inputs.items():
            flows.start(db, "crash_rounds", data, f"ref-{workflow_id}", source="test")
            flows.signal(db, f"ref-{workflow_id}", "go", data["n"], source="test")
    finally:
        db.close()
    assert all(outcomes.get(p, 0) for p in WORKFLOW_POINTS + ENGINE_POINTS), (outcomes, seed)

    final = start_round(db_url, ROUNDS, ENV)
    total = 2 * len(inputs)
    wait_for(lambda: count(db_url, "SELECT count(*) AS n FROM workflows WHERE state IN %s", (TERMINAL,)) == total,
             90, 0.2, f"every workflow to end (seed {seed})")
    assert final.proc.poll() is None

    # Every workflow as its uninterrupted copy: state, result, error, and step by step; a cancelled one as far as
    # it went, then the compensations it had registered, newest first.
    rows = {r["id"]: r for r in sql(db_url, "SELECT id, state, result, error FROM workflows")}
    stopped = 0
    for workflow_id, data in inputs.items():
        got, want = rows[workflow_id], rows[f"ref-{workflow_id}"]
        mine, theirs = _steps(db_url, workflow_id), _steps(db_url, f"ref-{workflow_id}")
        assert want["state"] == ("failed" if data["fail"] else "completed"), (want, seed)
        if got["state"] != "cancelled":
            assert (got["state"], got["result"], got["error"]) == (want["state"], want["result"], want["error"]), \
                (workflow_id, data, seed)
            assert mine == theirs, (workflow_id, data, seed)
            continue
        assert workflow_id in cancelled, (workflow_id, seed)
        stopped += 1
        body = [s for s in mine if not s[3]]
        for step, same in zip(body, theirs):
            assert step[:4] == same[:4], (workflow_id, mine, theirs, seed)            # number, kind, name
            assert step[4] == "cancelled" or step == same, (workflow_id, mine, theirs, seed)
        done = {s[0]: s[5] for s in body if s[4] == "completed"}
        registered = [-done[1]] if 1 in done else []
        if 6 in done:
            registered.append(-done[6])
        compensations = [s for s in mine if s[3]]
        assert [(s[1], s[2], s[4], s[5]) for s in compensations] == [
            ("call", WORKFLOW_RECORD, "completed", 2 * x + 1) for x in reversed(registered)], (workflow_id, mine, seed)
        assert all(s[0] > (body[-1][0] if body else 0) for s in compensations), (workflow_id, mine, seed)
    failed = sum(1 for d in inputs.values() if d["fail"])

    # One event per call step, none that is not a step's, and the step's recorded result is its event's.
    doubled = sql(db_url, """SELECT workflow_id, workflow_step, count(*) AS n FROM events WHERE workflow_id IS NOT NULL
                             GROUP BY 1, 2 HAVING count(*) <> 1""")
    assert doubled == [], f"steps with more than one event (seed {seed}): {doubled[:5]}"
    unlinked = sql(db_url, """SELECT s.workflow_id, s.step FROM workflow_steps s
                              LEFT JOIN events e ON e.id = s.event_id
                              WHERE s.kind = 'call' AND (e.id IS NULL OR e.workflow_id <> s.workflow_id
                                                         OR e.workflow_step <> s.step)""")
    assert unlinked == [], f"call steps without their own event (seed {seed}): {unlinked[:5]}"
    strays = count(db_url, """SELECT count(*) AS n FROM events e WHERE NOT EXISTS (SELECT 1 FROM workflow_steps s
                              WHERE s.workflow_id = e.workflow_id AND s.step = e.workflow_step AND s.kind = 'call')""")
    assert strays == 0
    mismatched = sql(db_url, """SELECT s.workflow_id, s.step, s.state, s.result, e.state AS event_state, e.result AS r
                                FROM workflow_steps s JOIN events e ON e.id = s.event_id
                                WHERE NOT (s.state = 'completed' AND e.state = 'finished'
                                           AND s.result IS NOT DISTINCT FROM e.result
                                           OR s.state = 'cancelled' AND e.state = 'cancelled')""")
    assert mismatched == [], f"steps whose record is not their event's outcome (seed {seed}): {mismatched[:5]}"
    calls = count(db_url, "SELECT count(*) AS n FROM workflow_steps WHERE kind = 'call'")
    assert count(db_url, "SELECT count(*) AS n FROM events") == calls

    # Each attempt at most once, the last one of each event really ran, none beyond the count.
    assert_every_attempt_recorded_once(db_url)
    twice = sql(db_url, "SELECT event_id, attempt, error FROM event_history WHERE error LIKE '%%duplicate key%%'")
    assert twice == [], f"an attempt ran twice (seed {seed}): {twice[:5]}"
    unrun = count(db_url, """SELECT count(*) AS n FROM events e WHERE state = 'finished' AND NOT EXISTS
                             (SELECT 1 FROM workflow_executions x WHERE x.event_id = e.id AND x.attempt = e.attempts)""")
    assert unrun == 0, f"{unrun} events finished without their last attempt running (seed {seed})"
    beyond = count(db_url, """SELECT count(*) AS n FROM workflow_executions x JOIN events e ON e.id = x.event_id
                              WHERE x.attempt > e.attempts OR x.workflow_id IS DISTINCT FROM e.workflow_id
                                 OR x.step IS DISTINCT FROM e.workflow_step""")
    assert beyond == 0

    # Each signal consumed by one wait, which returned its value; a cancelled workflow's maybe by none.
    signals = sql(db_url, """SELECT g.workflow_id, g.value, g.step, s.kind, s.result FROM workflow_signals g
                             LEFT JOIN workflow_steps s ON s.workflow_id = g.workflow_id AND s.step = g.step""")
    assert len(signals) == len({g["workflow_id"] for g in signals}) <= total
    assert all(g["kind"] == "signal" and g["result"] == g["value"] for g in signals
               if g["step"] is not None or rows[g["workflow_id"]]["state"] != "cancelled"), signals
    consumed = sum(1 for g in signals if g["step"] is not None)
    assert consumed >= total - stopped

    reran = count(db_url, "SELECT count(*) AS n FROM (SELECT event_id FROM workflow_executions "
                          "GROUP BY event_id HAVING count(*) > 1) x")
    retried = count(db_url, "SELECT count(*) AS n FROM events WHERE attempts > 1")
    record_figure(f"workflow crash rounds ({ROUNDS})",
                  f"{len(inputs)} workflows ({failed} with a planned failure and its compensations, {stopped} "
                  f"cancelled midway), {calls} call steps (copies included), {outcomes}; left by the last kill: {left}; {retried} step events needed more "
                  f"than one attempt, {reran} reached the outside world more than once (a new attempt each); all "
                  f"ended as their uninterrupted copies (the cancelled ones as far as they went, then their "
                  f"compensations), each step one event; {time.monotonic() - started:.0f} s "
                  f"(seed {seed})")
