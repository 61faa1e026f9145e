"""Handlers the tests register in app subprocesses (PYTHON_HANDLER_MODULES=tests.handlers)."""
from __future__ import annotations

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
    time.sleep(float(payload.get("sleep", 0)))
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
