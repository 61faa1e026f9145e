"""Schema migrations: a fresh database (database.sql) and one upgraded from the previous release's schema
(migrations/0001_baseline.sql, then every later migration) are the same, and the upgrade keeps the data."""
from __future__ import annotations

import threading
from typing import Any

import psycopg2
import pytest

from db import MIGRATIONS_DIR, Database, list_migrations
from tests.conftest import dsn
from tests.helpers import sql

CATALOG = {
    "columns": """SELECT table_name, ordinal_position, column_name, data_type, is_nullable, column_default
                  FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2""",
    "constraints": """SELECT conrelid::regclass::text AS tbl, conname, pg_get_constraintdef(oid) AS def
                      FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2""",
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2",
    "triggers": """SELECT tgname, pg_get_triggerdef(oid) AS def FROM pg_trigger WHERE NOT tgisinternal
                   ORDER BY 1""",
    "functions": """SELECT proname, pg_get_functiondef(oid) AS def FROM pg_proc
                    WHERE pronamespace = 'public'::regnamespace ORDER BY 1""",
    # Storage parameters (fillfactor, per-table autovacuum settings): part of the schema too.
    "storage": """SELECT relname, reloptions FROM pg_class
                  WHERE relnamespace = 'public'::regnamespace AND reloptions IS NOT NULL ORDER BY 1""",
    "callbacks": "SELECT name, kind, target, config, max_attempts, timeout_seconds FROM callbacks ORDER BY name",
    "versions": "SELECT version, name FROM schema_migrations ORDER BY version",
}


def catalog(url: str) -> dict[str, list[dict[str, Any]]]:
    return {name: sql(url, query) for name, query in CATALOG.items()}


@pytest.fixture
def empty_db(pg_server):
    """A database with nothing in it, dropped afterwards."""
    url, _ = pg_server
    names: list[str] = []

    def make() -> str:
        name = f"punctual_mig_{id(names)}_{len(names)}"
        admin = psycopg2.connect(url)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
            cur.execute(f"CREATE DATABASE {name}")
        admin.close()
        names.append(name)
        return dsn(url, name)

    yield make
    admin = psycopg2.connect(url)
    admin.autocommit = True
    with admin.cursor() as cur:
        for name in names:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


def apply(url: str) -> None:
    database = Database(url, pool_size=2)
    try:
        database.apply_schema()
    finally:
        database.close()


def previous_release(url: str) -> None:
    """The database as the previous release left it: its schema (the baseline) and some work in it."""
    sql(url, (MIGRATIONS_DIR / "0001_baseline.sql").read_text())
    sql(url, """INSERT INTO callbacks (name, kind, target, config)
                VALUES ('hook', 'webhook', 'http://127.0.0.1:9/x', '{"headers": {"X-Key": "k"}}')""")
    sql(url, """INSERT INTO events (callback_id, payload, state, attempts, result, finished_at, idempotency_key)
                SELECT id, '{"x": 1, "y": 2}', 'finished', 1, '3', now(), 'old-key' FROM callbacks
                WHERE name = 'Addition'""")
    sql(url, """INSERT INTO events (callback_id, scheduled_for) SELECT id, now() + interval '1 day' FROM callbacks
                WHERE name = 'hook'""")


def test_migrations_are_numbered_once_each_from_one():
    versions = [version for version, _, _ in list_migrations()]
    assert versions == list(range(1, len(versions) + 1)) and len(versions) >= 3


def test_a_fresh_database_and_an_upgraded_one_have_the_same_schema(empty_db):
    fresh, upgraded = empty_db(), empty_db()
    apply(fresh)
    sql(upgraded, (MIGRATIONS_DIR / "0001_baseline.sql").read_text())
    apply(upgraded)
    a, b = catalog(fresh), catalog(upgraded)
    for part in CATALOG:
        assert a[part] == b[part], part


def test_the_previous_release_s_database_upgrades_in_place_and_keeps_its_work(empty_db, settings):
    from app import create_app

    url = empty_db()
    previous_release(url)
    before = sql(url, "SELECT id, payload, state, result, idempotency_key FROM events ORDER BY id")
    history_before = sql(url, "SELECT event_id, state FROM event_history ORDER BY id")
    apply(url)
    assert sql(url, "SELECT id, payload, state, result, idempotency_key FROM events ORDER BY id") == before
    assert sql(url, "SELECT event_id, state FROM event_history ORDER BY id") == history_before
    assert [row["version"] for row in sql(url, "SELECT version FROM schema_migrations ORDER BY 1")] == \
        [version for version, _, _ in list_migrations()]
    # What the new schema adds works on the old rows: the webhook got a signing secret, the key refuses
    # a cascade, a reschedule is in the history.
    assert sql(url, "SELECT signing_secret LIKE 'whsec_%%' AS signed FROM callbacks WHERE name = 'hook'") == \
        [{"signed": True}]
    with pytest.raises(psycopg2.errors.ForeignKeyViolation):
        sql(url, "DELETE FROM callbacks WHERE name = 'Addition'")
    db = Database(url, pool_size=2)
    try:
        client = create_app(settings, db).test_client()
        pending = before[1]["id"]
        moved = client.patch(f"/events/{pending}", json={"scheduled_for": "2999-01-01T00:00:00Z"})
        assert moved.status_code == 200, moved.json
        history = client.get(f"/events/{pending}").json["history"]
        assert history[-1]["note"].startswith("rescheduled to 2999-01-01T00:00:00")
        assert client.post("/events", json={"callback": "Addition", "idempotency_key": "old-key"}).status_code == 200
    finally:
        db.close()


def test_instances_starting_together_apply_each_migration_once(empty_db):
    url = empty_db()
    previous_release(url)
    errors: list[BaseException] = []

    def start() -> None:
        try:
            apply(url)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert sql(url, "SELECT count(*) AS n FROM schema_migrations") == [{"n": len(list_migrations())}]
    apply(url)  # and once more, later: nothing to do
    assert sql(url, "SELECT count(*) AS n FROM schema_migrations") == [{"n": len(list_migrations())}]
