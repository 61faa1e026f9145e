"""LISTEN on the events channel and turn notifications into scheduler updates.

NOTIFY is a hint, not the truth: after every (re)connect the listener catches up from the table,
and the engine's sweep covers anything a lost notification missed. The connection is dedicated,
autocommit (never idle in a transaction, which would block the server's notify queue), and
waited on with a bounded select(), so stop() is honoured within one timeout.
"""
from __future__ import annotations

import json
import logging
import os
import select
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from backoff import Backoff
from db import CONNECTION_ERRORS, Database
from metrics import Metrics

log = logging.getLogger("punctual.listener")

CHANNEL = "punctual_events"


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _valid_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_notification(payload: str) -> dict[int, dict[str, Any] | None]:
    """The events a notification of ours names, each with what it says of it, in the trigger's
    format (database.sql, punctual_notify); {} (logged) for anything we did not send.

    A hint is {"id", "state", "scheduled_for"}, with state None for a deleted row (its timer goes);
    a hint of None means the payload said too little, and the caller reads the row instead.
    """
    try:
        data = json.loads(payload)
        ids = data["ids"]
        if isinstance(ids, list) and ids and all(_valid_id(i) for i in ids):
            if data.get("op") == "DELETE":
                return {i: {"id": i, "state": None, "scheduled_for": None} for i in ids}
            states, ats = data.get("states"), data.get("at")
            if not (isinstance(states, list) and isinstance(ats, list) and len(states) == len(ats) == len(ids)):
                return dict.fromkeys(ids)
            hints: dict[int, dict[str, Any] | None] = {}
            times: dict[int, datetime] = {}  # a batch often shares one scheduled_for: convert it once
            for event_id, state, at in zip(ids, states, ats):
                if isinstance(state, str) and _valid_id(at):
                    when = times.get(at)
                    if when is None:
                        when = times[at] = _EPOCH + timedelta(microseconds=at)
                    hints[event_id] = {"id": event_id, "state": state, "scheduled_for": when}
                else:
                    hints[event_id] = None
            return hints
    except (ValueError, TypeError, KeyError, OverflowError):
        pass
    log.warning("ignoring unexpected notification payload %r", payload[:200])
    return {}


class Listener:
    def __init__(self, db: Database, metrics: Metrics, timeout: float, reconnect_max: float,
                 on_ids: Callable[[dict[int, dict[str, Any] | None]], None],
                 on_connect: Callable[[], None]) -> None:
        self.db = db
        self.metrics = metrics
        self.timeout = timeout
        self.reconnect_max = reconnect_max
        self._on_ids = on_ids
        self._on_connect = on_connect
        self._stop = threading.Event()
        # stop() writes to this pipe so the select() below returns at once instead of at its timeout.
        self._wake_r, self._wake_w = -1, -1  # made in start(): an engine never started holds no descriptors
        self._thread = threading.Thread(target=self._run, name="punctual-listener", daemon=True)
        self.connected = threading.Event()  # set once LISTEN and the catch-up are done
        self.last_heartbeat = 0.0
        self.reconnects = 0
        self.last_error: str | None = None
        self.backend_pid: int | None = None

    def start(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._wake_w < 0:
            return  # never started
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        self._thread.join(timeout=self.timeout + 5)
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r, self._wake_w = -1, -1

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        log.info("listener started")
        backoff = Backoff(0.1, self.reconnect_max)
        first = True
        while not self._stop.is_set():
            conn = None
            try:
                conn = self.db.connect("listener", autocommit=True)
                with conn.cursor() as cur:
                    cur.execute(f"LISTEN {CHANNEL}")
                    cur.execute("SELECT pg_backend_pid()")
                    self.backend_pid = cur.fetchone()[0]
                # LISTEN before the catch-up: a row committed in between is seen by one or the other.
                self._on_connect()
                self.connected.set()
                self.metrics.listener_connected.set(1)
                self.last_heartbeat = time.monotonic()
                self.last_error = None
                if not first:
                    self.reconnects += 1
                    self.metrics.listener_reconnects.inc()
                    log.info("listener reconnected (backend %s) and caught up", self.backend_pid)
                else:
                    log.info("listening on %s (backend %s)", CHANNEL, self.backend_pid)
                first = False
                backoff.reset()
                self._listen(conn)
            except CONNECTION_ERRORS as exc:
                self.last_error = f"{type(exc).__name__}: {str(exc).strip()[:200]}"
            except Exception as exc:  # noqa: BLE001 - the listener must survive anything and reconnect
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("listener failed")
            finally:
                self.connected.clear()
                self.metrics.listener_connected.set(0)
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001
                        pass
            if self._stop.is_set():
                break
            delay = backoff.next()
            log.warning("listener lost its connection (%s); reconnecting in %.2f s", self.last_error, delay)
            self._stop.wait(delay)
        log.info("listener stopped")

    def _listen(self, conn) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select([conn, self._wake_r], [], [], self.timeout)
            if self._stop.is_set():
                return
            if readable:
                conn.poll()
                # A successful poll proves the connection alive too: under steady traffic select()
                # never times out, and health must not call a busy listener dead.
                self.last_heartbeat = time.monotonic()
            else:
                # Heartbeat: notices a dead server that select() alone would wait on forever.
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
                self.last_heartbeat = time.monotonic()
            ids: dict[int, dict[str, Any] | None] = {}  # the latest hint per id wins (commit order)
            while conn.notifies:  # also filled by the heartbeat query
                ids.update(parse_notification(conn.notifies.pop(0).payload))
            if ids:
                try:
                    self._on_ids(ids)
                except CONNECTION_ERRORS:
                    raise
                except Exception:  # noqa: BLE001 - a failing handler must not stop the listener
                    log.exception("handling %d notifications failed; the sweep will pick them up", len(ids))
