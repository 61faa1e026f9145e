"""How long attempts take here, learned from the recent ones: it sizes how far ahead the dispatcher claims and
tells which callbacks are quick enough to take every worker."""
from __future__ import annotations

import threading

PREFETCH_WINDOW = 0.05  # seconds of work claimed ahead of the workers (see Pace.capacity)


class Pace:
    """Moving means of run times, overall and per callback.

    Starts pessimistic (50 ms), so a new instance claims little ahead until it knows its callbacks are
    quick. The per-callback table has a lock: workers add callbacks while the dispatcher reads the table,
    and iterating a dict that grows raises RuntimeError.
    """

    def __init__(self, workers: int, claim_batch: int) -> None:
        self.workers = workers
        self.claim_batch = claim_batch
        self.mean = 0.05
        self._per_callback: dict[int, float] = {}
        self._lock = threading.Lock()

    def learn(self, callback_id: int, seconds: float) -> None:
        """Fold one run time in. The overall mean is updated unlocked: a lost update only blurs it."""
        self.mean = 0.9 * self.mean + 0.1 * seconds
        with self._lock:
            previous = self._per_callback.get(callback_id)
            self._per_callback[callback_id] = seconds if previous is None else 0.8 * previous + 0.2 * seconds

    def slow(self, callback_id: int, seconds: float) -> None:
        """A callback that hung (timed out) is slow by any measure, whatever its mean said."""
        with self._lock:
            self._per_callback[callback_id] = seconds

    def means(self) -> dict[int, float]:
        """The mean run time of each callback seen so far (seconds), by callback id."""
        with self._lock:
            return dict(self._per_callback)

    def quick(self) -> list[int]:
        """Callbacks whose attempts finish within the prefetch window: they may take every worker."""
        with self._lock:
            return [cid for cid, mean in self._per_callback.items() if mean <= PREFETCH_WINDOW]

    @property
    def capacity(self) -> int:
        """Attempts this instance may hold: one per worker, plus what the workers will get through within
        PREFETCH_WINDOW at the recent pace (at least 1, at most claim_batch).

        Claiming ahead hides the claim's round trip when callbacks are quick (thousands a second); with
        slow callbacks it shrinks to one, so nothing waits long for a worker behind a slow webhook and a
        crash strands few claims that never started.
        """
        ahead = int(self.workers * PREFETCH_WINDOW / max(self.mean, 1e-5))
        return self.workers + max(1, min(self.claim_batch, ahead))
