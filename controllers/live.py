"""Whether a live page is open anywhere: while one is, claims are notified too, so the page shows events running.

Why a flag: a claim's notification serves only the live pages (the timers need none: see migration 0016), and
under load notifying every claim cost the instances more than the claim itself. Each instance with an open
GET /stream sets the flag again every few seconds; the trigger reads it as fresh for 45 seconds, so the last page
closing (or its instance dying) stops the claims' notifications within a minute.
"""
from __future__ import annotations

import logging

from db import CONNECTION_ERRORS, Database
from errors import Unavailable

log = logging.getLogger("punctual.live")

REFRESH_SECONDS = 15.0  # well within the trigger's 45 seconds (database.sql, punctual_events_updated)


def watching(db: Database) -> None:
    """A live page is open here: claims are notified from now on (for 45 seconds). A database that does not
    answer is logged, not raised: the page still gets every other change, and the next refresh tries again."""
    try:
        db.query("""INSERT INTO punctual_flags (name, set_at) VALUES ('live', now())
                    ON CONFLICT (name) DO UPDATE SET set_at = now()""")
    except (Unavailable, *CONNECTION_ERRORS) as exc:
        log.warning("could not mark the live page as open (%s); claims are not notified meanwhile", exc)
