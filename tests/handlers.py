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
