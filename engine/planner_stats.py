"""Refresh the planner's statistics of `events` as soon as claims show they describe another table.

Why: the claim picks between walking events_claim_idx in priority order (cheap when many are due)
and reading every due row through events_due_idx and sorting them (cheap when few are). The choice
rests on the table's statistics. Right after a burst (100,000 events inserted at once, or an
instance starting on a backlog) they still describe the table before it, and every claim sorts the
whole backlog: measured here, 55 ms for 256 rows instead of 10, which halved the drain rate until
autovacuum's next round (up to a minute later). A claim that comes back full and slow is the sign;
ANALYZE then runs at once, in a thread of its own, at most once per interval.
"""
from __future__ import annotations

import logging
import threading
import time

from db import CONNECTION_ERRORS, Database
from errors import Unavailable

log = logging.getLogger("punctual.planner_stats")

SLOW_ROW_SECONDS = 100e-6  # a good plan claims a row in about 40 microseconds here, a sorted backlog in 200+
MIN_ROWS = 64  # below this a slow claim says little: round trips dominate


class PlannerStats:
    def __init__(self, db: Database, min_interval: float = 30.0) -> None:
        self.db = db
        self.min_interval = min_interval
        self._lock = threading.Lock()
        self._next = 0.0
        self._thread: threading.Thread | None = None
        self.refreshed = 0  # ANALYZE runs so far

    def claimed(self, rows: int, limit: int, seconds: float) -> None:
        """Report a claim; a full and slow one starts a refresh unless one ran within the interval."""
        if rows < limit or rows < MIN_ROWS or seconds <= rows * SLOW_ROW_SECONDS:
            return
        now = time.monotonic()
        with self._lock:
            if now < self._next or (self._thread is not None and self._thread.is_alive()):
                return
            self._next = now + self.min_interval
            self._thread = threading.Thread(target=self._analyze, args=(rows, seconds),
                                            name="punctual-analyze", daemon=True)
            self._thread.start()

    def _analyze(self, rows: int, seconds: float) -> None:
        log.info("a claim of %d rows took %.0f ms: refreshing the planner's statistics of events", rows,
                 seconds * 1000)
        began = time.monotonic()
        try:
            self.db.query("ANALYZE events")
        except (Unavailable, *CONNECTION_ERRORS) as exc:
            log.warning("ANALYZE events failed (%s); autovacuum will do it later", exc)
            return
        except Exception:  # noqa: BLE001 - e.g. lock_timeout behind autovacuum's own ANALYZE
            log.warning("ANALYZE events failed; autovacuum will do it later", exc_info=True)
            return
        self.refreshed += 1
        log.info("statistics of events refreshed in %.0f ms", (time.monotonic() - began) * 1000)

    def stop(self, timeout: float = 10.0) -> None:
        """Wait (bounded) for a refresh in progress, so nothing outlives the engine's stop."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
