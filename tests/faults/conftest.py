"""Fixtures of the fault tests: the soak flag, a PostgreSQL server of our own (to stop and restart
without touching the shared one), small HTTP helpers and the figures the tests measure.

PUNCTUAL_SOAK=1 turns every test here into its long variant (more rounds, a 30 s outage,
200 clients for 60 s); the default run keeps CI inside its budget.
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
import requests

from db import Database
from tests.conftest import ROOT, SIDE_TABLES
from tests.helpers import AppProcess, free_port, record_figure, sql, wait_for  # noqa: F401 - record_figure for the tests

SOAK = os.environ.get("PUNCTUAL_SOAK", "") == "1"
"""Long variants of every fault test (documented in tests/faults/README.md)."""

# The figures each test measures (record_figure, tests/helpers.py) are printed at the end of the run by
# tests/conftest.py, which also brings them back from pytest-xdist's workers.


def soak(default: Any, long: Any) -> Any:
    """The default-run value, or the soak value under PUNCTUAL_SOAK=1."""
    return long if SOAK else default


# -- HTTP helpers -------------------------------------------------------------------------


def at(seconds: float) -> str:
    """An ISO 8601 instant `seconds` from now, with an offset."""
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat()


def api(app: AppProcess, method: str, path: str, body: Any = None, expect: int | None = None,
        timeout: float = 10) -> Any:
    response = requests.request(method, app.url + path, json=body, timeout=timeout)
    if expect is not None:
        assert response.status_code == expect, (method, path, response.status_code, response.text)
    return response.json() if response.content else None


def count(db_url: str, query: str, params: Any = None) -> int:
    return sql(db_url, query, params)[0]["n"]


def assert_every_attempt_recorded_once(db_url: str) -> None:
    """Each (event, attempt) an event counts that has ended has exactly one attempt row in its history (written at
    the attempt's end, with its start): none missing, none twice. The attempt running now has none yet."""
    doubled = sql(db_url, """SELECT event_id, attempt, count(*) AS n FROM event_history WHERE started_at IS NOT NULL
                             GROUP BY event_id, attempt HAVING count(*) > 1""")
    assert doubled == [], f"attempts that ended more than once: {doubled[:10]}"
    missing = sql(db_url, """SELECT e.id, a FROM events e,
                                    generate_series(1, e.attempts - CASE WHEN e.state = 'running' THEN 1 ELSE 0 END) a
                             WHERE NOT EXISTS (SELECT 1 FROM event_history h WHERE h.event_id = e.id
                                               AND h.attempt = a AND h.started_at IS NOT NULL)""")
    assert missing == [], f"attempts without their history row: {missing[:10]}"


# -- a PostgreSQL server of our own -------------------------------------------------------


class OwnPostgres:
    """A PostgreSQL 15 cluster in a temporary folder, on a loopback TCP port that survives restarts.

    Uses pgserver's binaries; as root it runs them as pgserver's unprivileged `pgserver` user, as
    initdb and postgres refuse to run as root. Tests stop and start it at will, which they must
    never do to the shared server other helpers and tests use.
    """

    def __init__(self) -> None:
        from pgserver._commands import POSTGRES_BIN_PATH

        self.bin = Path(POSTGRES_BIN_PATH)
        self.root = Path(tempfile.mkdtemp(prefix="punctual-faults-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.user: str | None = None
        if os.geteuid() == 0:
            from pgserver.utils import ensure_user_exists

            self.user = "pgserver"
            ensure_user_exists(self.user)
            self.root.chmod(0o755)
        self.data.mkdir()
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.data, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "--auth=trust", "--encoding=utf8", "-U", "postgres")

    def _run(self, exe: str, *args: str, timeout: float = 60) -> None:
        subprocess.run([str(self.bin / exe), *args], check=True, user=self.user, timeout=timeout,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.data} -c max_connections=60 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "30", "-o", options, "-l", str(self.data / "log"),
                  "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "30", "-m", mode, "stop")

    @property
    def running(self) -> bool:
        try:
            psycopg2.connect(self.url, connect_timeout=1).close()
            return True
        except psycopg2.OperationalError:
            return False

    def create_database(self, name: str) -> str:
        admin = psycopg2.connect(self.url)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name}")
        admin.close()
        url = psycopg2.extensions.make_dsn(self.url, dbname=name)
        database = Database(url, pool_size=1)
        database.apply_schema()
        database.query(SIDE_TABLES)
        database.close()
        return url

    def destroy(self) -> None:
        try:
            if self.running:
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def own_pg():
    """A PostgreSQL server this module may stop and restart."""
    server = OwnPostgres()
    server.start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def own_db_url(own_pg, request):
    """A fresh database with the schema on our own server; the server is running again after the test."""
    name = "faults_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:40].lower()
    url = own_pg.create_database(name)
    yield url
    if not own_pg.running:
        own_pg.start()


def wait_ok(db_url: str, query: str, timeout: float, message: str) -> None:
    """Wait until `query` (one row, column ok) is true."""
    wait_for(lambda: sql(db_url, query)[0]["ok"], timeout, 0.1, message)


def elapsed(since: float) -> float:
    return round(time.monotonic() - since, 3)


@pytest.fixture
def start_round(tmp_path):
    """Start `python app.py` for round `index` of a kill -9 test, with `env`: dying at its armed crash point before
    it reported healthy is an expected outcome, anything else fails the test with its output. Every app started
    is killed at the end (the final instances outlive the rounds)."""
    started: list[AppProcess] = []

    def start(db_url: str, index: int, env: dict[str, str]) -> AppProcess:
        app = AppProcess(ROOT, db_url, tmp_path / f"round{index}", free_port(), env)
        started.append(app)
        try:
            app.start()
        except AssertionError as exc:
            if app.proc is None or app.proc.poll() != 137:
                raise AssertionError(f"{exc}\n--- its output:\n{app.log_text()[-4000:]}") from None
        return app

    yield start
    for app in started:
        app.kill()
