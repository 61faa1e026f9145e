"""Punctual: a persistent, Postgres-backed event queue. `python app.py` runs all of it in one process.

The flow, top-down: configuration -> database (schema applied) -> handlers -> engine
(listener -> scheduler -> executor) -> HTTP API served by waitress. SIGTERM/SIGINT stop it in
reverse: no new requests or claims, running attempts finish or are given back, exit 0.
"""
from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Optional

import psycopg2
from flask_openapi3 import Info, OpenAPI

import audit
from bridge.producer import Producer
from bridge.service import Bridge
from config import Settings
from controllers.access import Access
from controllers.lateness import Lateness
from controllers.maintenance import VacuumWatch
from db import Database, database_url_from, redact
from engine import Engine
from engine.kinds import Kinds
from engine.kinds import python as python_handlers
from errors import Unavailable
from metrics import Metrics
from routes import Services, callbacks, claims, events, http, kafka, schedules, stream, system, workflows
from streams import Broadcaster

log = logging.getLogger("punctual")


def create_app(settings: Settings, db: Database, engine: Optional[Engine] = None,
               metrics: Optional[Metrics] = None, bridge: Optional[Bridge] = None,
               broadcaster: Optional[Broadcaster] = None) -> OpenAPI:
    """Build the Flask app around an existing database (and the engine, the Kafka bridge and the live pages'
    broadcaster, when this process runs them)."""
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
    if bridge is not None:
        metrics.watch_bridge(bridge.health)
    access = Access(db, settings.api_token, settings.token_check_seconds)
    vacuum = VacuumWatch(db, settings.vacuum_holdback_warn_seconds)
    metrics.watch_vacuum(vacuum.report)
    app.extensions["punctual"] = Services(settings=settings, db=db, metrics=metrics, engine=engine, bridge=bridge,
                                          access=access, broadcaster=broadcaster, vacuum=vacuum,
                                          lateness=Lateness(db))
    blueprints = [callbacks.bp, claims.bp, events.bp, kafka.bp, schedules.bp, stream.bp, system.bp, workflows.bp]
    http.install(app, blueprints)
    for blueprint in blueprints:
        app.register_api(blueprint)
    return app


def _browser_url(address: str) -> str:
    """An address the server listens on (http://host:port), as a browser on this machine reaches it."""
    host, _, port = address.removeprefix("http://").rpartition(":")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1", "": "127.0.0.1"}.get(host, host).strip("[]")
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def banner(settings: Settings, database_url: str, addresses: list[str], access: Optional[Access]) -> str:
    """The end of the start-up, for the person who ran `python app.py`: where to look, where things are, how
    to stop. Never a secret: the database URL is redacted."""
    page = _browser_url(addresses[0])
    logs = Path(settings.log_dir)
    database = (f"embedded PostgreSQL in {Path(settings.data_dir)}{os.sep}" if not settings.database_url
                else redact(database_url))
    try:
        closed = access is not None and access.tokens_required()
    except (psycopg2.Error, Unavailable):  # the database hiccuped just now: the banner is no place to fail
        closed = bool(settings.api_token)
    tokens = ("needed (API_TOKEN, or `python app.py tokens add NAME --scope read|write|desk|admin`)" if closed
              else "none exists, so the API is open to whoever reaches it (set API_TOKEN to close it)")
    return "\n".join([
        "",
        "Punctual is running.",
        f"  Web page:  {page}/",
        f"  API docs:  {page}/docs",
        f"  Database:  {database}",
        f"  Logs:      {logs}{os.sep} events.log (audit), punctual.log (all), errors.log (warnings and errors)",
        f"  Tokens:    {tokens}",
        f"  Stop:      Ctrl+C (or SIGTERM): requests in flight get {settings.http_drain_seconds:g} s, then running "
        f"attempts {settings.shutdown_grace_seconds:g} s",
        "",
    ])


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["tokens"]:  # `python app.py tokens add|list|revoke ...`: manage API tokens, then exit
        import cli

        return cli.tokens(argv[1:])
    from http_server import HttpServer, Limits  # waitress (the production WSGI server), hardened

    # Installed first, so a stop asked for during start-up is also a clean stop (exit 0).
    stop = threading.Event()
    received: list[str] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signal.Signals(signum).name)  # no logging here: the handler may interrupt a log call
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    settings = Settings.from_env()
    audit.setup_logging(settings.log_dir, settings.log_max_bytes, settings.log_backups,
                        console_level=settings.log_level)
    # pgserver asks platformdirs for a runtime folder it does not need; without XDG_RUNTIME_DIR (a container,
    # su, CI) that prints a two-line warning about a harmless fallback before anything else.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    url = database_url_from(settings.database_url, settings.data_dir)
    log.info("database: %s", redact(url))
    db = Database(url, pool_size=settings.db_pool_size)
    try:
        db.apply_schema()
    except (psycopg2.Error, Unavailable) as exc:
        # psycopg2 may quote the connection string in its message (e.g. "invalid dsn: ..."): redact it.
        cause = exc.__cause__ or exc
        log.error("cannot use the database %s: %s", redact(url), redact(str(cause)).strip())
        return 1
    python_handlers.load_modules(settings.python_handler_modules)
    if not settings.kafka_enabled:
        log.info("Kafka bridge off: KAFKA_BOOTSTRAP_SERVERS is not set")

    metrics = Metrics()
    # Live pages (GET /stream): each open stream holds an HTTP thread, so at most half of them.
    broadcaster = Broadcaster(max_subscribers=min(8, max(1, settings.http_threads // 2)))
    producer = Producer(settings.kafka_bootstrap_servers) if settings.kafka_enabled else None
    engine = Engine(db, settings, metrics, kinds=Kinds(settings, producer), watchers=[broadcaster])
    bridge = Bridge(db, settings, producer, on_created=engine.wake) if producer is not None else None
    app = create_app(settings, db, engine, metrics, bridge, broadcaster)
    # channel_request_lookahead lets a live stream notice at once that its browser tab closed, instead of
    # holding its thread until the next heartbeat write fails.
    server = HttpServer(app, host=settings.host, port=settings.port, threads=settings.http_threads,
                        limits=Limits.from_settings(settings), health_host=settings.health_host,
                        health_port=settings.health_port, channel_request_lookahead=1, ident="punctual",
                        clear_untrusted_proxy_headers=True)
    engine.start()
    if bridge is not None:
        bridge.start()
    # Everything made while starting (Flask, pydantic schemas, APScheduler, libraries) lives as long as the
    # process. Frozen, a full collection no longer walks it. Benchmark: bench/run.py W3 (max, from the insert to
    # the start): a collection paused every thread for 47 ms every few seconds without it, none over 0.5 ms with.
    # (The switch interval was lowered to 0.5 ms here too; after the engine redesign five interleaved W3 runs
    # each way gave a p99 median of 21.0 ms with it and 15.6 ms without, so it went.)
    gc.collect()
    gc.freeze()
    log.info("serving on %s", ", ".join(server.main.addresses))
    print(banner(settings, url, server.main.addresses, app.extensions["punctual"].access), file=sys.stderr,
          flush=True)
    try:
        server.serve_until(stop, settings.http_drain_seconds)
        log.info("%s received: stopping", " and ".join(received) or "stop")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        # HTTP first, while the engine and the database still answer the requests in flight; live streams
        # are told to end ("bye") so they do not hold the drain to its deadline.
        server.stop(settings.http_drain_seconds, on_drain=broadcaster.close)
        engine.stop()
        if bridge is not None:
            bridge.stop()  # after the engine: the relay publishes the outcomes recorded while stopping
        db.close()
        log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
