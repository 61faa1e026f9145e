"""The rules of manual callbacks: a named worker claims the next due event under a lease, extends,
completes or releases it. An expired lease puts the event back in the queue for anyone.

Every assignment is a state change (scheduled -> running with the worker's name), so the
history shows who held the event and when; the claim uses SKIP LOCKED, so two workers never
hold the same event. Each claim draws a new lease_token, answered to the claimer only: extend,
complete and release need it back, so neither another worker naming the holder nor the holder's
own stale tab (after its lease expired and the event went to someone else) can act on the lease.
"""
from __future__ import annotations

import secrets
from typing import Any, Optional

from psycopg2.extras import Json

import audit
from controllers.events import SELECT
from db import Database
from errors import Conflict, NotFound


def expire_leases(db: Database) -> list[dict[str, Any]]:
    """Put manual events whose lease ran out back to scheduled, due now."""
    rows = db.query(
        """UPDATE events e SET state = 'scheduled', scheduled_for = now(), lease_until = NULL, lease_token = NULL,
                  last_error = 'lease expired: ' || COALESCE(e.worker, '?') || ' did not finish in time',
                  updated_at = now()
           FROM callbacks c
           WHERE c.id = e.callback_id AND c.kind = 'manual'
             AND e.id IN (SELECT id FROM events WHERE state = 'running' AND lease_until < now()
                          FOR UPDATE SKIP LOCKED)
           RETURNING e.id, c.name AS callback, e.attempts, e.state, e.worker, e.last_error""",
    )
    for row in rows:
        audit.record("lease_expired", row, worker=row["worker"], error=row["last_error"])
    return rows


def claim(db: Database, worker: str, callback: Optional[str] = None,
          lease_seconds: Optional[float] = None) -> Optional[dict[str, Any]]:
    """Lease the next due manual event (highest priority, then oldest) to `worker`, or None.

    The answer is the event plus its `lease_token`, which no read ever answers again.
    """
    expire_leases(db)
    lease_token = secrets.token_urlsafe(24)
    with db.transaction() as cur:
        cur.execute(
            """WITH next AS (
                   SELECT e.id FROM events e JOIN callbacks c ON c.id = e.callback_id
                   WHERE c.kind = 'manual' AND e.state = 'scheduled' AND e.scheduled_for <= now()
                     AND (%(callback)s::text IS NULL OR c.name = %(callback)s OR c.id::text = %(callback)s)
                   ORDER BY e.priority DESC, e.scheduled_for, e.id
                   LIMIT 1 FOR UPDATE OF e SKIP LOCKED)
               UPDATE events e SET state = 'running', attempts = e.attempts + 1, worker = %(worker)s,
                      started_at = now(), updated_at = now(), last_error = NULL, lease_token = %(token)s,
                      lease_until = now() + make_interval(secs => COALESCE(%(lease)s, c.timeout_seconds))
               FROM next, callbacks c WHERE e.id = next.id AND c.id = e.callback_id
               RETURNING e.id""",
            {"callback": callback, "worker": worker, "lease": lease_seconds, "token": lease_token},
        )
        row = cur.fetchone()
        if row is None:
            return None
        cur.execute(f"{SELECT} WHERE e.id = %s", (row["id"],))
        event = cur.one()
    audit.record("attempt_started", event, worker=worker, lease_until=event["lease_until"])
    return {**event, "lease_token": lease_token}


def _held(db: Database, event_id: int, worker: str, lease_token: str, sql: str,
          params: tuple[Any, ...]) -> dict[str, Any]:
    """Run a change that only the current, unexpired holder may make; 404/409 otherwise."""
    with db.transaction() as cur:
        cur.execute(sql, params)
        if cur.fetchone() is None:
            cur.execute("""SELECT state, worker, lease_until < now() AS expired, lease_token = %s AS token_matches
                           FROM events WHERE id = %s""", (lease_token, event_id))
            current = cur.fetchone()
            if current is None:
                raise NotFound(f"event {event_id} does not exist")
            if current["state"] != "running" or current["worker"] != worker:
                raise Conflict(f"event {event_id} is not held by {worker!r}",
                               {"state": current["state"], "worker": current["worker"]})
            if not current["token_matches"]:
                raise Conflict(f"this lease_token is not the current lease of event {event_id}",
                               {"state": "running"})
            raise Conflict(f"the lease of {worker!r} on event {event_id} has expired", {"state": "running"})
        cur.execute(f"{SELECT} WHERE e.id = %s", (event_id,))
        return cur.one()


_HOLDER = "id = %s AND state = 'running' AND worker = %s AND lease_token = %s AND lease_until >= now()"


def extend(db: Database, event_id: int, worker: str, lease_token: str, seconds: Optional[float]) -> dict[str, Any]:
    """More time: the lease runs `seconds` (default: the callback's lease) from now."""
    return _held(db, event_id, worker, lease_token,
                 """UPDATE events e SET lease_until = now() + make_interval(secs => COALESCE(%s, c.timeout_seconds)),
                           updated_at = now()
                    FROM callbacks c
                    WHERE c.id = e.callback_id AND e.id = %s AND e.state = 'running' AND e.worker = %s
                      AND e.lease_token = %s AND e.lease_until >= now()
                    RETURNING e.id""",
                 (seconds, event_id, worker, lease_token))


def complete(db: Database, event_id: int, worker: str, lease_token: str, result: Any) -> dict[str, Any]:
    event = _held(db, event_id, worker, lease_token,
                  f"""UPDATE events SET state = 'finished', result = %s, finished_at = now(), lease_until = NULL,
                             lease_token = NULL, updated_at = now() WHERE {_HOLDER} RETURNING id""",
                  (Json(result), event_id, worker, lease_token))
    audit.record("attempt_succeeded", event, worker=worker, result=result)
    return event


def release(db: Database, event_id: int, worker: str, lease_token: str) -> dict[str, Any]:
    """Give the event back at once (the worker logged out): claimable by anyone now."""
    event = _held(db, event_id, worker, lease_token,
                  f"""UPDATE events SET state = 'scheduled', scheduled_for = now(), lease_until = NULL,
                             lease_token = NULL, last_error = 'released by ' || worker, updated_at = now()
                      WHERE {_HOLDER} RETURNING id""",
                  (event_id, worker, lease_token))
    audit.record("attempt_released", event, worker=worker)
    return event
