"""The listener: LISTENs on the events channel and passes on what each notification says, nothing more.

What it owns: one dedicated autocommit connection (never idle in a transaction, which would block the
server's notify queue), waited on with a bounded select(), so stop() is honoured at once and a dead
server is noticed by a heartbeat query. What it does with a notification: parses it into Changes and
calls `on_changes` (the engine arms timers, offers due events to the dispatcher, feeds live pages).
NOTIFY is a hint, not the truth: after every (re)connect `on_connect` catches up from the table, and the
sweeper covers anything a lost notification missed. It writes nothing.
"""
from __future__ import annotations

import logging
import os
import select
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Optional

import psycopg2.extensions

import jsonsafe
from db import Database
from engine.queries import Change
from engine.role import Role
from metrics import Metrics

log = logging.getLogger("punctual.listener")

CHANNEL = "punctual_events"
# A workflow to advance (a step's event ended, a signal came): the payload is its id; the runner reads the rest.
WORKFLOWS_CHANNEL = "punctual_workflows"


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _valid_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_notification(payload: str) -> dict[int, Optional[Change]]:
    """The events a notification of ours names, each with what it says of it, in the format of the triggers
    in database.sql; {} (logged) for anything we did not send.

    A Change with state None is a deleted row (its timer goes); None instead of a Change means the payload
    said too little, and the caller reads the row instead.
    """
    try:
        data = jsonsafe.loads(payload)
        ids = data["ids"]
        if isinstance(ids, list) and ids and all(_valid_id(i) for i in ids):
            if data.get("op") == "DELETE":
                return {i: Change(i, None, None) for i in ids}
            states, ats = data.get("states"), data.get("at")
            if not (isinstance(states, list) and isinstance(ats, list) and len(states) == len(ats) == len(ids)):
                return dict.fromkeys(ids)
            hints: dict[int, Optional[Change]] = {}
            times: dict[int, datetime] = {}  # a batch often shares one scheduled_for: convert it once
            for event_id, state, at in zip(ids, states, ats):
                if isinstance(state, str) and _valid_id(at):
                    when = times.get(at)
                    if when is None:
                        when = times[at] = _EPOCH + timedelta(microseconds=at)
                    hints[event_id] = Change(event_id, state, when)
                else:
                    hints[event_id] = None
            return hints
    except (ValueError, TypeError, KeyError, OverflowError):
        pass
    log.warning("ignoring unexpected notification payload %r", payload[:200])
    return {}


class Listener(Role):
    name = "listener"

    def __init__(self, db: Database, metrics: Metrics, timeout: float, reconnect_max: float,
                 on_changes: Callable[[dict[int, Optional[Change]]], None],
                 on_connect: Callable[[], None], on_workflows: Callable[[], None] = lambda: None) -> None:
        super().__init__(period=0, retry_initial=0.1, retry_cap=reconnect_max, logger=log)
        self.db = db
        self.metrics = metrics
        self.timeout = timeout
        self._on_changes = on_changes
        self._on_connect = on_connect
        self._on_workflows = on_workflows
        # stop() writes to this pipe so the select() below returns at once instead of at its timeout.
        self._wake_r, self._wake_w = -1, -1  # made in start(): a listener never started holds no descriptors
        self._conn: Optional[psycopg2.extensions.connection] = None
        self._connected_once = False
        self.connected = threading.Event()  # set once LISTEN and the catch-up are done
        self.last_heartbeat = 0.0
        self.reconnects = 0
        self.backend_pid: Optional[int] = None

    def describe(self) -> str:
        return f"channels {CHANNEL} and {WORKFLOWS_CHANNEL}, heartbeat every {self.timeout:g} s"

    def start(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        super().start()

    def stop(self, timeout: Optional[float] = None) -> bool:
        stopped = super().stop(self.timeout + 5 if timeout is None else timeout)
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._wake_r, self._wake_w = -1, -1
        return stopped

    def _interrupt(self) -> None:
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass

    def run_once(self) -> None:
        if self._conn is None:
            self._connect()
            return
        conn = self._conn
        readable, _, _ = select.select([conn.fileno(), self._wake_r], [], [], self.timeout)
        if self.stopping:
            return
        if readable:
            conn.poll()
            # A successful poll proves the connection alive too: under steady traffic select() never times
            # out, and health must not call a busy listener dead.
        else:
            # Heartbeat: notices a dead server that select() alone would wait on forever.
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
        self.last_heartbeat = time.monotonic()
        changes: dict[int, Optional[Change]] = {}  # the latest hint per id wins (commit order)
        workflows_woken = False
        while conn.notifies:  # also filled by the heartbeat query
            notification = conn.notifies.pop(0)
            if notification.channel == WORKFLOWS_CHANNEL:
                workflows_woken = True
            else:
                changes.update(parse_notification(notification.payload))
        if workflows_woken:
            self._on_workflows()
        if changes:
            try:
                self._on_changes(changes)
            except self.transient:
                raise
            except Exception:  # noqa: BLE001 - a failing handler must not cut the connection
                self.log.exception("handling %d notifications failed; the sweep will pick them up", len(changes))

    def _connect(self) -> None:
        conn = self.db.connect("listener", autocommit=True)
        self._conn = conn
        with conn.cursor() as cur:
            cur.execute(f"LISTEN {CHANNEL}")
            cur.execute(f"LISTEN {WORKFLOWS_CHANNEL}")
            cur.execute("SELECT pg_backend_pid()")
            row = cur.fetchone()
            self.backend_pid = row[0] if row else None
        # LISTEN before the catch-up: a row committed in between is seen by one or the other.
        self._on_connect()
        self.connected.set()
        self.metrics.listener_connected.set(1)
        self.last_heartbeat = time.monotonic()
        if self._connected_once:
            self.reconnects += 1
            self.metrics.listener_reconnects.inc()
            self.log.info("listener reconnected (backend %s) and caught up", self.backend_pid)
        else:
            self.log.info("listening on %s (backend %s)", CHANNEL, self.backend_pid)
        self._connected_once = True

    def reset(self) -> None:
        """After a failure: the connection is closed; the next round reconnects and catches up."""
        self.connected.clear()
        self.metrics.listener_connected.set(0)
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - it may be dead already
                pass

    def close(self) -> None:
        self.reset()
