"""The rules for events made through the API: creation, edits, cancel, retry, delete, listing."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Optional, Protocol

import psycopg2.errors
from psycopg2.extras import Json

import audit
import jsonsafe
from db import Database, DictCursor, Prepared
from errors import Conflict, Invalid, NotFound
from schemas import EventCreate, EventQuery, EventUpdate

# Every read of an event goes through this select, so the answer always names the callback.
SELECT = """SELECT e.id, c.name AS callback, e.payload, e.scheduled_for, e.state, e.priority, e.attempts,
                   e.max_attempts, e.result, e.last_error, e.idempotency_key, e.source, e.worker,
                   e.lease_until, e.created_at, e.updated_at, e.started_at, e.finished_at, e.schedule_id,
                   e.workflow_id, e.workflow_step
            FROM events e JOIN callbacks c ON c.id = e.callback_id"""


BIGINT_MAX = 2 ** 63 - 1


def _is_digits(text: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts '²' and other digits int() refuses."""
    return text.isascii() and text.isdigit()


def resolve_callbacks(cur: DictCursor, refs: Iterable[int | str]) -> dict[int | str, dict[str, Any]]:
    """Map each reference (a name, or an id) to its callback row.

    :raise Invalid: naming the references that match no callback.
    """
    refs = set(refs)
    names = [r for r in refs if isinstance(r, str)]
    # A digit string is a name first, an id otherwise ("callback": "7" finds callback 7). Ids outside
    # bigint cannot exist; sending them would make PostgreSQL fail the whole statement.
    ids = [i for i in [r for r in refs if isinstance(r, int)] + [int(r) for r in names if _is_digits(r)]
           if 0 < i <= BIGINT_MAX]
    # What running it needs too (kind, target, config, timeout, secret): an event claimed in the transaction that
    # creates it is started from these (see Starter).
    cur.execute(
        """SELECT id, name, max_attempts, kind, target, config, timeout_seconds, signing_secret FROM callbacks
           WHERE name = ANY(%s::text[]) OR id = ANY(%s::bigint[])""",
        (names, ids),
    )
    found: dict[int | str, dict[str, Any]] = {}
    for row in cur.fetchall():
        found[row["name"]] = row
        found[row["id"]] = row
    for ref in names:
        if ref not in found and _is_digits(ref) and int(ref) in found:
            found[ref] = found[int(ref)]
    unknown = sorted((str(r) for r in refs if r not in found))
    if unknown:
        raise Invalid(f"unknown callback: {', '.join(unknown)}", {"field": "callback", "unknown": unknown})
    return found


# The event columns of SELECT, in its order, as one INSERT's RETURNING list (the callback name is added in Python).
_COLUMNS = ("id", "payload", "scheduled_for", "state", "priority", "attempts", "max_attempts", "result",
            "last_error", "idempotency_key", "source", "worker", "lease_until", "created_at", "updated_at",
            "started_at", "finished_at", "schedule_id", "workflow_id", "workflow_step")
# The events arrive as one JSON array of rows, unpacked by jsonb_to_recordset: psycopg2 quoted the eight arrays this
# statement took before element by element, 5.5 ms of Python per 1,000 events (as much as the insert's own work in
# PostgreSQL); orjson writes the rows in a tenth of a millisecond. jsonb, not json: json_to_recordset parses each row's
# text again, 3.7 ms per 1,000 rows against 1.1 ms for jsonb. Keys are short: a batch is written and read whole.
# c callback id, p payload, t scheduled_for (null: now), pr priority, m max_attempts, k idempotency key,
# f its fingerprint; for the claiming statement, cl whether the starter reserved it and l its lease in seconds.
_ROWS = """ROWS FROM (jsonb_to_recordset(%(rows)s::jsonb)
                         AS (c bigint, p jsonb, t timestamptz, pr integer, m integer, k text, f text{extra}))
                WITH ORDINALITY AS {alias}(callback_id, payload, scheduled_for, priority, max_attempts, idempotency_key,
                                     fingerprint{extra_names}, n)"""
_INSERT = f"""INSERT INTO events (callback_id, payload, scheduled_for, priority, max_attempts, idempotency_key,
                                idempotency_fingerprint, source)
              SELECT v.callback_id, v.payload, COALESCE(v.scheduled_for, now()), v.priority, v.max_attempts,
                     v.idempotency_key, v.fingerprint, %(source)s
              FROM {_ROWS.format(extra="", extra_names="", alias="v")}
              ORDER BY v.n
              ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"""
# The same, when the starter reserved some of the events (see Starter): those of them due by the database's clock are
# inserted claimed, running, their first attempt started, held by the worker under a lease, as the engine's claim
# would leave them (engine/queries.py _CLAIM); but only while no other due event waits (manual ones, which wait for
# a person, aside), so none is run before an event that was due first: the claim would have taken that one first.
# A statement of its own: the two fields it adds cost a batch that claims nothing about 5% of W1.
_INSERT_CLAIMING = f"""INSERT INTO events (callback_id, payload, scheduled_for, priority, max_attempts, idempotency_key,
                                idempotency_fingerprint, source, state, attempts, worker, started_at, lease_until)
              SELECT v.callback_id, v.payload, v.due, v.priority, v.max_attempts, v.idempotency_key,
                     v.fingerprint, %(source)s,
                     CASE WHEN v.claimed THEN 'running' ELSE 'scheduled' END, CASE WHEN v.claimed THEN 1 ELSE 0 END,
                     CASE WHEN v.claimed THEN %(worker)s::text END, CASE WHEN v.claimed THEN clock_timestamp() END,
                     CASE WHEN v.claimed THEN clock_timestamp() + make_interval(secs => v.lease) END
              FROM (SELECT u.*, COALESCE(u.scheduled_for, now()) AS due,
                           u.claim AND COALESCE(u.scheduled_for, now()) <= now() AND NOT EXISTS (
                               SELECT 1 FROM events w JOIN callbacks wc ON wc.id = w.callback_id
                               WHERE w.state = 'scheduled' AND w.scheduled_for <= now() AND wc.kind <> 'manual'
                           ) AS claimed
                    FROM {_ROWS.format(extra=", cl boolean, l float8", extra_names=", claim, lease", alias="u")}) AS v
              ORDER BY v.n
              ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"""
# What an answer of ids only (`Prefer: return=minimal`) needs of each new row: the fields of its audit line, and for
# one inserted claimed, what starting it needs; its payload only then. Reading the other columns back (five
# timestamps, the payload as JSON) and making them into dicts was a fifth of the creating request's work (W1).
_MINIMAL_COLUMNS = ("id", "payload", "scheduled_for", "state", "priority", "attempts", "max_attempts",
                    "idempotency_key", "worker", "started_at", "schedule_id")
_MINIMAL_RETURNING = ", ".join("CASE WHEN state = 'running' THEN payload END" if name == "payload" else name
                               for name in _MINIMAL_COLUMNS)
# Prepared: every creation runs one, one event or a batch, and its plan does not depend on the rows sent.
# Keyed by (claiming, minimal).
_INSERTS = {
    (False, False): Prepared("punctual_insert_events", f"{_INSERT} RETURNING callback_id, {', '.join(_COLUMNS)}"),
    (True, False): Prepared("punctual_insert_claimed_events",
                            f"{_INSERT_CLAIMING} RETURNING callback_id, {', '.join(_COLUMNS)}"),
    (False, True): Prepared("punctual_insert_events_minimal", f"{_INSERT} RETURNING callback_id, {_MINIMAL_RETURNING}"),
    (True, True): Prepared("punctual_insert_claimed_events_minimal",
                           f"{_INSERT_CLAIMING} RETURNING callback_id, {_MINIMAL_RETURNING}"),
}


class Starter(Protocol):
    """The local engine, offered the events the API creates: those it reserves are inserted claimed, in the
    transaction that creates them, and started once it commits (engine.dispatcher.Dispatcher.reserve says when and
    why)."""

    @property
    def worker(self) -> str: ...

    @property
    def lease_grace(self) -> float: ...

    def runs_inline(self, kind: str, target: str) -> bool: ...

    def admit(self, count: int) -> None: ...

    def reserve(self, pooled: int, inline: list[int]) -> bool: ...

    def hand_over(self, claimed: list[tuple[dict[str, Any], dict[str, Any]]]) -> None: ...

    def withdraw(self, count: int) -> None: ...


@dataclass
class _Inserted:
    result: list[tuple[dict[str, Any], bool]]
    # (event, its callback's row) for each event inserted claimed, reserved with the starter until handed over.
    claimed: list[tuple[dict[str, Any], dict[str, Any]]]
    held: int = 0  # how many of them are pooled claims, counted as held by the starter (see Starter.withdraw)


def insert_events(cur: DictCursor, items: list[EventCreate], source: str) -> list[tuple[dict[str, Any], bool]]:
    """Insert the events in one statement, in the caller's transaction (`cur`); a repeated idempotency_key
    yields the first event instead. Returns (event, created) pairs, in the order of `items`.

    Public because Kafka ingestion (controllers/ingest.py) inserts a message's events in the same transaction
    that records the message's offset; create_events is the API's way in.
    """
    return _insert(cur, items, source, None).result


def _insert(cur: DictCursor, items: list[EventCreate], source: str, starter: Optional[Starter],
            minimal: bool = False) -> _Inserted:
    """insert_events, and with a `starter`, the due events it reserves are inserted claimed. `minimal`: the new
    events' rows hold only _MINIMAL_COLUMNS (see there).

    Why this shape: batch creation is the hot path of throughput. One INSERT over one JSON document of rows (see
    _ROWS; no per-row SQL text) answers with the rows through RETURNING, and the callback name comes from the
    lookup already made, so there is no second SELECT; the answer's dicts are built from a plain cursor's tuples
    in the order of SELECT. Only replayed idempotency keys are read back with SELECT.
    """
    callbacks = resolve_callbacks(cur, [item.callback for item in items])
    keys = [item.idempotency_key for item in items if item.idempotency_key]
    if len(keys) != len(set(keys)):
        raise Invalid("idempotency_key repeated within one batch", {"field": "idempotency_key"})
    chosen = [callbacks[item.callback] for item in items]
    names = {row["id"]: row["name"] for row in chosen}
    rows = [{"c": row["id"], "p": item.payload, "t": item.scheduled_for, "pr": item.priority,
             "m": item.max_attempts or row["max_attempts"], "k": item.idempotency_key,
             "f": _fingerprint(item, row["id"]) if item.idempotency_key else None}
            for item, row in zip(items, chosen)]
    params: dict[str, Any] = {"source": source}
    # `held`: pooled claims reserved with the starter and not yet given back; all given back if anything below fails.
    held, claiming = 0, False
    inline: dict[int, bool] = {}  # callback id -> whether its attempts run inline (in this request, once claimed)
    if starter is not None:
        # Due by this clock (the statement checks again by the database's) and not for a person to claim.
        now = datetime.now(timezone.utc)
        claim = [row["kind"] != "manual" and (item.scheduled_for is None or item.scheduled_for <= now)
                 for item, row in zip(items, chosen)]
        inline = {row["id"]: starter.runs_inline(row["kind"], row["target"]) for row in callbacks.values()}
        pooled = sum(1 for wanted, row in zip(claim, chosen) if wanted and not inline[row["id"]])
        quick = [row["id"] for wanted, row in zip(claim, chosen) if wanted and inline[row["id"]]]
        if (pooled or quick) and starter.reserve(pooled, quick):
            held, claiming = pooled, True
            params["worker"] = starter.worker
            for fields, wanted, row in zip(rows, claim, chosen):
                fields["cl"] = wanted
                fields["l"] = row["timeout_seconds"] + starter.lease_grace
    params["rows"] = jsonsafe.dumps(rows)
    plain = cur.connection.cursor()
    try:
        _INSERTS[claiming, minimal].execute(plain, params)
        columns = _MINIMAL_COLUMNS if minimal else _COLUMNS
        inserted = [_event_row(values, names, columns) for values in plain.fetchall()]
        claimed = [(row, callbacks[row["callback"]]) for row in inserted if row["state"] == "running"] \
            if claiming else []
        made = sum(1 for _, callback in claimed if not inline[callback["id"]])
        if starter is not None and held > made:
            # Not due by the database's clock, another due event waits, or a replayed key.
            starter.withdraw(held - made)
            held = made
        new_keys = {row["idempotency_key"] for row in inserted if row["idempotency_key"]}
        replayed = [k for k in keys if k not in new_keys]
        by_key: dict[str, dict[str, Any]] = {row["idempotency_key"]: row for row in inserted
                                             if row["idempotency_key"]}
        if replayed:
            _refuse_a_different_body(cur, items, chosen, replayed)
            cur.execute(f"{SELECT} WHERE e.idempotency_key = ANY(%s::text[])", (replayed,))
            for row in cur.fetchall():
                by_key[row["idempotency_key"]] = row
    except BaseException:
        if starter is not None and held:
            starter.withdraw(held)
        raise
    finally:
        plain.close()
    # The rows come back in input order (ORDER BY v.n); keyed items are matched by key.
    fresh = iter(row for row in inserted if not row["idempotency_key"])
    result = []
    for item in items:
        if item.idempotency_key:
            result.append((by_key[item.idempotency_key], item.idempotency_key in new_keys))
        else:
            result.append((next(fresh), True))
    return _Inserted(result, claimed, held)


def _fingerprint(item: EventCreate, callback_id: int) -> str:
    """What a keyed request asked for, canonically: the callback by id (a name and an id of the same callback
    are the same request), omitted optional fields as null."""
    asked = {"callback": callback_id, "payload": item.payload, "priority": item.priority,
             "max_attempts": item.max_attempts,
             "scheduled_for": item.scheduled_for.isoformat() if item.scheduled_for else None}
    return hashlib.sha256(json.dumps(asked, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _refuse_a_different_body(cur: DictCursor, items: list[EventCreate], chosen: list[dict[str, Any]],
                             replayed: list[str]) -> None:
    """:raise Conflict: when a replayed key was first used with another body (the caller's transaction rolls
    back, so a batch that holds such a key creates nothing)."""
    cur.execute("""SELECT id, idempotency_key, idempotency_fingerprint FROM events
                   WHERE idempotency_key = ANY(%s::text[])""", (replayed,))
    stored = {row["idempotency_key"]: row for row in cur.fetchall()}
    for item, row in zip(items, chosen):
        first = stored.get(item.idempotency_key) if item.idempotency_key else None
        asked = _fingerprint(item, row["id"]) if first else None
        if first and first["idempotency_fingerprint"] and first["idempotency_fingerprint"] != asked:
            raise Conflict(f"idempotency_key {item.idempotency_key!r} was used for event {first['id']} with another "
                           "request body; use a new key for a new event",
                           {"idempotency_key": item.idempotency_key, "event_id": first["id"]})


def _event_row(values: tuple[Any, ...], names: dict[int, str], columns: tuple[str, ...]) -> dict[str, Any]:
    """A RETURNING tuple (callback_id, *columns) as the dict SELECT gives: the same keys, in the same order."""
    row = {"id": values[1], "callback": names[values[0]]}
    row.update(zip(columns[1:], values[2:]))
    return row


def create_events(db: Database, items: list[EventCreate], source: str = "api",
                  starter: Optional[Starter] = None, minimal: bool = False) -> list[tuple[dict[str, Any], bool]]:
    """Create events in one statement: all of them or none. Returns (event, created) pairs, each event as it
    was created (a due one may be running by the time the answer arrives); with `minimal`, for an answer of
    ids only, a new event's dict holds only its id, callback and _MINIMAL_COLUMNS.

    Their audit lines are written inside the transaction, before it commits: an instance may claim a due event
    the moment the insert commits (its notification wakes the dispatcher) and write its `attempt_started` line,
    and the file must still tell `event_created` first (tests/test_audit.py saw the other order under load).
    A transaction also keeps a batch whose idempotency key is replayed with another body (409) from leaving its
    new events behind. A callback deleted between the lookup and the insert fails the insert on the foreign
    key, answered like any unknown callback.
    """
    if starter is not None:
        starter.admit(len(items))  # before the transaction: a wait holds no connection
    try:
        result, claimed = _insert_and_claim(db, items, source, starter, minimal)
    except psycopg2.errors.ForeignKeyViolation:
        # A callback was deleted between our lookup and the insert (its DELETE committed while the
        # insert waited on the row): to the client it is simply unknown now.
        raise Invalid("a callback named in the request was deleted meanwhile", {"field": "callback"}) from None
    if starter is not None and claimed:
        starter.hand_over(claimed)
    return result


def _insert_and_claim(db: Database, items: list[EventCreate], source: str, starter: Optional[Starter],
                      minimal: bool) -> tuple[list[tuple[dict[str, Any], bool]],
                                                          list[tuple[dict[str, Any], dict[str, Any]]]]:
    """One transaction: the events (those the starter reserved inserted claimed) and their audit lines. A claim
    whose transaction does not commit is withdrawn: it never was."""
    held = 0
    try:
        with db.transaction() as cur:
            inserted = _insert(cur, items, source, starter, minimal)
            held = inserted.held
            with audit.batch():
                for event, created in inserted.result:
                    if created:
                        # An event inserted claimed was created as any other, then claimed: its attempt_started line
                        # follows once it starts (see Dispatcher.hand_over), as its history tells.
                        as_created = {"state": "scheduled", "attempt": 0} if event["state"] == "running" else {}
                        audit.record("event_created", event, source=source, scheduled_for=event["scheduled_for"],
                                     **as_created)
    except BaseException:
        if starter is not None and held:
            starter.withdraw(held)
        raise
    return inserted.result, inserted.claimed


def create_event(db: Database, item: EventCreate, source: str = "api",
                 starter: Optional[Starter] = None) -> tuple[dict[str, Any], bool]:
    return create_events(db, [item], source, starter)[0]


def get_event(db: Database, event_id: int, with_history: bool = True) -> dict[str, Any]:
    """:raise NotFound: if no event has this id."""
    with db.transaction() as cur:
        cur.execute(f"{SELECT} WHERE e.id = %s", (event_id,))
        event = cur.fetchone()
        if event is None:
            raise NotFound(f"event {event_id} does not exist")
        if with_history:
            cur.execute("SELECT state, attempt, at, worker, error, note, started_at FROM event_history "
                        "WHERE event_id = %s ORDER BY id", (event_id,))
            event["history"] = history_entries(cur.fetchall(), event)
    return event


def history_entries(rows: list[dict[str, Any]], event: dict[str, Any]) -> list[dict[str, Any]]:
    """The event's state changes, oldest first, from its history rows: an attempt's row (written at its end,
    with when it started) stands for two changes, into 'running' and out of it, and the attempt running now has
    no row yet, so it is read from the event. A 'running' entry already told is not told twice: rows written
    before migration 0011, and the creation of an event inserted running before migration 0012, hold it themselves."""
    entries: list[dict[str, Any]] = []

    def started(attempt: int, at: Any, worker: Optional[str]) -> None:
        if not (entries and entries[-1]["state"] == "running" and entries[-1]["attempt"] == attempt):
            entries.append({"state": "running", "attempt": attempt, "at": at, "worker": worker, "error": None,
                            "note": None})

    for row in rows:
        started_at = row.pop("started_at")
        if started_at is not None:
            started(row["attempt"], started_at, row["worker"])
        entries.append(row)
    if event["state"] == "running":
        started(event["attempts"], event["started_at"], event["worker"])
    return entries


def list_events(db: Database, query: EventQuery) -> dict[str, Any]:
    """Newest first by default; `cursor` is the last id of the previous page (keyset pagination)."""
    where: list[str] = []
    params: list[Any] = []
    if query.state:
        where.append("e.state = %s")
        params.append(query.state)
    if query.callback:
        if _is_digits(query.callback) and int(query.callback) <= BIGINT_MAX:
            # As in _resolve_callbacks: a digit string is a name first, an id only if no callback has that name.
            where.append("(c.name = %s OR (c.id = %s AND NOT EXISTS (SELECT 1 FROM callbacks n WHERE n.name = %s)))")
            params += [query.callback, int(query.callback), query.callback]
        else:
            where.append("c.name = %s")
            params.append(query.callback)
    if query.scheduled_after:
        where.append("e.scheduled_for >= %s")
        params.append(query.scheduled_after)
    if query.scheduled_before:
        where.append("e.scheduled_for < %s")
        params.append(query.scheduled_before)
    if query.cursor is not None:
        where.append("e.id < %s" if query.order == "desc" else "e.id > %s")
        params.append(query.cursor)
    order = "DESC" if query.order == "desc" else "ASC"  # one of two literals, never client text
    sql = f"{SELECT} {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY e.id {order} LIMIT %s"
    rows = db.query(sql, (*params, query.limit + 1))
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    return {"events": rows, "next_cursor": rows[-1]["id"] if more else None}


def _transition(db: Database, event_id: int, sql: str, params: tuple[Any, ...], allowed: str) -> dict[str, Any]:
    """Run an UPDATE guarded by the current state, telling 404 from 409 when it matches no row."""
    with db.transaction() as cur:
        cur.execute(sql, params)
        row = cur.fetchone()
        if row is None:
            cur.execute("SELECT state FROM events WHERE id = %s", (event_id,))
            current = cur.fetchone()
            if current is None:
                raise NotFound(f"event {event_id} does not exist")
            raise Conflict(f"event {event_id} is {current['state']}; only {allowed} events allow this",
                           {"state": current["state"]})
        cur.execute(f"{SELECT} WHERE e.id = %s", (event_id,))
        return cur.one()


def update_event(db: Database, event_id: int, data: EventUpdate) -> dict[str, Any]:
    """Edit or reschedule a scheduled event; the listener re-arms it from the NOTIFY the change sends."""
    changes = data.model_dump(exclude_unset=True)
    if any(value is None for value in changes.values()):
        raise Invalid("fields cannot be set to null", {"fields": [k for k, v in changes.items() if v is None]})
    if not changes:
        raise Invalid("nothing to change", {"writable": sorted(EventUpdate.model_fields)})
    sets, params = [], []
    for name in ("payload", "scheduled_for", "priority", "max_attempts"):  # fixed column names
        if name in changes:
            sets.append(f"{name} = %s")
            params.append(Json(changes[name]) if name == "payload" else changes[name])
    event = _transition(
        db, event_id,
        f"UPDATE events SET {', '.join(sets)}, updated_at = now() WHERE id = %s AND state = 'scheduled' RETURNING id",
        (*params, event_id), "scheduled",
    )
    audit.record("event_rescheduled", event, changed=sorted(changes), scheduled_for=event["scheduled_for"])
    return event


def cancel_event(db: Database, event_id: int) -> dict[str, Any]:
    event = _transition(
        db, event_id,
        """UPDATE events SET state = 'cancelled', finished_at = now(), updated_at = now()
           WHERE id = %s AND state = 'scheduled' RETURNING id""",
        (event_id,), "scheduled",
    )
    audit.record("event_cancelled", event)
    return event


def retry_event(db: Database, event_id: int) -> dict[str, Any]:
    """Run a failed or cancelled event again, now, with a fresh set of attempts."""
    event = _transition(
        db, event_id,
        """UPDATE events SET state = 'scheduled', attempts = 0, scheduled_for = now(), last_error = NULL,
                  result = NULL, worker = NULL, lease_until = NULL, started_at = NULL, finished_at = NULL,
                  updated_at = now()
           WHERE id = %s AND state IN ('failed', 'cancelled') RETURNING id""",
        (event_id,), "failed or cancelled",
    )
    audit.record("event_retried", event)
    return event


def delete_event(db: Database, event_id: int) -> None:
    """Delete an event that is not running (a running one belongs to its worker until its lease ends)."""
    with db.transaction() as cur:
        cur.execute(f"{SELECT} WHERE e.id = %s FOR UPDATE OF e", (event_id,))
        event = cur.fetchone()
        if event is None:
            raise NotFound(f"event {event_id} does not exist")
        if event["state"] == "running":
            raise Conflict(f"event {event_id} is running; cancel is possible once it is scheduled again",
                           {"state": "running"})
        cur.execute("DELETE FROM events WHERE id = %s", (event_id,))
    audit.record("event_deleted", event)
