"""The in-memory timer: APScheduler wakes the executor at each armed event's scheduled_for.

It is a cache of the events table, never the truth: jobs are plain wake-ups (the executor claims
whatever is due, by priority), so a lost, late or duplicate job can delay but never lose or
double an attempt. Only events due within the horizon are held, so far-future events cost rows,
not memory.
"""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable

from apscheduler.executors.debug import DebugExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler

from engine.queries import Change

log = logging.getLogger("punctual.scheduler")


class Scheduler:
    def __init__(self, horizon_seconds: float, on_due: Callable[[list[int]], None], max_armed: int = 50_000) -> None:
        self.horizon = timedelta(seconds=horizon_seconds)
        # A hard bound on timers in memory: a burst of events all due within the horizon must not
        # grow APScheduler's store without limit. Events beyond it are not lost: the sweep claims
        # whatever is due, and the horizon refill arms them as room frees up.
        self.max_armed = max_armed
        self.overflowed = 0  # events left unarmed because the bound was reached (cumulative)
        # Called with the events whose time came (a timer) or that sync found due: the dispatcher claims a few by
        # id, more with a claim of everything due (Dispatcher.offer).
        self._on_due = on_due
        self._armed: dict[int, datetime] = {}
        # _lock serialises arm/disarm (dict and APScheduler job together), so a disarm in one thread
        # cannot remove the job another thread has just armed. _fire never takes it: APScheduler
        # calls _fire while holding its own job-store lock, which add_job/remove_job need too.
        # _dict_lock guards only the dict and is never held while calling APScheduler.
        self._lock = threading.Lock()
        self._dict_lock = threading.Lock()
        # DebugExecutor runs the (tiny) wake-up inline in the scheduler thread: no pool hop.
        # misfire_grace_time=None: a late job still fires; APScheduler's default would skip it.
        self._aps = BackgroundScheduler(
            timezone=timezone.utc,
            executors={"default": DebugExecutor()},
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
        )

    @property
    def running(self) -> bool:
        return bool(self._aps.running)

    @property
    def armed_count(self) -> int:
        return len(self._armed)

    def start(self) -> None:
        self._aps.start()
        log.info("scheduler started (horizon %.0f s)", self.horizon.total_seconds())

    def stop(self) -> None:
        if self._aps.running:
            self._aps.shutdown(wait=False)
        with self._lock, self._dict_lock:
            self._armed.clear()
        log.info("scheduler stopped")

    def sync(self, rows: Iterable[Change], missing: Iterable[int] = ()) -> None:
        """Bring the timers in line with what the database says of these events."""
        now = datetime.now(timezone.utc)
        due: list[int] = []
        for row in rows:
            if row.state != "scheduled" or row.scheduled_for is None:
                self.disarm(row.id)
            elif row.scheduled_for <= now:
                self.disarm(row.id)
                due.append(row.id)
            else:
                self._arm(row.id, row.scheduled_for, now)
        for event_id in missing:
            self.disarm(event_id)
        if due:
            self._on_due(due)

    def _arm(self, event_id: int, when: datetime, now: datetime) -> None:
        if when > now + self.horizon:
            self.disarm(event_id)  # moved beyond the horizon: the horizon refill arms it later
            return
        with self._lock:
            with self._dict_lock:
                if self._armed.get(event_id) == when:
                    return
                if event_id not in self._armed and len(self._armed) >= self.max_armed:
                    self.overflowed += 1
                    if self.overflowed == 1 or self.overflowed % 10_000 == 0:
                        log.warning("%d events armed, the most allowed; later ones wait for the sweep "
                                    "(%d so far)", self.max_armed, self.overflowed)
                    return
                self._armed[event_id] = when
            if not self._aps.running:
                return
            # Explicit id + replace_existing: re-arming (reschedule, repeated notify) never duplicates.
            self._aps.add_job(self._fire, "date", run_date=when, id=f"event:{event_id}",
                              args=(event_id, when), replace_existing=True)

    def disarm(self, event_id: int) -> None:
        if event_id not in self._armed:
            # Most changes (claims, outcomes) concern events never armed here: no locks for those. An
            # arm racing this check can only leave a stale wake-up, which claims nothing.
            return
        with self._lock:
            with self._dict_lock:
                if self._armed.pop(event_id, None) is None:
                    return
            try:
                self._aps.remove_job(f"event:{event_id}")
            except JobLookupError:
                pass  # it fired meanwhile

    def _fire(self, event_id: int, when: datetime) -> None:
        with self._dict_lock:
            if self._armed.get(event_id) == when:  # not re-armed for another time meanwhile
                del self._armed[event_id]
        self._on_due([event_id])
