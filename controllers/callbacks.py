"""The rules for callbacks: what each kind needs, when one may change or go, and which of its values are secret.

Secrets are write-only (DESIGN.md, "Access"): header values in `config.headers` and a webhook's signing secret are
answered as "***", and "***" sent back keeps the stored value. A signing secret Punctual makes is answered once, by
the request that made it (creation, rotation, or an edit that turns a callback into a webhook).
"""
from __future__ import annotations

import logging
from typing import Any

import psycopg2
from psycopg2.extras import Json

from config import Settings
from controllers.targets import REDACTED, new_secret, secret_problem, validate_config, validate_target
from db import Database
from errors import Conflict, Invalid, NotFound
from schemas import CallbackCreate, CallbackUpdate

log = logging.getLogger("punctual.callbacks")

COLUMNS = "id, name, kind, target, config, max_attempts, timeout_seconds, signing_secret, created_at, updated_at"


# -- what may be shown --------------------------------------------------------------------------

def redact_config(config: Any) -> Any:
    """The config with every header value replaced by "***" (header names stay: they say what is sent)."""
    if not isinstance(config, dict) or "headers" not in config:
        return config
    headers = config["headers"]
    shown = {name: REDACTED for name in headers} if isinstance(headers, dict) else REDACTED
    return {**config, "headers": shown}


def public(row: dict[str, Any], shown_secret: str | None = None) -> dict[str, Any]:
    """A callback as the API answers it: secrets as "***", unless `shown_secret` is the one just made."""
    view = dict(row)
    view["config"] = redact_config(row["config"])
    view["signing_secret"] = shown_secret or (REDACTED if row.get("signing_secret") else None)
    return view


# -- reads --------------------------------------------------------------------------------------

def list_callbacks(db: Database) -> list[dict[str, Any]]:
    return [public(row) for row in db.query(f"SELECT {COLUMNS} FROM callbacks ORDER BY id")]


def _get(db: Database, callback_id: int) -> dict[str, Any]:
    rows = db.query(f"SELECT {COLUMNS} FROM callbacks WHERE id = %s", (callback_id,))
    if not rows:
        raise NotFound(f"callback {callback_id} does not exist")
    return rows[0]


def get_callback(db: Database, callback_id: int) -> dict[str, Any]:
    """:raise NotFound: if no callback has this id."""
    return public(_get(db, callback_id))


# -- writes -------------------------------------------------------------------------------------

def _check(settings: Settings, values: dict[str, Any]) -> None:
    problem = validate_target(settings, values["kind"], values["target"])
    if problem:
        raise Invalid(problem, {"field": "target", "kind": values["kind"]})
    problem = validate_config(values["kind"], values["config"])
    if problem:
        raise Invalid(problem, {"field": "config.headers", "kind": values["kind"]})


def _keep_redacted(config: dict[str, Any], stored: Any) -> dict[str, Any]:
    """`config` with each header sent as "***" given back its stored value (the round trip of a GET).

    :raise Invalid: if a header is "***" but nothing is stored under its name.
    """
    headers = config.get("headers")
    if not isinstance(headers, dict) or REDACTED not in headers.values():
        return config
    old = stored.get("headers") if isinstance(stored, dict) else None
    old = old if isinstance(old, dict) else {}
    by_lower = {str(name).lower(): value for name, value in old.items()}
    kept: dict[str, Any] = {}
    for name, value in headers.items():
        if value != REDACTED:
            kept[name] = value
        elif name in old:
            kept[name] = old[name]
        elif str(name).lower() in by_lower:
            kept[name] = by_lower[str(name).lower()]
        else:
            raise Invalid(f'config.headers: {str(name)[:60]!r} is "***" but no value is stored under that name '
                          "to keep; send the value itself", {"field": "config.headers", "header": str(name)[:60]})
    return {**config, "headers": kept}


def _secret(kind: str, sent: str | None, stored: str | None) -> tuple[str | None, str | None]:
    """(secret to store, secret to show once) from what the client sent and what is stored.

    :raise Invalid: if a secret is sent for a kind that has none, or is not a usable Standard Webhooks secret.
    """
    if kind != "webhook":
        if sent is not None and sent != REDACTED:
            raise Invalid("signing_secret applies to webhook callbacks only", {"field": "signing_secret"})
        return None, None
    if sent is not None and sent != REDACTED:
        problem = secret_problem(sent)
        if problem:
            raise Invalid(problem, {"field": "signing_secret"})
        return sent, None  # the client's own: it knows it, so it is not echoed
    if stored:
        return stored, None
    made = new_secret()
    return made, made


def create_callback(db: Database, settings: Settings, data: CallbackCreate) -> dict[str, Any]:
    """:raise Invalid: if the target, config or secret does not suit the kind. :raise Conflict: if the name is
    taken."""
    values = data.model_dump()
    values["config"] = _keep_redacted(values["config"], {})
    _check(settings, values)
    secret, shown = _secret(values["kind"], values["signing_secret"], None)
    try:
        rows = db.query(
            f"""INSERT INTO callbacks (name, kind, target, config, max_attempts, timeout_seconds, signing_secret)
                VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {COLUMNS}""",
            (values["name"], values["kind"], values["target"], Json(values["config"]),
             values["max_attempts"] or settings.default_max_attempts,
             values["timeout_seconds"] or settings.default_timeout_seconds, secret),
        )
    except psycopg2.errors.UniqueViolation:
        raise Conflict(f"a callback named {values['name']!r} already exists", {"field": "name"}) from None
    return public(rows[0], shown)


def update_callback(db: Database, settings: Settings, callback_id: int, data: CallbackUpdate) -> dict[str, Any]:
    """Apply any subset of the writable fields; the result must still be a valid callback. "***" keeps a
    stored secret."""
    changes = data.model_dump(exclude_unset=True)
    if any(value is None for value in changes.values()):
        raise Invalid("fields cannot be set to null", {"fields": [k for k, v in changes.items() if v is None]})
    sent_secret = changes.pop("signing_secret", None)
    try:
        with db.transaction() as cur:
            cur.execute(f"SELECT {COLUMNS} FROM callbacks WHERE id = %s FOR UPDATE", (callback_id,))
            current = cur.fetchone()
            if current is None:
                raise NotFound(f"callback {callback_id} does not exist")
            if "config" in changes:
                changes["config"] = _keep_redacted(changes["config"], current["config"])
            merged = {**current, **changes}
            _check(settings, merged)
            secret, shown = _secret(merged["kind"], sent_secret, current["signing_secret"])
            cur.execute(
                f"""UPDATE callbacks SET name = %s, kind = %s, target = %s, config = %s,
                           max_attempts = %s, timeout_seconds = %s, signing_secret = %s, updated_at = now()
                    WHERE id = %s RETURNING {COLUMNS}""",
                (merged["name"], merged["kind"], merged["target"], Json(merged["config"]),
                 merged["max_attempts"], merged["timeout_seconds"], secret, callback_id),
            )
            return public(cur.one(), shown)
    except psycopg2.errors.UniqueViolation:
        raise Conflict(f"a callback named {changes.get('name')!r} already exists", {"field": "name"}) from None


def rotate_secret(db: Database, callback_id: int) -> dict[str, Any]:
    """Give a webhook a new signing secret, answered this once; deliveries that start from now on use it.

    :raise NotFound: if no such callback. :raise Conflict: if it is not a webhook (only webhooks sign).
    """
    with db.transaction() as cur:
        cur.execute("SELECT kind FROM callbacks WHERE id = %s FOR UPDATE", (callback_id,))
        row = cur.fetchone()
        if row is None:
            raise NotFound(f"callback {callback_id} does not exist")
        if row["kind"] != "webhook":
            raise Conflict(f"callback {callback_id} is a {row['kind']} callback; only webhooks have a signing secret",
                           {"kind": row["kind"]})
        secret = new_secret()
        cur.execute(f"UPDATE callbacks SET signing_secret = %s, updated_at = now() WHERE id = %s RETURNING {COLUMNS}",
                    (secret, callback_id))
        rotated = cur.one()
    log.info("signing secret of callback %s (%s) rotated", callback_id, rotated["name"])
    return public(rotated, secret)


def delete_callback(db: Database, callback_id: int) -> None:
    """Delete a callback that has no events at all.

    Its events, finished ones too, are audit history: they are never removed as a side effect (the foreign key
    is ON DELETE RESTRICT as well, so plain SQL cannot cascade them away either). Retention, or an explicit
    DELETE of each event, removes them first.

    :raise Conflict: if any event refers to it. :raise NotFound: if no such callback.
    """
    with db.transaction() as cur:
        # The row lock makes the count final: a new event's foreign key check waits for this transaction.
        cur.execute("SELECT id FROM callbacks WHERE id = %s FOR UPDATE", (callback_id,))
        if cur.fetchone() is None:
            raise NotFound(f"callback {callback_id} does not exist")
        cur.execute(
            """SELECT count(*) AS events, count(*) FILTER (WHERE state IN ('scheduled', 'running')) AS pending
               FROM events WHERE callback_id = %s""",
            (callback_id,),
        )
        counts = cur.one()
        if counts["events"]:
            raise Conflict(
                f"callback {callback_id} has {counts['events']} events ({counts['pending']} scheduled or running); "
                "their history is kept for audit: delete or let retention remove them first",
                {"events": counts["events"], "pending_events": counts["pending"]})
        try:
            cur.execute("DELETE FROM callbacks WHERE id = %s", (callback_id,))
        except psycopg2.errors.ForeignKeyViolation:
            # Only if an event slipped in past the lock (it cannot today); the key refuses it all the same.
            raise Conflict(f"callback {callback_id} has events; their history is kept for audit") from None
