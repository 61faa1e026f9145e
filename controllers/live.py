"""Whether a live page is open anywhere: while one is, claims and attempts' final outcomes are notified too, so the
page shows events running and ending.

Why a flag: those notifications serve only the live pages (the timers need none: see migration 0016), and under
load notifying every claim cost the instances more than the claim itself. Each instance with an open
GET /stream sets the flag again every few seconds; the trigger reads it as fresh for 45 seconds, so the last page
closing (or its instance dying) stops the claims' notifications within a minute.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime

from db import CONNECTION_ERRORS, Database
from errors import Unavailable

log = logging.getLogger("punctual.live")

REFRESH_SECONDS = 15.0  # well within the 45 seconds the triggers count it for (database.sql, punctual_watched)
# A transaction that read the flag before it was set and commits after the page read what it shows changed something
# the page is never told of: the first watching() waits, at most this long, for those transactions to end.
SETTLE_SECONDS = 1.0


def watching(db: Database, settle: float = 0.0) -> None:
    """A live page is open here: claims and final outcomes are notified from now on (for 45 seconds). With `settle`,
    wait (at most that long) until every transaction that began before is over, so what the page reads next is the
    state from which every change is notified. A database that does not answer is logged, not raised: the page
    still gets every other change, and the next refresh tries again."""
    try:
        db.query("""INSERT INTO punctual_flags (name, set_at) VALUES ('live', now())
                    ON CONFLICT (name) DO UPDATE SET set_at = now()""")
        if settle > 0:
            deadline = time.monotonic() + settle
            since = db.query("SELECT now() AS now")[0]["now"]  # a transaction after the flag's commit
            while time.monotonic() < deadline and _older_transactions(db, since):
                time.sleep(0.005)
    except (Unavailable, *CONNECTION_ERRORS) as exc:
        log.warning("could not mark the live page as open (%s); claims are not notified meanwhile", exc)


def _older_transactions(db: Database, since: datetime) -> int:
    """Transactions of this database begun before `since` and not over (other roles' are not visible: not counted)."""
    return int(db.query("""SELECT count(*) AS n FROM pg_stat_activity
                           WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start < %s
                             AND state IN ('active', 'idle in transaction')""", (since,))[0]["n"])
