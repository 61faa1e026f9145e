"""Fixtures: a real PostgreSQL (DATABASE_URL's server, or an embedded pgserver), a fresh database per
test copied from a template that has the schema, the app in-process or as `python app.py` processes,
and real HTTP servers as webhook targets."""
from __future__ import annotations

import itertools
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import audit  # noqa: E402
import tests.handlers  # noqa: E402,F401 - registers the test handlers in this process too
from config import Settings  # noqa: E402
from db import Database  # noqa: E402
from tests.helpers import FIGURES, AppProcess, free_port  # noqa: E402

SIDE_TABLES = """
CREATE TABLE IF NOT EXISTS executions (
    event_id bigint NOT NULL, attempt integer NOT NULL, pid integer NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (event_id, attempt)
);
"""


def pytest_configure(config: pytest.Config) -> None:
    """As root, pgserver runs PostgreSQL as a `pgserver` system user it creates on first use. Under pytest-xdist the
    workers start their servers at once, and on a machine where that user does not exist yet they raced to create
    it: a folder was handed to a uid that useradd then gave up, and every test of that worker failed ("initdb:
    could not access directory ... Permission denied"). The controller creates it first, before any worker starts.
    """
    if os.environ.get("PYTEST_XDIST_WORKER") or os.environ.get("TEST_DATABASE_URL") or \
            os.environ.get("DATABASE_URL") or sys.platform == "win32" or os.geteuid() != 0:
        return
    from pgserver.utils import ensure_user_exists

    ensure_user_exists("pgserver")


def _admin_url() -> tuple[str, object]:
    """The server the tests use: TEST_DATABASE_URL's (or DATABASE_URL's), or an embedded one started now.

    Under pytest-xdist each worker process starts its own embedded server, in a folder of its own; on a
    shared server the workers' databases differ by pid (the template's and each test's name).
    """
    url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        return url, None
    import pgserver

    folder = tempfile.mkdtemp(prefix="punctual-pg-")
    server = pgserver.get_server(folder, cleanup_mode="delete")
    return server.get_uri(), server


def _utf8(value: Any) -> Any:
    """`value` with every string UTF-8 encodable: a lone surrogate becomes its escape (\\udfff)."""
    if isinstance(value, str):
        try:
            value.encode()
            return value
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode()
    if isinstance(value, dict):
        return {_utf8(k): _utf8(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_utf8(v) for v in value)
    return value


@pytest.hookimpl(wrapper=True)
def pytest_report_to_serializable(config: pytest.Config, report: Any) -> Any:
    """A pytest-xdist worker sends each report as UTF-8, and a test's captured log can hold a lone surrogate
    (tests/test_engine.py's handlers raise one on purpose): unescaped, the worker crashes while sending."""
    data = yield
    return _utf8(data)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """In a pytest-xdist worker: send the figures this worker measured back to the controller."""
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["figures"] = dict(FIGURES)


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: absent without the plugin
def pytest_testnodedown(node, error) -> None:  # noqa: ANN001 - pytest-xdist's hook signature
    FIGURES.update(getattr(node, "workeroutput", {}).get("figures", {}))


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001 - pytest's hook signature
    """The fault tests' figures (tests/faults/README.md), whichever process measured them."""
    if FIGURES:
        soak = " (PUNCTUAL_SOAK=1)" if os.environ.get("PUNCTUAL_SOAK", "") == "1" else ""
        terminalreporter.section("fault test figures" + soak)
        for name, value in sorted(FIGURES.items()):
            terminalreporter.write_line(f"{name}: {value}")


def dsn(base: str, dbname: str) -> str:
    return psycopg2.extensions.make_dsn(base, dbname=dbname)


@pytest.fixture(scope="session")
def pg_server():
    """(admin URL, template name): the template holds the schema and the tests' side tables."""
    url, server = _admin_url()
    template = f"punctual_tpl_{os.getpid()}"
    admin = psycopg2.connect(url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {template}")
        cur.execute(f"CREATE DATABASE {template}")
    tpl = Database(dsn(url, template), pool_size=2)
    tpl.apply_schema()
    tpl.query(SIDE_TABLES)
    tpl.close()
    yield url, template
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {template} WITH (FORCE)")
    admin.close()
    if server is not None:
        server.cleanup()  # stop the embedded server now, while pytest's streams are still open


_counter = itertools.count()


@pytest.fixture
def db_url(pg_server):
    """A fresh database for this test, with the schema already applied."""
    url, template = pg_server
    name = f"punctual_t_{os.getpid()}_{next(_counter)}"
    admin = psycopg2.connect(url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    yield dsn(url, name)
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


@pytest.fixture
def log_dir(tmp_path):
    path = tmp_path / "logs"
    audit.setup_logging(str(path), 10 * 1024 * 1024, 2)
    return path


@pytest.fixture
def settings(log_dir):
    return Settings.from_env({}, log_dir=str(log_dir), sweep_seconds=0.5, retry_base_seconds=0.05,
                             retry_max_seconds=0.2, lease_grace_seconds=2.0, shutdown_grace_seconds=2.0,
                             listen_timeout_seconds=0.5, reconnect_max_seconds=1.0, worker_threads=8,
                             python_handler_modules=("tests.handlers",))


@pytest.fixture
def db(db_url):
    database = Database(db_url, pool_size=10)
    yield database
    database.close()


@pytest.fixture
def app(settings, db):
    """The API without the engine: requests only, nothing runs."""
    from app import create_app

    return create_app(settings, db)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def engine(settings, db):
    """A running engine in this process (listener, scheduler, executor)."""
    from engine import Engine
    from metrics import Metrics

    eng = Engine(db, settings, Metrics())
    eng.start()
    assert eng.listener.connected.wait(10), "listener did not connect"
    yield eng
    eng.stop()


@pytest.fixture
def live_client(settings, db, engine):
    """The API with a running engine behind it."""
    from app import create_app

    return create_app(settings, db, engine, engine.metrics).test_client()


@pytest.fixture
def embedded_data_dir():
    """A DATA_DIR for an app's own embedded server (not yet created), outside pytest's tmp_path tree.

    As root, pgserver runs initdb and postgres as its unprivileged `pgserver` user and opens each parent
    folder to it; pytest keeps /tmp/pytest-of-<user> at 0700 and closes it again whenever another pytest
    run starts on the machine, and the server then fails ("could not open file .../PG_VERSION: Permission
    denied").
    """
    root = Path(tempfile.mkdtemp(prefix="punctual-data-"))
    yield root / "data"
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def start_app_on(tmp_path):
    """Start `python app.py` processes on any database URL; all are killed at the end."""
    started: list[AppProcess] = []

    def start(db_url: str, **env: str) -> AppProcess:
        proc = AppProcess(ROOT, db_url, tmp_path / f"app{len(started)}", free_port(), env)
        started.append(proc)
        proc.start()
        return proc

    yield start
    for proc in started:
        proc.kill()


@pytest.fixture
def start_app(db_url, start_app_on):
    """Start `python app.py` processes on this test's database; all are killed at the end."""
    return lambda **env: start_app_on(db_url, **env)


@pytest.fixture
def webhook():
    from tests.helpers import WebhookTarget

    target = WebhookTarget()
    yield target
    target.close()


@pytest.fixture
def kafka_broker(tmp_path):
    """A tansu broker on a free loopback port, with the bridge's topics created."""
    from tests.kafka_broker import Broker

    broker = Broker(tmp_path).start()
    yield broker
    broker.stop()


def kafka_env(broker) -> dict[str, str]:
    """Environment for an app process that bridges to `broker`."""
    return {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "KAFKA_MAX_POLL_INTERVAL_MS": "3000",
            "KAFKA_GROUP_ID": "punctual-test", "RECONNECT_MAX_SECONDS": "2"}
