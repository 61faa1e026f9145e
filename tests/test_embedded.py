"""Without DATABASE_URL, `python app.py` starts an embedded PostgreSQL (pgserver) in DATA_DIR and keeps it."""
from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.helpers import AppProcess, wait_for
from tests.test_process import api

pytest.importorskip("pgserver")


def _stop_leftover_server(data_dir: Path) -> None:
    """If an app could not stop its embedded server (it was killed), stop it so no postgres outlives the test."""
    if (data_dir / "postmaster.pid").exists():
        import pgserver

        pgserver.get_server(str(data_dir), cleanup_mode="stop").cleanup()


def _event_result(app: AppProcess, event_id: int) -> dict:
    return wait_for(lambda: (e := api(app, "GET", f"/events/{event_id}"))["state"] == "finished" and e, 15, 0.1,
                    f"event {event_id} to finish")


def test_without_database_url_an_embedded_postgres_serves_runs_and_keeps_events_across_restarts(
        start_app, embedded_data_dir):
    data_dir = embedded_data_dir
    env = {"DATABASE_URL": None, "DATA_DIR": str(data_dir), "PYTHON_HANDLER_MODULES": ""}
    try:
        first = start_app(**env)
        assert "database: postgresql://" in first.log_text() and "embedded PostgreSQL running" in first.log_text()
        assert (data_dir / "PG_VERSION").exists(), "the embedded server's files are not in DATA_DIR"
        health = requests.get(first.url + "/health", timeout=5).json()
        assert health["checks"]["database"]["status"] == "ok"
        created = api(first, "POST", "/events", {"callback": "Addition", "payload": {"x": 2, "y": 40}}, 201)
        assert _event_result(first, created["id"])["result"] == 42
        assert first.terminate() == 0
        # The app was the server's last user: pgserver stopped it on exit.
        wait_for(lambda: not (data_dir / "postmaster.pid").exists(), 10, 0.1, "the embedded server to stop")

        second = start_app(**env)
        kept = api(second, "GET", f"/events/{created['id']}", expect=200)
        assert (kept["state"], kept["result"]) == ("finished", 42)
        assert [h["state"] for h in kept["history"]] == ["scheduled", "running", "finished"]
        again = api(second, "POST", "/events", {"callback": "Multiplication", "payload": {"x": 6, "y": 7}}, 201)
        assert _event_result(second, again["id"])["result"] == 42
        assert second.terminate() == 0
    finally:
        for app in (locals().get("first"), locals().get("second")):
            if app is not None:
                app.kill()
        _stop_leftover_server(data_dir)
