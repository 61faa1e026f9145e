"""The attempts this instance holds, from their claim to their outcome: shared by the roles that claim
them (dispatcher), run them (worker pool), keep their leases (lease keeper) and stop them (engine).

One lock guards the table; every role reads and changes it through the methods here, so the rules of
who may remove an attempt (its worker, the timeout, the stop) live in one place.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Optional

from engine.queries import Claimed


@dataclass(slots=True)
class Held:
    """One held attempt of the worker pool."""

    row: Claimed
    leased: float = 0.0  # monotonic time its lease (timeout + grace) was last set from
    started: float = 0.0
    started_wall: Optional[float] = None  # epoch seconds, written as started_at with the outcome
    deadline: float = float("inf")
    thread: Optional[threading.Thread] = None  # the worker running it; None while it waits
    timed_out: bool = False  # recorded as timed out or given back: a late return is not recorded


class Inflight:
    """The table of held attempts of the worker pool, plus a count of inline runs in progress."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._held: dict[tuple[int, int], Held] = {}
        self._inline_runs = 0

    def __len__(self) -> int:
        with self.lock:
            return len(self._held)

    @property
    def busy(self) -> bool:
        """Whether anything is held or running inline (a stop waits for this to end)."""
        with self.lock:
            return bool(self._held) or self._inline_runs > 0

    def add(self, rows: list[Claimed]) -> None:
        now = time.monotonic()
        with self.lock:
            for row in rows:
                self._held[row.key] = Held(row, leased=now)

    def get(self, key: tuple[int, int]) -> Optional[Held]:
        with self.lock:
            return self._held.get(key)

    def pop(self, key: tuple[int, int]) -> Optional[Held]:
        with self.lock:
            return self._held.pop(key, None)

    def held(self) -> list[Held]:
        """A snapshot of the held attempts."""
        with self.lock:
            return list(self._held.values())

    def get_unlocked(self, key: tuple[int, int]) -> Optional[Held]:
        """For a caller that holds `lock` already."""
        return self._held.get(key)

    def pop_unlocked(self, key: tuple[int, int]) -> Optional[Held]:
        """For a caller that holds `lock` already."""
        return self._held.pop(key, None)

    def per_callback(self) -> dict[int, int]:
        """Attempts held per callback id (the dispatcher's caps count them)."""
        with self.lock:
            return dict(Counter(entry.row.callback_id for entry in self._held.values()))

    def waiting(self, older_than: float) -> list[Held]:
        """Held attempts not started by a worker whose lease was last set more than `older_than` s ago."""
        now = time.monotonic()
        with self.lock:
            return [entry for entry in self._held.values()
                    if entry.thread is None and now - entry.leased > older_than]

    def drop_if_waiting(self, entry: Held) -> bool:
        """Forget a waiting attempt whose lease was lost; False if a worker took it meanwhile."""
        with self.lock:
            if entry.thread is None and self._held.get(entry.row.key) is entry:
                del self._held[entry.row.key]
                return True
            return False

    def take_all(self) -> list[Claimed]:
        """Empty the table (the stop gives these back); a late return of any of them is not recorded."""
        with self.lock:
            rows = [entry.row for entry in self._held.values()]
            for entry in self._held.values():
                entry.timed_out = True
            self._held.clear()
        return rows

    def expire_overdue(self, now: float, record: Callable[[Held], None]) -> list[Held]:
        """Remove the running attempts past their deadline, calling `record` for each before it leaves the
        table: a stop waits for the table to empty and then stops the completer, which must find the
        timeout's outcome already queued."""
        with self.lock:
            expired = [entry for entry in self._held.values()
                       if entry.thread is not None and now > entry.deadline]
            for entry in expired:
                entry.timed_out = True
                del self._held[entry.row.key]
                record(entry)
        return expired

    def finish(self, entry: Held, record: Callable[[], None]) -> bool:
        """A worker's attempt ended: call `record` (queue its outcome) and remove it, in that order and under
        the lock, unless it timed out or was given back meanwhile; whether it was recorded."""
        with self.lock:
            if entry.timed_out or self._held.get(entry.row.key) is not entry:
                return False
            record()
            del self._held[entry.row.key]
            return True

    def inline_began(self) -> None:
        with self.lock:
            self._inline_runs += 1

    def inline_ended(self) -> None:
        with self.lock:
            self._inline_runs -= 1
