"""The rules for callbacks: what each kind needs, and when one may change or go."""
from __future__ import annotations

from typing import Any

import psycopg2
from psycopg2.extras import Json

from config import Settings
from db import Database
from engine.kinds import validate_target
from errors import Conflict, Invalid, NotFound
from schemas import CallbackCreate, CallbackUpdate

COLUMNS = "id, name, kind, target, config, max_attempts, timeout_seconds, created_at, updated_at"


def list_callbacks(db: Database) -> list[dict[str, Any]]:
    return db.query(f"SELECT {COLUMNS} FROM callbacks ORDER BY id")


def get_callback(db: Database, callback_id: int) -> dict[str, Any]:
    """:raise NotFound: if no callback has this id."""
    rows = db.query(f"SELECT {COLUMNS} FROM callbacks WHERE id = %s", (callback_id,))
    if not rows:
        raise NotFound(f"callback {callback_id} does not exist")
    return rows[0]


def _check(settings: Settings, values: dict[str, Any]) -> None:
    problem = validate_target(settings, values["kind"], values["target"], values["config"])
    if problem:
        raise Invalid(problem, {"field": "target", "kind": values["kind"]})


def create_callback(db: Database, settings: Settings, data: CallbackCreate) -> dict[str, Any]:
    """:raise Invalid: if the target does not suit the kind. :raise Conflict: if the name is taken."""
    values = data.model_dump()
    _check(settings, values)
    try:
        rows = db.query(
            f"""INSERT INTO callbacks (name, kind, target, config, max_attempts, timeout_seconds)
                VALUES (%s, %s, %s, %s, %s, %s) RETURNING {COLUMNS}""",
            (values["name"], values["kind"], values["target"], Json(values["config"]),
             values["max_attempts"] or settings.default_max_attempts,
             values["timeout_seconds"] or settings.default_timeout_seconds),
        )
    except psycopg2.errors.UniqueViolation:
        raise Conflict(f"a callback named {values['name']!r} already exists", {"field": "name"}) from None
    return rows[0]


def update_callback(db: Database, settings: Settings, callback_id: int, data: CallbackUpdate) -> dict[str, Any]:
    """Apply any subset of the writable fields; the result must still be a valid callback."""
    changes = data.model_dump(exclude_unset=True)
    if any(value is None for value in changes.values()):
        raise Invalid("fields cannot be set to null", {"fields": [k for k, v in changes.items() if v is None]})
    try:
        with db.transaction() as cur:
            cur.execute(f"SELECT {COLUMNS} FROM callbacks WHERE id = %s FOR UPDATE", (callback_id,))
            current = cur.fetchone()
            if current is None:
                raise NotFound(f"callback {callback_id} does not exist")
            merged = {**current, **changes}
            _check(settings, merged)
            cur.execute(
                f"""UPDATE callbacks SET name = %s, kind = %s, target = %s, config = %s,
                           max_attempts = %s, timeout_seconds = %s, updated_at = now()
                    WHERE id = %s RETURNING {COLUMNS}""",
                (merged["name"], merged["kind"], merged["target"], Json(merged["config"]),
                 merged["max_attempts"], merged["timeout_seconds"], callback_id),
            )
            return cur.fetchone()
    except psycopg2.errors.UniqueViolation:
        raise Conflict(f"a callback named {changes.get('name')!r} already exists", {"field": "name"}) from None


def delete_callback(db: Database, callback_id: int) -> None:
    """Delete a callback and its finished history; refused while it has scheduled or running events.

    :raise Conflict: if events are still pending. :raise NotFound: if no such callback.
    """
    with db.transaction() as cur:
        cur.execute("SELECT id FROM callbacks WHERE id = %s FOR UPDATE", (callback_id,))
        if cur.fetchone() is None:
            raise NotFound(f"callback {callback_id} does not exist")
        cur.execute(
            "SELECT count(*) AS pending FROM events WHERE callback_id = %s AND state IN ('scheduled', 'running')",
            (callback_id,),
        )
        pending = cur.fetchone()["pending"]
        if pending:
            raise Conflict(f"callback {callback_id} has {pending} pending events; cancel or delete them first",
                           {"pending_events": pending})
        cur.execute("DELETE FROM callbacks WHERE id = %s", (callback_id,))
