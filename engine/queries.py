"""The engine's SQL: claim, outcome, lease renewal and expiry, release, and what the timers need.

Each is one statement, so one transaction. Claims use row locks with SKIP LOCKED and the database's
clock, so however many instances run, an attempt belongs to exactly one of them and nothing runs
before its time by a fast app clock. The history rows are written by the trigger in database.sql
inside the same transaction. Rows come back typed (the dataclasses below), built from tuples.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional

from psycopg2.extras import execute_values

import jsonsafe
from db import Database, Prepared


@dataclass(slots=True)
class Claimed:
    """An attempt this instance holds: what running it needs, and what its audit line says."""

    id: int
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    scheduled_for: datetime
    started_at: Optional[datetime]
    priority: int
    state: str
    worker: Optional[str]
    callback_id: int
    callback: str
    kind: str
    target: str
    config: dict[str, Any] = field(repr=False)  # header values may be secrets
    timeout_seconds: float
    signing_secret: Optional[str] = field(repr=False)
    schedule_id: Optional[int]  # the schedule that made this occurrence, if any

    @property
    def key(self) -> tuple[int, int]:
        """(event id, attempt): what a lease, an outcome and a receiver's deduplication name."""
        return self.id, self.attempts


@dataclass(slots=True)
class Rescued(Claimed):
    """An attempt whose lease ran out, back in the queue (or failed, with no attempts left)."""

    last_error: Optional[str]


@dataclass(slots=True)
class Recorded:
    """An outcome as written: the event's new state, for the audit line and the metrics."""

    id: int
    callback: str
    attempts: int
    state: str
    last_error: Optional[str]
    next_run: Optional[datetime]  # when a retry is due; None for a final outcome


@dataclass(slots=True)
class Change:
    """What a notification (or a read of the table) says of an event: enough to arm, move or drop its timer.
    `state` None: the event was deleted."""

    id: int
    state: Optional[str]
    scheduled_for: Optional[datetime]


# The columns of Claimed, in its order. The signing secret comes with the claim (NULL but for webhooks): one
# more column, not one more query per delivery. The audit reads named fields only, never it.
_RETURNING = """e.id, e.payload, e.attempts, e.max_attempts, e.scheduled_for, e.started_at, e.priority,
                e.state, e.worker, e.callback_id, c.name AS callback, c.kind, c.target, c.config, c.timeout_seconds,
                c.signing_secret, e.schedule_id"""

# What a claim sets, by either road (claim_due, claim_ids): the attempt, its holder and its lease.
_CLAIM = """SET state = 'running', attempts = e.attempts + 1, worker = %(worker)s::text,
                   started_at = clock_timestamp(), updated_at = clock_timestamp(),
                   lease_until = clock_timestamp() + make_interval(secs => c.timeout_seconds + %(grace)s::float8)"""


def claim_due(db: Database, worker: str, limit: int, lease_grace: float,
              held: dict[int, int] | None = None, cap: int | None = None,
              uncapped: list[int] | None = None) -> list[Claimed]:
    """Claim up to `limit` due events (highest priority first) for this instance, under a lease.

    With `cap`, no callback outside `uncapped` may hold more than `cap` attempts here (counting
    `held`, callback id -> attempts this instance holds): slow callbacks cannot take every worker,
    so other events stay on time. Callbacks at their cap are skipped, not scanned.
    """
    held = held or {}
    if cap is None:
        cap = limit
    uncapped = uncapped or []
    full = [cid for cid, n in held.items() if n >= cap and cid not in uncapped]
    return db.typed(
        f"""WITH due AS (
                SELECT e.id, e.callback_id, e.priority, e.scheduled_for FROM events e
                WHERE e.state = 'scheduled' AND e.scheduled_for <= now()
                  AND e.callback_id <> ALL(%(full)s::bigint[])
                  AND NOT EXISTS (SELECT 1 FROM callbacks m WHERE m.id = e.callback_id AND m.kind = 'manual')
                ORDER BY e.priority DESC, e.scheduled_for, e.id
                LIMIT %(scan)s
                FOR UPDATE OF e SKIP LOCKED
            ), ranked AS (
                SELECT due.*, row_number() OVER (PARTITION BY callback_id
                                                 ORDER BY priority DESC, scheduled_for, id) AS nth
                FROM due
            ), pick AS (
                SELECT r.id FROM ranked r
                LEFT JOIN unnest(%(held_ids)s::bigint[], %(held_n)s::int[]) AS h(callback_id, n) USING (callback_id)
                WHERE r.callback_id = ANY(%(uncapped)s::bigint[]) OR r.nth + COALESCE(h.n, 0) <= %(cap)s
                ORDER BY r.priority DESC, r.scheduled_for, r.id
                LIMIT %(limit)s
            )
            UPDATE events e
               {_CLAIM}
              FROM pick, callbacks c
             WHERE e.id = pick.id AND c.id = e.callback_id
            RETURNING {_RETURNING}""",
        {"full": full, "scan": limit + cap, "held_ids": list(held), "held_n": list(held.values()),
         "uncapped": uncapped, "cap": cap, "limit": limit, "worker": worker, "grace": lease_grace},
        Claimed,
    )


# Prepared: the claim of a few new events by id is on every single event's way to its start, and its plan (a
# primary-key lookup) does not depend on the ids.
_CLAIM_IDS = Prepared("punctual_claim_ids", f"""
    UPDATE events e
       {_CLAIM}
      FROM callbacks c
     WHERE c.id = e.callback_id AND c.kind <> 'manual' AND e.id IN (
           SELECT id FROM events WHERE id = ANY(%(ids)s::bigint[])
              AND state = 'scheduled' AND scheduled_for <= now()
           ORDER BY priority DESC, scheduled_for, id FOR UPDATE SKIP LOCKED)
    RETURNING {_RETURNING}""")


def claim_ids(db: Database, worker: str, ids: list[int], lease_grace: float) -> list[Claimed]:
    """Claim these events, if they are still scheduled and due (by the database's clock) and not
    manual, under a lease. Rows another transaction holds are skipped, not waited for."""
    return db.typed(_CLAIM_IDS, {"worker": worker, "grace": lease_grace, "ids": ids}, Claimed)


def claimed_at_creation(event: dict[str, Any], callback: dict[str, Any]) -> Claimed:
    """An attempt of an event the API inserted claimed (controllers/events.py), from the inserted row and its
    callback's: the same Claimed a claim's RETURNING makes."""
    return Claimed(event["id"], event["payload"], event["attempts"], event["max_attempts"], event["scheduled_for"],
                   event["started_at"], event["priority"], event["state"], event["worker"], callback["id"],
                   callback["name"], callback["kind"], callback["target"], callback["config"],
                   callback["timeout_seconds"], callback["signing_secret"], event["schedule_id"])


def retry_delay(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter in its upper half: retries of a burst spread out."""
    ceiling = min(cap, base * (2 ** max(attempt - 1, 0)))
    return float(ceiling * random.uniform(0.5, 1.0))


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to, as the worker saw it."""

    event_id: int
    attempt: int
    ok: bool
    result: Any = None
    error: str | None = None
    retry_delay: float = 0.0
    duration: float = 0.0
    started: float | None = None  # when a worker began it (epoch seconds); the claim may be earlier


def record_outcomes(db: Database, worker: str, outcomes: list[Outcome]) -> list[Recorded]:
    """Write many outcomes in one statement: finished, scheduled again after backoff, or failed.

    The guard (still running, same attempt, same worker) drops an outcome whose lease was lost
    and taken over by someone else: that attempt is no longer ours to record. The values travel
    as one JSON document (written by orjson, read by jsonb_to_recordset: json_to_recordset parsed
    each row's text again, 3.5 ms per 1,000 outcomes against 1.3 ms): psycopg2 adapted seven
    arrays element by element, the completer's largest cost (W4); only what the audit line
    needs comes back. A result travels wrapped in an array, so a null result stays a jsonb null.

    The worker travels in the document too, not as a constant: compared with a constant, the planner
    estimated one running row of ours (no statistics on `worker`) and chose a nested loop that compared
    every running row with every outcome, quadratic in the batch (25 of the statement's 50 µs per event at
    256 per batch, bench/RESULTS.md); against the document's column it hashes the outcomes instead.
    """
    if not outcomes:
        return []
    return db.typed(
        """UPDATE events e SET
               state = CASE WHEN v.ok THEN 'finished'
                            WHEN e.attempts >= e.max_attempts THEN 'failed'
                            ELSE 'scheduled' END,
               result = CASE WHEN v.ok THEN v.result -> 0 ELSE e.result END,
               last_error = CASE WHEN v.ok THEN NULL ELSE v.error END,
               scheduled_for = CASE WHEN NOT v.ok AND e.attempts < e.max_attempts
                                    THEN clock_timestamp() + make_interval(secs => v.delay)
                                    ELSE e.scheduled_for END,
               finished_at = CASE WHEN v.ok OR e.attempts >= e.max_attempts THEN clock_timestamp() END,
               started_at = COALESCE(to_timestamp(v.started), e.started_at),
               lease_until = NULL,
               updated_at = clock_timestamp()
           FROM jsonb_to_recordset(%(outcomes)s::jsonb)
                AS v(id bigint, attempt int, worker text, ok boolean, result jsonb, error text, delay float8,
                     started float8),
                callbacks c
           WHERE e.id = v.id AND e.state = 'running' AND e.attempts = v.attempt AND e.worker = v.worker
             AND c.id = e.callback_id
           RETURNING e.id, c.name AS callback, e.attempts, e.state, e.last_error,
                     CASE WHEN e.state = 'scheduled' THEN e.scheduled_for END AS next_run""",
        {"outcomes": jsonsafe.dumps([{"id": o.event_id, "attempt": o.attempt, "worker": worker, "ok": o.ok,
                                      "result": [o.result] if o.ok else None, "error": o.error,
                                      "delay": o.retry_delay, "started": o.started} for o in outcomes])},
        Recorded,
    )


def extend_leases(db: Database, worker: str, leases: list[tuple[int, int, float]]) -> set[tuple[int, int]]:
    """Push running attempts' leases to (event id, attempt, seconds from now), in one statement.

    Returns the (event id, attempt) pairs still ours; one missing was rescued, released or taken
    over meanwhile and must not run here.
    """
    if not leases:
        return set()
    with db.transaction() as cur:
        rows = execute_values(
            cur,
            """UPDATE events e SET lease_until = clock_timestamp() + make_interval(secs => v.seconds)
               FROM (VALUES %s) AS v(id, attempt, seconds, worker)
               WHERE e.id = v.id AND e.state = 'running' AND e.attempts = v.attempt AND e.worker = v.worker
               RETURNING e.id, e.attempts""",
            [(event_id, attempt, seconds, worker) for event_id, attempt, seconds in leases],
            template="(%s::bigint, %s::int, %s::float8, %s::text)",
            page_size=len(leases),
            fetch=True,
        )
    return {(row["id"], row["attempts"]) for row in rows}


def rescue_expired(db: Database, limit: int = 1000) -> list[Rescued]:
    """Return events whose holder vanished (lease ran out) to the queue, or fail them if no attempts are left.

    Manual events are not counted as failures when a person's lease runs out: controllers.claims
    puts them back in the queue instead.
    """
    return db.typed(
        f"""UPDATE events e SET
                state = CASE WHEN e.attempts >= e.max_attempts THEN 'failed' ELSE 'scheduled' END,
                last_error = 'lease expired: ' || COALESCE(e.worker, 'unknown worker') || ' stopped before finishing',
                scheduled_for = CASE WHEN e.attempts >= e.max_attempts THEN e.scheduled_for ELSE now() END,
                finished_at = CASE WHEN e.attempts >= e.max_attempts THEN now() END,
                lease_until = NULL, updated_at = now()
            FROM callbacks c
            WHERE c.id = e.callback_id AND c.kind <> 'manual' AND e.id IN (
                SELECT id FROM events WHERE state = 'running' AND lease_until < now()
                ORDER BY lease_until LIMIT %s FOR UPDATE SKIP LOCKED)
            RETURNING {_RETURNING}, e.last_error""",
        (limit,),
        Rescued,
    )


def heartbeat(db: Database, instance: str) -> None:
    """This instance is alive (its row is made on the first beat, and again if a rescuer removed it)."""
    db.query("""INSERT INTO instances (name) VALUES (%s)
                ON CONFLICT (name) DO UPDATE SET heartbeat_at = now()""", (instance,))


def forget_instance(db: Database, instance: str) -> None:
    """A clean stop: the instance gave its attempts back and stops heartbeating."""
    db.query("DELETE FROM instances WHERE name = %s", (instance,))


def rescue_dead(db: Database, dead_seconds: float) -> list[Rescued]:
    """Return the running attempts of instances silent for `dead_seconds` to the queue (or fail them when no
    attempts are left), and forget those instances: one statement, so each dead instance is rescued once (its
    row lock, SKIP LOCKED) however many instances look. A live instance that was only paused (SIGSTOP) keeps its
    attempts until its heartbeat is that old; if it wakes later, its outcomes are dropped by record_outcomes'
    guard, since the attempt is no longer its own."""
    return db.typed(
        f"""WITH dead AS (
                SELECT name FROM instances WHERE heartbeat_at < now() - make_interval(secs => %(dead)s)
                FOR UPDATE SKIP LOCKED
            ), gone AS (
                DELETE FROM instances WHERE name IN (SELECT name FROM dead)
            ), moved AS (
                UPDATE events e SET
                    state = CASE WHEN e.attempts >= e.max_attempts THEN 'failed' ELSE 'scheduled' END,
                    last_error = 'instance ' || e.worker || ' stopped heartbeating while it ran the attempt',
                    scheduled_for = CASE WHEN e.attempts >= e.max_attempts THEN e.scheduled_for ELSE now() END,
                    finished_at = CASE WHEN e.attempts >= e.max_attempts THEN now() END,
                    lease_until = NULL, updated_at = now()
                FROM callbacks c
                WHERE c.id = e.callback_id AND c.kind <> 'manual' AND e.state = 'running'
                  AND e.worker IN (SELECT name FROM dead)
                RETURNING {_RETURNING}, e.last_error)
            SELECT * FROM moved""",
        {"dead": dead_seconds},
        Rescued,
    )


def release(db: Database, worker: str, attempts: list[tuple[int, int]], reason: str,
            started: bool = False) -> list[Claimed]:
    """Give running attempts back at once (shutdown); the event is due now.

    An attempt that never started is not counted (the next claim gets its number again). One that
    had started keeps its number, so the rerun is the next attempt: the first may have reached the
    outside world, and a receiver deduplicating on (event id, attempt) must not drop the rerun.
    """
    if not attempts:
        return []
    with db.transaction() as cur:
        rows = execute_values(
            cur,
            f"""UPDATE events e SET state = 'scheduled', attempts = e.attempts - {0 if started else 1},
                       scheduled_for = now(),
                       last_error = v.reason, lease_until = NULL, updated_at = now()
                FROM (VALUES %s) AS v(id, attempt, worker, reason), callbacks c
                WHERE e.id = v.id AND e.state = 'running' AND e.attempts = v.attempt AND e.worker = v.worker
                  AND c.id = e.callback_id
                RETURNING {_RETURNING}""",
            [(event_id, attempt, worker, reason) for event_id, attempt in attempts],
            template="(%s::bigint, %s::int, %s::text, %s::text)",
            fetch=True,
        )
    return [Claimed(**row) for row in rows]


def armable(db: Database, ids: list[int]) -> list[Change]:
    """State and time of the notified events, so the scheduler can arm, move or drop each."""
    return db.typed("SELECT id, state, scheduled_for FROM events WHERE id = ANY(%s)", (ids,), Change)


def within_horizon(db: Database, horizon_seconds: float, limit: int) -> list[Change]:
    """Scheduled events due from now to the horizon: the only ones the in-memory scheduler holds."""
    return db.typed(
        """SELECT id, state, scheduled_for FROM events
           WHERE state = 'scheduled' AND scheduled_for > now()
             AND scheduled_for <= now() + make_interval(secs => %s)
           ORDER BY scheduled_for LIMIT %s""",
        (horizon_seconds, limit),
        Change,
    )
