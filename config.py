"""Settings read from the environment and `.env`, each with its unit and default."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

from dotenv import load_dotenv


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _list(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    """Every knob of Punctual. `.env.example` and the README list the same names and defaults."""

    database_url: str = field(default="", repr=False)  # secrets stay out of repr(), hence out of logs
    """PostgreSQL URL. Empty: start an embedded PostgreSQL (pgserver) in `data_dir`."""
    data_dir: str = "data"
    """Folder of the embedded PostgreSQL; kept across restarts."""
    host: str = "127.0.0.1"
    port: int = 5000
    api_token: str = field(default="", repr=False)
    """An admin token. Once it, or any token made with `python app.py tokens add`, exists, every route but
    /health and the page needs `Authorization: Bearer <token>` with a wide enough scope."""
    metrics_public: bool = False
    """Serve /metrics without a token (for a Prometheus scraper on a private network)."""
    token_check_seconds: float = 1.0
    """How long "no named token exists" is believed before the database is asked again (seconds): a token
    added from the command line closes an open API within this time; a revoked token is refused at once."""
    log_dir: str = "logs"
    log_max_bytes: int = 10 * 1024 * 1024
    """Audit and error logs rotate at this size (bytes)."""
    log_backups: int = 5
    log_level: str = "WARNING"
    """What else the console (stderr) shows besides Punctual's own start and stop lines and the banner:
    WARNING (default) warnings and errors; INFO also each engine role's start, stop and recovery and the
    libraries' notes (the embedded PostgreSQL's set-up); DEBUG everything. logs/punctual.log keeps every INFO
    line whatever this says."""
    max_body_bytes: int = 1024 * 1024
    """Requests larger than this are refused with 413 (bytes)."""
    http_threads: int = 16
    """Threads of the WSGI server."""
    http_connection_limit: int = 1000
    """Open client connections the WSGI server accepts at once (idle keep-alive ones count). At the limit
    a new connection is still accepted: the oldest one not being served is closed to make room."""
    http_idle_timeout_seconds: float = 60.0
    """A connection that completes no request this long after it opened or after its last answer is
    closed (seconds). Bytes that do not complete a request do not count as activity."""
    http_request_timeout_seconds: float = 30.0
    """A request must be received whole (headers and body) within this long of its first byte (seconds);
    a client trickling bytes (slowloris) is cut then. A request being answered (a live stream too) is not."""
    http_drain_seconds: float = 10.0
    """On SIGTERM/SIGINT, requests in flight get this long to be answered before their connections are
    closed (seconds, at most 300); the engine's SHUTDOWN_GRACE_SECONDS comes after it."""
    health_host: str = ""
    """Address of the health listener (empty: HOST)."""
    health_port: int = 0
    """A second listener serving only /health and /metrics with threads of its own, for load balancers
    and scrapers; it keeps answering when the main port is flooded (0: off)."""
    db_pool_size: int = 20
    """Connections for requests and the engine (the listener has one more of its own)."""

    worker_threads: int = 16
    """Attempts that run at once in this instance."""
    claim_batch: int = 256
    """Due events claimed per round trip."""
    horizon_seconds: float = 300.0
    """Only events due within this window are armed in memory (seconds)."""
    sweep_seconds: float = 2.0
    """Safety-net period: claim anything due, re-arm the horizon, rescue expired leases (seconds)."""
    listen_timeout_seconds: float = 1.0
    """Bounded wait of the listener's select(); also its heartbeat period (seconds)."""
    reconnect_max_seconds: float = 10.0
    """Cap of the listener's reconnect backoff (seconds)."""
    retention_days: float = 7.0
    """Terminal events (finished, failed, cancelled) and their history are deleted this long after they ended
    (days, fractions allowed; 0 keeps them). The audit log files are not touched."""
    rejected_retention_days: float = 30.0
    """Rejected Kafka messages are deleted this long after they arrived (days; 0 keeps them)."""
    outbox_retention_days: float = 1.0
    """Outbox rows already published to the history topic are deleted this long after they were written (days; 0
    keeps them). Rows not yet published are never deleted."""
    kafka_messages_retention_days: float = 7.0
    """The record of each consumed Kafka message (topic, partition, offset), which makes a redelivered message a
    no-op, is deleted this long after it arrived (days; 0 keeps it). Redelivery comes from offsets not yet
    committed, seconds old; only a consumer group reset to older offsets would replay messages older than this."""
    retention_interval_seconds: float = 60.0
    """How often the retention role looks for what to delete (seconds)."""
    vacuum_holdback_warn_seconds: float = 60.0
    """/health says `degraded` (still 200) when a transaction in this database has held back vacuum (it holds a
    snapshot or a transaction id) for longer than this (seconds). Lower it to hear sooner of a session left idle
    in a transaction; raise it if long reports run against this database on purpose."""
    instance_dead_seconds: float = 10.0
    """An instance whose heartbeat (every fifth of this) is older than this is dead: the attempts it held are
    rescued at once instead of when their leases run out (seconds)."""
    lease_grace_seconds: float = 30.0
    """A running attempt's lease is the callback's timeout plus this (seconds)."""
    retry_base_seconds: float = 1.0
    """First retry delay; doubles per attempt, with jitter (seconds)."""
    retry_max_seconds: float = 300.0
    """Cap of the retry delay (seconds)."""
    shutdown_grace_seconds: float = 10.0
    """On SIGTERM, running attempts get this long to finish before they are released (seconds)."""
    default_timeout_seconds: float = 30.0
    """Callback timeout when a callback does not set one (seconds)."""
    default_max_attempts: int = 3

    python_handler_modules: tuple[str, ...] = ()
    """Modules imported at start to register user handlers (comma-separated)."""
    webhook_allowed_hosts: tuple[str, ...] = ("127.0.0.1", "::1", "localhost")
    """Where webhooks may go (comma-separated): host names (`hooks.example.com`, `*.example.com`), IP addresses
    and CIDR networks (`10.1.0.0/16`); `*` allows any host name. A URL's host must match an entry; at delivery,
    every address connected to (after DNS) must be a listed address or network, or a public one: a listed name
    that resolves to a loopback, private or link-local address is refused unless that address is listed too.
    See docs/webhooks.md."""

    kafka_bootstrap_servers: str = ""
    kafka_alerts_topic: str = "alerts"
    kafka_schedules_topic: str = "schedules"
    kafka_history_topic: str = "event-history"
    kafka_workflows_topic: str = "workflows"
    """Topic of workflow commands, each keyed by the workflow's id: `{"new": name, "input": ...}` starts one (a
    repeated key is the same workflow), `{"signal": name, "value": ...}` signals it (DESIGN.md "Workflows")."""
    kafka_group_id: str = "punctual"
    kafka_max_poll_interval_ms: int = 300000

    instance_name: str = field(default_factory=lambda: f"{os.uname().nodename}:{os.getpid()}")
    """Name written to history rows as the worker of an attempt."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Read `.env` (never overriding the real environment), then the environment, then `overrides`."""
        if env is None:
            load_dotenv(override=False)
            env = os.environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f.name.upper())
            if raw is None or raw == "":
                continue
            kind = f.type
            if kind == "int":
                values[f.name] = int(raw)
            elif kind == "float":
                values[f.name] = float(raw)
            elif kind == "bool":
                values[f.name] = _bool(raw)
            elif kind.startswith("tuple"):
                values[f.name] = _list(raw)
            else:
                values[f.name] = raw
        values.update(overrides)
        return cls(**values)

    def with_(self, **changes: Any) -> "Settings":
        return replace(self, **changes)

    @property
    def kafka_enabled(self) -> bool:
        return bool(self.kafka_bootstrap_servers)
