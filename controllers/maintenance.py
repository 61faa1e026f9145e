"""What holds vacuum back: Punctual's tables' sizes, dead rows and last autovacuum, whether autovacuum runs, and
the oldest open transactions in this database; read at most every few seconds, for /health and /metrics.

Why it is watched (issue 14): a queue updates each event's row several times, and every update leaves a dead row
version that only vacuum removes. When vacuum cannot (autovacuum off, or a transaction elsewhere in the database
still needing to see old rows), tables bloat and claims slow down: on a server with autovacuum off, dead rows in
`events` reached 83,000 in 4.5 minutes at 200 events/s and pickup p99 drifted from 21 ms to 356 ms, with nothing
in /health saying so. /health now says `degraded` (still 200) with the reasons below.

The statistics views show other roles' sessions only to a superuser or a member of `pg_read_all_stats`; without
it a transaction held open by another role is invisible here (GRANT pg_read_all_stats TO <Punctual's role>).
"""
from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from db import SCHEMA_PATH, Database

log = logging.getLogger("punctual.maintenance")

# Punctual's tables: those database.sql creates, and db.py's schema_migrations, read from the schema itself so that
# a new table is measured without a second list to keep. Only these: other applications' tables in the same
# database are theirs to watch.
TABLES = tuple(re.findall(r"^CREATE TABLE (?:IF NOT EXISTS )?(\w+)", SCHEMA_PATH.read_text(), re.MULTILINE)) + (
    "schema_migrations",)

STATS_TTL_SECONDS = 5.0
"""How long one reading is answered (seconds): a burst of /health and scrapes costs one reading of the catalog."""
READ_TIMEOUT_MS = 2000
"""The reading's statement_timeout (milliseconds): a catalog that does not answer in time makes the vacuum report
`unknown` for one TTL rather than holding /health."""
DEAD_ROWS_FLOOR = 10_000
"""A table warns when its dead rows pass both this and its live rows. Autovacuum (by default) vacuums a table once
its dead rows pass 50 + 20 % of its live rows; dead rows beyond the live ones are five times that point, which a
working autovacuum does not let a busy table reach, so vacuum is held back, off or starved. The floor keeps small
tables quiet: a few thousand dead rows cost a claim nothing (the heartbeat and lease tables churn a handful of
rows all day), while the slowdown seen in issue 14 came with tens of thousands."""

_TABLES_SQL = """
    SELECT s.relname AS table, pg_total_relation_size(s.relid) AS size_bytes,
           s.n_live_tup AS live_rows, s.n_dead_tup AS dead_rows,
           s.last_autovacuum, s.last_vacuum,
           extract(epoch FROM clock_timestamp() - s.last_autovacuum)::float8 AS seconds_since_autovacuum,
           -- a table's own switch (ALTER TABLE ... SET (autovacuum_enabled = off)); on unless it says otherwise
           COALESCE((SELECT o.option_value::boolean FROM pg_options_to_table(c.reloptions) AS o
                     WHERE o.option_name = 'autovacuum_enabled'), true) AS autovacuum_enabled
    FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
    WHERE s.relid IN (SELECT to_regclass(t) FROM unnest(%(tables)s::text[]) AS t)
    ORDER BY s.relname"""

# Sessions of this database with a transaction open, ours excepted. Only a client backend counts: a vacuum's own
# snapshot holds no other vacuum back. A transaction holds vacuum back only while it has a snapshot (backend_xmin:
# a running statement, or any transaction at REPEATABLE READ) or a transaction id (backend_xid: it wrote); one
# idle in transaction at READ COMMITTED after a SELECT holds neither, and is reported but not warned about.
_TRANSACTIONS_SQL = """
    WITH open AS (
        SELECT pid, application_name, state,
               state IN ('idle in transaction', 'idle in transaction (aborted)') AS idle,
               backend_xmin IS NOT NULL OR backend_xid IS NOT NULL AS holds,
               extract(epoch FROM clock_timestamp() - xact_start)::float8 AS age
        FROM pg_stat_activity
        WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()
          AND xact_start IS NOT NULL)
    SELECT (SELECT max(age) FROM open) AS oldest,
           (SELECT max(age) FROM open WHERE idle) AS oldest_idle,
           (SELECT row_to_json(h) FROM (SELECT pid, application_name, state, age FROM open WHERE holds
                                        ORDER BY age DESC LIMIT 1) AS h) AS holder"""

_SETTINGS_SQL = "SELECT name, setting FROM pg_settings WHERE name IN ('autovacuum', 'track_counts')"


@dataclass(frozen=True)
class Reading:
    """One reading: `report` is what /health shows under `vacuum` (and /metrics reads); `reasons` the warnings."""

    report: dict[str, Any]
    reasons: list[str]


def read(db: Database, warn_seconds: float) -> Reading:
    """Read the statistics once and judge them.

    :raise Unavailable: when the database cannot be reached or did not answer within READ_TIMEOUT_MS.
    """
    with db.transaction() as cur:
        cur.execute("SET LOCAL statement_timeout = %s", (READ_TIMEOUT_MS,))
        cur.execute(_SETTINGS_SQL)
        settings = {row["name"]: row["setting"] == "on" for row in cur.fetchall()}
        cur.execute(_TABLES_SQL, {"tables": list(TABLES)})
        tables = cur.fetchall()
        cur.execute(_TRANSACTIONS_SQL)
        transactions = cur.one()
        cur.execute("""SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS at""")
        read_at = cur.one()["at"]
    return judge(settings, tables, transactions, warn_seconds, read_at)


def judge(settings: dict[str, bool], tables: list[dict[str, Any]], transactions: dict[str, Any],
          warn_seconds: float, read_at: str) -> Reading:
    """The report and its warnings from what `read` found (a function of its inputs, so tests can give any)."""
    reasons = []
    autovacuum = settings.get("autovacuum", True)
    track_counts = settings.get("track_counts", True)
    if not autovacuum:
        reasons.append("autovacuum is off (autovacuum = off in the server's settings): nothing removes dead rows, "
                       "so tables grow and claims slow down")
    elif not track_counts:
        reasons.append("autovacuum cannot run: track_counts is off in the server's settings")
    holder = transactions.get("holder")
    if holder and holder["age"] > warn_seconds:
        who = holder.get("application_name") or "no application_name"
        reasons.append(f"a transaction open for {holder['age']:.0f} s holds vacuum back (pid {holder['pid']}, "
                       f"{who}, {holder['state']}); warned past VACUUM_HOLDBACK_WARN_SECONDS={warn_seconds:g}")
    report_tables: dict[str, dict[str, Any]] = {}
    for row in tables:
        name = row["table"]
        if autovacuum and not row["autovacuum_enabled"]:
            reasons.append(f"autovacuum is off for table {name} (autovacuum_enabled = false)")
        live, dead = row["live_rows"], row["dead_rows"]
        if dead > max(DEAD_ROWS_FLOOR, live):
            reasons.append(f"table {name} has {dead:,} dead rows against {live:,} live: vacuum is not keeping up")
        report_tables[name] = {
            "size_bytes": row["size_bytes"], "live_rows": live, "dead_rows": dead,
            "last_autovacuum": _iso(row["last_autovacuum"]), "last_vacuum": _iso(row["last_vacuum"]),
            "seconds_since_autovacuum": _rounded(row["seconds_since_autovacuum"]),
            "autovacuum_enabled": autovacuum and track_counts and row["autovacuum_enabled"],
        }
    report = {
        "status": "warning" if reasons else "ok",
        "reasons": reasons,
        "autovacuum": autovacuum and track_counts,
        "oldest_transaction_seconds": _rounded(transactions.get("oldest")),
        "oldest_idle_in_transaction_seconds": _rounded(transactions.get("oldest_idle")),
        "holding_back": ({**holder, "age": _rounded(holder["age"])} if holder else None),
        "warn_seconds": warn_seconds,
        "read_at": read_at,
        "tables": report_tables,
    }
    return Reading(report, reasons)


def _rounded(seconds: Optional[float]) -> Optional[float]:
    return None if seconds is None else round(seconds, 3)


def _iso(value: Any) -> Optional[str]:
    return None if value is None else value.isoformat()


class VacuumWatch:
    """The latest reading, read again at most every `ttl` seconds, whoever asks (/health, /metrics).

    One caller reads at a time; while it does, the others are answered the previous reading (the first ones wait
    for it). A failed reading is remembered for the TTL too: during an outage a /health storm does not queue up
    on the database, and /health reports the database itself as down.
    """

    def __init__(self, db: Database, warn_seconds: float, ttl: float = STATS_TTL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._db = db
        self._warn = warn_seconds
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._latest: Optional[Reading] = None
        self._read_at: Optional[float] = None

    def reading(self) -> Optional[Reading]:
        """The latest reading, fresh within the TTL; None when the statistics could not be read."""
        if self._fresh():
            return self._latest
        if self._read_at is None:
            self._lock.acquire()  # nothing to answer yet: wait for the reading in progress, or make it
        elif not self._lock.acquire(blocking=False):
            return self._latest  # another caller is reading right now: the previous reading will do
        try:
            if not self._fresh():
                try:
                    self._latest = read(self._db, self._warn)
                except Exception:  # noqa: BLE001 - any failure makes the report unknown, never a failed /health
                    log.warning("could not read the vacuum statistics", exc_info=True)
                    self._latest = None
                self._read_at = self._clock()
            return self._latest
        finally:
            self._lock.release()

    def report(self) -> Optional[dict[str, Any]]:
        """The latest reading's report (what /metrics reads); None when unknown."""
        latest = self.reading()
        return latest.report if latest else None

    def _fresh(self) -> bool:
        return self._read_at is not None and self._clock() - self._read_at < self._ttl
