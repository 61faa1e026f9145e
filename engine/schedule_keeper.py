"""The schedule keeper: makes the occurrences of schedules as events, ahead of time, on every instance.

What it owns: nothing in memory; each round reads the schedules whose next occurrence is due within the
lookahead (an indexed read) and advances each under its row lock (controllers.schedules.advance), so any
number of instances share the work and an occurrence is made exactly once (its idempotency key). What
wakes it: its period (0.5 s). What it writes: occurrence events, cancelled skipped ones, `made_until`.

A catch-up round (the catch-up policy applied to what was missed) runs at start, after a failed round (the
database was away) and, through the API, on resume.
"""
from __future__ import annotations

from config import Settings
from controllers import schedules
from db import Database
from engine.role import Role
from metrics import Metrics

PERIOD = 0.5


class ScheduleKeeper(Role):
    name = "schedule-keeper"

    def __init__(self, db: Database, settings: Settings, metrics: Metrics) -> None:
        super().__init__(period=PERIOD, retry_cap=settings.reconnect_max_seconds)
        self.db = db
        self.stats = schedules.Stats(metrics.schedule_made, metrics.schedule_skipped, metrics.schedule_caught_up)
        self._catch_up = True  # the first round after start catches up

    def describe(self) -> str:
        return f"every {PERIOD:g} s, occurrences made {schedules.LOOKAHEAD.total_seconds():g} s ahead"

    def catch_up_now(self) -> None:
        """One catch-up round over every schedule, on the caller's thread: the engine runs it before the
        dispatcher starts, so a missed occurrence is cancelled (skip) before anyone can claim it."""
        self._advance_all(catching_up=True, everything=True)
        self._catch_up = False

    def run_once(self) -> None:
        catching_up = self._catch_up
        self._advance_all(catching_up=catching_up, everything=catching_up)
        self._catch_up = False

    def reset(self) -> None:
        self._catch_up = True  # the database was away: what it missed gets the policy

    def _advance_all(self, catching_up: bool, everything: bool) -> None:
        ids = schedules.missable_schedules(self.db) if everything else schedules.due_schedules(self.db)
        for schedule_id in ids:
            if self.stopping:
                return
            schedules.advance_one(self.db, schedule_id, catching_up=catching_up, stats=self.stats)
