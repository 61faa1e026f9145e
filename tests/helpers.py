"""Test helpers: waiting on conditions with a deadline, ports, app processes, webhook targets."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import psycopg2
import psycopg2.extras
import requests

FIGURES: dict[str, str] = {}
"""Figures the fault tests measure (name -> text), printed at the end of the run by tests/conftest.py."""


def record_figure(name: str, value: Any) -> None:
    FIGURES[name] = str(value)


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, message: str = "") -> Any:
    """Poll until predicate() is truthy and return its value; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {message or predicate}: last={last!r}")


@contextmanager
def running_engine(db: Any, settings: Any, **changes: Any) -> Iterator[Any]:
    """An engine in this process with its own settings, always stopped."""
    from engine import Engine
    from metrics import Metrics

    eng = Engine(db, settings.with_(**changes), Metrics())
    eng.start()
    try:
        assert eng.listener.connected.wait(10), "listener did not connect"
        yield eng
    finally:
        eng.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sql(url: str, query: str, params: Any = None) -> list[dict]:
    """Run one statement on a connection of its own, as another program would."""
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def event_history(url: str, event_id: int) -> list[dict]:
    """The event's state changes as GET /events/<id> tells them (state, attempt, at, worker, error), read from the
    database by another connection: an attempt's row stands for its start and its end."""
    from controllers.events import history_entries  # the story's one reader, the API's own

    rows = sql(url, "SELECT state, attempt, at, worker, error, note, started_at FROM event_history "
                    "WHERE event_id = %s ORDER BY id", (event_id,))
    event = sql(url, "SELECT state, attempts, started_at, worker FROM events WHERE id = %s", (event_id,))
    if not event:
        return []
    return [{k: entry[k] for k in ("state", "attempt", "at", "worker", "error")}
            for entry in history_entries(rows, event[0])]


class AppProcess:
    """One `python app.py`, started as a user would, on its own port and log folder."""

    def __init__(self, root: Path, db_url: str, folder: Path, port: int, env: dict[str, str | None]) -> None:
        self.root = root
        self.folder = folder
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        folder.mkdir(parents=True, exist_ok=True)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PUNCTUAL_")},
            "DATABASE_URL": db_url, "HOST": "127.0.0.1", "PORT": str(port),
            "LOG_DIR": str(folder / "logs"), "PYTHON_HANDLER_MODULES": "tests.handlers",
            "PYTHONPATH": str(root), "SWEEP_SECONDS": "0.5", "LEASE_GRACE_SECONDS": "1",
            "RETRY_BASE_SECONDS": "0.1", "RETRY_MAX_SECONDS": "0.5", "SHUTDOWN_GRACE_SECONDS": "5",
            **env,
        }
        # A value of None removes the variable (e.g. DATABASE_URL=None: the app starts its embedded server).
        self.env = {k: v for k, v in self.env.items() if v is not None}
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> "AppProcess":
        self.output = open(self.folder / "output.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "app.py"], cwd=self.root, env=self.env,
                                     stdout=self.output, stderr=subprocess.STDOUT)
        wait_for(self.healthy, timeout, 0.1, f"app on port {self.port} to be healthy")
        return self

    def healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"app exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
        try:
            return requests.get(self.url + "/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def log_text(self) -> str:
        path = self.folder / "output.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def audit_lines(self) -> list[dict]:
        path = self.folder / "logs" / "events.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def kill(self) -> None:
        """kill -9: no cleanup, no goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


class WebhookTarget:
    """A real HTTP server on 127.0.0.1 that records what it receives and answers as told."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.delay = 0.0
        self.body: Any = {"ok": True}
        self.redirect_to: str | None = None
        self.close_connection = False
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                target.requests.append({"path": self.path, "headers": dict(self.headers),
                                        "json": json.loads(raw or b"null"), "at": time.time()})
                if target.close_connection:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if target.delay:
                    time.sleep(target.delay)
                if target.redirect_to:
                    self.send_response(307)
                    self.send_header("Location", target.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = json.dumps(target.body).encode()
                self.send_response(target.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
