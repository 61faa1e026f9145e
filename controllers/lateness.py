"""How late attempts start: per minute of the last hour, the median and 99th percentile of started_at minus
scheduled_for (GET /stats/lateness, the web page's lateness chart). Punctuality is what Punctual sells, so the page
shows it beside the outcomes.

What counts: the latest attempt of each event that is running or has ended, of every kind of callback but `manual`
(a person's response time is not Punctual's lateness). An event waiting for its retry has a new scheduled_for; its
attempt counts once it starts. started_at is when a worker began the callback (while it runs: when it was claimed).

Cheap on a big table. `events` has no index on started_at, and gets none: a column every claim changes would cost
the claims their HOT updates. The window's events are found through `event_history` instead: it only grows, each
row's `at` and id are taken in the same instant, so ids follow time, and a backward walk of its primary key finds
where the window starts; from there the scan covers the window's rows only, however long retention keeps the rest.
(An attempt's history row is written when it ends: one still running that began in the window counts once it ends,
or at once if its event was made in the window.)
And a minute that is over changes no more: it is read once, kept, and each later request reads only the last few
minutes.
"""
from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from typing import Any, Callable, Optional

from db import Database

WINDOW = timedelta(hours=1)
TTL_SECONDS = 10.0
"""How long one answer is given again (seconds): the page asks with every change it sees, at most once a second."""
SETTLE = timedelta(minutes=2)
"""A minute that ended this long ago is kept and not read again. An attempt still running then counts at its claim
time; one that waited longer than this for a worker after its claim may also count in the minute it started."""
CLOCK_MARGIN = timedelta(minutes=1)
"""started_at is the worker's clock, event_history's `at` the database's: the history is searched from this much
before the window, so an instance whose clock runs ahead of the database's by less than this misses nothing."""

_FIRST_ID_SQL = """
    SELECT COALESCE((SELECT id FROM event_history WHERE at < %(before)s ORDER BY id DESC LIMIT 1), 0) AS id"""

# The first id is a parameter, not a subquery: with its value known the planner reads the primary key's range. The
# events are looked up by id from an array (= ANY(ARRAY(...))): written as a join, the planner chose a scan of all of
# `events` (720,000 rows, 120,000 of them in the window) over the window's lookups, a cost that grows with retention.
_PER_MINUTE_SQL = """
    WITH started AS (
        SELECT date_trunc('minute', e.started_at) AS minute,
               extract(epoch FROM e.started_at - e.scheduled_for)::float8 AS late
        FROM events e JOIN callbacks c ON c.id = e.callback_id
        WHERE e.id = ANY(ARRAY(SELECT h.event_id FROM event_history h WHERE h.id > %(first_id)s))
          AND e.state IN ('running', 'finished', 'failed') AND c.kind <> 'manual'
          AND e.started_at >= %(since)s)
    SELECT minute, count(*) AS attempts,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY late) AS p50,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY late) AS p99
    FROM started GROUP BY minute ORDER BY minute"""


def read(db: Database, since: Optional[datetime] = None) -> tuple[datetime, list[dict[str, Any]]]:
    """The database's now, and each minute of the window (from `since`, when later) in which attempts started:
    {minute, attempts, p50, p99}, seconds. Minutes without attempts are absent.

    :raise Unavailable: when the database cannot be reached.
    """
    with db.transaction() as cur:
        cur.execute("SELECT now() AS now")
        now: datetime = cur.one()["now"]
        start = _minute(now) - WINDOW + timedelta(minutes=1)
        since = start if since is None else max(since, start)
        cur.execute(_FIRST_ID_SQL, {"before": since - CLOCK_MARGIN})
        first_id = cur.one()["id"]
        cur.execute(_PER_MINUTE_SQL, {"first_id": first_id, "since": since})
        return now, cur.fetchall()


def _minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def _utc(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


class Lateness:
    """The last hour's lateness per minute, read again at most every `ttl` seconds; minutes over for SETTLE are
    kept, so each reading after the first covers the last few minutes only."""

    def __init__(self, db: Database, ttl: float = TTL_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self._db = db
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._settled: dict[datetime, dict[str, Any]] = {}  # minute -> its row, for minutes that changed no more
        self._settled_until: Optional[datetime] = None  # every minute before this is in _settled (or had none)
        self._answer: Optional[dict[str, Any]] = None
        self._read_at = 0.0

    def last_hour(self) -> dict[str, Any]:
        """{now, per_minute: [{minute, attempts, p50, p99}]}, oldest minute first, times in UTC.

        :raise Unavailable: when the database cannot be reached.
        """
        with self._lock:  # one reading at a time; the others are answered it
            if self._answer is not None and self._clock() - self._read_at < self._ttl:
                return self._answer
            now, rows = read(self._db, self._settled_until)
            settle_before = _minute(now - SETTLE)  # minutes before this ended SETTLE ago or more
            start = _minute(now) - WINDOW + timedelta(minutes=1)
            fresh = []
            for row in rows:
                entry = {"minute": _utc(row["minute"]), "attempts": row["attempts"],
                         "p50": round(row["p50"], 6), "p99": round(row["p99"], 6)}
                if row["minute"] < settle_before:
                    self._settled[row["minute"]] = entry
                else:
                    fresh.append(entry)
            if self._settled_until is None or settle_before > self._settled_until:
                self._settled_until = settle_before
            for minute in [m for m in self._settled if m < start]:
                del self._settled[minute]
            self._answer = {"now": _utc(now), "per_minute": [self._settled[m] for m in sorted(self._settled)] + fresh}
            self._read_at = self._clock()
            return self._answer
