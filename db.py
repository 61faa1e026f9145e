"""PostgreSQL access: the request/engine pool, the listener's own connection, the schema, the embedded server."""
from __future__ import annotations

import logging
import re
import threading
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, TypeVar

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

import jsonsafe
from errors import Conflict, Unavailable

log = logging.getLogger("punctual.db")

T = TypeVar("T")

SCHEMA_PATH = Path(__file__).with_name("database.sql")
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SCHEMA_LOCK_KEY = 0x5057_4E43  # "PUNC": serialises schema application across instances

# Every connection answers in UTC; stored values are timestamptz, so this only fixes the output.
# lock_timeout keeps a request from hanging on a row another transaction holds.
_SESSION_OPTIONS = "-c timezone=UTC -c lock_timeout=5000 -c statement_timeout=60000"

# Errors that mean "the database is not reachable right now", as opposed to a bad statement.
CONNECTION_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)


class Prepared:
    """A statement PostgreSQL parses and plans once per connection (PREPARE), then only executes: for the statements
    every single event waits on (its insert, its claim by id), where planning was a third of the claim's time
    (0.36 of 0.95 ms measured) and a fifth of the insert's. Only for statements whose best plan does not depend on
    their values: after five executions PostgreSQL may keep a generic plan, made without them. A claim of everything
    due keeps being planned for each backlog, and the completer's outcomes too: joined to an array whose size the
    generic plan does not know, they were matched in a nested loop (make compare's W4 fell by a third).

    Written with psycopg2's placeholders, %(name)s or %s, as the unprepared statement would be; each connection
    prepares it on first use (a prepared statement belongs to its session and survives rollbacks; a reconnect is
    a new connection, which prepares it again)."""

    _done: "weakref.WeakKeyDictionary[Any, set[str]]" = weakref.WeakKeyDictionary()
    _lock = threading.Lock()

    def __init__(self, name: str, sql: str) -> None:
        self.name = name
        self.keys: list[str] = []
        count = 0

        def number(match: re.Match[str]) -> str:
            nonlocal count
            if match.group(1) is None:  # %s: positional, in order
                count += 1
                return f"${count}"
            if match.group(1) not in self.keys:
                self.keys.append(match.group(1))
            return f"${self.keys.index(match.group(1)) + 1}"

        text = re.sub(r"%(?:\((\w+)\))?s", number, sql).replace("%%", "%")
        self.arity = len(self.keys) or count
        self._prepare = f"PREPARE {name} AS {text}"
        self._execute = f"EXECUTE {name} ({', '.join(['%s'] * self.arity)})" if self.arity else f"EXECUTE {name}"

    def execute(self, cur: Any, params: Optional[Mapping[str, Any] | Sequence[Any]]) -> None:
        """Run it on `cur` (in the caller's transaction), preparing it first on a connection that has not yet."""
        with self._lock:
            done = self._done.setdefault(cur.connection, set())
        if self.name not in done:
            cur.execute(self._prepare)
            done.add(self.name)
        if isinstance(params, Mapping):
            values: Sequence[Any] = [params[key] for key in self.keys]
        else:
            values = list(params or ())
        cur.execute(self._execute, values)


_URL_PASSWORD = re.compile(r"([\w.%+~-]+:)[^@\s/?#]*@")  # user:password@ (also in a malformed URL)
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)
_KEYWORD_PASSWORD = re.compile(r"((?<![\w?&])password\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)", re.IGNORECASE)


def redact(url: str) -> str:
    """The URL or key=value DSN with its password replaced, for logs and errors: secrets are never printed.

    Covers the three places libpq accepts a password: user:password@ in a URL, ?password= in a
    URL's query, and password=... (quoted or not) in a key=value connection string.
    """
    url = _URL_PASSWORD.sub(r"\1***@", url)
    url = _QUERY_PASSWORD.sub(r"\1***", url)
    return _KEYWORD_PASSWORD.sub(r"\1***", url)


def start_embedded(data_dir: str) -> str:
    """Start (or reuse) the pgserver PostgreSQL in data_dir and return its URL.

    pgserver keeps one server per folder and stops it when the last process using it exits.
    """
    import pgserver  # imported here: only needed without DATABASE_URL

    path = Path(data_dir).resolve()
    path.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(str(path), cleanup_mode="stop")  # type: ignore[attr-defined]
    log.info("embedded PostgreSQL running in %s", path)
    return server.get_uri()


class _Pool:
    """A lazy LIFO pool that keeps idle connections open.

    psycopg2's ThreadedConnectionPool closes every returned connection beyond `minconn`, so with
    a lazy minconn of 0 each transaction paid for a new backend; this one connects on demand,
    keeps up to `size` idle connections, and drops broken ones.
    """

    def __init__(self, connect: Callable[[], psycopg2.extensions.connection], size: int) -> None:
        self._connect = connect
        self._idle: list[psycopg2.extensions.connection] = []
        self._lock = threading.Lock()
        self._size = size

    def get(self) -> psycopg2.extensions.connection:
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed:
                    return conn
        return self._connect()

    def put(self, conn: psycopg2.extensions.connection, broken: bool) -> None:
        if broken or conn.closed:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a dead connection may fail too
                pass
            return
        with self._lock:
            if len(self._idle) < self._size:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class DictCursor(psycopg2.extensions.cursor):
    """Rows as plain dicts keyed by column name.

    Why not psycopg2's RealDictCursor: it fills each row with one Python call per column, which cost
    about 12 microseconds per row of a claim or a batch of outcomes (most of the app's time per event
    at thousands a second); dict(zip(...)) builds the same dict in C.
    """

    def _names(self) -> list[str]:
        return [column.name for column in self.description or ()]

    def one(self) -> dict[str, Any]:
        """The row a statement always returns (a count, RETURNING of a row it just wrote).

        :raise LookupError: when there is none: a bug, not a client's error.
        """
        row = self.fetchone()
        if row is None:
            raise LookupError("the statement returned no row")
        return row

    def fetchone(self) -> dict[str, Any] | None:  # type: ignore[override]
        row = super().fetchone()
        return None if row is None else dict(zip(self._names(), row))

    def fetchmany(self, size: int | None = None) -> list[dict[str, Any]]:  # type: ignore[override]
        rows = super().fetchmany(self.arraysize if size is None else size)
        names = self._names() if rows else []
        return [dict(zip(names, row)) for row in rows]

    def fetchall(self) -> list[dict[str, Any]]:  # type: ignore[override]
        rows = super().fetchall()
        names = self._names() if rows else []
        return [dict(zip(names, row)) for row in rows]

    def __iter__(self) -> Iterator[dict[str, Any]]:  # type: ignore[override]
        return iter(self.fetchall())


class Database:
    """One pool shared by requests and the engine; LISTEN gets a connection of its own."""

    def __init__(self, url: str, pool_size: int = 20, application_name: str = "punctual") -> None:
        self.url = url
        self.application_name = application_name
        self._pool = _Pool(lambda: self.connect("pool"), pool_size)
        # Bounds connections in use; a request waits for a free one rather than opening more.
        self._slots = threading.BoundedSemaphore(pool_size)

    # -- connections -------------------------------------------------------------------

    def connect(self, role: str, autocommit: bool = False) -> psycopg2.extensions.connection:
        """A new connection with keepalives, so a half-open TCP link is noticed instead of hanging."""
        conn = psycopg2.connect(
            self.url,
            application_name=f"{self.application_name}-{role}",
            options=_SESSION_OPTIONS,
            connect_timeout=5,
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        )
        # options' timezone=UTC loses to a PGTZ in the environment (libpq sends it as a startup
        # parameter applied later), so set it explicitly: answers are always in UTC.
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SET TIME ZONE 'UTC'")
        conn.autocommit = autocommit
        # json and jsonb values (every payload and result read back) through orjson, keeping what json.loads reads.
        psycopg2.extras.register_default_json(conn, loads=jsonsafe.loads)
        psycopg2.extras.register_default_jsonb(conn, loads=jsonsafe.loads)
        return conn

    @contextmanager
    def transaction(self, autocommit: bool = False) -> Iterator[DictCursor]:
        """A cursor inside one transaction: committed on success, rolled back on any error.

        autocommit=True makes each statement its own transaction, one round trip instead of three
        (BEGIN, the statement, COMMIT) and as atomic: for a single statement, or for statements
        that need nothing of each other's isolation.

        :raise Unavailable: when the database cannot be reached or a statement timed out (503).
        :raise Conflict: when a row stayed locked by another transaction past lock_timeout (409).
        """
        if not self._slots.acquire(timeout=30):
            raise Unavailable("no database connection free within 30 s")
        conn = None
        broken = False
        try:
            try:
                conn = self._pool.get()
            except CONNECTION_ERRORS as exc:
                raise Unavailable("database unavailable", {"reason": type(exc).__name__}) from exc
            try:
                if autocommit:
                    conn.autocommit = True  # a flag only while idle: psycopg2 sends nothing for it
                with conn.cursor(cursor_factory=DictCursor) as cur:
                    yield cur
                if not autocommit:
                    conn.commit()
            except BaseException as exc:
                broken = not _rollback(conn)
                # Timeouts raise OperationalError subclasses but leave the connection usable.
                if isinstance(exc, psycopg2.errors.LockNotAvailable):
                    raise Conflict("the row is locked by another transaction; try again",
                                   {"reason": "lock_timeout"}) from exc
                if isinstance(exc, psycopg2.errors.QueryCanceled):
                    raise Unavailable("the database did not answer in time", {"reason": "statement_timeout"}) from exc
                if isinstance(exc, CONNECTION_ERRORS):
                    broken = True
                    raise Unavailable("database unavailable", {"reason": type(exc).__name__}) from exc
                raise
        finally:
            if conn is not None:
                if autocommit and not conn.closed and not broken:
                    try:
                        conn.autocommit = False  # the pool hands out connections in transaction mode
                    except psycopg2.Error:
                        broken = True
                self._pool.put(conn, broken)
            self._slots.release()

    def query(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        """Run one statement as its own transaction; its rows, if it returns any."""
        with self.transaction(autocommit=True) as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def typed(self, sql: "str | Prepared", params: Any, into: Callable[..., T]) -> list[T]:
        """Run one statement as its own transaction and build `into(*row)` from each row, in the order of
        the SELECT (or RETURNING) list: typed rows for the engine, made straight from tuples (no dict)."""
        with self.transaction(autocommit=True) as cur:
            plain = cur.connection.cursor()
            try:
                if isinstance(sql, Prepared):
                    sql.execute(plain, params)
                else:
                    plain.execute(sql, params)
                return [into(*row) for row in plain.fetchall()] if plain.description else []
            finally:
                plain.close()

    def ping(self) -> bool:
        try:
            self.query("SELECT 1")
            return True
        except Exception:  # noqa: BLE001 - health reports any failure as "down"
            return False

    # -- schema ------------------------------------------------------------------------

    def apply_schema(self) -> None:
        """Bring the database to the current schema, under an advisory lock so instances starting together
        don't race: an empty database gets database.sql and every migration recorded as applied; one made by
        an earlier release gets the migrations it has not had, each once, in order, each recorded in
        schema_migrations in the same transaction as its changes."""
        migrations = list_migrations()
        with self.transaction() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
            cur.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
                               version    integer PRIMARY KEY,
                               name       text NOT NULL,
                               applied_at timestamptz NOT NULL DEFAULT now())""")
            cur.execute("SELECT version FROM schema_migrations")
            done = {row["version"] for row in cur.fetchall()}
            cur.execute("SELECT to_regclass('events') IS NOT NULL AS exists")
            if not done and not cur.one()["exists"]:
                cur.execute(SCHEMA_PATH.read_text())
                applied = [(version, name) for version, name, _ in migrations]
                log.info("schema created (version %s)", migrations[-1][0] if migrations else 0)
            else:
                # A database made before migrations existed has no rows here: it starts from the baseline,
                # which is written to be harmless on any earlier schema.
                applied = []
                for version, name, path in migrations:
                    if version not in done:
                        cur.execute(path.read_text())
                        applied.append((version, name))
                        log.info("migration %04d %s applied", version, name)
            if applied:
                cur.executemany("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", applied)

    def close(self) -> None:
        self._pool.close()


def _rollback(conn: psycopg2.extensions.connection) -> bool:
    """Roll back; False when the connection is gone (it must not go back to the pool)."""
    if conn.closed:
        return False
    try:
        conn.rollback()
        return True
    except CONNECTION_ERRORS:
        return False


def list_migrations() -> list[tuple[int, str, Path]]:
    """(version, name, path) of every migrations/NNNN_name.sql, in order.

    :raise ValueError: two files with one number (they would run in an order nobody chose).
    """
    found: dict[int, tuple[int, str, Path]] = {}
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        number, _, name = path.stem.partition("_")
        if not number.isdigit():
            raise ValueError(f"migration file {path.name} does not start with its number")
        if int(number) in found:
            raise ValueError(f"two migrations numbered {int(number)}: {found[int(number)][2].name}, {path.name}")
        found[int(number)] = (int(number), name, path)
    return [found[number] for number in sorted(found)]


def database_url_from(settings_url: str, data_dir: str) -> str:
    """DATABASE_URL when set, else the embedded server's URL."""
    if settings_url:
        return settings_url
    return start_embedded(data_dir)

