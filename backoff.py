"""Capped exponential backoff with jitter, for every loop that reconnects or retries."""
from __future__ import annotations

import random


class Backoff:
    """Delays that double from `initial` up to `cap`, each drawn from its upper half, so that
    instances that lost the same server do not come back in lockstep."""

    def __init__(self, initial: float, cap: float) -> None:
        self.initial = initial
        self.cap = cap
        self._current = initial

    def next(self) -> float:
        """The delay to wait now; the one after it will be twice as long (up to the cap)."""
        delay = self._current * random.uniform(0.5, 1.0)
        self._current = min(self._current * 2, self.cap)
        return delay

    def reset(self) -> None:
        """After a success: the next failure starts from `initial` again."""
        self._current = self.initial
