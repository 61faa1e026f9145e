"""The completer: writes the outcomes of attempts in batches, one statement per batch (history by trigger),
and their audit lines.

What wakes it: an outcome in its queue. What it writes: each event's new state (finished, scheduled again
after a backoff, or failed), through queries.record_outcomes, whose guard drops an outcome whose lease was
lost to another instance. A batch PostgreSQL refuses (a value it cannot store) is written one by one, and
the refused outcome becomes a failed attempt, so one bad result cannot hold up the others.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Callable, Optional

import audit
from config import Settings
from db import Database
from engine import queries
from engine.queries import Outcome
from engine.role import Role
from engine.running import clean_error
from metrics import Metrics

MAX_BATCH = 1000


class Completer(Role):
    name = "completer"

    def __init__(self, db: Database, settings: Settings, metrics: Metrics,
                 on_written: Callable[[], None] = lambda: None) -> None:
        super().__init__(period=0, retry_cap=settings.reconnect_max_seconds)
        self.db = db
        self.settings = settings
        self.metrics = metrics
        self.worker = settings.instance_name
        self.outcomes: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._on_written = on_written  # the dispatcher may be waiting for the backlog to shrink
        self._pending: list[Outcome] = []
        self._draining = threading.Event()
        self._written = threading.Condition()  # notified after each batch is written (see wait_below)

    def describe(self) -> str:
        return f"batches of up to {MAX_BATCH}"

    @property
    def backlog(self) -> int:
        """Outcomes waiting to be written."""
        return self.outcomes.qsize() + len(self._pending)

    def put(self, outcome: Outcome) -> None:
        self.outcomes.put(outcome)

    def wait_below(self, limit: int, timeout: float) -> bool:
        """Wait (at most `timeout` seconds) until at most `limit` outcomes wait to be written; whether they do."""
        deadline = time.monotonic() + timeout
        with self._written:
            while self.backlog > limit:
                left = deadline - time.monotonic()
                if left <= 0 or not self.alive:
                    return False
                self._written.wait(min(left, 0.1))
        return True

    def run_once(self) -> None:
        if not self._pending:
            try:
                self._pending.append(self.outcomes.get(timeout=0.05))
            except queue.Empty:
                if self._draining.is_set():
                    self._stop.set()  # everything queued before the stop was written
                return
        while len(self._pending) < MAX_BATCH:
            try:
                self._pending.append(self.outcomes.get_nowait())
            except queue.Empty:
                break
        self._write_each(self._pending)  # raises on a database outage: the batch stays pending and is retried
        self._pending = []
        with self._written:
            self._written.notify_all()

    def stop(self, timeout: float = 30.0) -> bool:
        """Write what is queued, then stop: the engine stops the completer after every attempt ended. A database
        that stays away past the timeout leaves those outcomes to their leases (they run again)."""
        self._draining.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        if self.backlog:
            self.log.error("giving up on %d outcomes at shutdown (%s); their leases will expire and they will be "
                           "retried", self.backlog, self.last_error)
        return super().stop(1.0)

    def _write_each(self, outcomes: list[Outcome]) -> None:
        try:
            self._write(outcomes)
            return
        except self.transient:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. a value PostgreSQL refuses
            self.log.error("writing %d outcomes failed (%s: %s); writing them one by one", len(outcomes),
                           type(exc).__name__, exc)
        for outcome in outcomes:
            try:
                self._write([outcome])
            except self.transient:
                raise
            except Exception as exc:  # noqa: BLE001
                self.log.error("outcome of event %s attempt %s refused (%s: %s); recording a failed attempt",
                               outcome.event_id, outcome.attempt, type(exc).__name__, exc)
                delay = queries.retry_delay(outcome.attempt, self.settings.retry_base_seconds,
                                            self.settings.retry_max_seconds)
                self._write([Outcome(outcome.event_id, outcome.attempt, False, None,
                                     clean_error(f"outcome not recorded: {type(exc).__name__}: {exc}"),
                                     delay, outcome.duration, outcome.started)])

    def _write(self, outcomes: list[Outcome]) -> None:
        rows = queries.record_outcomes(self.db, self.worker, outcomes)
        by_key: dict[tuple[int, int], Outcome] = {(o.event_id, o.attempt): o for o in outcomes}
        counted = {"succeeded": 0, "retry": 0, "failed": 0}  # counted once per batch: a labelled inc is a lookup
        with audit.batch():
            for row in rows:
                outcome: Optional[Outcome] = by_key.pop((row.id, row.attempts), None)
                duration = outcome.duration if outcome else None
                if row.state == "finished":
                    counted["succeeded"] += 1
                    audit.record("attempt_succeeded", row, duration=duration,
                                 result=outcome.result if outcome else None)
                elif row.state == "scheduled":
                    counted["retry"] += 1
                    audit.record("attempt_failed", row, duration=duration, error=row.last_error,
                                 next_run=row.next_run)
                else:
                    counted["failed"] += 1
                    audit.record("event_failed", row, duration=duration, error=row.last_error)
        for label, count in counted.items():
            if count:
                self.metrics.attempts.labels(label).inc(count)
        for outcome in by_key.values():
            self.log.warning("outcome of event %s attempt %s not recorded: its lease was lost to another worker",
                             outcome.event_id, outcome.attempt)
        self._on_written()
