"""db.Prepared: a statement planned once per connection runs as the unprepared one would, with the same
placeholders, on every pooled connection, and again after its connection is replaced."""
from __future__ import annotations

from contextlib import ExitStack

from db import Database, Prepared
from errors import Unavailable
from tests.helpers import sql


def _rows(db: Database, statement: Prepared, params) -> list[tuple]:
    return db.typed(statement, params, lambda *row: row)


def test_named_and_positional_placeholders_and_literal_percent_signs_keep_their_meaning(db):
    named = Prepared("test_prepared_named", "SELECT %(b)s::int - %(a)s::int, %(a)s::int, '100%%'::text")
    positional = Prepared("test_prepared_positional", "SELECT %s::int - %s::int, 'x%%y'::text")
    assert _rows(db, named, {"a": 1, "b": 5}) == [(4, 1, "100%")]
    assert _rows(db, named, {"a": 10, "b": 5}) == [(-5, 10, "100%")]  # prepared now: only executed
    assert _rows(db, positional, (7, 2)) == [(5, "x%y")]


def test_every_pooled_connection_prepares_it_once_and_a_new_connection_again(db, db_url):
    statement = Prepared("test_prepared_count", "SELECT %(n)s::int + 1")
    with ExitStack() as stack:  # several connections held at once: the pool hands out different ones
        cursors = [stack.enter_context(db.transaction()) for _ in range(3)]
        assert len({id(cur.connection) for cur in cursors}) == 3
        for n, cur in enumerate(cursors):
            for _ in range(2):
                statement.execute(cur, {"n": n})
                assert list(cur.fetchone().values()) == [n + 1]
            cur.execute("SELECT count(*) AS n FROM pg_prepared_statements WHERE name = 'test_prepared_count'")
            assert cur.fetchone()["n"] == 1
    # The server drops every connection; the pool replaces them, and the new ones prepare the statement again.
    sql(db_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    answers = []
    for _ in range(12):  # each dead pooled connection fails one call (Unavailable), then is replaced
        try:
            answers.append(_rows(db, statement, {"n": 41}))
        except Unavailable:
            continue
    assert answers and all(answer == [(42,)] for answer in answers)
