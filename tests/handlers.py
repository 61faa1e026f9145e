"""Handlers the tests register in app subprocesses (PYTHON_HANDLER_MODULES=tests.handlers)."""
from __future__ import annotations

import itertools
import os
import threading
import time
from typing import Any

import psycopg2

import crashpoints
from engine.kinds.python import handler

_local = threading.local()


def _conn():
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = psycopg2.connect(os.environ["DATABASE_URL"])
        conn.autocommit = True
        _local.conn = conn
    return conn


@handler("record")
def record(payload: dict[str, Any], attempt) -> dict[str, Any]:
    """Write (event, attempt) to a side table with a unique key: a second run of one attempt fails loudly."""
    with _conn().cursor() as cur:
        cur.execute("INSERT INTO executions (event_id, attempt, pid) VALUES (%s, %s, %s)",
                    (attempt.event_id, attempt.attempt, os.getpid()))
    # sleep_first: the first attempt also waits this long (a test holding it while another instance starts).
    time.sleep(float(payload.get("sleep", 0)) + (float(payload.get("sleep_first", 0)) if attempt.attempt == 1 else 0))
    crashpoints.reached("in_callback")
    return {"pid": os.getpid()}


@handler("sleep")
def sleep(payload: dict[str, Any]) -> float:
    seconds = float(payload.get("seconds", 1))
    time.sleep(seconds)
    return seconds


@handler("flaky")
def flaky(payload: dict[str, Any], attempt) -> int:
    """Fails until attempt `succeed_on`."""
    if attempt.attempt < int(payload.get("succeed_on", 2)):
        raise RuntimeError(f"flaky failure on attempt {attempt.attempt}")
    return attempt.attempt


@handler("thread_inline", inline=True)
def thread_inline(payload: dict[str, Any]) -> str:
    """Declared inline: answers the name of the thread that ran it (and waits `pause` seconds, so a
    test can stop the engine in the middle of a batch)."""
    time.sleep(float(payload.get("pause", 0)))
    return threading.current_thread().name


_RUNS = itertools.count(1)


@handler("run_order", inline=True)
def run_order(payload: dict[str, Any]) -> int:
    """Declared inline: answers how many attempts of it this process had run, this one included."""
    return next(_RUNS)


@handler("thread_pooled")
def thread_pooled(payload: dict[str, Any]) -> str:
    """Not declared inline: answers the name of the thread that ran it."""
    return threading.current_thread().name


# -- workflows the tests run (and the shipped examples) -------------------------------------------------

import examples.escalation  # noqa: E402,F401 - registers the shipped examples in app subprocesses too
import examples.trip  # noqa: E402,F401
from workflows import StepFailed, workflow  # noqa: E402

# Flipped by tests/test_workflows.py to play "the code changed between two advances".
CHANGED_CODE = {"swap": False}


@workflow("tour")
def tour(ctx, data):
    """Every kind of step once: a call, a parallel pair, a sleep, a wait with a timeout, a recorded time."""
    first = ctx.step("Addition", {"x": data["x"], "y": 1})
    pair = ctx.all([("Addition", {"x": first, "y": 10}), ("Multiplication", {"x": first, "y": 2})])
    ctx.sleep(data.get("sleep", 0.3))
    said = ctx.wait_for("go", timeout=data.get("timeout"))
    when = ctx.now()
    return {"first": first, "pair": pair, "said": said, "when": when.isoformat()}


@workflow("careful")
def careful(ctx, data):
    """A step that fails, caught: the workflow goes on another way."""
    try:
        ctx.step("Division", {"x": 1, "y": 0})
    except StepFailed as exc:
        return {"fallback": ctx.step("Addition", {"x": 1, "y": 1}), "error": exc.error}
    return {"fallback": None}


@workflow("changing")
def changing(ctx, data):
    first, second = ("Multiplication", "Addition") if CHANGED_CODE["swap"] else ("Addition", "Multiplication")
    ctx.step(first, {"x": 1, "y": 2})
    ctx.wait_for("continue")
    ctx.step(second, {"x": 1, "y": 2})
    return "done"


@workflow("hold")
def hold(ctx, data):
    """Registers a compensation, then sleeps long: cancelling it during the sleep runs the compensation."""
    ctx.step("Addition", {"x": 1, "y": 1})
    ctx.on_failure("Subtraction", {"x": 5, "y": 1})
    ctx.sleep(data.get("sleep", 3600))
    return "woke"


@workflow("approval")
def approval(ctx, data):
    """A person's approval as a step: a manual callback's event, completed on the alert desk."""
    decision = ctx.step("Approve", {"amount": data["amount"]})
    return {"approved": decision}


@workflow("broken")
def broken(ctx, data):
    ctx.step("Addition", {"x": 1, "y": 1})
    ctx.on_failure("Addition", {"x": 100, "y": 1})
    raise ValueError("the order has no lines")


# -- workflows on real processes: tests/faults/test_workflow_crashes.py, tests/test_workflows_process.py ---------
# Their steps call the `workflow_record` handler through a callback named WORKFLOW_RECORD (the tests create both
# the callback and the side table below), so the database itself says which (event, attempt) ran, for which
# workflow and step: a second run of one attempt fails on the primary key.

WORKFLOW_RECORD = "wrec"

WORKFLOW_EXECUTIONS = """
CREATE TABLE IF NOT EXISTS workflow_executions (
    event_id bigint NOT NULL, attempt integer NOT NULL, workflow_id text, step integer, pid integer NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (event_id, attempt)
);
"""


@handler("workflow_record")
def workflow_record(payload: dict[str, Any], attempt) -> int:
    """A step's side effect: (event, attempt, its workflow and step) into workflow_executions, then 2x + 1 of the
    payload's `x`: a result that depends on the payload only, so a crashed run and a clean one answer the same."""
    with _conn().cursor() as cur:
        cur.execute("""INSERT INTO workflow_executions (event_id, attempt, workflow_id, step, pid)
                       SELECT id, %s, workflow_id, workflow_step, %s FROM events WHERE id = %s""",
                    (attempt.attempt, os.getpid(), attempt.event_id))
    time.sleep(float(payload.get("work", 0)))
    crashpoints.reached("in_callback")
    return int(payload["x"]) * 2 + 1


@workflow("crash_rounds")
def crash_rounds(ctx, data):
    """One of each boundary a crash can fall on: a call, a parallel pair, a durable sleep, a signal kept until the
    wait (sent when the workflow was made), a last call, and with `fail` its two compensations, newest first."""
    work = {"work": data.get("work", 0)}
    first = ctx.step(WORKFLOW_RECORD, {"x": data["n"], **work})
    ctx.on_failure(WORKFLOW_RECORD, {"x": -first, **work})
    pair = ctx.all([(WORKFLOW_RECORD, {"x": first, **work}), (WORKFLOW_RECORD, {"x": first + 1, **work})])
    ctx.sleep(data.get("sleep", 0.2))
    said = ctx.wait_for("go")
    last = ctx.step(WORKFLOW_RECORD, {"x": pair[0] + pair[1] + said, **work})
    ctx.on_failure(WORKFLOW_RECORD, {"x": -last, **work})
    if data.get("fail"):
        raise ValueError(f"planned failure after {last}")
    return {"first": first, "pair": pair, "said": said, "last": last}


@workflow("nap")
def nap(ctx, data):
    """A step, a durable sleep, a step; cancelled during the sleep, the first step's compensation runs."""
    before = ctx.step(WORKFLOW_RECORD, {"x": data["n"]})
    ctx.on_failure(WORKFLOW_RECORD, {"x": -before})
    ctx.sleep(data["sleep"])
    return ctx.step(WORKFLOW_RECORD, {"x": before})


@workflow("pair_hold")
def pair_hold(ctx, data):
    """An undo registered first, then a parallel pair: a slow recorded step and a person's approval (a `manual`
    callback's event nobody claims). Cancelled while the slow one runs, the approval's event is cancelled at once."""
    ctx.on_failure(WORKFLOW_RECORD, {"x": -data["n"]})
    slow, approved = ctx.all([(WORKFLOW_RECORD, {"x": data["n"], "work": data["work"]}), (data["approval"], {})])
    return {"slow": slow, "approved": approved}
