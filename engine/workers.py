"""The worker pool: runs attempts that are not inline (webhooks, Kafka, ordinary python handlers), one per
worker thread, each under its callback's timeout.

What wakes a worker: an attempt in the pool's queue (in priority order), put there by the dispatcher.
What the pool's own thread does (its `run_once`, every 50 ms): enforce timeouts. An attempt past its
deadline is recorded as failed, its thread is abandoned (Python cannot kill it) and replaced, so a hung
callback never shrinks the pool. Outcomes go to the completer.
"""
from __future__ import annotations

import itertools
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from config import Settings
from engine.completer import Completer
from engine.inflight import Held, Inflight
from engine.lease_keeper import LeaseCheck
from engine.pace import Pace
from engine.queries import Claimed
from engine.role import Role
from engine.running import Runner
from metrics import Metrics

_STOP = object()


@dataclass(order=True)
class _Queued:
    sort_key: tuple[Any, ...]
    row: Any = field(compare=False)  # a Claimed, or _STOP


class WorkerPool(Role):
    name = "worker-pool"

    def __init__(self, settings: Settings, inflight: Inflight, runner: Runner, completer: Completer, pace: Pace,
                 metrics: Metrics, lease_check: LeaseCheck, on_free: Callable[[], None]) -> None:
        super().__init__(period=0.05, retry_cap=settings.reconnect_max_seconds)
        self.settings = settings
        self.inflight = inflight
        self.runner = runner
        self.completer = completer
        self.pace = pace
        self.metrics = metrics
        self._lease_check = lease_check
        self._on_free = on_free  # a slot is free: the dispatcher may claim more
        self._queue: queue.PriorityQueue[_Queued] = queue.PriorityQueue()
        self._order = itertools.count()
        self._threads: set[threading.Thread] = set()
        self._abandoned: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self.accepting = True  # False once a stop began: nothing starts after that

    def describe(self) -> str:
        return f"{self.settings.worker_threads} workers"

    def start(self) -> None:
        for _ in range(self.settings.worker_threads):
            self._spawn()
        super().start()

    def submit(self, rows: list[Claimed]) -> None:
        """Hold these attempts and queue them for the workers, highest priority first."""
        self.inflight.add(rows)
        for row in rows:
            self._queue.put(_Queued((-row.priority, row.scheduled_for, next(self._order)), row))
        self.metrics.inflight.set(len(self.inflight))

    def drain_queued(self) -> list[Claimed]:
        """Take back every attempt no worker has started (the stop gives them back uncounted)."""
        self.accepting = False
        waiting: list[Claimed] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item.row is not _STOP:
                waiting.append(item.row)
        for row in waiting:
            self.inflight.pop(row.key)
        return waiting

    def stop(self, timeout: float = 5.0) -> bool:
        for _ in range(len(self._threads)):
            self._queue.put(_Queued((float("inf"),), _STOP))
        return super().stop(timeout)

    # -- the supervisor (this role's own thread) ----------------------------------------

    def run_once(self) -> None:
        now = time.monotonic()
        expired = self.inflight.expire_overdue(now, self._record_timeout)
        for entry in expired:
            row = entry.row
            self.pace.slow(row.callback_id, float(row.timeout_seconds))
            self.log.warning("event %s attempt %s timed out after %g s; its thread is abandoned and replaced",
                             row.id, row.attempts, row.timeout_seconds)
            self.metrics.attempts.labels("timeout").inc()
            with self._lock:
                if entry.thread is not None:
                    self._abandoned.add(entry.thread)
            self._spawn()
        if expired:
            self._on_free()

    def _record_timeout(self, entry: Held) -> None:
        # Called under the in-flight lock, before the attempt leaves the table (see Inflight.expire_overdue).
        row = entry.row
        self.completer.put(self.runner.outcome(row, False, None, f"timed out after {row.timeout_seconds:g} s",
                                               time.monotonic() - entry.started, entry.started_wall))

    # -- workers ------------------------------------------------------------------------

    def _spawn(self) -> None:
        thread = threading.Thread(target=self._work, name="punctual-worker", daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def _work(self) -> None:
        me = threading.current_thread()
        try:
            while True:
                item = self._queue.get()
                if item.row is _STOP:
                    return
                self._run(item.row)
                with self._lock:
                    if me in self._abandoned:  # timed out; a replacement already took our place
                        self._abandoned.discard(me)
                        return
        finally:
            with self._lock:
                self._threads.discard(me)

    def _run(self, row: Claimed) -> None:
        entry = self.inflight.get(row.key)
        if entry is None:  # given back during a stop, or its lease was lost while it waited
            return
        if not self._lease_check(row, time.monotonic() - entry.leased):
            self.inflight.pop(row.key)
            self._on_free()
            return
        with self.inflight.lock:
            if self.inflight.get_unlocked(row.key) is not entry:  # given back meanwhile
                return
            if not self.accepting:  # stopping: nothing starts after the stop began
                self.inflight.pop_unlocked(row.key)
                starting = False
            else:
                starting = True
                entry.started = time.monotonic()
                entry.started_wall = time.time()
                entry.deadline = entry.started + row.timeout_seconds
                entry.thread = threading.current_thread()
        if not starting:
            self.runner.give_back([row], "released: instance shutting down before the attempt started")
            return
        assert entry.started_wall is not None
        self.runner.observe_start(row, entry.started_wall)
        outcome = self.runner.run(row, entry.started, entry.started_wall)
        if self.inflight.finish(entry, lambda: self.completer.put(outcome)):
            self.metrics.inflight.set(len(self.inflight))
            self._on_free()

    @property
    def threads(self) -> int:
        with self._lock:
            return len(self._threads)

    def health(self) -> dict[str, Optional[object]]:
        return {**super().health(), "workers": self.threads}
