"""The sweeper: the safety net under every hint. NOTIFY can be lost and timers hold only the horizon, so
every SWEEP_SECONDS it asks the dispatcher to claim whatever is due, and every tenth of the horizon it
re-reads which events fall within the horizon and arms their timers (the catch-up the listener also runs
after each reconnect). It writes nothing itself."""
from __future__ import annotations

import time
from typing import Callable

from config import Settings
from engine.role import Role


class Sweeper(Role):
    name = "sweeper"

    def __init__(self, settings: Settings, claim_due: Callable[[], None], refill: Callable[[], None]) -> None:
        super().__init__(period=settings.sweep_seconds, retry_cap=settings.reconnect_max_seconds)
        self.settings = settings
        self._claim_due = claim_due
        self._refill = refill
        self.refill_every = max(settings.horizon_seconds / 10, settings.sweep_seconds)
        self._next_refill = time.monotonic() + self.refill_every

    def describe(self) -> str:
        return f"every {self.settings.sweep_seconds:g} s, horizon refill every {self.refill_every:g} s"

    def run_once(self) -> None:
        self._claim_due()
        if time.monotonic() >= self._next_refill:
            self._refill()
            self._next_refill = time.monotonic() + self.refill_every
