"""Punctual: a persistent, Postgres-backed event queue. `python app.py` runs all of it in one process.

The flow, top-down: configuration -> database (schema applied) -> handlers -> engine
(listener -> scheduler -> executor) -> HTTP API served by waitress. SIGTERM/SIGINT stop it in
reverse: no new requests or claims, running attempts finish or are given back, exit 0.
"""
from __future__ import annotations

import logging
import signal
import sys
from typing import Optional

from flask_openapi3 import Info, OpenAPI

import audit
from config import Settings
from db import Database, database_url_from, redact
from engine import Engine
from engine.kinds import python as python_handlers
from metrics import Metrics
from routes import Services, callbacks, events, http, system

log = logging.getLogger("punctual")


def create_app(settings: Settings, db: Database, engine: Optional[Engine] = None,
               metrics: Optional[Metrics] = None) -> OpenAPI:
    """Build the Flask app around an existing database (and engine, when this process runs one)."""
    app = OpenAPI(
        __name__,
        info=Info(title="Punctual", version="0.1.0",
                  description="Persistent, Postgres-backed event queue: schedule a callback with a payload at a time."),
        doc_ui=False,
        validation_error_status=422,
        validation_error_callback=http.validation_error_callback,
    )
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    metrics = metrics or (engine.metrics if engine else Metrics())
    metrics.watch_states(lambda: {row["state"]: row["n"] for row in
                                  db.query("SELECT state, count(*) AS n FROM events GROUP BY state")})
    app.extensions["punctual"] = Services(settings=settings, db=db, metrics=metrics, engine=engine)
    http.install(app)
    for blueprint in (callbacks.bp, events.bp, system.bp):
        app.register_api(blueprint)
    return app


class _Stop(Exception):
    """Raised in the main thread by SIGTERM/SIGINT to leave the server loop."""


def _raise_stop(signum: int, _frame: object) -> None:
    raise _Stop(signal.Signals(signum).name)


def main() -> int:
    from waitress.server import create_server  # the production WSGI server

    settings = Settings.from_env()
    audit.setup_logging(settings.log_dir, settings.log_max_bytes, settings.log_backups)
    url = database_url_from(settings.database_url, settings.data_dir)
    log.info("database: %s", redact(url))
    db = Database(url, pool_size=settings.db_pool_size)
    db.apply_schema()
    python_handlers.load_modules(settings.python_handler_modules)
    if not settings.kafka_enabled:
        log.info("Kafka bridge off: KAFKA_BOOTSTRAP_SERVERS is not set")

    metrics = Metrics()
    engine = Engine(db, settings, metrics)
    app = create_app(settings, db, engine, metrics)
    server = create_server(app, host=settings.host, port=settings.port, threads=settings.http_threads,
                           ident="punctual", clear_untrusted_proxy_headers=True)
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    engine.start()
    log.info("serving on http://%s:%s", settings.host, server.effective_port)
    try:
        server.run()
    except _Stop as stop:
        log.info("%s received: stopping", stop)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        server.close()
        engine.stop()
        server.task_dispatcher.shutdown(cancel_pending=False, timeout=5)
        db.close()
        log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
